//! `libvftrace_preload.so`: what `vftrace record` preloads into an unmodified program built
//! with `gcc -pg`, `-pg -mfentry` or `rustc -Z instrument-mcount`. It provides `mcount`,
//! `__fentry__` and the trampoline (the backend, with initial-exec TLS), attaches to the
//! recorder's pool when the program starts (and again in every image it `exec`s), and wraps
//! the few library functions a tracer must see:
//!
//! - the unwinder (C++ exceptions, Rust panics, stack walks: in the frontend, `unwind.rs`),
//!   `pthread_exit` (a forced unwind) and glibc's `backtrace`, which need the real return
//!   addresses on the stack;
//! - `dlopen`, so that a library loaded at run time gets its name and symbols in the trace
//!   even if it is closed before the end;
//! - `execve`, `execvpe`, `fexecve`, `posix_spawn` and `posix_spawnp`, so that a program that
//!   runs another with an environment of its own still runs it traced.
//!
//! Nothing here may allocate in a `vfork` child (the exec wrappers run there): new
//! environments are built in memory mapped for them.
#![allow(clippy::missing_safety_doc)]

mod exec;

use std::ffi::{c_char, c_int, c_void, CStr};
use std::os::unix::ffi::OsStrExt;
use vftrace::os_linux::Next;
use vftrace_format::pool::{message_kind, DlopenMessage, MESSAGE_PAYLOAD};
// The backend's symbols (mcount, __fentry__, the trampoline, vftrace_backend_*) are exported
// from this library; referencing the crate links them.
use vftrace_backend as _;

/// Attaches to the recorder's pool before `main` (and before the constructors of the program's
/// own libraries that were loaded after this one).
#[used]
#[link_section = ".init_array"]
static START: extern "C" fn() = start;

extern "C" fn start() {
    exec::remember_environment();
    if std::env::var_os(vftrace_format::recording::POOL_VAR).is_none() {
        return;
    }
    if let Err(e) = vftrace::init(0, vftrace::Mode::StopWhenFull) {
        eprintln!("vftrace: this process is not traced: {e}");
    }
}

static DLOPEN: Next = Next::new(c"dlopen");
static PTHREAD_EXIT: Next = Next::new(c"pthread_exit");
static BACKTRACE: Next = Next::new(c"backtrace");

/// Loads a library, then tells the recorder where it is.
#[no_mangle]
pub unsafe extern "C" fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void {
    let tsc = vftrace::rdtsc();
    type DlopenFn = unsafe extern "C" fn(*const c_char, c_int) -> *mut c_void;
    // SAFETY: the real dlopen has this signature; arguments forwarded.
    let handle = unsafe { std::mem::transmute::<usize, DlopenFn>(DLOPEN.get())(filename, flags) };
    if !handle.is_null() && !filename.is_null() {
        // SAFETY: a live handle from dlopen.
        unsafe { announce_library(handle, tsc) };
    }
    handle
}

/// Posts a `Dlopen` message with the library's load bias and path.
unsafe fn announce_library(handle: *mut c_void, tsc: u64) {
    let Some(pool) = vftrace::active_pool() else {
        return;
    };
    /// The start of glibc's `struct link_map` (`<link.h>`), all this needs of it.
    #[repr(C)]
    struct LinkMap {
        l_addr: usize,
        l_name: *const c_char,
    }
    let mut map: *mut LinkMap = std::ptr::null_mut();
    // SAFETY: RTLD_DI_LINKMAP writes the handle's link_map pointer.
    if unsafe { libc::dlinfo(handle, libc::RTLD_DI_LINKMAP, &mut map as *mut _ as *mut c_void) } != 0
        || map.is_null()
    {
        return;
    }
    // SAFETY: a link_map of a loaded object; its name is a NUL-terminated path.
    let (base, name) = unsafe { ((*map).l_addr as u64, CStr::from_ptr((*map).l_name)) };
    let path = std::fs::canonicalize(std::ffi::OsStr::from_bytes(name.to_bytes()))
        .map(|p| p.into_os_string())
        .unwrap_or_else(|_| std::ffi::OsStr::from_bytes(name.to_bytes()).to_owned());
    let msg = DlopenMessage {
        // SAFETY: plain system calls.
        pid: unsafe { libc::getpid() } as u32,
        tid: unsafe { libc::gettid() } as u64,
        tsc,
        base,
        path: path.as_bytes(),
    };
    let mut buf = [0u8; MESSAGE_PAYLOAD];
    let len = msg.encode(&mut buf);
    pool.post_message(message_kind::DLOPEN, &buf[..len]);
}

/// A forced unwind: the cleanup handlers of the frames it leaves must run, so the unwinder
/// needs the real return addresses.
#[no_mangle]
pub unsafe extern "C" fn pthread_exit(retval: *mut c_void) -> ! {
    vftrace::unwind_begin();
    type ExitFn = unsafe extern "C" fn(*mut c_void) -> !;
    // SAFETY: the real pthread_exit has this signature.
    unsafe { std::mem::transmute::<usize, ExitFn>(PTHREAD_EXIT.get())(retval) }
}

/// glibc's `backtrace` walks the stack through its own copy of the unwinder.
#[no_mangle]
pub unsafe extern "C" fn backtrace(buffer: *mut *mut c_void, size: c_int) -> c_int {
    vftrace::unwind_begin();
    type BacktraceFn = unsafe extern "C" fn(*mut *mut c_void, c_int) -> c_int;
    // SAFETY: the real backtrace has this signature.
    let n = unsafe { std::mem::transmute::<usize, BacktraceFn>(BACKTRACE.get())(buffer, size) };
    vftrace::walk_end();
    n
}

/// Stops this library's tracer for good: a program that links vftrace itself traces its own
/// calls with its own copy, and calls this so that the two never record the same thread.
#[no_mangle]
pub extern "C" fn vftrace_preload_yield() {
    vftrace::disable_here();
}
