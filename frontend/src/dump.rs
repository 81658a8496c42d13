//! Linux and Hermit: starting the tracer in this process, and writing what it recorded as a
//! complete uftrace directory. Under `vftrace record` the process records into the recorder's
//! pool instead, and the recorder writes the directory. What differs between the systems is in
//! `os/`.
use crate::backend::{self, InitError, Mode};
use crate::calibrate::{self, ClockPair};
use crate::os;
use crate::setup::{self, CHUNK_BYTES};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use vftrace_format::clock::ClockMap;
use vftrace_format::dir::TraceDirWriter;
use vftrace_format::pool::read::{self as pool_read, SlotInfo, ThreadRecords};
use vftrace_format::pool::{Pool, PoolParams};
use vftrace_format::record::Record;
use vftrace_format::task::TaskLine;

/// What `init` set up, needed again by `dump`.
struct Session {
    pool: Pool,
    start: ClockPair,
    mode: Mode,
    pid: u32,
    sid: String,
    /// The pool is `vftrace record`'s: the recorder writes the trace.
    recorded: bool,
    /// The program's unwinder calls go through the tracer's wrappers (exceptions and panics
    /// through traced frames work).
    unwinder_wrapped: bool,
}

static SESSION: OnceLock<Session> = OnceLock::new();

/// Maps a trace buffer of `capacity_bytes` shared by all threads (populated now: a page fault
/// per chunk filled would cost the traced program more than the tracing) and starts the clock
/// calibration. Tracing starts with
/// [`crate::enable`]. Under `vftrace record` the buffer is the recorder's instead.
pub fn init(capacity_bytes: usize, mode: Mode) -> Result<(), InitError> {
    if SESSION.get().is_some() {
        return Err(InitError::AlreadyInitialized);
    }
    let platform = os::platform();
    let (arena, arena_len) = os::state_arena()?;
    let (pool, recorded) = match os::recorder_pool()? {
        Some(attached) => {
            // SAFETY: the recorder's pool stays mapped for the program; the arena is ours.
            unsafe { setup::attach(attached.pool, arena, arena_len, &attached.config, &platform) }?;
            (attached.pool, true)
        }
        None => {
            let mem = os::map_pool(capacity_bytes)?;
            let params = PoolParams::new(CHUNK_BYTES, mode.pool_mode());
            // SAFETY: both blocks are fresh, zeroed, page aligned and kept for the program.
            let pool = unsafe {
                setup::start(
                    mem,
                    capacity_bytes,
                    arena,
                    arena_len,
                    &params,
                    &backend::Config::NONE,
                    &platform,
                )
            }?;
            (pool, false)
        }
    };
    let start = calibrate::sample();
    let pid = std::process::id();
    let sid = vftrace_format::dir::make_session_id((u64::from(pid) << 40) ^ start.tsc);
    os::install(fork_child);
    let ticket = os::announce_session(&pool, &sid, start.tsc, recorded);
    backend::set_session(ticket);
    let _ = SESSION.set(Session {
        pool,
        start,
        mode,
        pid,
        sid,
        recorded,
        unwinder_wrapped: os::unwinder_wrapped(),
    });
    Ok(())
}

/// In a forked child: the backend takes its own slot; the recorder (if any) hears of the fork.
extern "C" fn fork_child() {
    backend::fork_child();
    if let Some(s) = SESSION.get() {
        os::announce_fork(&s.pool, s.recorded);
    }
}

/// What a dump wrote.
#[derive(Clone, Debug, Default)]
pub struct DumpSummary {
    pub threads: usize,
    pub records: u64,
    /// Records dropped (stop-when-full) or overwritten (ring).
    pub lost: u64,
    /// Calls not recorded (shadow stack full, a signal while the tracer ran).
    pub unrecorded: u64,
    /// Calls whose return was not seen (longjmp, unwinding): exit time estimated.
    pub closed_early: u64,
    pub tsc_hz: f64,
    /// False if exceptions and panics through traced frames cannot work in this program (its
    /// unwinder is linked statically, so the tracer cannot wrap it).
    pub unwinder_wrapped: bool,
    /// Under `vftrace record`: the recorder writes the trace directory, not the dump.
    pub recorded: bool,
}

impl DumpSummary {
    /// One line for people: what a dump holds and what it could not hold.
    pub fn describe(&self) -> String {
        describe(self)
    }
}

fn describe(s: &DumpSummary) -> String {
    if s.recorded {
        return "recorded by `vftrace record` (it writes the trace directory)".into();
    }
    let mut line = format!("{} threads, {} records", s.threads, s.records);
    if s.lost > 0 {
        line += &format!(", {} records lost (buffer full)", s.lost);
    }
    if s.unrecorded > 0 {
        line += &format!(
            ", {} calls not recorded (shadow stack full or signal during tracing)",
            s.unrecorded
        );
    }
    if !s.unwinder_wrapped {
        line += "; note: the unwinder is linked statically, so exceptions and panics through traced frames are not supported";
    }
    if s.closed_early > 0 {
        line += &format!(", {} calls left without a return (longjmp, exception, stack switch; exit time estimated)", s.closed_early);
    }
    line
}

/// Stops tracing and writes everything recorded so far as a uftrace directory at `dir`
/// (created; an existing trace directory there is replaced). Under `vftrace record` nothing is
/// written here: the recorder has the trace.
#[inline(always)]
pub fn dump(dir: impl AsRef<Path>) -> io::Result<DumpSummary> {
    // Generic code is compiled (and instrumented) in the caller's crate; keep it to this line.
    dump_to(dir.as_ref())
}

/// Stops tracing before a dump allocates anything (the program's allocator may be traced).
/// Under `vftrace record` tracing goes on: the recorder has the trace, and the pool's switch
/// is shared with every process of the recording.
pub(crate) fn quiesce() {
    if !SESSION.get().is_some_and(|s| s.recorded) {
        crate::disable();
    }
}

#[inline(never)]
fn dump_to(dir: &Path) -> io::Result<DumpSummary> {
    quiesce();
    let session = SESSION
        .get()
        .ok_or_else(|| io::Error::other("vftrace::dump called before vftrace::init"))?;
    if session.recorded {
        return Ok(DumpSummary {
            recorded: true,
            unwinder_wrapped: session.unwinder_wrapped,
            ..DumpSummary::default()
        });
    }
    if std::process::id() != session.pid {
        return Err(io::Error::other(format!(
            "this is a forked child (pid {}) of the traced process {}; an in-process trace is \
             written by the process that called vftrace::init (record the whole family with \
             `vftrace record`)",
            std::process::id(),
            session.pid
        )));
    }
    write_directory(session, dir)
}

fn write_directory(session: &Session, dir: &Path) -> io::Result<DumpSummary> {
    let clock = calibrate::clock_map_since(session.start);
    let pool = &session.pool;
    let exe: PathBuf = os::executable()?;
    let exename = exe.to_string_lossy().into_owned();
    let mut writer = TraceDirWriter::create(dir)?;
    let mut summary = DumpSummary {
        tsc_hz: clock.tsc_hz,
        unwinder_wrapped: session.unwinder_wrapped,
        ..DumpSummary::default()
    };
    // Threads by tid (the kernel reuses tids: a later thread with the same tid continues the
    // same file), each in the order it started.
    let mut by_tid: BTreeMap<u32, Vec<SlotInfo>> = BTreeMap::new();
    for i in 0..pool.slot_count() {
        if let Some(s) = pool_read::slot_info(pool, i).filter(|s| s.pid == session.pid) {
            by_tid.entry(s.tid as u32).or_default().push(s);
        }
    }
    let chunks = pool_read::chunks_by_thread(pool);
    let mut tasks = vec![TaskLine::Session {
        timestamp_ns: clock.ns_base,
        pid: session.pid,
        sid: session.sid.clone(),
        exename: exename.clone(),
    }];
    let mut first_seen: Vec<(u64, u32)> = Vec::new();
    for (&tid, threads) in by_tid.iter_mut() {
        threads.sort_by_key(|s| s.start_tsc);
        let mut first = None;
        for s in threads.iter() {
            let (t, written) = write_thread(
                &mut writer,
                pool,
                &clock,
                tid,
                s,
                chunks.get(&s.serial),
                session.mode,
            )?;
            first = first.or(t);
            summary.threads += 1;
            summary.records += written;
            summary.lost += s.lost + s.overwritten;
            summary.unrecorded += s.unrecorded;
            summary.closed_early += s.closed_early;
        }
        first_seen.push((first.unwrap_or(u64::MAX), tid));
    }
    // uftrace lists tasks in the order they started; a TASK line must not be later than the
    // task's first record.
    first_seen.sort();
    let tids: Vec<u32> = first_seen.iter().map(|&(_, t)| t).collect();
    for &(first, tid) in &first_seen {
        tasks.push(TaskLine::Task {
            timestamp_ns: first.min(clock.ns_base),
            tid,
            pid: session.pid,
        });
    }
    writer.write_tasks(&tasks)?;
    let map = os::memory_map(&exename)?;
    writer.write_map(&session.sid, &map)?;
    os::write_module_symbols(&mut writer, &exe, &exename, &map)?;
    let mut info = os::info(exename);
    info.tids = tids;
    // The program has not ended yet: its exit status is not known here.
    info.set_exit_status(None);
    info.set_elapsed_ns(calibrate::monotonic_ns().saturating_sub(session.start.mono_ns));
    writer.write_info(&info)?;
    writer.write_clock(&clock)?;
    writer.finish()?;
    Ok(summary)
}

/// Copies one thread's records, converted to nanoseconds, with LOST records where records
/// are missing. Returns the time of its first record and how many records were written.
fn write_thread(
    writer: &mut TraceDirWriter,
    pool: &Pool,
    clock: &ClockMap,
    tid: u32,
    slot: &SlotInfo,
    chunks: Option<&Vec<pool_read::ChunkRef>>,
    mode: Mode,
) -> io::Result<(Option<u64>, u64)> {
    let mut written = 0u64;
    let mut conv = ThreadRecords::new(clock.converter(), mode == Mode::Ring, slot.overwritten);
    let mut raw = Vec::new();
    let mut records: Vec<Record> = Vec::new();
    for c in chunks.into_iter().flatten() {
        raw.clear();
        records.clear();
        pool_read::read_chunk(pool, c, &mut raw)
            .map_err(|e| io::Error::other(format!("thread {tid}: {e}")))?;
        conv.push(&raw, &mut records).map_err(|(k, e)| {
            io::Error::other(format!("thread {tid}, chunk {}, record {k}: {e}", c.index))
        })?;
        written += records.len() as u64;
        writer.write_records(tid, records.drain(..))?;
    }
    let end_ns = clock.converter().convert(slot.end_tsc.max(slot.start_tsc));
    conv.finish(slot.missing_records(), end_ns, &mut records);
    written += records.len() as u64;
    writer.write_records(tid, records.drain(..))?;
    Ok((conv.first_ns(), written))
}
