//! A Linux process: everything comes from the process itself.
use std::io;
use std::path::{Path, PathBuf};
use vftrace_format::dir::TraceDirWriter;
use vftrace_format::info::Info;
use vftrace_format::maps::{self, MapEntry};

pub extern "C" fn thread_id() -> u64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u64 }
}

pub fn executable() -> io::Result<PathBuf> {
    std::env::current_exe()
}

pub fn memory_map(_exename: &str) -> io::Result<Vec<MapEntry>> {
    maps::current_process_map()
}

pub fn info(exename: String) -> Info {
    Info::from_host(exename, cmdline())
}

fn cmdline() -> String {
    let raw = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The executable's own functions, placed where it is mapped now (PIE or not).
pub fn write_executable_symbols(
    writer: &mut TraceDirWriter,
    exe: &Path,
    exename: &str,
    map: &[MapEntry],
) -> io::Result<()> {
    let symbols = vftrace_symbols::elf_functions(exe).map_err(io::Error::other)?;
    let map_start = map
        .iter()
        .find(|m| m.path == exename)
        .map(|m| m.start)
        .ok_or_else(|| io::Error::other(format!("{exename} is not in /proc/self/maps")))?;
    let placement = vftrace_symbols::Placement {
        load_address: Some(symbols.load_address_for_map_start(map_start)),
        map_start: Some(map_start),
        path_name: Some(exename.to_string()),
    };
    let (_, syms) = vftrace_symbols::sym_symbols(&symbols, &placement).map_err(io::Error::other)?;
    writer.write_symbols(exename, &syms)
}
