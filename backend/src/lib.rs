//! The in-process half of vftrace: `mcount`, `__fentry__`, the return trampoline, the
//! per-thread shadow stack, and the producer side of the trace pool.
//!
//! Everything here runs inside the traced program, possibly inside a kernel, so it is `no_std`,
//! never allocates, takes no lock and makes no system call of its own (what it needs from the
//! system comes through the [`Platform`] callbacks). The hot path (`arch/x86_64.rs`,
//! `shadow.rs`) touches only thread-local state and the thread's own chunk; shared atomics are
//! touched once per chunk of records and when a thread starts or ends.
//!
//! Records go into the pool (`vftrace_format::pool`) that the frontend creates or attaches to:
//! its own memory, shared memory a recorder drains, or a guest's RAM the host reads. The
//! frontend reads the pool itself; this C ABI is only what the backend must do.
#![no_std]

mod arch;
mod chunk;
mod filter;
mod globals;
mod platform;
mod shadow;
mod thread;
mod unwind;

pub use filter::{action, Config, FilterRange};
pub use platform::{Platform, ThreadInfo};
pub use thread::SHADOW_STACK_DEPTH;

use core::sync::atomic::Ordering;
use filter::ConfigExt;
use vftrace_format::pool::Pool;

/// `vftrace_backend_init` results.
pub const INIT_OK: i32 = 0;
pub const INIT_ERR_ALREADY: i32 = -1;
/// The pool's header is not a valid pool of that size.
pub const INIT_ERR_POOL: i32 = -2;
/// The arena cannot hold a single thread's state.
pub const INIT_ERR_ARENA: i32 = -3;

/// Bytes one thread's state takes in the arena.
#[no_mangle]
pub extern "C" fn vftrace_backend_state_size() -> usize {
    core::mem::size_of::<thread::ThreadState>()
}

/// Hands the backend a pool (created already, by the frontend or a recorder), private memory for
/// per-thread state, the tracing options and the platform callbacks. Tracing starts when the
/// pool's `enabled` word is set (`vftrace_backend_enable`, or a recorder).
///
/// # Safety
/// `pool` points to `pool_len` bytes holding a pool, valid for the rest of the program (other
/// processes may share it). `arena` points to `arena_len` bytes of memory private to this
/// process, valid for the rest of the program and used by nobody else. `config` and `platform`
/// are valid for reads (they are copied); the filter table `config` points to stays valid. Call
/// once, before any traced code can run on another thread.
#[no_mangle]
pub unsafe extern "C" fn vftrace_backend_init(
    pool: *mut u8,
    pool_len: usize,
    arena: *mut u8,
    arena_len: usize,
    config: *const Config,
    platform: *const Platform,
) -> i32 {
    if globals::get().is_some() {
        return INIT_ERR_ALREADY;
    }
    // SAFETY: the caller's contract.
    let Ok(pool) = (unsafe { Pool::attach(pool, pool_len) }) else {
        return INIT_ERR_POOL;
    };
    // SAFETY: the caller's contract.
    let arena = unsafe { thread::StateArena::new(arena, arena_len) };
    if arena.capacity() == 0 {
        return INIT_ERR_ARENA;
    }
    // SAFETY: the caller's contract.
    let (config, platform) = unsafe {
        (
            if config.is_null() {
                Config::NONE
            } else {
                *config
            },
            if platform.is_null() {
                Platform::default()
            } else {
                *platform
            },
        )
    };
    let max_depth = match config.max_depth as usize {
        0 => SHADOW_STACK_DEPTH,
        n => n.min(SHADOW_STACK_DEPTH),
    };
    let installed = globals::install(globals::Globals {
        pool,
        config,
        platform,
        has_only: config.has_only(),
        max_depth,
        arena,
    });
    if installed {
        INIT_OK
    } else {
        INIT_ERR_ALREADY
    }
}

/// Starts recording function entries and exits (all threads).
#[no_mangle]
pub extern "C" fn vftrace_backend_enable() {
    if let Some(g) = globals::get() {
        g.pool.header().enabled.store(1, Ordering::Release);
    }
}

/// Stops hooking new calls. Calls already hooked still record their exit, so the trace stays
/// balanced.
#[no_mangle]
pub extern "C" fn vftrace_backend_disable() {
    if let Some(g) = globals::get() {
        g.pool.header().enabled.store(0, Ordering::Release);
    }
}

/// Stops this copy of the backend for good, whatever the pool says (another tracer in the same
/// process takes over: a program that links vftrace, run under `vftrace record`).
#[no_mangle]
pub extern "C" fn vftrace_backend_silence() {
    globals::silence();
}

/// Which session (the ticket of the process's `Session` message) threads registering from now
/// on belong to.
#[no_mangle]
pub extern "C" fn vftrace_backend_set_session(ticket: u64) {
    thread::SESSION.store(ticket, Ordering::Relaxed);
}

/// The calling thread is ending: closes its open frames, publishes its last chunk and frees its
/// state. The platform arranges for this to run (a TLS destructor on Linux).
#[no_mangle]
pub extern "C" fn vftrace_backend_thread_exit() {
    if let Some(g) = globals::get() {
        // SAFETY: called on the ending thread, outside the backend.
        unsafe { thread::thread_exit(g) }
    }
}

/// In a forked child, before any traced code runs: the thread keeps its shadow stack and takes
/// a slot and chunk of its own.
#[no_mangle]
pub extern "C" fn vftrace_backend_fork_child() {
    // SAFETY: the platform calls it in the child right after fork.
    unsafe { thread::fork_child() }
}

/// Before an unwinder walks the calling thread's stack (a throw, a resumed unwind, a panic,
/// `pthread_exit`, a backtrace): every hooked return address is put back, because an unwinder
/// cannot step through the trampoline. The next event closes the frames that were unwound and
/// hooks the others again.
#[no_mangle]
pub extern "C" fn vftrace_backend_unwind_begin() {
    if let Some(g) = globals::get() {
        // SAFETY: called on the thread about to unwind, outside the backend.
        unsafe { unwind::unhook_all(g) }
    }
}

/// An unwinder handed control to a handler whose stack pointer is `sp` (`__cxa_begin_catch`'s
/// caller): frames below it are over; the rest are hooked again at once.
#[no_mangle]
pub extern "C" fn vftrace_backend_unwind_caught(sp: usize) {
    if let Some(g) = globals::get() {
        // SAFETY: called on the catching thread, outside the backend.
        unsafe { unwind::caught(g, sp) }
    }
}

/// After a stack walk that did not unwind (`backtrace`, `_Unwind_Backtrace`): the return
/// addresses `vftrace_backend_unwind_begin` put back are hooked again.
#[no_mangle]
pub extern "C" fn vftrace_backend_walk_end() {
    // SAFETY: called on the thread that walked its own stack.
    unsafe { unwind::rehook_after_walk() }
}

/// The time-stamp counter, read exactly as the hot path reads it.
#[no_mangle]
pub extern "C" fn vftrace_backend_rdtsc() -> u64 {
    arch::rdtsc()
}
