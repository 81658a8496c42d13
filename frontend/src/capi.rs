//! The C API (see include/vftrace.h).
use crate::Mode;
use std::ffi::{c_char, c_int, CStr};

/// `mode`: 0 = stop when full, 1 = ring. Returns 0, or -1 with a message on stderr.
#[no_mangle]
pub extern "C" fn vftrace_init(capacity_bytes: usize, mode: c_int) -> c_int {
    let mode = match mode {
        0 => Mode::StopWhenFull,
        1 => Mode::Ring,
        _ => {
            eprintln!("vftrace_init: mode must be 0 (stop when full) or 1 (ring), not {mode}");
            return -1;
        }
    };
    match crate::init(capacity_bytes, mode) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vftrace_init: {e}");
            -1
        }
    }
}

#[no_mangle]
pub extern "C" fn vftrace_enable() {
    crate::enable()
}

#[no_mangle]
pub extern "C" fn vftrace_disable() {
    crate::disable()
}

/// Writes the trace to the directory `dir`. Returns 0, or -1 with a message on stderr.
///
/// # Safety
/// `dir` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn vftrace_dump(dir: *const c_char) -> c_int {
    // Before anything allocates: the program's allocator may be instrumented.
    crate::dump::quiesce();
    if dir.is_null() {
        eprintln!("vftrace_dump: directory is NULL");
        return -1;
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let dir = unsafe { CStr::from_ptr(dir) }
        .to_string_lossy()
        .into_owned();
    match crate::dump(&dir) {
        Ok(s) => {
            if s.recorded {
                eprintln!("vftrace: {}", s.describe());
            } else {
                eprintln!("vftrace: wrote {dir}: {}", s.describe());
            }
            0
        }
        Err(e) => {
            eprintln!("vftrace_dump: cannot write {dir}: {e}");
            -1
        }
    }
}
