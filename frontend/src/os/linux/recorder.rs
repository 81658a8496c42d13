//! Under `vftrace record`: the pool is the recorder's shared memory (named in the environment,
//! see `vftrace_format::recording`), the options come from the environment too, and the process
//! tells the recorder when it starts (or execs) and forks, through the pool's messages.
use crate::backend::{Config, InitError};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use vftrace_format::pool::{message_kind, ForkMessage, Pool, SessionMessage, MESSAGE_PAYLOAD};
use vftrace_format::recording::{DEPTH_VAR, DIR_VAR, POOL_VAR, TIME_FILTER_VAR};

/// The recorder's pool, mapped into this process, and the options it asked for.
pub struct Attached {
    pub pool: Pool,
    pub config: Config,
}

/// The recorder's pool if this process runs under `vftrace record`.
pub fn recorder_pool() -> Result<Option<Attached>, InitError> {
    let Some(path) = std::env::var_os(POOL_VAR) else {
        return Ok(None);
    };
    let c_path = CString::new(path.as_bytes()).map_err(|_| InitError::BadRecorderPool)?;
    // SAFETY: open/fstat/mmap/close on a path we own the string of; the mapping is kept for the
    // rest of the program.
    let (mem, len) = unsafe {
        let fd = libc::open(c_path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(InitError::BadRecorderPool);
        }
        let mut st: libc::stat = std::mem::zeroed();
        let len = if libc::fstat(fd, &mut st) == 0 {
            st.st_size as usize
        } else {
            0
        };
        let mem = if len == 0 {
            libc::MAP_FAILED
        } else {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        libc::close(fd);
        if mem == libc::MAP_FAILED {
            return Err(InitError::BadRecorderPool);
        }
        (mem as *mut u8, len)
    };
    // SAFETY: the mapping is `len` bytes and stays mapped.
    let pool = unsafe { Pool::attach(mem, len) }.map_err(|_| InitError::BadRecorderPool)?;
    map_in_first_chunks(mem, len, pool.layout().data_offset);
    let number = |var: &str| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let config = Config {
        max_depth: number(DEPTH_VAR).min(u32::MAX as u64) as u32,
        time_threshold: number(TIME_FILTER_VAR),
        ..crate::filters::from_env()
    };
    yield_preloaded_tracer();
    Ok(Some(Attached { pool, config }))
}

/// How much of the pool's chunk area a process maps in when it attaches.
const MAPPED_AT_ATTACH: usize = 16 << 20;

/// Maps in the pool's tables and its first chunks before the program runs. A page fault while
/// tracing costs the faulting thread microseconds here, and the free list hands out the lowest
/// chunks first and recycled ones again (last in, first out), so a process the recorder keeps
/// up with mostly stays within them. Measured with scripts/bench-mcount's C loop under
/// `vftrace record` (ns per traced call, best..median of 10): nothing mapped in 24.5..25.6,
/// 16 MiB 23.0..24.1, 64 MiB 22.8..23.1, all 22.9..23.1. Mapping in costs about 0.6 ms per MiB
/// at every start and exec (all of the default 128 MiB: 100 ms), hence only the first 16 MiB.
/// Kernels before 5.14 have no MADV_POPULATE_WRITE: their pages fault in as they are used.
fn map_in_first_chunks(mem: *mut u8, len: usize, data_offset: usize) {
    let bytes = len.min(data_offset.saturating_add(MAPPED_AT_ATTACH));
    // SAFETY: a range of our own shared mapping; populating it changes no byte of it.
    unsafe { libc::madvise(mem.cast(), bytes, libc::MADV_POPULATE_WRITE) };
}

/// A program that links vftrace traces its own calls with its own copy; the preloaded one (if
/// `vftrace record` loaded it too) steps aside, so that no thread is recorded twice.
#[cfg(not(feature = "preload"))]
fn yield_preloaded_tracer() {
    // SAFETY: dlsym with a NUL-terminated name; the function takes no arguments.
    unsafe {
        let f = libc::dlsym(libc::RTLD_DEFAULT, c"vftrace_preload_yield".as_ptr());
        if !f.is_null() {
            std::mem::transmute::<*mut libc::c_void, extern "C" fn()>(f)();
        }
    }
}

#[cfg(feature = "preload")]
fn yield_preloaded_tracer() {}

/// Tells the recorder (through the pool) that this image starts a session, and writes its
/// memory map into the trace directory; in-process, only the message. Returns the message's
/// ticket (the session's number for the threads that register).
pub fn announce_session(pool: &Pool, sid: &str, tsc: u64, recorded: bool) -> u64 {
    let exe = std::env::current_exe().unwrap_or_default();
    let exe = exe.as_os_str().as_bytes();
    let mut sid16 = [b'0'; 16];
    let n = sid.len().min(16);
    sid16[..n].copy_from_slice(&sid.as_bytes()[..n]);
    // SAFETY: getpid/getppid have no preconditions.
    let (pid, ppid) = unsafe { (libc::getpid() as u32, libc::getppid() as u32) };
    let msg = SessionMessage {
        pid,
        ppid,
        tsc,
        sid: sid16,
        exe,
    };
    let mut buf = [0u8; MESSAGE_PAYLOAD];
    let len = msg.encode(&mut buf);
    if recorded {
        if let Some(dir) = std::env::var_os(DIR_VAR) {
            write_map_file(std::path::Path::new(&dir), sid);
        }
    }
    pool.post_message(message_kind::SESSION, &buf[..len])
}

/// The map as it is now, written beside and renamed, so that the recorder never reads half a
/// file. Failing is not fatal: the recorder reads /proc itself if the file is missing.
fn write_map_file(dir: &std::path::Path, sid: &str) {
    let name = vftrace_format::dir::map_file_name(sid);
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let ok = std::fs::File::create(&tmp)
        .and_then(|f| vftrace_format::maps::write_current_process_map(std::io::BufWriter::new(f)))
        .and_then(|_| std::fs::rename(&tmp, dir.join(&name)));
    if ok.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// In a forked child (async-signal-safe: only system calls and the pool): tells the recorder
/// which process it came from.
pub fn announce_fork(pool: &Pool, recorded: bool) {
    if !recorded {
        return;
    }
    // SAFETY: plain system calls.
    let (pid, ppid, tid) = unsafe {
        (
            libc::getpid() as u32,
            libc::getppid() as u32,
            libc::gettid() as u64,
        )
    };
    let msg = ForkMessage {
        pid,
        ppid,
        tid,
        tsc: crate::backend::rdtsc(),
    };
    let mut buf = [0u8; MESSAGE_PAYLOAD];
    let len = msg.encode(&mut buf);
    pool.post_message(message_kind::FORK, &buf[..len]);
}
