//! The peer in scripts/bench-mcount: the same loop as examples/rust's `parloop T N`, traced by
//! rftrace 0.3.2 (crates.io) instead of vftrace. Build it instrumented like the example:
//!
//! ```sh
//! RUSTC_BOOTSTRAP=1 cargo rustc --release -- -Zinstrument-mcount -Cforce-frame-pointers=yes
//! target/release/rftrace-peer 1 10000000
//! ```
//!
//! The events stay in memory (not dumped: rftrace's dump is not what is measured); the number
//! recorded is printed so that a too small buffer shows.
use std::hint::black_box;

// The backend crate (mcount) has no Rust API: name it so that its static library is linked.
extern crate rftrace;

#[path = "../../parloop.rs"]
mod parloop;

/// Exactly examples/rust/src/main.rs's `tiny`.
#[inline(never)]
fn tiny(x: u64) -> u64 {
    black_box(x + 1)
}

/// Exactly examples/rust/src/main.rs's `call_loop`.
#[inline(never)]
fn call_loop(n: u64) -> u64 {
    let mut acc = 0;
    for i in 0..n {
        acc = tiny(acc ^ i);
    }
    acc
}

extern "C" {
    /// Exported by rftrace's backend: events recorded so far (all threads).
    fn rftrace_backend_get_events_index() -> usize;
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: rftrace-peer THREADS CALLS"))
        .collect();
    let [threads, calls] = args[..] else {
        eprintln!("usage: rftrace-peer THREADS CALLS");
        std::process::exit(2)
    };
    // Entry and exit per call, plus the stack-height reserve rftrace keeps free and a margin
    // for the few other instrumented functions.
    let events = 2 * calls * threads + 1000 + 4096;
    let _events = rftrace_frontend::init(events as usize, false);
    rftrace_frontend::enable();
    let timings = parloop::run(threads as usize, calls, call_loop);
    rftrace_frontend::disable();
    parloop::print(calls, &timings);
    // SAFETY: a plain read of the backend's atomic event counter.
    let recorded = unsafe { rftrace_backend_get_events_index() };
    eprintln!("rftrace: {recorded} events recorded in a buffer of {events}");
}
