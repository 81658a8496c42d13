//! Safe wrappers over the backend's C ABI (see backend/src/lib.rs for the contracts; the shared
//! types are in `vftrace_format::abi`). The backend is a separately built static library (never
//! instrumented), or, in the preload library, the backend crate linked directly: either way
//! these symbols.
use core::fmt;

pub use vftrace_format::abi::{Config, Platform, ThreadInfo};

pub(crate) mod ffi {
    use vftrace_format::abi::{Config, Platform};

    extern "C" {
        pub fn vftrace_backend_state_size() -> usize;
        pub fn vftrace_backend_init(
            pool: *mut u8,
            pool_len: usize,
            arena: *mut u8,
            arena_len: usize,
            config: *const Config,
            platform: *const Platform,
        ) -> i32;
        pub fn vftrace_backend_enable();
        pub fn vftrace_backend_disable();
        #[cfg(feature = "std")]
        pub fn vftrace_backend_set_session(ticket: u64);
        pub fn vftrace_backend_silence();
        #[cfg(feature = "std")]
        pub fn vftrace_backend_thread_exit();
        #[cfg(feature = "std")]
        pub fn vftrace_backend_fork_child();
        pub fn vftrace_backend_unwind_begin();
        #[cfg(feature = "std")]
        pub fn vftrace_backend_unwind_caught(sp: usize);
        pub fn vftrace_backend_walk_end();
        pub fn vftrace_backend_rdtsc() -> u64;
    }
}

/// What happens when the trace buffer is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Keep the first events; later ones are counted as lost (uftrace LOST record at the end).
    StopWhenFull,
    /// Keep the newest events; overwritten ones are reported as a LOST record at the start.
    Ring,
}

impl Mode {
    pub(crate) fn pool_mode(self) -> vftrace_format::pool::PoolMode {
        match self {
            Mode::StopWhenFull => vftrace_format::pool::PoolMode::StopWhenFull,
            Mode::Ring => vftrace_format::pool::PoolMode::Ring,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    AlreadyInitialized,
    BufferTooSmall,
    /// Allocation of the trace buffer failed (std only).
    OutOfMemory,
    /// `vftrace record` handed over a pool this program cannot use.
    BadRecorderPool,
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InitError::AlreadyInitialized => "vftrace is already initialized",
            InitError::BufferTooSmall => {
                "the trace buffer is too small (at least 256 KiB: pool tables, one chunk, one thread's state)"
            }
            InitError::OutOfMemory => "could not allocate the trace buffer",
            InitError::BadRecorderPool => {
                "the pool `vftrace record` handed over cannot be used (a different vftrace version?)"
            }
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for InitError {}

/// Bytes one thread's tracer state takes (its shadow stack, mostly).
pub fn state_size() -> usize {
    // SAFETY: no preconditions.
    unsafe { ffi::vftrace_backend_state_size() }
}

/// Hands the backend a pool that already holds a valid pool header, the per-thread state
/// arena, the options and the platform callbacks.
///
/// # Safety
/// As `vftrace_backend_init`: both memory blocks stay valid and reserved for the tracer for the
/// rest of the program; `config.filters` likewise.
pub(crate) unsafe fn init_backend(
    pool: *mut u8,
    pool_len: usize,
    arena: *mut u8,
    arena_len: usize,
    config: &Config,
    platform: &Platform,
) -> Result<(), InitError> {
    // SAFETY: forwarded.
    match unsafe { ffi::vftrace_backend_init(pool, pool_len, arena, arena_len, config, platform) } {
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

/// Stops tracing in this process for good (not in others sharing a recorder's pool).
pub fn disable_here() {
    // SAFETY: no preconditions.
    unsafe { ffi::vftrace_backend_silence() }
}

/// The raw TSC, read exactly as the backend reads it.
pub fn rdtsc() -> u64 {
    // SAFETY: no preconditions.
    unsafe { ffi::vftrace_backend_rdtsc() }
}

#[cfg(feature = "std")]
pub(crate) fn set_session(ticket: u64) {
    // SAFETY: no preconditions.
    unsafe { ffi::vftrace_backend_set_session(ticket) }
}

#[cfg(feature = "std")]
/// The calling thread ends (the platform's TLS destructor; Hermit has none).
#[cfg_attr(target_os = "hermit", allow(dead_code))]
pub(crate) fn thread_exit() {
    // SAFETY: called on the ending thread, outside the backend.
    unsafe { ffi::vftrace_backend_thread_exit() }
}

#[cfg(feature = "std")]
/// In a forked child, before traced code runs.
pub(crate) fn fork_child() {
    // SAFETY: called in the child right after fork.
    unsafe { ffi::vftrace_backend_fork_child() }
}

/// Puts back the real return addresses of the calling thread's hooked frames before an
/// unwinder or stack walker reads its stack.
pub fn unwind_begin() {
    // SAFETY: acts on the calling thread's own stack only.
    unsafe { ffi::vftrace_backend_unwind_begin() }
}

#[cfg(feature = "std")]
/// A handler whose stack pointer is `sp` caught the unwind.
pub(crate) fn unwind_caught(sp: usize) {
    // SAFETY: acts on the calling thread's own stack only.
    unsafe { ffi::vftrace_backend_unwind_caught(sp) }
}

/// A stack walk that did not unwind is over.
pub fn walk_end() {
    // SAFETY: acts on the calling thread's own stack only.
    unsafe { ffi::vftrace_backend_walk_end() }
}
