//! Wrapping the unwinder. An unwinder cannot step through the return trampoline (it has no
//! unwind information, and the real return address is in the shadow stack), so before
//! anything walks this thread's stack the tracer puts the hooked return addresses back, and
//! afterwards hooks the surviving frames again (the backend does both; see its `shadow.rs`).
//! C++ `throw` and `rethrow`, cleanup pads that resume an unwind, Rust panics, and stack walks
//! (`_Unwind_Backtrace`, used by Rust backtraces) all enter libgcc's unwinder through the
//! functions wrapped here; `__cxa_begin_catch` tells where a C++ handler caught, so that the
//! catching function is hooked again at once.
//!
//! In a program that links vftrace statically these are weak definitions that call the shared
//! libgcc_s/libstdc++ ones: a fully static program links libgcc_eh's strong definitions
//! instead, and exceptions through traced frames are then not supported there. In the
//! preload library (feature `preload`) they are ordinary exported functions.
use crate::backend;
use std::ffi::{c_int, c_void, CStr};
use std::sync::atomic::{AtomicUsize, Ordering::*};

/// A function of the next object in the lookup order (the one we wrap), found once.
pub struct Next {
    name: &'static CStr,
    addr: AtomicUsize,
}

impl Next {
    pub const fn new(name: &'static CStr) -> Next {
        Next {
            name,
            addr: AtomicUsize::new(0),
        }
    }

    /// Its address; ends the program if there is none (a wrapper was called, so somebody
    /// expects the real function).
    pub fn get(&self) -> usize {
        let a = self.addr.load(Relaxed);
        if a != 0 {
            return a;
        }
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name.
        let found = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) } as usize;
        if found == 0 {
            let msg = format!(
                "vftrace: {} is wrapped but not found in any later library\n",
                self.name.to_string_lossy()
            );
            // SAFETY: write(2) and abort have no preconditions.
            unsafe {
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::abort();
            }
        }
        self.addr.store(found, Relaxed);
        found
    }
}

static RAISE: Next = Next::new(c"_Unwind_RaiseException");
static RESUME: Next = Next::new(c"_Unwind_Resume");
static RESUME_OR_RETHROW: Next = Next::new(c"_Unwind_Resume_or_Rethrow");
static BACKTRACE: Next = Next::new(c"_Unwind_Backtrace");
static BEGIN_CATCH: Next = Next::new(c"__cxa_begin_catch");

type ExceptionFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type BacktraceFn = unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int;
type CatchFn = unsafe extern "C" fn(*mut c_void) -> *mut c_void;

/// `_Unwind_RaiseException`: a C++ throw, a Rust panic.
pub unsafe extern "C" fn raise_exception(exception: *mut c_void) -> c_int {
    backend::unwind_begin();
    // SAFETY: the real function has this signature; forwarded argument.
    unsafe { std::mem::transmute::<usize, ExceptionFn>(RAISE.get())(exception) }
}

/// `_Unwind_Resume`: a cleanup pad (destructors) continues an unwind. The cleanup code may have
/// hooked frames again.
pub unsafe extern "C" fn resume(exception: *mut c_void) {
    backend::unwind_begin();
    // SAFETY: as above; it does not return.
    unsafe { std::mem::transmute::<usize, ExceptionFn>(RESUME.get())(exception) };
}

/// `_Unwind_Resume_or_Rethrow`: `throw;` in C++.
pub unsafe extern "C" fn resume_or_rethrow(exception: *mut c_void) -> c_int {
    backend::unwind_begin();
    // SAFETY: as above.
    unsafe { std::mem::transmute::<usize, ExceptionFn>(RESUME_OR_RETHROW.get())(exception) }
}

/// `_Unwind_Backtrace`: a stack walk that does not unwind.
pub unsafe extern "C" fn backtrace(trace: *mut c_void, arg: *mut c_void) -> c_int {
    backend::unwind_begin();
    // SAFETY: as above.
    let r = unsafe { std::mem::transmute::<usize, BacktraceFn>(BACKTRACE.get())(trace, arg) };
    backend::walk_end();
    r
}

/// `__cxa_begin_catch`, reached from a stub that passes the catching function's stack
/// pointer (`sp`: the stub's caller's, after the call returns).
pub unsafe extern "C" fn begin_catch(exception: *mut c_void, sp: usize) -> *mut c_void {
    // SAFETY: as above.
    let r = unsafe { std::mem::transmute::<usize, CatchFn>(BEGIN_CATCH.get())(exception) };
    backend::unwind_caught(sp);
    r
}

// The weak definitions of a statically linked program. `vftrace_unwind_stubs` marks where
// they are, so that init can tell whether they are the ones the program uses.
#[cfg(not(feature = "preload"))]
core::arch::global_asm!(
    ".pushsection .text.vftrace_unwind_stubs,\"ax\",@progbits",
    ".globl vftrace_unwind_stubs",
    ".hidden vftrace_unwind_stubs",
    "vftrace_unwind_stubs:",
    ".weak _Unwind_RaiseException",
    ".type _Unwind_RaiseException,@function",
    "_Unwind_RaiseException: jmp {raise}",
    ".weak _Unwind_Resume",
    ".type _Unwind_Resume,@function",
    "_Unwind_Resume: jmp {resume}",
    ".weak _Unwind_Resume_or_Rethrow",
    ".type _Unwind_Resume_or_Rethrow,@function",
    "_Unwind_Resume_or_Rethrow: jmp {rethrow}",
    ".weak _Unwind_Backtrace",
    ".type _Unwind_Backtrace,@function",
    "_Unwind_Backtrace: jmp {backtrace}",
    ".weak __cxa_begin_catch",
    ".type __cxa_begin_catch,@function",
    "__cxa_begin_catch: lea rsi, [rsp + 8]",
    "jmp {catch}",
    ".popsection",
    raise = sym raise_exception,
    resume = sym resume,
    rethrow = sym resume_or_rethrow,
    backtrace = sym backtrace,
    catch = sym begin_catch,
);

/// Whether the program's unwinder calls go through the wrappers (false in a static program
/// whose libgcc_eh won). Taking the addresses also makes the linker keep the stubs.
#[cfg(not(feature = "preload"))]
pub fn wrapped() -> bool {
    extern "C" {
        fn _Unwind_RaiseException();
        fn vftrace_unwind_stubs();
    }
    let used = _Unwind_RaiseException as *const () as usize;
    let ours = vftrace_unwind_stubs as *const () as usize;
    std::hint::black_box(used) == ours
}

#[cfg(feature = "preload")]
pub fn wrapped() -> bool {
    true
}

#[cfg(feature = "preload")]
mod exported {
    use std::ffi::{c_int, c_void};

    #[no_mangle]
    pub unsafe extern "C" fn _Unwind_RaiseException(exception: *mut c_void) -> c_int {
        // SAFETY: forwarded.
        unsafe { super::raise_exception(exception) }
    }

    #[no_mangle]
    pub unsafe extern "C" fn _Unwind_Resume(exception: *mut c_void) {
        // SAFETY: forwarded.
        unsafe { super::resume(exception) }
    }

    #[no_mangle]
    pub unsafe extern "C" fn _Unwind_Resume_or_Rethrow(exception: *mut c_void) -> c_int {
        // SAFETY: forwarded.
        unsafe { super::resume_or_rethrow(exception) }
    }

    #[no_mangle]
    pub unsafe extern "C" fn _Unwind_Backtrace(trace: *mut c_void, arg: *mut c_void) -> c_int {
        // SAFETY: forwarded.
        unsafe { super::backtrace(trace, arg) }
    }

    /// # Safety
    /// The C++ runtime's contract for `__cxa_begin_catch`.
    #[unsafe(naked)]
    #[no_mangle]
    pub unsafe extern "C" fn __cxa_begin_catch() {
        core::arch::naked_asm!("lea rsi, [rsp + 8]", "jmp {catch}", catch = sym super::begin_catch)
    }
}
