//! The backend's platform callbacks on Linux, and the memory it runs in.
//!
//! Every callback may run inside a signal handler, inside mcount: only system calls and reads
//! of what `install` computed beforehand, no allocation, no locks (`pthread_getattr_np`, which
//! may allocate, runs only for threads other than the initial one, at their first traced call).
use crate::backend::{InitError, Platform, ThreadInfo};
use std::sync::atomic::{AtomicUsize, Ordering::*};

/// The initial thread's stack and its `pthread_t`, found at init (reading /proc once).
static MAIN_STACK: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
static MAIN_THREAD: AtomicUsize = AtomicUsize::new(0);
/// The key whose destructor tells the backend a thread ends (+1; 0 = none yet).
static EXIT_KEY: AtomicUsize = AtomicUsize::new(0);

pub fn platform() -> Platform {
    Platform {
        thread_info: Some(thread_info),
        thread_started: Some(thread_started),
        signal_stack: Some(signal_stack),
        wait: Some(wait),
        fatal: Some(fatal),
    }
}

/// Once, before tracing starts: the initial thread's stack, the thread-exit key, fork handling.
pub fn install(fork_child: extern "C" fn()) {
    // SAFETY: pthread_self has no preconditions; the attr is initialised by getattr_np and
    // destroyed after use.
    unsafe {
        let me = libc::pthread_self();
        if libc::gettid() == libc::getpid() {
            if let Some((lo, hi)) = stack_of(me) {
                MAIN_STACK[0].store(lo, Relaxed);
                MAIN_STACK[1].store(hi, Relaxed);
                MAIN_THREAD.store(me as usize, Release);
            }
        }
        let mut key: libc::pthread_key_t = 0;
        if libc::pthread_key_create(&mut key, Some(thread_ends)) == 0 {
            EXIT_KEY.store(key as usize + 1, Release);
        }
        libc::pthread_atfork(None, None, Some(fork_child));
    }
}

/// `[lo, hi)` of a thread's stack, from glibc.
///
/// # Safety
/// `thread` is a live thread of this process.
unsafe fn stack_of(thread: libc::pthread_t) -> Option<(usize, usize)> {
    // SAFETY: the attr is initialised by getattr_np and destroyed below.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(thread, &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        (ok && size > 0).then(|| (addr as usize, addr as usize + size))
    }
}

extern "C" fn thread_info(out: *mut ThreadInfo) {
    // SAFETY: plain system calls; `out` is the backend's valid out-pointer.
    unsafe {
        let me = libc::pthread_self();
        let (lo, hi) = if MAIN_THREAD.load(Acquire) == me as usize {
            (MAIN_STACK[0].load(Relaxed), MAIN_STACK[1].load(Relaxed))
        } else {
            stack_of(me).unwrap_or((0, 0))
        };
        *out = ThreadInfo {
            pid: libc::getpid() as u32,
            tid: libc::gettid() as u64,
            stack_lo: lo,
            stack_hi: hi,
        };
    }
}

/// Arms the thread-exit key for the calling thread.
extern "C" fn thread_started() {
    let key = EXIT_KEY.load(Acquire);
    if key != 0 {
        // SAFETY: the key exists; a non-null value makes glibc call the destructor.
        unsafe {
            libc::pthread_setspecific(
                (key - 1) as libc::pthread_key_t,
                std::ptr::dangling::<libc::c_void>(),
            )
        };
    }
}

extern "C" fn thread_ends(_: *mut libc::c_void) {
    crate::backend::thread_exit();
}

extern "C" fn signal_stack(out: *mut [usize; 2]) -> i32 {
    // SAFETY: sigaltstack with a null new stack only reads the current one into `ss`.
    unsafe {
        let mut ss: libc::stack_t = std::mem::zeroed();
        if libc::sigaltstack(std::ptr::null(), &mut ss) != 0 || ss.ss_flags & libc::SS_ONSTACK == 0
        {
            return 0;
        }
        *out = [ss.ss_sp as usize, ss.ss_sp as usize + ss.ss_size];
    }
    1
}

extern "C" fn wait() {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 50_000,
    };
    // SAFETY: a valid timespec; an early wake-up is harmless.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

extern "C" fn fatal(message: *const u8, len: usize) -> ! {
    let prefix = b"vftrace: cannot go on: ";
    // SAFETY: the backend passes a valid message; write(2) and abort are async-signal-safe.
    unsafe {
        libc::write(2, prefix.as_ptr().cast(), prefix.len());
        libc::write(2, message.cast(), len);
        libc::write(2, b"\n".as_ptr().cast(), 1);
        libc::abort()
    }
}

/// Zeroed private memory for the rest of the program (page aligned). `populate`: mapped in at
/// once; otherwise page by page as it is first touched.
pub fn map_private(bytes: usize, populate: bool) -> Result<*mut u8, InitError> {
    let flags = if populate {
        libc::MAP_POPULATE
    } else {
        libc::MAP_NORESERVE
    };
    // SAFETY: an anonymous private mapping; never unmapped.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes.max(1),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(InitError::OutOfMemory);
    }
    Ok(p.cast())
}

/// Room for this many threads' tracer state at once (lazily mapped: unused room costs nothing).
pub const MAX_LIVE_THREADS: usize = 4096;
