//! `vftrace record`: runs an unmodified instrumented program with vftrace's `mcount`
//! preloaded, and writes its trace as a uftrace directory while it runs.
//!
//! The program's threads fill chunks of a pool in shared memory (`vftrace_format::pool`); this
//! process drains full chunks to the threads' `TID.dat` files and hands them back, so memory
//! stays bounded by the pool while the trace grows without limit. Everything the program
//! recorded is in shared memory the moment it is written, so when the program dies in any way
//! (abort, `_exit`, SIGKILL, exec) nothing it recorded is lost. The whole process family is
//! followed: forked children are tasks of their own, exec'd images new sessions, libraries
//! loaded at run time get their symbols.
//!
//! - [`shm`]: the pool in a memfd; [`program`]: what is run and the preload library;
//!   [`child`]: running it, signals, reaping; `vftrace_format::pool::drain`: the consumer; [`finish`]: task.txt,
//!   maps, symbols, info.
pub mod child;
pub mod finish;
pub mod program;
pub mod shm;

use anyhow::Context;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use vftrace_format::clock::{ClockMap, ClockSource};
use vftrace_format::dir::TraceDirWriter;
use vftrace_format::info::UsageInfo;
use vftrace_format::output::OutputDir;
use vftrace_format::pool::{pool_flags, PoolMode, PoolParams};
use vftrace_format::recording;
use vftrace_kvm::clock::measure_sync;

/// What to do when a signal reaches the recorder (`--signal SIG@ACTION`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalAction {
    TraceOn,
    TraceOff,
    /// Write the trace now and stop recording (the program goes on untraced): what a flight
    /// recorder (`--ring`) is for.
    Finish,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub program: String,
    pub args: Vec<OsString>,
    pub data: PathBuf,
    /// Bytes of the pool.
    pub buffer: usize,
    pub chunk_bytes: u32,
    pub mode: PoolMode,
    pub max_depth: u32,
    pub time_filter_ns: u64,
    pub filters: Vec<String>,
    pub notrace: Vec<String>,
    pub start_disabled: bool,
    pub signals: Vec<(libc::c_int, SignalAction)>,
    /// No progress line and no summary.
    pub quiet: bool,
}

/// What was recorded.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub processes: usize,
    pub threads: usize,
    pub records: u64,
    pub bytes: u64,
    /// Records dropped (pool full), overwritten (ring) or never written for calls not recorded.
    pub lost: u64,
    pub unrecorded: u64,
    pub closed_early: u64,
    pub untraced_threads: u64,
    pub elapsed: Duration,
    pub warnings: Vec<String>,
}

pub struct Outcome {
    /// How the program ended (None if the recording was stopped before).
    pub ended: Option<child::Ended>,
    pub summary: Summary,
}

/// The TSC frequency is measured over at least this long before records are converted.
const CALIBRATION: Duration = Duration::from_millis(20);

pub fn record(opts: &Options) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let program = program::find(&opts.program)?;
    let preload = program::preload_library()?;
    let out = OutputDir::create(&opts.data, &[program.path.as_path()])
        .with_context(|| format!("cannot write the trace to {}", opts.data.display()))?;
    let params = PoolParams {
        chunk_bytes: opts.chunk_bytes,
        slots: 0,
        messages: 256,
        mode: opts.mode,
        flags: pool_flags::HAS_CONSUMER,
    };
    let shm = shm::SharedPool::create(opts.buffer, &params)?;
    let pool = shm.pool;
    // The TSC is calibrated before the program starts, so that the drain converts records and
    // hands chunks back from the first one on: a drain that waited would leave the program
    // taking fresh chunks meanwhile, and every fresh page costs it a fault.
    let clock_start = measure_sync(64).sync;
    std::thread::sleep(CALIBRATION);
    let clock = clock_map(clock_start);
    // The ticks of -t must be known before the program starts.
    let time_filter_ticks = (opts.time_filter_ns as f64 * clock.tsc_hz / 1e9) as u64;
    if !opts.start_disabled {
        pool.header().enabled.0.store(1, Ordering::Release);
    }

    let mut env: Vec<(String, OsString)> = vec![
        (recording::POOL_VAR.into(), shm.path.clone().into()),
        (recording::DIR_VAR.into(), out.path().as_os_str().to_owned()),
    ];
    let preload_value = match std::env::var_os("LD_PRELOAD") {
        Some(old) if !old.is_empty() => {
            let mut v = preload.as_os_str().to_owned();
            v.push(":");
            v.push(old);
            v
        }
        _ => preload.as_os_str().to_owned(),
    };
    env.push(("LD_PRELOAD".into(), preload_value));
    if opts.max_depth > 0 {
        env.push((
            recording::DEPTH_VAR.into(),
            opts.max_depth.to_string().into(),
        ));
    }
    if time_filter_ticks > 0 {
        env.push((
            recording::TIME_FILTER_VAR.into(),
            time_filter_ticks.to_string().into(),
        ));
    }
    if !opts.filters.is_empty() {
        env.push((recording::FILTER_VAR.into(), opts.filters.join("\n").into()));
    }
    if !opts.notrace.is_empty() {
        env.push((
            recording::NOTRACE_VAR.into(),
            opts.notrace.join("\n").into(),
        ));
    }

    let mut watched = vec![libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP];
    watched.extend(opts.signals.iter().map(|&(s, _)| s));
    child::catch(&watched);
    // Before the program starts: it writes its map into the directory.
    let mut writer = TraceDirWriter::create(out.path())?;
    let main_pid = child::spawn(&program.path, &opts.program, &opts.args, &env)?;

    let mut drain = vftrace_format::pool::drain::Drain::new(pool);
    drain.set_clock(clock);
    let mut progress = Progress::new(!opts.quiet);
    let mut main_ended = None;
    let mut main_usage = None;
    let mut stopped = false;
    let mut last_progress = Instant::now();
    loop {
        let drained = drain.pass(&mut writer, false)?;
        let (ended, children_left) = child::reap();
        for (pid, how, usage) in ended {
            if pid == main_pid {
                main_ended = Some(how);
                main_usage = Some(usage);
            }
        }
        let signals = child::take_signals();
        for &(sig, action) in &opts.signals {
            if signals & (1 << sig) != 0 {
                let enabled = &pool.header().enabled.0;
                match action {
                    SignalAction::TraceOn => enabled.store(1, Ordering::Release),
                    SignalAction::TraceOff => enabled.store(0, Ordering::Release),
                    SignalAction::Finish => stopped = true,
                }
            }
        }
        for sig in [libc::SIGTERM, libc::SIGHUP] {
            if signals & (1 << sig) != 0 && main_ended.is_none() {
                child::kill(main_pid, sig);
            }
        }
        // Ctrl-C reached the program too; once it is gone, it stops waiting for descendants.
        let interrupted = signals & (1 << libc::SIGINT | 1 << libc::SIGQUIT) != 0;
        if stopped || !children_left || (main_ended.is_some() && interrupted) {
            break;
        }
        if last_progress.elapsed() >= Duration::from_millis(250) {
            progress.show(&drain, main_ended.is_some());
            last_progress = Instant::now();
        }
        // A pass reads every chunk's and thread's state word (megabytes of a big pool): while
        // most of the pool is free, let published chunks gather for a millisecond instead of
        // scanning it for every few (that scan was most of the recorder's CPU time).
        let mostly_free = pool.free_chunks_hint() * 2 > u64::from(pool.chunk_count());
        if drained == 0 || mostly_free {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    progress.clear();
    if stopped {
        // Later records are of no interest: the program goes on untraced.
        pool.header().enabled.0.store(0, Ordering::Release);
    }
    drain.pass(&mut writer, true)?;
    drain.finish_threads(&mut writer)?;
    let elapsed = started.elapsed();
    let facts = finish::RunFacts {
        exe: &program.path,
        cmdline: cmdline(&opts.program, &opts.args),
        ended: main_ended,
        elapsed_ns: elapsed.as_nanos() as u64,
        usage: main_usage.map(|u| UsageInfo::from_rusage(&u)),
    };
    let dir = out.path().to_path_buf();
    let mut warnings = finish::write_metadata(&mut writer, &dir, &drain, &clock, &facts)?;
    writer.finish()?;
    warnings.extend(drain.warnings.iter().cloned());
    out.commit()
        .with_context(|| format!("cannot put the trace in place at {}", opts.data.display()))?;

    let mut summary = Summary {
        processes: drain
            .sessions
            .iter()
            .map(|s| s.pid)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        threads: drain.threads.len(),
        records: drain.threads.values().map(|t| t.written).sum(),
        bytes: drain.totals.bytes,
        elapsed,
        warnings,
        untraced_threads: pool.header().threads_untraced.0.load(Ordering::Relaxed),
        ..Summary::default()
    };
    summary.lost += drain.skipped_records;
    for t in drain.threads.values() {
        summary.lost += t.info.lost + t.info.overwritten;
        summary.unrecorded += t.info.unrecorded;
        summary.closed_early += t.info.closed_early;
    }
    drop(shm);
    Ok(Outcome {
        ended: main_ended,
        summary,
    })
}

/// TSC to CLOCK_MONOTONIC nanoseconds, measured from `start` until now.
fn clock_map(start: vftrace_kvm::ClockSync) -> ClockMap {
    let now = measure_sync(64).sync;
    let hz = (now.tsc - start.tsc) as f64 * 1e9 / (now.mono_ns - start.mono_ns).max(1) as f64;
    ClockMap::new(hz, start.tsc, start.mono_ns, ClockSource::Host)
}

fn cmdline(program: &str, args: &[OsString]) -> String {
    std::iter::once(program.to_string())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `vftrace record: 12 threads, 340.2 MiB written, 0 lost` on a terminal's stderr.
struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    fn new(wanted: bool) -> Progress {
        let bar = if wanted && std::io::stderr().is_terminal() {
            let style =
                indicatif::ProgressStyle::with_template("vftrace record: {msg} ({elapsed})")
                    .expect("a valid template");
            indicatif::ProgressBar::new_spinner().with_style(style)
        } else {
            indicatif::ProgressBar::hidden()
        };
        Progress { bar }
    }

    fn show(&mut self, drain: &vftrace_format::pool::drain::Drain, program_ended: bool) {
        let mut msg = format!(
            "{} threads, {} written",
            drain.threads.len(),
            vftrace_format::output::human_bytes(drain.totals.bytes)
        );
        if program_ended {
            msg += "; the program exited, waiting for its remaining processes (Ctrl-C stops)";
        }
        self.bar.set_message(msg);
        self.bar.tick();
    }

    fn clear(&mut self) {
        self.bar.finish_and_clear();
    }
}

impl Summary {
    /// The closing lines for the user.
    pub fn describe(&self, dir: &Path) -> String {
        let mut s = format!(
            "vftrace record: {} process(es), {} thread(s), {} records ({}) in {}, {:.3} s",
            self.processes,
            self.threads,
            self.records,
            vftrace_format::output::human_bytes(self.bytes),
            dir.display(),
            self.elapsed.as_secs_f64()
        );
        if self.lost > 0 {
            s += &format!("\n  {} records lost: the pool was full (a larger --buffer, or --block, keeps them)", self.lost);
        }
        if self.unrecorded > 0 {
            s += &format!("\n  {} calls not recorded (deeper than the shadow stack, or a signal arrived while the tracer ran)", self.unrecorded);
        }
        if self.closed_early > 0 {
            s += &format!("\n  {} calls left without a return (longjmp, exception, thread end): exit times estimated", self.closed_early);
        }
        if self.untraced_threads > 0 {
            s += &format!(
                "\n  {} threads could not be traced at all (no thread slot free)",
                self.untraced_threads
            );
        }
        for w in &self.warnings {
            s += &format!("\n  warning: {w}");
        }
        s
    }
}
