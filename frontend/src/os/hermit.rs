//! A Hermit unikernel: application, std and kernel are one static PIE image, which uhyve
//! loaded somewhere (ASLR) and which has no file inside the guest.
use std::io;
use std::path::{Path, PathBuf};
use vftrace_format::dir::TraceDirWriter;
use vftrace_format::info::Info;
use vftrace_format::maps::{self, MapEntry};

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

pub extern "C" fn thread_id() -> u64 {
    // SAFETY: sys_gettid reads the current task's id without locks or stack switches.
    let tid = unsafe { sys_gettid() };
    u64::try_from(tid).unwrap_or(u64::MAX)
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
pub fn write_executable_symbols(
    _writer: &mut TraceDirWriter,
    _exe: &Path,
    _exename: &str,
    _map: &[MapEntry],
) -> io::Result<()> {
    Ok(())
}
