//! Traced by vftrace when built with instrumentation (see README.md):
//!
//! ```sh
//! RUSTC_BOOTSTRAP=1 cargo rustc --release -p vftrace-example-rust -- \
//!     -Zinstrument-mcount -Cforce-frame-pointers=yes
//! target/release/vftrace-example-rust demo -o vftrace.data && uftrace replay -d vftrace.data
//! ```
//!
//! Scenarios (the tests run each and check the trace):
//! - `demo`: nested calls, recursion, a 10 ms sleep and four worker threads.
//! - `threads N M`: N threads each make M calls of `leaf`.
//! - `deep N`: recursion N deep (deeper than the shadow stack if N > 1024).
//! - `panic`: a panic unwinds through traced frames and is caught; work goes on.
//! - `toggle`: tracing is disabled and enabled again in the middle of the run.
//! - `loop N`: N calls of a tiny function (the benchmark).
//! - `parloop T N`: T threads each make N calls of the same tiny function at once and print
//!   ns per call by wall and thread CPU clock (scripts/bench-mcount).
//!
//! Options: `-o DIR` (default vftrace.data), `--buffer BYTES`, `--ring`, `--no-trace`.
use std::hint::black_box;
use std::time::Duration;

#[path = "../../bench/parloop.rs"]
mod parloop;

#[inline(never)]
fn fib(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        // black_box keeps both calls real calls (no accumulator loop), so counts are exact.
        black_box(fib(n - 1)) + black_box(fib(n - 2))
    }
}

#[inline(never)]
fn parse_config(text: &str) -> Vec<u64> {
    text.split(',').map(parse_number).collect()
}

#[inline(never)]
fn parse_number(s: &str) -> u64 {
    s.trim().parse().unwrap_or(0)
}

#[inline(never)]
fn insertion_sort(v: &mut [u64]) {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && less(v[j], v[j - 1]) {
            v.swap(j, j - 1);
            j -= 1;
        }
    }
}

#[inline(never)]
fn less(a: u64, b: u64) -> bool {
    a < b
}

#[inline(never)]
fn sleep_10ms() {
    std::thread::sleep(Duration::from_millis(10));
}

#[inline(never)]
fn leaf(x: u64) -> u64 {
    black_box(x.wrapping_mul(2654435761) >> 7)
}

#[inline(never)]
fn worker(calls: u64) -> u64 {
    let mut acc = 0;
    for i in 0..calls {
        acc ^= leaf(i);
    }
    acc
}

#[inline(never)]
fn run_threads(threads: u64, calls: u64) -> u64 {
    let handles: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || worker(calls)))
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold(0, |a, b| a ^ b)
}

#[inline(never)]
fn demo() {
    let mut numbers = parse_config("5, 3, 4, 1, 2");
    insertion_sort(&mut numbers);
    assert_eq!(numbers, [1, 2, 3, 4, 5]);
    assert_eq!(fib(5), 5);
    let before = std::time::Instant::now();
    sleep_10ms();
    // The tests compare the traced duration with this one (same clock, CLOCK_MONOTONIC).
    eprintln!("demo: sleep_10ms took {} ns", before.elapsed().as_nanos());
    run_threads(4, 3);
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if depth == 0 {
        0
    } else {
        // black_box keeps the recursion real (no loop).
        1 + black_box(recurse(depth - 1))
    }
}

#[inline(never)]
fn may_panic(depth: u32) -> u32 {
    if depth == 0 {
        panic!("vftrace example: deliberate panic");
    }
    may_panic(depth - 1) + 1
}

#[inline(never)]
fn survive_panic() -> bool {
    std::panic::catch_unwind(|| may_panic(3)).is_err()
}

#[inline(never)]
fn after_panic() -> u64 {
    fib(3)
}

#[inline(never)]
fn tiny(x: u64) -> u64 {
    black_box(x + 1)
}

#[inline(never)]
fn call_loop(n: u64) -> u64 {
    let mut acc = 0;
    for i in 0..n {
        acc = tiny(acc ^ i);
    }
    acc
}

fn usage() -> ! {
    eprintln!("usage: vftrace-example-rust [demo | threads N M | deep N | panic | toggle | loop N | parloop T N] [-o DIR] [--buffer BYTES] [--ring] [--no-trace]");
    std::process::exit(2)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take_opt = |name: &str| -> Option<String> {
        let i = args.iter().position(|a| a == name)?;
        args.remove(i);
        if i < args.len() {
            Some(args.remove(i))
        } else {
            usage()
        }
    };
    let out = take_opt("-o").unwrap_or_else(|| "vftrace.data".into());
    let buffer: usize =
        take_opt("--buffer").map_or(256 << 20, |b| b.parse().unwrap_or_else(|_| usage()));
    let flag = |args: &mut Vec<String>, name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args.remove(i))
            .is_some()
    };
    let ring = flag(&mut args, "--ring");
    let trace = !flag(&mut args, "--no-trace");
    let num = |i: usize| -> u64 {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| usage())
    };

    if trace {
        let mode = if ring {
            vftrace::Mode::Ring
        } else {
            vftrace::Mode::StopWhenFull
        };
        vftrace::init(buffer, mode).unwrap_or_else(|e| panic!("vftrace::init: {e}"));
        vftrace::enable();
    }
    let start = std::time::Instant::now();
    match args.first().map(String::as_str).unwrap_or("demo") {
        "demo" => demo(),
        "threads" => println!("threads: {}", run_threads(num(1), num(2))),
        "deep" => {
            let n = num(1);
            let got = recurse(n);
            assert_eq!(got, n);
            println!("deep: recursed {got} levels");
        }
        "toggle" => {
            // Traced, not traced, traced again.
            fib(4);
            vftrace::disable();
            insertion_sort(&mut [3, 2, 1]);
            vftrace::enable();
            println!("toggle: {}", parse_number("7"));
        }
        "panic" => {
            let caught = survive_panic();
            assert!(caught);
            println!("panic: caught, then fib(3) = {}", after_panic());
        }
        "loop" => {
            let n = num(1);
            let acc = call_loop(n);
            let ns = start.elapsed().as_nanos() as f64 / n as f64;
            println!("loop: {n} calls, {ns:.2} ns per iteration (acc {acc})");
        }
        "parloop" => {
            let calls = num(2);
            parloop::print(calls, &parloop::run(num(1) as usize, calls, call_loop));
        }
        _ => usage(),
    }
    if trace {
        let s = vftrace::dump(&out).unwrap_or_else(|e| panic!("vftrace::dump({out}): {e}"));
        eprintln!(
            "vftrace: wrote {out}: {} (TSC {:.3} MHz)",
            s.describe(),
            s.tsc_hz / 1e6
        );
    }
}
