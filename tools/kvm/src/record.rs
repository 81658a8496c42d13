//! Recording: a private tracefs instance with the x86-tsc clock, read through `trace_pipe` by
//! a reader thread that streams normalized events into the capture file, while a command
//! runs, for a duration, or until SIGINT/SIGTERM/SIGHUP.
//!
//! With a command (or `pids`), the instance records only the VMM's threads: `set_event_pid`
//! holds the command's pid (which the child writes itself, between fork and exec, so nothing
//! before it is missed and nothing of other processes slips in) and `event-fork` adds every
//! process and thread it creates. That also limits the scheduler's events (`sched_switch`
//! where the VMM's thread leaves or takes a CPU, `sched_wakeup` of its threads), which a busy
//! host would otherwise flood the capture with. `record-tgid` gives each thread's process.
//!
//! Cleanup order on every exit path (return, error, unwinding panic): the child is stopped,
//! then the reader thread is stopped and joined (closing trace_pipe, which would keep the
//! instance busy), then the instance is removed. Locals drop in reverse declaration order,
//! which is how `record` gets that order.

use crate::capture::CaptureWriter;
use crate::clock::{measure_sync, tsc_hz_between, MeasuredSync, MIN_CALIBRATION_NS};
use crate::event_text::parse_kind;
use crate::process::{received_signal, ChildGuard, SignalGuard};
use crate::trace_line::{parse_line, Line};
use crate::tracefs::{Instance, Tracefs};
use crate::KvmEvent;
use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vftrace_format::output::OutputFile;

/// Events recorded when none are asked for. `kvm_write_tsc_offset` is always added.
pub const DEFAULT_EVENTS: &[&str] = &[
    "kvm_pio",
    "kvm_mmio",
    "kvm_exit",
    "kvm_entry",
    "kvm_hypercall",
    "kvm_msr",
    "kvm_userspace_exit",
    "kvm_fpu",
];

/// The scheduler's view of the VMM's threads, added to the default events when the
/// recording is limited to them (a command or `pids`): without that limit they would record
/// every task switch of the host.
pub const SCHED_EVENTS: &[&str] = &["sched:sched_switch", "sched:sched_wakeup"];

/// The event every capture needs: it carries the guest's TSC offset.
const TSC_OFFSET_EVENT: &str = "kvm_write_tsc_offset";

/// Clock pair samples per measurement (the tightest is kept).
const SYNC_SAMPLES: usize = 64;

#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// Event names (`kvm_pio` or `system:name`); empty means [`DEFAULT_EVENTS`].
    pub events: Vec<String>,
    pub output: PathBuf,
    /// Ring buffer size per CPU.
    pub buffer_kb: u32,
    /// Stop after this long (also terminating the command if it still runs).
    pub duration: Option<Duration>,
    /// Program and arguments to run while recording; empty: record until the duration ends
    /// or a signal arrives. Only it and its descendants are recorded.
    pub command: Vec<String>,
    /// Processes already running (a VMM) to record, with their threads and descendants;
    /// without a command or pids every process's KVM events are recorded (and no scheduler
    /// events).
    pub pids: Vec<u32>,
    /// Show the event count on stderr while recording (only when stderr is a terminal).
    pub progress: bool,
}

impl Default for RecordOptions {
    fn default() -> Self {
        RecordOptions {
            events: Vec::new(),
            output: PathBuf::from("host.kvm"),
            buffer_kb: 8192,
            duration: None,
            command: Vec::new(),
            pids: Vec::new(),
            progress: true,
        }
    }
}

/// Why recording stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    CommandExited,
    DurationElapsed,
    /// SIGINT, SIGTERM or SIGHUP (the number).
    Signal(i32),
}

#[derive(Debug)]
pub struct RecordSummary {
    pub output: PathBuf,
    /// The tracefs instance used (already removed).
    pub instance: PathBuf,
    pub events: u64,
    pub lost_events: u64,
    /// Events enabled, as `system:name`.
    pub enabled_events: Vec<String>,
    /// Requested events this kernel does not have (skipped).
    pub missing_events: Vec<String>,
    /// trace_pipe lines that could not be read (kept as comments in the capture).
    pub unreadable_lines: u64,
    pub stop: StopReason,
    /// The command's exit status, when a command was run.
    pub command_status: Option<ExitStatus>,
    pub tsc_hz: Option<f64>,
    pub elapsed: Duration,
}

/// Records host KVM events into `opts.output` (see the module docs of [`crate::capture`] for
/// the format). Needs root and tracefs; says what to do otherwise.
pub fn record(opts: &RecordOptions) -> Result<RecordSummary> {
    if opts.buffer_kb == 0 {
        bail!("buffer size must be at least 1 KiB per CPU");
    }
    let tracefs = Tracefs::locate_or_mount()?;
    // A temporary beside the output until the recording has begun: a recording that cannot
    // start (no such command, no buffer) leaves a previous output as it was.
    let mut output = OutputFile::create(&opts.output, &[])
        .with_context(|| format!("cannot create {}", opts.output.display()))?;
    let mut writer = CaptureWriter::new(BufWriter::with_capacity(1 << 20, output.writer()?))?;

    for stale in tracefs.remove_stale_instances() {
        eprintln!("vftrace kvm: note: removed instance {stale} left by a recorder that was killed");
    }
    // Catch stop signals before there is anything to clean up; one during setup stops the
    // recording as soon as it begins.
    let _signals = SignalGuard::install();
    // Drop order matters (see the module docs): instance, then reader, then child, declared
    // in this order so they drop the other way round.
    let instance = tracefs.create_instance()?;
    instance.set_tracing_on(false)?;
    instance.set_clock("x86-tsc")?;
    instance.set_buffer_kb(opts.buffer_kb)?;
    let filtered = !opts.command.is_empty() || !opts.pids.is_empty();
    if filtered {
        // Processes and threads the recorded ones create are recorded too.
        instance.write("options/event-fork", "1")?;
    }
    // Which process each thread belongs to (the VMM of a vCPU thread): harmless if missing.
    let _ = instance.write("options/record-tgid", "1");
    let (enabled_events, missing_events) = enable_events(&instance, &opts.events, filtered)?;

    writer.info("instance", instance.name())?;
    writer.info("events", &enabled_events.join(" "))?;
    if !missing_events.is_empty() {
        writer.info("missing", &missing_events.join(" "))?;
    }
    if !opts.command.is_empty() {
        writer.info("command", &opts.command.join(" "))?;
    }
    if filtered {
        let whom = if opts.command.is_empty() {
            format!("processes {:?}", opts.pids)
        } else {
            "the command".to_string()
        };
        writer.info(
            "filter",
            &format!("{whom}, its threads and descendants only"),
        )?;
    }
    for pid in &opts.pids {
        instance.write("set_event_pid", &threads_of(*pid)?)?;
    }
    let start_sync = measure_sync(SYNC_SAMPLES);
    writer.sync(start_sync.sync, Some(start_sync.width_ticks))?;

    let mut reader = Reader::start(&instance, writer)?;
    let started = Instant::now();
    // After a stop signal during setup, do not start the command at all.
    let command = if received_signal().is_some() {
        &[][..]
    } else {
        &opts.command[..]
    };
    let mut child = if command.is_empty() {
        instance.set_tracing_on(true)?;
        ChildGuard::spawn(command)?
    } else {
        // The child starts the recording of itself, see the module docs.
        let join = JoinFromChild::new(&instance)?;
        ChildGuard::spawn_with(command, move || join.run())?
    };
    // From here on the file holds a recording; even if something fails or the recorder is
    // killed it is kept, flushed at least every second (a reader reports it as cut short and
    // can read it leniently).
    output
        .publish()
        .with_context(|| format!("cannot create {}", opts.output.display()))?;

    let mut progress = Progress::new(opts.progress);
    // None: the reader stopped by itself, which only an error makes it do (reported below).
    let stop = loop {
        if let Some(signal) = received_signal() {
            break Some(StopReason::Signal(signal));
        }
        if child.exited()? {
            break Some(StopReason::CommandExited);
        }
        if opts.duration.is_some_and(|d| started.elapsed() >= d) {
            break Some(StopReason::DurationElapsed);
        }
        if reader.finished() {
            break None;
        }
        progress.show(reader.events.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(20));
    };
    // A signal or the duration ends the command too; a terminal's Ctrl-C already reached it.
    let command_status = child.finish(match stop {
        Some(StopReason::Signal(s)) => s,
        _ => libc::SIGTERM,
    })?;
    instance.set_tracing_on(false)?;
    let elapsed = started.elapsed();
    let end_sync = measure_end_sync(start_sync);
    let outcome = reader.stop_and_join()?;
    let stop = stop.context("the trace_pipe reader stopped unexpectedly")?;
    progress.clear();
    let mut writer = outcome.writer;
    writer.sync(end_sync.sync, Some(end_sync.width_ticks))?;

    let per_cpu_lost = instance.lost_events_per_cpu()?;
    // The `[LOST N EVENTS]` lines report losses the counters also count; the counters are
    // complete, the lines only a fallback.
    let counted = per_cpu_lost.iter().map(|(_, n)| n).sum::<u64>();
    let lost_events = counted.max(outcome.lost_lines);
    for (cpu, lost) in &per_cpu_lost {
        writer.info("lost_cpu", &format!("{cpu} {lost}"))?;
    }
    writer.info(
        "lost_reported_in_trace_pipe",
        &outcome.lost_lines.to_string(),
    )?;
    if let Some(status) = command_status {
        writer.info("status", &describe_status(status))?;
    }
    let tsc_hz = tsc_hz_between(start_sync.sync, end_sync.sync);
    let events = writer.event_count();
    let out = writer.finish(tsc_hz.map(|hz| (hz, "sync")), lost_events)?;
    out.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .context("cannot write the capture")?;
    output.commit().context("cannot write the capture")?;

    let instance_path = instance.path().to_path_buf();
    instance.remove()?;
    if lost_events > 0 {
        eprintln!(
            "vftrace kvm: warning: the kernel dropped {lost_events} events (ring buffer full); \
             record fewer events or raise the buffer size (--buffer-kb)"
        );
    }
    if outcome.unreadable_lines > 0 {
        eprintln!("vftrace kvm: warning: {} trace_pipe lines could not be read; they are kept as comments", outcome.unreadable_lines);
    }
    Ok(RecordSummary {
        output: opts.output.clone(),
        instance: instance_path,
        events,
        lost_events,
        enabled_events,
        missing_events,
        unreadable_lines: outcome.unreadable_lines,
        stop,
        command_status,
        tsc_hz,
        elapsed,
    })
}

/// The end clock pair; after a short recording, waits until the pairs are far enough apart
/// for the frequency to be trusted (a short calibration).
fn measure_end_sync(start: MeasuredSync) -> MeasuredSync {
    let since_start = crate::monotonic_ns().saturating_sub(start.sync.mono_ns);
    if since_start < MIN_CALIBRATION_NS {
        std::thread::sleep(Duration::from_nanos(
            MIN_CALIBRATION_NS - since_start + 1_000_000,
        ));
    }
    measure_sync(SYNC_SAMPLES)
}

/// `exit N` or `signal N`, as stored in the capture.
pub(crate) fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "unknown".into(),
    }
}

/// The thread ids of process `pid`, one per line (for `set_event_pid`).
fn threads_of(pid: u32) -> Result<String> {
    let dir = format!("/proc/{pid}/task");
    let mut out = String::new();
    for entry in std::fs::read_dir(&dir).with_context(|| {
        format!("cannot list {dir}: is process {pid} running (and visible to root)?")
    })? {
        let name = entry?.file_name();
        out.push_str(&name.to_string_lossy());
        out.push('\n');
    }
    Ok(out)
}

/// What the recorded command's child does between fork and exec: it appends its own pid to
/// the instance's `set_event_pid` and turns tracing on. Only async-signal-safe calls (open,
/// write, close, getpid) on paths prepared before the fork.
struct JoinFromChild {
    pid_file: CString,
    tracing_on: CString,
}

impl JoinFromChild {
    fn new(instance: &Instance) -> Result<JoinFromChild> {
        let path = |file: &str| {
            CString::new(instance.path().join(file).as_os_str().as_bytes())
                .context("a tracefs path with a NUL byte")
        };
        Ok(JoinFromChild {
            pid_file: path("set_event_pid")?,
            tracing_on: path("tracing_on")?,
        })
    }

    fn run(&self) -> std::io::Result<()> {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        let mut digits = [0u8; 12];
        let mut at = digits.len() - 1;
        digits[at] = b'\n';
        let mut rest = pid;
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        // Without O_TRUNC a write adds to the list.
        write_file(
            &self.pid_file,
            &digits[at..],
            libc::O_WRONLY | libc::O_APPEND,
        )?;
        write_file(&self.tracing_on, b"1", libc::O_WRONLY)
    }
}

/// open + write + close, async-signal-safe.
fn write_file(path: &CString, bytes: &[u8], flags: libc::c_int) -> std::io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `bytes` is valid for `bytes.len()` bytes; `fd` is ours.
    let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    let result = if written == bytes.len() as isize {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    };
    // SAFETY: `fd` is open and closed once.
    unsafe { libc::close(fd) };
    result
}

/// Enables the tsc-offset event and the requested (or default) ones; returns (enabled,
/// missing), with a note on stderr for each missing one. The scheduler's events join the
/// default set when the recording is `filtered` to the VMM's threads.
fn enable_events(
    instance: &Instance,
    requested: &[String],
    filtered: bool,
) -> Result<(Vec<String>, Vec<String>)> {
    let mut wanted: Vec<String> = vec![TSC_OFFSET_EVENT.into()];
    if requested.is_empty() {
        wanted.extend(DEFAULT_EVENTS.iter().map(|e| e.to_string()));
        if filtered {
            wanted.extend(SCHED_EVENTS.iter().map(|e| e.to_string()));
        } else {
            eprintln!(
                "vftrace kvm: note: recording every process's KVM events and no scheduler events; \
                 give a command (-- CMD) or --pid to record the VMM's threads with the scheduler's view of them"
            );
        }
    } else {
        wanted.extend(requested.iter().cloned());
    }
    let mut enabled = Vec::new();
    let mut missing = Vec::new();
    for event in wanted {
        let full = if event.contains(':') {
            event.clone()
        } else {
            format!("kvm:{event}")
        };
        if enabled.contains(&full) || missing.contains(&full) {
            continue;
        }
        if instance.enable_event(&event)? {
            enabled.push(full);
        } else if event == TSC_OFFSET_EVENT {
            bail!(
                "tracefs has no kvm:kvm_write_tsc_offset event: the kvm module is not loaded \
                 (load it with `modprobe kvm_intel` or `modprobe kvm_amd`; /dev/kvm must exist)"
            );
        } else {
            eprintln!("vftrace kvm: note: this kernel has no event {full}; skipping it");
            missing.push(full);
        }
    }
    Ok((enabled, missing))
}

// --- the trace_pipe reader -----------------------------------------------------------------

type Writer = CaptureWriter<BufWriter<File>>;

struct ReaderOutcome {
    writer: Writer,
    lost_lines: u64,
    unreadable_lines: u64,
}

/// The thread reading trace_pipe into the capture; stopped and joined when dropped.
struct Reader {
    stop: Arc<AtomicBool>,
    events: Arc<AtomicU64>,
    handle: Option<JoinHandle<Result<ReaderOutcome>>>,
}

/// Read size. The kernel returns at most a page of text per read of trace_pipe.
const READ_CHUNK: usize = 64 * 1024;

/// The capture is flushed to its file at least this often, so a recorder killed by SIGKILL
/// leaves what it had read but for the last moments.
const FLUSH_INTERVAL: Duration = Duration::from_millis(500);

/// Pause after trace_pipe runs dry. A read as soon as data arrives (poll) would fetch a few
/// events per system call and cost about three times the CPU of this batching; the ring
/// buffer easily holds 10 ms of events.
const BATCH_INTERVAL: Duration = Duration::from_millis(10);

impl Reader {
    fn start(instance: &Instance, writer: Writer) -> Result<Reader> {
        let path = instance.path().join("trace_pipe");
        // Non-blocking: the thread can notice the stop request, and drains to EAGAIN at the end.
        let pipe = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(AtomicU64::new(0));
        let (thread_stop, thread_events) = (stop.clone(), events.clone());
        let handle = std::thread::Builder::new()
            .name("trace_pipe".into())
            .spawn(move || read_pipe(pipe, writer, &thread_stop, &thread_events))
            .context("cannot start the reader thread")?;
        Ok(Reader {
            stop,
            events,
            handle: Some(handle),
        })
    }

    fn finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Asks the thread to read what is left and stop; call after tracing is off.
    fn stop_and_join(&mut self) -> Result<ReaderOutcome> {
        self.stop.store(true, Ordering::SeqCst);
        let handle = self.handle.take().context("reader already stopped")?;
        match handle.join() {
            Ok(result) => result.context("reading trace_pipe failed"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn read_pipe(
    mut pipe: File,
    mut writer: Writer,
    stop: &AtomicBool,
    events: &AtomicU64,
) -> Result<ReaderOutcome> {
    let mut buffer = vec![0u8; READ_CHUNK];
    let mut pending: Vec<u8> = Vec::new();
    let mut outcome_lost = 0u64;
    let mut unreadable = 0u64;
    let mut flushed: Option<Instant> = None;
    // Threads whose `task` line is written.
    let mut known_tasks = std::collections::HashSet::new();
    loop {
        if flushed.is_none_or(|t| t.elapsed() >= FLUSH_INTERVAL) {
            writer.flush().context("cannot write the capture")?;
            flushed = Some(Instant::now());
        }
        // Read the stop request before reading, so a read that finds the pipe empty after
        // the request saw everything written before tracing was turned off.
        let stopping = stop.load(Ordering::SeqCst);
        match pipe.read(&mut buffer) {
            Ok(0) if stopping => break,
            Ok(0) => std::thread::sleep(BATCH_INTERVAL),
            Ok(n) => {
                pending.extend_from_slice(&buffer[..n]);
                let complete = pending
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                for raw in pending[..complete].split(|&b| b == b'\n') {
                    if raw.is_empty() {
                        continue;
                    }
                    let text = String::from_utf8_lossy(raw);
                    match parse_line(&text) {
                        Ok(Line::Event(e)) => {
                            if let Some(tgid) = e.tgid {
                                if known_tasks.insert(e.pid) {
                                    writer.task(e.pid, tgid)?;
                                }
                            }
                            let event = KvmEvent {
                                tsc: e.tsc,
                                cpu: e.cpu,
                                pid: e.pid,
                                comm: e.comm.to_string(),
                                kind: parse_kind(e.name, e.fields),
                            };
                            writer.event(&event)?;
                            events.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Line::Lost { count }) => {
                            outcome_lost = outcome_lost.saturating_add(count.unwrap_or(1))
                        }
                        Ok(Line::Ignored) => {}
                        Err(message) => {
                            unreadable += 1;
                            writer.info(
                                "#",
                                &format!("unreadable trace_pipe line ({message}): {text}"),
                            )?;
                        }
                    }
                }
                pending.drain(..complete);
                if pending.len() > crate::capture::MAX_LINE {
                    bail!(
                        "trace_pipe produced a line over {} bytes",
                        crate::capture::MAX_LINE
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if stopping {
                    break;
                }
                std::thread::sleep(BATCH_INTERVAL);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("cannot read trace_pipe"),
        }
    }
    Ok(ReaderOutcome {
        writer,
        lost_lines: outcome_lost,
        unreadable_lines: unreadable,
    })
}

// --- progress ----------------------------------------------------------------------------

/// `recording: N events (T, Ctrl-C stops)` on a terminal's stderr (indicatif).
struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    fn new(wanted: bool) -> Progress {
        let bar = if wanted && std::io::stderr().is_terminal() {
            let style = indicatif::ProgressStyle::with_template(
                "vftrace kvm: recording: {msg} events, {elapsed} (Ctrl-C stops)",
            )
            .expect("a valid template");
            indicatif::ProgressBar::new_spinner().with_style(style)
        } else {
            indicatif::ProgressBar::hidden()
        };
        Progress { bar }
    }

    fn show(&mut self, events: u64) {
        self.bar.set_message(events.to_string());
        self.bar.tick();
    }

    fn clear(&mut self) {
        self.bar.finish_and_clear();
    }
}
