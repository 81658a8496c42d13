//! The example unikernel's own code. Everything here runs at CPL3 (natively under KVM/PVM) and
//! is built with `-Z instrument-mcount`; the CPL0 part lives in `unikernel-platform`.
#![no_std]
#![no_main]

mod markers;
mod trace;
mod workload;

use core::hint::black_box;

use markers::{Markers, Phase};
use unikernel_platform::exit::{exit, ExitCode};
use unikernel_platform::port::rdtsc;
use unikernel_platform::{println, BootInfo};
use vftrace::stream::Header;
use workload::Sizes;

const MAX_SORT_LOG2: u32 = 16;
static mut SORT_DATA: [u32; 1 << MAX_SORT_LOG2] = [0; 1 << MAX_SORT_LOG2];
static mut SORT_SCRATCH: [u32; 1 << MAX_SORT_LOG2] = [0; 1 << MAX_SORT_LOG2];

/// What the command line asks for.
struct Options {
    sizes: Sizes,
    /// Each phase runs this many times (`rounds=N`): 2.5 MB of trace per round at the default
    /// sizes, so `rounds=40` writes twelve times the pool.
    rounds: u32,
    transport: trace::Transport,
    /// Where the run fails on purpose, if it does.
    failure: Option<Failure>,
    /// Overwrite the pool's control words after the fib phase (`scribble`, with `live`).
    scribble: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// `crash`: fault (ud2) after the workload, tracing off.
    CrashAtEnd,
    /// `crash=mid`: fault inside a traced call between the sort and the helpers phase.
    CrashMidRun,
    /// `hang`: spin forever after the workload (tests the host's timeout handling).
    Hang,
}

const USAGE: &str = "fib=N sort=LOG2 helpers=N spin=N rounds=N live wait scribble crash crash=mid hang";

fn parse_cmdline(cmdline: &'static str) -> Result<Options, &'static str> {
    let mut options = Options {
        sizes: Sizes::default(),
        rounds: 1,
        transport: trace::Transport::Stream,
        failure: None,
        scribble: false,
    };
    for word in cmdline.split_ascii_whitespace() {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        let number = || value.parse::<u32>().map_err(|_| word);
        match (key, value) {
            ("fib", _) => options.sizes.fib_n = number()?.min(40),
            ("sort", _) => options.sizes.sort_log2 = number()?.min(MAX_SORT_LOG2),
            ("helpers", _) => options.sizes.helper_rounds = number()?,
            ("spin", _) => options.sizes.spin_rounds = number()?,
            ("rounds", _) => options.rounds = number()?.max(1),
            // The host drains the pool while the guest runs; `wait`: rather than drop records
            // when the pool is full, wait for the host.
            ("live", "") => options.transport = trace::Transport::Live(vftrace::WhenFull::Drop),
            ("wait", "") => options.transport = trace::Transport::Live(vftrace::WhenFull::Wait),
            ("scribble", "") => options.scribble = true,
            ("crash", "") => options.failure = Some(Failure::CrashAtEnd),
            ("crash", "mid") => options.failure = Some(Failure::CrashMidRun),
            ("hang", "") => options.failure = Some(Failure::Hang),
            _ => return Err(word),
        }
    }
    Ok(options)
}

/// A traced call that never returns: the host must keep the entry it published last.
#[inline(never)]
fn crash_now() -> ! {
    println!("unikernel: crashing on purpose in the middle of the run (ud2, tracing on)");
    // SAFETY: ud2 raises #UD, which the platform reports before exiting.
    unsafe { core::arch::asm!("ud2", options(noreturn)) }
}

/// The CPL3 entry point, reached from the platform's `iretq`.
#[no_mangle]
extern "C" fn guest_main(info: &'static BootInfo) -> ! {
    let mut markers = Markers::new();
    markers.mark(Phase::Boot);
    println!(
        "unikernel: running at CPL3, command line {:?}",
        info.cmdline()
    );
    let options = match parse_cmdline(info.cmdline()) {
        Ok(o) => o,
        Err(word) => {
            println!("unikernel: unknown command line word {word:?} (known: {USAGE})");
            exit(ExitCode::BadCommandLine)
        }
    };
    let sizes = options.sizes;
    let (tsc_hz, tsc_hz_source) = trace::tsc_hz();
    let header = Header {
        start_tsc: info.boot_tsc,
        tsc_hz,
        tsc_hz_source,
        load_address: info.image_start,
        load_end: info.image_end,
        pid: trace::GUEST_TID as u32,
        session_id: info.boot_tsc,
        image_name: b"guest",
        cmdline: info.cmdline().as_bytes(),
    };
    if let Err(e) = trace::init(options.transport) {
        println!("unikernel: vftrace cannot start: {e}");
        exit(ExitCode::Panic)
    }
    let live = options.transport != trace::Transport::Stream;
    if live && trace::announce_pool(&header).is_none() {
        println!("unikernel: cannot announce the trace pool");
        exit(ExitCode::Panic)
    }
    vftrace::enable();

    let workload_start = markers.mark(Phase::FibStart);
    let mut fib = 0;
    for _ in 0..options.rounds {
        fib = workload::fib(black_box(sizes.fib_n));
    }
    vftrace::probe(markers::probe_ids::FIB_RESULT, fib as u32);
    markers.mark(Phase::FibEnd);
    if options.scribble {
        println!("unikernel: overwriting the trace pool's control words on purpose");
        trace::scribble();
    }

    markers.mark(Phase::SortStart);
    let len = 1usize << sizes.sort_log2;
    let (data_ptr, scratch_ptr) = (&raw mut SORT_DATA, &raw mut SORT_SCRATCH);
    // SAFETY: one CPU, one thread: nothing else references the sort buffers.
    let (data, scratch) = unsafe {
        (
            &mut (&mut *data_ptr)[..len],
            &mut (&mut *scratch_ptr)[..len],
        )
    };
    let mut sorted = true;
    for _ in 0..options.rounds {
        workload::fill_pseudo_random(data);
        workload::merge_sort(data, scratch);
        sorted &= data.windows(2).all(|w| w[0] <= w[1]);
    }
    vftrace::probe(
        markers::probe_ids::SORT_CHECKED,
        (len as u32) << 1 | sorted as u32,
    );
    markers.mark(Phase::SortEnd);
    if options.failure == Some(Failure::CrashMidRun) {
        crash_now();
    }

    markers.mark(Phase::HelpersStart);
    let mut mixed = 0;
    for _ in 0..options.rounds {
        mixed = workload::helpers(black_box(sizes.helper_rounds));
    }
    let workload_end = markers.mark(Phase::HelpersEnd);

    // Only when asked for: runs without it stay exactly as they were.
    let spun = (sizes.spin_rounds > 0).then(|| {
        markers.mark(Phase::SpinStart);
        let spun = workload::spin(black_box(sizes.spin_rounds));
        markers.mark(Phase::SpinEnd);
        spun
    });
    vftrace::disable();

    println!(
        "unikernel: fib({}) = {fib}, sorted 2^{} numbers: {sorted}, helpers({}) = {mixed:#x}, {} round(s) in {} TSC ticks",
        sizes.fib_n,
        sizes.sort_log2,
        sizes.helper_rounds,
        options.rounds,
        workload_end - workload_start
    );
    if let Some(spun) = spun {
        println!("unikernel: spin({}) = {spun:#x}", sizes.spin_rounds);
    }
    match options.failure {
        Some(Failure::CrashAtEnd) => {
            println!("unikernel: crashing on purpose (ud2)");
            // SAFETY: ud2 raises #UD, which the platform reports before exiting.
            unsafe { core::arch::asm!("ud2") };
        }
        Some(Failure::Hang) => {
            println!("unikernel: hanging on purpose");
            loop {
                core::hint::spin_loop();
            }
        }
        Some(Failure::CrashMidRun) | None => {}
    }
    println!("unikernel: TSC frequency {tsc_hz} Hz ({tsc_hz_source:?}; 0 = unknown, the host supplies it)");
    if live {
        match trace::losses() {
            Some((lost, unrecorded)) => println!("unikernel: the host drained the trace while it ran; {lost} records lost, {unrecorded} calls not recorded"),
            None => println!("unikernel: the host drained the trace while it ran; the pool's header is overwritten, its counters are not read"),
        }
    }
    let stream_start = markers.mark(Phase::StreamStart);
    match trace::send(
        &header,
        markers::MARKER_PORT,
        markers.as_slice(),
        stream_start,
    ) {
        Ok(sent) => {
            let stream_end = markers.mark(Phase::StreamEnd);
            let s = sent.summary;
            println!(
                "unikernel: trace written: {} records ({} lost) of {} thread(s), {} frames, {} bytes at {:#x} in {} TSC ticks",
                s.records, s.lost, s.threads, s.frames, sent.len, sent.address, stream_end - stream_start
            );
        }
        Err(e) => {
            println!("unikernel: cannot send the trace: {e:?}");
            exit(ExitCode::Panic)
        }
    }
    println!(
        "unikernel: done, {} TSC ticks since boot",
        rdtsc() - info.boot_tsc
    );
    exit(ExitCode::Success)
}
