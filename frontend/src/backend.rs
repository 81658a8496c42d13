//! Safe wrappers over the backend's C ABI (see backend/src/lib.rs for the contracts).
use core::fmt;

pub use ffi::ThreadStats;

mod ffi {
    pub use vftrace_format::stats::ThreadStats;

    extern "C" {
        pub fn vftrace_backend_init(
            pool: *mut u8,
            len: usize,
            mode: u32,
            thread_id: Option<extern "C" fn() -> u64>,
        ) -> i32;
        pub fn vftrace_backend_enable();
        pub fn vftrace_backend_disable();
        pub fn vftrace_backend_thread_count() -> usize;
        pub fn vftrace_backend_thread_stats(index: usize, out: *mut ThreadStats) -> i32;
        pub fn vftrace_backend_thread_read(
            index: usize,
            first: u64,
            out: *mut [u8; 16],
            max: usize,
        ) -> usize;
        pub fn vftrace_backend_unhook_thread();
        pub fn vftrace_backend_rdtsc() -> u64;
    }
}

/// What happens when a thread's buffer is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Keep the first events; later ones are counted as lost (uftrace LOST record at the end).
    StopWhenFull,
    /// Keep the newest events; overwritten ones are reported as a LOST record at the start.
    Ring,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    AlreadyInitialized,
    BufferTooSmall,
    /// Allocation of the trace buffer failed (std only).
    OutOfMemory,
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InitError::AlreadyInitialized => "vftrace is already initialized",
            InitError::BufferTooSmall => "the trace buffer is too small (at least 8 KiB)",
            InitError::OutOfMemory => "could not allocate the trace buffer",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for InitError {}

/// Gives the backend its memory. Kernels use this directly; with std, [`crate::init`]
/// allocates the buffer and also sets up thread ids and clock calibration.
pub fn init_with_buffer(
    pool: &'static mut [u8],
    mode: Mode,
    thread_id: extern "C" fn() -> u64,
) -> Result<(), InitError> {
    let mode = match mode {
        Mode::StopWhenFull => 0,
        Mode::Ring => 1,
    };
    // SAFETY: the pool is 'static and exclusively ours; the backend keeps it forever.
    match unsafe { ffi::vftrace_backend_init(pool.as_mut_ptr(), pool.len(), mode, Some(thread_id)) }
    {
        0 => Ok(()),
        -1 => Err(InitError::AlreadyInitialized),
        _ => Err(InitError::BufferTooSmall),
    }
}

/// Starts tracing (all threads).
pub fn enable() {
    // SAFETY: no preconditions.
    unsafe { ffi::vftrace_backend_enable() }
}

/// Stops hooking new calls. Calls already hooked still record their exits.
pub fn disable() {
    // SAFETY: no preconditions.
    unsafe { ffi::vftrace_backend_disable() }
}

/// The raw TSC, read exactly as the backend reads it.
pub fn rdtsc() -> u64 {
    // SAFETY: no preconditions.
    unsafe { ffi::vftrace_backend_rdtsc() }
}

/// Puts back the real return addresses of the current thread's hooked frames, so that an
/// unwinder can walk the stack (used by the panic hook).
pub fn unhook_current_thread() {
    // SAFETY: acts on the calling thread's own stack only.
    unsafe { ffi::vftrace_backend_unhook_thread() }
}

/// One traced thread's buffer.
#[derive(Clone, Copy, Debug)]
pub struct ThreadView {
    index: usize,
}

impl ThreadView {
    pub fn stats(&self) -> ThreadStats {
        let mut s = ThreadStats::default();
        // SAFETY: `s` is a valid out-pointer; the index came from `threads()`.
        unsafe { ffi::vftrace_backend_thread_stats(self.index, &mut s) };
        s
    }

    /// Copies records (raw TSC times), oldest first, skipping the first `first` held.
    pub fn read(&self, first: u64, out: &mut [[u8; 16]]) -> usize {
        // SAFETY: `out` holds `out.len()` records.
        unsafe { ffi::vftrace_backend_thread_read(self.index, first, out.as_mut_ptr(), out.len()) }
    }
}

/// Every thread that has recorded (or tried to record) an event.
pub fn threads() -> impl Iterator<Item = ThreadView> {
    // SAFETY: no preconditions.
    let n = unsafe { ffi::vftrace_backend_thread_count() };
    (0..n).map(|index| ThreadView { index })
}
