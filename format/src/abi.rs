//! The C ABI between the backend and the frontends that set it up (the in-process library,
//! the preload library, a kernel's glue): the tracing options and the platform callbacks, in
//! one place because the backend is a separately built static library and cannot share Rust
//! types with its callers any other way. `no_std`.

/// Facts about the calling thread, filled by [`Platform::thread_info`].
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ThreadInfo {
    pub pid: u32,
    pub tid: u64,
    /// The thread's own stack, `[stack_lo, stack_hi)`; both 0 if unknown. With it the backend
    /// tells a `longjmp` on this stack from a switch to another stack (a coroutine, a signal
    /// stack) and a stale "busy" mark from a live one.
    pub stack_lo: usize,
    pub stack_hi: usize,
}

/// What the backend asks of the system it runs on. Every callback is optional; without it the
/// backend falls back to something safe. Callbacks run inside mcount's slow path with tracing
/// suspended on the calling thread (they may be instrumented themselves), possibly inside a
/// signal handler: they must be async-signal-safe.
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub struct Platform {
    /// Fills the calling thread's ids and stack. Called once when a thread first records.
    pub thread_info: Option<extern "C" fn(out: *mut ThreadInfo)>,
    /// Called once after a thread registered, e.g. to run `vftrace_backend_thread_exit` when
    /// it ends.
    pub thread_started: Option<extern "C" fn()>,
    /// The signal stack the thread runs on now, `[lo, hi)` written to `out`; returns 0 if it is
    /// not on one.
    pub signal_stack: Option<extern "C" fn(out: *mut [usize; 2]) -> i32>,
    /// Lets time pass while a thread waits for a free chunk (`Wait` mode).
    pub wait: Option<extern "C" fn()>,
    /// Says why the shadow stack cannot go on and ends the program. Without it: `ud2`.
    pub fatal: Option<extern "C" fn(message: *const u8, len: usize) -> !>,
}

/// `-F`/`-N` actions of a [`FilterRange`].
pub mod action {
    /// `-F`: trace this function and its callees.
    pub const ONLY: u32 = 1;
    /// `-N`: do not trace this function nor its callees.
    pub const NEVER: u32 = 2;
}

/// A function's address range, `[start, end)`, and what to do with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct FilterRange {
    pub start: u64,
    pub end: u64,
    pub action: u32,
    pub _pad: u32,
}

/// The tracing options.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Config {
    /// Deepest recorded level + 1; 0 means the shadow stack's depth.
    pub max_depth: u32,
    pub _pad: u32,
    /// Calls shorter than this many TSC ticks are dropped; 0: keep every call.
    pub time_threshold: u64,
    /// Sorted by `start`, not overlapping; may be null when `filter_count` is 0.
    pub filters: *const FilterRange,
    pub filter_count: usize,
}

// SAFETY: the filter table is immutable after init and lives for the rest of the program.
unsafe impl Sync for Config {}
// SAFETY: as above.
unsafe impl Send for Config {}

impl Config {
    pub const NONE: Config = Config {
        max_depth: 0,
        _pad: 0,
        time_threshold: 0,
        filters: core::ptr::null(),
        filter_count: 0,
    };
}

/// Where the backend keeps a thread's shadow stack, for tools that read it from outside
/// (`vftrace profile` walking an instrumented guest's stacks finds the trampoline in every
/// traced frame and needs the real return addresses). The backend checks at compile time that
/// its state has this layout.
pub mod shadow_layout {
    /// The thread-local word (local-exec TLS) holding the address of the thread's state, 0
    /// before the thread first records.
    pub const TLS_SYMBOL: &str = "vftrace_thread_state";
    /// In the state: the number of frames in use (u32).
    pub const DEPTH_OFFSET: usize = 8;
    /// In the state: the frames, oldest first (after a base frame whose slot is usize::MAX).
    pub const FRAMES_OFFSET: usize = 168;
    pub const FRAME_BYTES: usize = 40;
    /// In a frame: the return address the trampoline replaced, and the slot it was in.
    pub const FRAME_RET: usize = 0;
    pub const FRAME_SLOT: usize = 8;
    pub const MAX_DEPTH: usize = 1024;
}
