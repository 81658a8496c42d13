//! Work with known shape for tracing a Hermit application and its kernel together.
//!
//! Every function here is instrumented (`-Zinstrument-mcount`), and so are std and the kernel.
//! The program prints how often each traced function of its own must have been called, so a
//! trace can be checked against exact numbers:
//! - `fib(n)` (naive recursion) makes 2 * F(n + 1) - 1 calls of `fib`;
//! - `outer` calls `middle` MIDDLE_CALLS times, each `middle` calls `inner` INNER_CALLS times;
//! - `--threads N` (default DEFAULT_WORKER_THREADS) threads each compute `fib(WORKER_FIB_N)`;
//! - with a path argument, the results are written to that file (through uhyve's
//!   `--file-mapping`, onto the host) and read back.
//!
//! With the feature `vftrace`, everything from the start of `main` to the end of the work is
//! traced (application, std and kernel) and written as a uftrace directory to `--trace DIR`
//! (a folder the host created and mapped: the guest cannot create folders).
//!
//! Usage (under uhyve): `vftrace-hermit-demo [--threads N] [--trace DIR] [OUTPUT_FILE]`

use std::hint::black_box;
use std::thread;

const MAIN_FIB_N: u32 = 20;
const WORKER_FIB_N: u32 = 16;
const DEFAULT_WORKER_THREADS: u32 = 2;
const MIDDLE_CALLS: u64 = 10;
const INNER_CALLS: u64 = 10;

/// The trace buffer, shared by all tasks. A run with 2 workers needs 1.2 MB (75000 records);
/// under PVM the guest zeroes the buffer by emulation (about 0.1 s a MiB), so it is modest.
#[cfg(feature = "vftrace")]
const TRACE_BUFFER_BYTES: usize = 8 << 20;

// The kernel calls `mcount` from every function: exactly one of the two must define it.
#[cfg(all(feature = "vftrace", feature = "placeholder-mcount"))]
compile_error!("features vftrace and placeholder-mcount both define mcount: choose one");
#[cfg(not(any(feature = "vftrace", feature = "placeholder-mcount")))]
compile_error!(
    "the instrumented kernel needs an mcount: enable feature vftrace or placeholder-mcount"
);

#[cfg(feature = "placeholder-mcount")]
mod placeholder_mcount {
    // The instrumented kernel, std and this program call `mcount`; this one only returns, to
    // prove that the build and the boot work before a tracer is linked in.
    core::arch::global_asm!(
        ".globl mcount",
        ".type mcount, @function",
        "mcount:",
        "ret",
        ".size mcount, . - mcount",
    );
}

/// The n-th Fibonacci number by naive recursion: the call count is the point.
#[inline(never)]
fn fib(n: u32) -> u64 {
    if n < 2 {
        u64::from(n)
    } else {
        // black_box keeps both calls real calls: LLVM would otherwise turn one of them into a
        // loop (accumulator recursion elimination) and the call count would not be exact.
        black_box(fib(n - 1)) + black_box(fib(n - 2))
    }
}

/// How many calls of `fib` computing `fib(n)` makes: 2 * F(n + 1) - 1 (iteratively, so that
/// this function itself adds exactly one traced call).
fn fib_call_count(n: u32) -> u64 {
    let (mut previous, mut current) = (0u64, 1u64);
    for _ in 0..n {
        (previous, current) = (current, previous + current);
    }
    // `current` is now F(n + 1).
    2 * current - 1
}

#[inline(never)]
fn inner(i: u64, j: u64) -> u64 {
    black_box(i * 31 + j * 7)
}

#[inline(never)]
fn middle(i: u64) -> u64 {
    (0..INNER_CALLS).map(|j| inner(i, j)).sum()
}

#[inline(never)]
fn outer() -> u64 {
    (0..MIDDLE_CALLS).map(middle).sum()
}

/// Starts `count` threads computing `fib(WORKER_FIB_N)` and collects their results. Kept a
/// function of its own: in a trace it is the application's end of a known chain through std
/// (`std::thread` -> `<std::sys::thread::hermit::Thread>::new`) into the kernel (`sys_spawn2`).
#[inline(never)]
fn run_workers(count: u32) -> Vec<u64> {
    let workers: Vec<_> = (0..count)
        .map(|_| thread::spawn(|| fib(black_box(WORKER_FIB_N))))
        .collect();
    workers
        .into_iter()
        .map(|worker| worker.join().expect("worker thread panicked"))
        .collect()
}

/// Writes `report` to `path`, reads it back and checks it (file I/O through the kernel and,
/// under uhyve with `--file-mapping`, the host).
#[inline(never)]
fn write_and_verify(path: &str, report: &str) -> std::io::Result<()> {
    // No create_dir here: under uhyve 0.10 with kernel 0.11 mkdir fails with ENOSYS, so the
    // host creates the folders (build.sh does).
    std::fs::write(path, report)?;
    let read_back = std::fs::read_to_string(path)?;
    if read_back != report {
        return Err(std::io::Error::other(format!(
            "{path}: read back {} bytes that differ from the {} written",
            read_back.len(),
            report.len()
        )));
    }
    Ok(())
}

/// The command line: `[--threads N] [--trace DIR] [OUTPUT_FILE]`.
struct Options {
    worker_threads: u32,
    output: Option<String>,
    trace: Option<String>,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        worker_threads: DEFAULT_WORKER_THREADS,
        output: None,
        trace: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--threads" {
            let count = args.next().ok_or("--threads needs a number")?;
            options.worker_threads = count
                .parse()
                .map_err(|_| format!("--threads {count}: not a number"))?;
        } else if arg == "--trace" {
            options.trace = Some(args.next().ok_or("--trace needs a folder")?);
        } else if options.output.is_none() && !arg.starts_with("--") {
            options.output = Some(arg);
        } else {
            return Err(format!(
                "unexpected argument '{arg}' (usage: [--threads N] [--trace DIR] [OUTPUT_FILE])"
            ));
        }
    }
    Ok(options)
}

fn main() {
    let options = parse_options().unwrap_or_else(|error| {
        eprintln!("vftrace-hermit-demo: {error}");
        std::process::exit(2);
    });
    let worker_threads = options.worker_threads;
    #[cfg(feature = "vftrace")]
    start_tracing(options.trace.is_some());

    let fib_main = fib(black_box(MAIN_FIB_N));

    let fib_workers = run_workers(worker_threads);

    let nested = outer();

    let report = format!(
        "fib({MAIN_FIB_N}) = {fib_main}\n\
         fib({WORKER_FIB_N}) in {worker_threads} threads = {fib_workers:?}\n\
         nested sum = {nested}\n\
         expected calls: fib {fib_calls} (main {main_calls}, each worker {worker_calls}), \
         outer 1, middle {MIDDLE_CALLS}, inner {inner_calls}\n",
        fib_calls =
            fib_call_count(MAIN_FIB_N) + u64::from(worker_threads) * fib_call_count(WORKER_FIB_N),
        main_calls = fib_call_count(MAIN_FIB_N),
        worker_calls = fib_call_count(WORKER_FIB_N),
        inner_calls = MIDDLE_CALLS * INNER_CALLS,
    );
    print!("{report}");

    if let Some(path) = options.output {
        match write_and_verify(&path, &report) {
            Ok(()) => println!("wrote and verified {path}"),
            Err(error) => {
                eprintln!("file I/O failed: {error}");
                std::process::exit(1);
            }
        }
    }

    #[cfg(feature = "vftrace")]
    if let Some(dir) = &options.trace {
        finish_tracing(dir);
    }
    #[cfg(not(feature = "vftrace"))]
    if options.trace.is_some() {
        eprintln!("vftrace-hermit-demo: --trace needs the feature vftrace");
        std::process::exit(2);
    }
}

#[cfg(feature = "vftrace")]
fn start_tracing(wanted: bool) {
    if !wanted {
        return;
    }
    if let Err(error) = vftrace::init(TRACE_BUFFER_BYTES, vftrace::Mode::StopWhenFull) {
        eprintln!("vftrace-hermit-demo: vftrace::init: {error}");
        std::process::exit(1);
    }
    vftrace::enable();
}

/// Stops tracing and writes the uftrace directory (its .sym file is written by the host).
#[cfg(feature = "vftrace")]
fn finish_tracing(dir: &str) {
    match vftrace::dump(dir) {
        Ok(summary) => println!(
            "vftrace: wrote {dir}: {}, TSC {:.1} MHz",
            summary.describe(),
            summary.tsc_hz / 1e6
        ),
        Err(error) => {
            eprintln!("vftrace-hermit-demo: vftrace::dump({dir}): {error}");
            std::process::exit(1);
        }
    }
}
