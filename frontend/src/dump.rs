//! Linux and Hermit: allocating the buffer, naming threads, and writing a complete uftrace
//! directory. What differs between the two is in `os/`.
use crate::backend::{self, init_with_buffer, InitError, Mode, ThreadView};
use crate::calibrate::{self, ClockPair};
use crate::os;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use vftrace_format::dir::TraceDirWriter;
use vftrace_format::record::{Record, ThreadRepair, RECORD_SIZE};
use vftrace_format::task::TaskLine;

/// What `init` measured, needed again by `dump`.
struct Session {
    start: ClockPair,
    mode: Mode,
}

static SESSION: OnceLock<Session> = OnceLock::new();

/// Allocates a trace buffer of `capacity_bytes` shared by all threads, starts the clock
/// calibration and installs the panic hook. Tracing starts with [`crate::enable`].
pub fn init(capacity_bytes: usize, mode: Mode) -> Result<(), InitError> {
    if SESSION.get().is_some() {
        return Err(InitError::AlreadyInitialized);
    }
    init_with_buffer(allocate_pool(capacity_bytes)?, mode, os::thread_id)?;
    let _ = SESSION.set(Session {
        start: calibrate::sample(),
        mode,
    });
    install_panic_hook();
    Ok(())
}

/// The trace buffer, kept for the rest of the program. Zeroed memory from the allocator is
/// mapped lazily, so a large buffer costs only the pages threads really fill.
fn allocate_pool(bytes: usize) -> Result<&'static mut [u8], InitError> {
    let layout = std::alloc::Layout::from_size_align(bytes.max(1), 64)
        .map_err(|_| InitError::OutOfMemory)?;
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return Err(InitError::OutOfMemory);
    }
    // SAFETY: `ptr` points to `bytes` zeroed bytes that are never freed nor aliased.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, bytes) })
}

/// The unwinder cannot step through the return trampoline, so before a panic unwinds, the
/// thread's hooked return addresses are put back. Calls that unwind are closed in the trace
/// when the backend next finds their frames gone.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        backend::unhook_current_thread();
        previous(info);
    }));
}

/// What a dump wrote.
#[derive(Clone, Debug, Default)]
pub struct DumpSummary {
    pub threads: usize,
    pub records: u64,
    /// Records dropped (stop-when-full) or overwritten (ring).
    pub lost: u64,
    /// Calls not traced because the shadow stack was full.
    pub unhooked: u64,
    pub tsc_hz: f64,
}

/// Stops tracing and writes everything recorded so far as a uftrace directory at `dir`
/// (created; an existing trace directory there is replaced).
#[inline(always)]
pub fn dump(dir: impl AsRef<Path>) -> io::Result<DumpSummary> {
    // Generic code is compiled (and instrumented) in the caller's crate; keep it to this line.
    dump_to(dir.as_ref())
}

#[inline(never)]
fn dump_to(dir: &Path) -> io::Result<DumpSummary> {
    let session = SESSION
        .get()
        .ok_or_else(|| io::Error::other("vftrace::dump called before vftrace::init"))?;
    crate::disable();
    let clock = calibrate::clock_map_since(session.start);
    let start_ns = clock.ns_base;

    let pid = std::process::id();
    let exe: PathBuf = os::executable()?;
    let exename = exe.to_string_lossy().into_owned();
    let sid = format!("{:016x}", (u64::from(pid) << 40) ^ session.start.tsc);

    let mut writer = TraceDirWriter::create(dir)?;
    let mut summary = DumpSummary {
        tsc_hz: clock.tsc_hz,
        ..DumpSummary::default()
    };
    let mut tasks = vec![TaskLine::Session {
        timestamp_ns: start_ns,
        pid,
        sid: sid.clone(),
        exename: exename.clone(),
    }];
    let mut tids = Vec::new();
    for thread in backend::threads() {
        let stats = thread.stats();
        let tid = stats.tid as u32;
        summary.threads += 1;
        summary.records += stats.records;
        summary.lost += stats.lost + stats.overwritten;
        summary.unhooked += stats.unhooked;
        let first_ns = write_thread(&mut writer, thread, session.mode, &clock)?;
        tids.push(tid);
        tasks.push(TaskLine::Task {
            timestamp_ns: first_ns.map_or(start_ns, |t| t.min(start_ns)),
            tid,
            pid,
        });
    }
    // uftrace lists tasks in the order they started; the backend knows them newest first.
    tids.reverse();
    tasks[1..].reverse();

    writer.write_tasks(&tasks)?;
    let map = os::memory_map(&exename)?;
    writer.write_map(&sid, &map)?;
    os::write_executable_symbols(&mut writer, &exe, &exename, &map)?;
    let mut info = os::info(exename);
    info.tids = tids;
    writer.write_info(&info)?;
    writer.write_clock(&clock)?;
    writer.finish()?;
    Ok(summary)
}

/// Copies one thread's records, converted to nanoseconds, with LOST records where events were
/// dropped. Returns the time of the first record.
fn write_thread(
    writer: &mut TraceDirWriter,
    thread: ThreadView,
    mode: Mode,
    clock: &vftrace_format::clock::ClockMap,
) -> io::Result<Option<u64>> {
    let stats = thread.stats();
    let tid = stats.tid as u32;
    let to_ns = clock.converter();
    let mut raw = vec![[0u8; RECORD_SIZE]; 64 * 1024];
    let mut done = 0u64;
    let mut first_ns = None;
    let mut last = None::<Record>;
    let mut repair = ThreadRepair::default();
    loop {
        let n = thread.read(done, &mut raw);
        if n == 0 {
            break;
        }
        done += n as u64;
        let mut records = Vec::with_capacity(n + 1);
        for bytes in &raw[..n] {
            let mut r = Record::from_bytes(bytes)
                .map_err(|e| io::Error::other(format!("thread {tid}: {e}")))?;
            r.time = to_ns.convert(r.time);
            // Ring mode: exits whose entries were overwritten go (see ThreadRepair).
            if !repair.accept(&mut r) {
                continue;
            }
            if first_ns.is_none() {
                first_ns = Some(r.time);
                // Ring mode: the oldest records were overwritten; say so before the first kept one.
                if mode == Mode::Ring && stats.overwritten > 0 {
                    records.push(Record::lost(r.time, r.depth, stats.overwritten));
                }
            }
            records.push(r);
            last = Some(r);
        }
        writer.write_records(tid, records)?;
    }
    // Stop-when-full: everything after the last kept record was dropped.
    if stats.lost > 0 {
        let (time, depth) = last.map_or((clock.ns_base, 0), |r| (r.time, r.depth));
        writer.write_records(tid, [Record::lost(time, depth, stats.lost)])?;
    }
    Ok(first_ns)
}
