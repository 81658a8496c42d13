//! The mcount benchmark's runner, shared by examples/rust (`parloop T N`) and the rftrace peer:
//! T threads each call `call_loop(N)` at once, and each reports nanoseconds per iteration by
//! the wall clock and by its own CPU clock (which a loaded machine disturbs much less). The
//! output has the same shape as examples/bench/loop.c's, for scripts/bench-mcount to parse.
//!
//! With `BENCH_PERF_CTL=CTL_FIFO,ACK_FIFO` (perf stat's `--control fifo:...` with `-D -1`), a
//! one-thread run enables perf's counters just around the loop, so that they count the calls and
//! not the tracer's setup or the trace dump.
use std::io::{Read, Write};
use std::sync::{Arc, Barrier};
use std::time::Instant;

/// One thread's result.
pub struct Timing {
    pub wall_ns_per_call: f64,
    pub cpu_ns_per_call: f64,
    pub acc: u64,
}

/// CPU time used by the calling thread, in nanoseconds.
fn thread_cpu_ns() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: glibc's clock_gettime (std links it) writes one timespec (two i64 on x86_64 Linux).
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.sec as f64 * 1e9 + ts.nsec as f64
}

fn timed(calls: u64, call_loop: fn(u64) -> u64, start_line: &Barrier) -> Timing {
    start_line.wait();
    let wall = Instant::now();
    let cpu = thread_cpu_ns();
    let acc = call_loop(calls);
    let cpu_ns = thread_cpu_ns() - cpu;
    let wall_ns = wall.elapsed().as_nanos() as f64;
    Timing {
        wall_ns_per_call: wall_ns / calls as f64,
        cpu_ns_per_call: cpu_ns / calls as f64,
        acc,
    }
}

/// Sends `command` to perf stat through its control fifo and waits for the acknowledgement.
fn perf_control(command: &str) {
    let Ok(fifos) = std::env::var("BENCH_PERF_CTL") else {
        return;
    };
    let (ctl, ack) = fifos
        .split_once(',')
        .expect("BENCH_PERF_CTL must be CTL_FIFO,ACK_FIFO");
    let sent = std::fs::OpenOptions::new()
        .write(true)
        .open(ctl)
        .and_then(|mut f| f.write_all(format!("{command}\n").as_bytes()));
    let mut reply = [0u8; 4];
    let acked = std::fs::File::open(ack).and_then(|mut f| f.read_exact(&mut reply));
    if let Err(e) = sent.and(acked) {
        panic!("perf control fifos {fifos}: {e}");
    }
}

/// Runs `call_loop(calls)` on `threads` threads at once (the calling thread is thread 0).
pub fn run(threads: usize, calls: u64, call_loop: fn(u64) -> u64) -> Vec<Timing> {
    if threads == 1 {
        perf_control("enable");
        let start_line = Barrier::new(1);
        let timing = timed(calls, call_loop, &start_line);
        perf_control("disable");
        return vec![timing];
    }
    let start_line = Arc::new(Barrier::new(threads));
    let others: Vec<_> = (1..threads)
        .map(|_| {
            let start_line = Arc::clone(&start_line);
            std::thread::spawn(move || timed(calls, call_loop, &start_line))
        })
        .collect();
    let mut timings = vec![timed(calls, call_loop, &start_line)];
    timings.extend(others.into_iter().map(|h| h.join().unwrap()));
    timings
}

/// Prints one line per thread.
pub fn print(calls: u64, timings: &[Timing]) {
    for (i, t) in timings.iter().enumerate() {
        println!(
            "thread {i}: {calls} calls, {:.3} ns per iteration (wall), {:.3} ns (thread cpu) (acc {})",
            t.wall_ns_per_call, t.cpu_ns_per_call, t.acc
        );
    }
}
