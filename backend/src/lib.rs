//! The in-process half of vftrace: `mcount`, the return trampoline, the per-thread shadow
//! stack and the per-thread event buffers.
//!
//! Everything here runs inside the traced program, possibly inside a kernel, so it is `no_std`,
//! never allocates and takes no lock. The hot path (`mcount` and the trampoline, see
//! `arch/x86_64.rs`) touches only thread-local state and the thread's own buffer; the only
//! shared atomic read-modify-writes happen when a thread registers or needs a new chunk.
//!
//! The C ABI exported here (`vftrace_backend_*`) is what the frontend uses; `mcount` and
//! `vftrace_return_trampoline` are what instrumented code calls.
#![no_std]

mod arch;
mod buffer;
mod shadow;

pub use buffer::{Mode, ThreadStats};

use core::sync::atomic::{AtomicBool, Ordering};

/// Set while tracing is on. `mcount` reads it first (a plain load, no read-modify-write).
pub(crate) static ENABLED: AtomicBool = AtomicBool::new(false);

/// Errors `vftrace_backend_init` can return (negative).
pub const INIT_OK: i32 = 0;
pub const INIT_ERR_ALREADY: i32 = -1;
pub const INIT_ERR_TOO_SMALL: i32 = -2;
pub const INIT_ERR_BAD_MODE: i32 = -3;

/// Hands the backend the memory all per-thread buffers are carved from.
///
/// `thread_id` is called once per thread, when the thread records its first event, to name it.
/// It may be instrumented itself: the backend does not trace while it runs.
///
/// # Safety
/// `pool` must point to `len` writable bytes that stay valid and untouched by anyone else for
/// the rest of the program. Call once.
#[no_mangle]
pub unsafe extern "C" fn vftrace_backend_init(
    pool: *mut u8,
    len: usize,
    mode: u32,
    thread_id: Option<extern "C" fn() -> u64>,
) -> i32 {
    let Some(mode) = Mode::from_u32(mode) else {
        return INIT_ERR_BAD_MODE;
    };
    // SAFETY: forwarded from the caller's contract.
    unsafe { buffer::init(pool, len, mode, thread_id) }
}

/// Starts recording function entries and exits.
#[no_mangle]
pub extern "C" fn vftrace_backend_enable() {
    if buffer::initialized() {
        ENABLED.store(true, Ordering::Release);
    }
}

/// Stops hooking new functions. Functions already hooked still record their exit, so the
/// trace stays balanced.
#[no_mangle]
pub extern "C" fn vftrace_backend_disable() {
    ENABLED.store(false, Ordering::Release);
}

/// Number of threads that have recorded at least one event (or tried to).
#[no_mangle]
pub extern "C" fn vftrace_backend_thread_count() -> usize {
    buffer::thread_count()
}

/// Fills `out` with the statistics of thread `index` (registration order, newest first).
/// Returns 0, or -1 if there is no such thread.
///
/// # Safety
/// `out` must be valid for a write of `ThreadStats`.
#[no_mangle]
pub unsafe extern "C" fn vftrace_backend_thread_stats(index: usize, out: *mut ThreadStats) -> i32 {
    match buffer::thread(index) {
        Some(t) => {
            // SAFETY: the caller guarantees `out` is writable.
            unsafe { out.write(t.stats()) };
            0
        }
        None => -1,
    }
}

/// Copies up to `max` records of thread `index`, oldest first, skipping the first `first`
/// records still held. Times are raw TSC values. Returns how many were copied.
///
/// # Safety
/// `out` must be valid for writes of `max` 16-byte records.
#[no_mangle]
pub unsafe extern "C" fn vftrace_backend_thread_read(
    index: usize,
    first: u64,
    out: *mut [u8; 16],
    max: usize,
) -> usize {
    match buffer::thread(index) {
        // SAFETY: the caller guarantees `out` holds `max` records.
        Some(t) => t.read(first, unsafe { core::slice::from_raw_parts_mut(out, max) }),
        None => 0,
    }
}

/// Called by the frontend when the current thread is about to unwind (a Rust panic): puts the
/// original return addresses back into every frame this thread has hooked, because the
/// unwinder cannot walk through the trampoline. Frames found dead later get their exit
/// recorded then.
#[no_mangle]
pub extern "C" fn vftrace_backend_unhook_thread() {
    // SAFETY: the TLS block of the current thread is valid while the thread runs.
    unsafe { shadow::unhook_all(arch::tls_block()) }
}

/// The TSC frequency cannot be known here; the frontend measures it. This reads the counter
/// the same way the hot path does, so that calibration uses the same clock.
#[no_mangle]
pub extern "C" fn vftrace_backend_rdtsc() -> u64 {
    arch::rdtsc()
}
