//! A Hermit unikernel: application, std and kernel are one static PIE image, which uhyve
//! loaded somewhere (ASLR) and which has no file inside the guest.
use crate::backend::{state_size, InitError, Platform, ThreadInfo};
use std::io;
use std::path::{Path, PathBuf};
use vftrace_format::dir::TraceDirWriter;
use vftrace_format::info::Info;
use vftrace_format::maps::{self, MapEntry};
use vftrace_format::pool::Pool;

/// Threads (Hermit tasks) traced at once.
const MAX_LIVE_THREADS: usize = 32;

/// Names the image in the trace (uhyve: `-e VFTRACE_EXE=PATH`): the host path of the ELF
/// that `vftrace sym` later reads, so that its .sym file lands under the name uftrace wants.
pub const EXE_VAR: &str = "VFTRACE_EXE";

extern "C" {
    /// The kernel's task id (patches/hermit-kernel-0.11.0-sys-gettid.patch). Unlike
    /// ordinary Hermit system calls it stays on the caller's stack, which the backend
    /// needs: it asks from inside mcount, anywhere in the kernel.
    fn sys_gettid() -> i32;
    /// Linker-defined: the image's ELF header (where it was loaded) and its end.
    static __ehdr_start: u8;
    static _end: u8;
}

extern "C" fn thread_info(out: *mut ThreadInfo) {
    // SAFETY: sys_gettid reads the current task's id without locks or stack switches.
    let tid = unsafe { sys_gettid() };
    let tid = u64::try_from(tid).unwrap_or(u64::MAX);
    // SAFETY: the backend passes a valid out-pointer. One image, one process.
    unsafe {
        *out = ThreadInfo {
            pid: std::process::id(),
            tid,
            stack_lo: 0,
            stack_hi: 0,
        }
    };
}

pub fn platform() -> Platform {
    Platform {
        thread_info: Some(thread_info),
        ..Platform::default()
    }
}

fn zeroed(bytes: usize) -> Result<*mut u8, InitError> {
    let layout = std::alloc::Layout::from_size_align(bytes.max(1), 4096)
        .map_err(|_| InitError::OutOfMemory)?;
    // SAFETY: the layout has a non-zero size; the block is kept for the program.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return Err(InitError::OutOfMemory);
    }
    Ok(p)
}

pub fn state_arena() -> Result<(*mut u8, usize), InitError> {
    let len = MAX_LIVE_THREADS * state_size() + 64;
    Ok((zeroed(len)?, len))
}

pub fn map_pool(bytes: usize) -> Result<*mut u8, InitError> {
    zeroed(bytes)
}

pub struct Attached {
    pub pool: Pool,
    pub config: crate::backend::Config,
}

pub fn recorder_pool() -> Result<Option<Attached>, InitError> {
    Ok(None)
}

/// Tasks end inside the kernel and Hermit has no fork: nothing to arrange.
pub fn install(_fork_child: extern "C" fn()) {}

pub fn announce_session(_pool: &Pool, _sid: &str, _tsc: u64, _recorded: bool) -> u64 {
    0
}

pub fn announce_fork(_pool: &Pool, _recorded: bool) {}

/// Hermit's panics abort: there is no unwinder to wrap.
pub fn unwinder_wrapped() -> bool {
    true
}

pub fn executable() -> io::Result<PathBuf> {
    std::env::var_os(EXE_VAR).map(PathBuf::from).ok_or_else(|| {
        io::Error::other(format!(
            "{EXE_VAR} is not set: pass the image's path (uhyve -e {EXE_VAR}=PATH) so \
             that the trace names the ELF its symbols come from"
        ))
    })
}

pub fn memory_map(exename: &str) -> io::Result<Vec<MapEntry>> {
    // Taking the addresses of extern statics reads nothing.
    let start = core::ptr::addr_of!(__ehdr_start) as u64;
    let end = core::ptr::addr_of!(_end) as u64;
    Ok(maps::guest_map(start, end, exename))
}

pub fn info(exename: String) -> Info {
    let cmdline = std::env::args().collect::<Vec<_>>().join(" ");
    let mut info = Info::new(exename, cmdline);
    info.os.kernel = "Hermit".into();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    (info.cpus_online, info.cpus_possible) = (cpus, cpus);
    info
}

/// Not in the guest: building a symbol table from the multi-megabyte image takes minutes
/// under emulation. The host writes it from the same ELF: `vftrace sym ELF -d TRACE_DIR`.
pub fn write_module_symbols(
    _writer: &mut TraceDirWriter,
    _exe: &Path,
    _exename: &str,
    _map: &[MapEntry],
) -> io::Result<()> {
    Ok(())
}
