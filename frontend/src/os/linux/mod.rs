//! A Linux process: everything comes from the process itself; under `vftrace record`, the pool
//! comes from the recorder.
mod platform;
pub mod recorder;
pub mod unwind;

pub use platform::{install, platform};
pub use recorder::{announce_fork, announce_session, recorder_pool};
pub use unwind::wrapped as unwinder_wrapped;

use crate::backend::{state_size, InitError};
use std::io;
use std::path::{Path, PathBuf};
use vftrace_format::dir::TraceDirWriter;
use vftrace_format::info::Info;
use vftrace_format::maps::{self, MapEntry};

/// Private memory for the tracer state of up to [`platform::MAX_LIVE_THREADS`] threads at once
/// (mapped as threads start: it is mostly never used).
pub fn state_arena() -> Result<(*mut u8, usize), InitError> {
    let len = platform::MAX_LIVE_THREADS * state_size() + 64;
    Ok((platform::map_private(len, false)?, len))
}

/// The in-process pool, mapped in whole at init: a page fault while tracing would cost the
/// thread that takes it several microseconds (measured here: 22 ns per traced call with the
/// pool mapped in, 37 ns with its pages faulted in one by one), and no consumer recycles the
/// pool's pages. The buffer's size is what the program asked for.
pub fn map_pool(bytes: usize) -> Result<*mut u8, InitError> {
    platform::map_private(bytes, true)
}

pub fn executable() -> io::Result<PathBuf> {
    std::env::current_exe()
}

pub fn memory_map(_exename: &str) -> io::Result<Vec<MapEntry>> {
    maps::current_process_map()
}

pub fn info(exename: String) -> Info {
    let mut info = Info::from_host(exename, cmdline());
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    info.usage = vftrace_format::info::UsageInfo::from_rusage(&usage);
    info.info_mask |= vftrace_format::info::USAGEINFO;
    info
}

fn cmdline() -> String {
    let raw = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Symbol files for the executable and every other instrumented module mapped now (a shared
/// library built with `-pg` that the program linked or loaded), placed where they are mapped.
pub fn write_module_symbols(
    writer: &mut TraceDirWriter,
    exe: &Path,
    exename: &str,
    map: &[MapEntry],
) -> io::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for m in map {
        if m.path.is_empty() || m.path.starts_with('[') || !seen.insert(m.path.clone()) {
            continue;
        }
        let is_exe = m.path == exename;
        let file = if is_exe {
            exe.to_path_buf()
        } else {
            PathBuf::from(&m.path)
        };
        let symbols = match vftrace_symbols::elf_functions(&file) {
            Ok(s) if is_exe || s.instrumented => s,
            Ok(_) => continue,
            Err(e) if is_exe => return Err(io::Error::other(e)),
            Err(_) => continue,
        };
        let placement = vftrace_symbols::Placement {
            load_address: Some(symbols.load_address_for_map_start(m.start)),
            map_start: Some(m.start),
            path_name: Some(m.path.clone()),
        };
        let (_, syms) =
            vftrace_symbols::sym_symbols(&symbols, &placement).map_err(io::Error::other)?;
        writer.write_symbols(&m.path, &syms)?;
    }
    if !seen.contains(exename) {
        return Err(io::Error::other(format!(
            "{exename} is not in /proc/self/maps"
        )));
    }
    Ok(())
}
