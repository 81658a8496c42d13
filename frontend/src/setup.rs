//! Starting the backend in memory the caller provides: a pool for the records and an arena for
//! the per-thread state (shadow stacks), cut from the same buffer or given apart. `no_std`:
//! kernels use [`init_with_buffer`]; the std frontend builds on [`start`].
use crate::backend::{self, Config, InitError, Mode, Platform, ThreadInfo};
use core::sync::atomic::{AtomicUsize, Ordering::*};
use vftrace_format::pool::{pool_flags, Pool, PoolMode, PoolParams};

/// Chunk size of in-process pools: small enough that many short threads fit (each keeps at
/// least one chunk when nobody drains the pool), large enough that taking a chunk is rare.
pub const CHUNK_BYTES: u32 = 16 << 10;

/// The pool this process records into, once the backend runs.
static POOL_BASE: AtomicUsize = AtomicUsize::new(0);
static POOL_LEN: AtomicUsize = AtomicUsize::new(0);

/// The pool the backend writes, if it was started.
#[doc(hidden)]
pub fn pool() -> Option<Pool> {
    let base = POOL_BASE.load(Acquire);
    if base == 0 {
        return None;
    }
    // SAFETY: set once by `start` from a pool that stays valid for the program.
    unsafe { Pool::attach(base as *mut u8, POOL_LEN.load(Relaxed)) }.ok()
}

/// Creates a pool in `pool_mem` and starts the backend with it.
///
/// # Safety
/// Both memory blocks are valid, reserved for the tracer for the rest of the program, and the
/// pool block is 4096-aligned and zeroed or unused; `config`'s filter table stays valid.
pub(crate) unsafe fn start(
    pool_mem: *mut u8,
    pool_len: usize,
    arena: *mut u8,
    arena_len: usize,
    params: &PoolParams,
    config: &Config,
    platform: &Platform,
) -> Result<Pool, InitError> {
    // SAFETY: the caller's contract.
    let pool = unsafe { Pool::create(pool_mem, pool_len, params) }
        .map_err(|_| InitError::BufferTooSmall)?;
    // SAFETY: the caller's contract.
    unsafe { attach(pool, arena, arena_len, config, platform) }?;
    Ok(pool)
}

/// Starts the backend with a pool that exists already (created here or by a recorder).
///
/// # Safety
/// As for [`start`]; the pool stays mapped for the rest of the program.
pub(crate) unsafe fn attach(
    pool: Pool,
    arena: *mut u8,
    arena_len: usize,
    config: &Config,
    platform: &Platform,
) -> Result<(), InitError> {
    // SAFETY: the caller's contract.
    unsafe {
        backend::init_backend(
            pool.base(),
            pool.layout().total_bytes,
            arena,
            arena_len,
            config,
            platform,
        )
    }?;
    POOL_LEN.store(pool.layout().total_bytes, Relaxed);
    POOL_BASE.store(pool.base() as usize, Release);
    Ok(())
}

/// Where a kernel's `thread_id` callback is kept for the platform's `thread_info`.
static THREAD_ID: AtomicUsize = AtomicUsize::new(0);

extern "C" fn kernel_thread_info(out: *mut ThreadInfo) {
    let f = THREAD_ID.load(Relaxed);
    if f == 0 {
        return;
    }
    // SAFETY: stored from an `extern "C" fn() -> u64` in `init_with_buffer`.
    let id = unsafe { core::mem::transmute::<usize, extern "C" fn() -> u64>(f) }();
    // SAFETY: the backend passes a valid out-pointer.
    unsafe {
        (*out).tid = id;
        (*out).pid = id as u32;
    }
}

/// Gives the backend its memory, for kernels: one buffer, cut into the pool and room for the
/// state of a few threads (`thread_id` names each thread when it first records). Tracing
/// starts with [`crate::enable`]. The whole trace stays in the buffer until the kernel sends it
/// ([`crate::stream::write_trace`]).
pub fn init_with_buffer(
    buffer: &'static mut [u8],
    mode: Mode,
    thread_id: extern "C" fn() -> u64,
) -> Result<(), InitError> {
    let params = PoolParams::new(CHUNK_BYTES, mode.pool_mode());
    start_kernel(buffer, &params, thread_id, None).map(|_| ())
}

/// What a kernel's threads do when a host drains its pool and no chunk is free
/// ([`init_drained`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Drop records until a chunk is free again (counted; a LOST record says where).
    Drop,
    /// Wait for the host to hand a chunk back, as long as its heartbeat moves (bounded:
    /// [`vftrace_format::pool::WAIT_IDLE_LIMIT`] calls of `wait`; a host that is gone costs
    /// one such wait, then records are dropped).
    Wait,
}

/// As [`init_with_buffer`], for a kernel whose pool a host drains while it runs (the host maps
/// the kernel's memory): full chunks are handed to the host and come back empty, so the trace
/// is not bounded by the buffer. The kernel announces the returned pool's address
/// (`base()`, `layout().total_bytes`) to the host once, and never waits for it unless the pool
/// is full and `when_full` says so; `wait` lets time pass meanwhile (None: a spin hint).
pub fn init_drained(
    buffer: &'static mut [u8],
    when_full: WhenFull,
    thread_id: extern "C" fn() -> u64,
    wait: Option<extern "C" fn()>,
) -> Result<Pool, InitError> {
    let mode = match when_full {
        WhenFull::Drop => PoolMode::StopWhenFull,
        WhenFull::Wait => PoolMode::Wait,
    };
    let params = PoolParams {
        flags: pool_flags::HAS_CONSUMER,
        ..PoolParams::new(CHUNK_BYTES, mode)
    };
    start_kernel(buffer, &params, thread_id, wait)
}

fn start_kernel(
    buffer: &'static mut [u8],
    params: &PoolParams,
    thread_id: extern "C" fn() -> u64,
    wait: Option<extern "C" fn()>,
) -> Result<Pool, InitError> {
    let state = backend::state_size();
    let start_addr = (buffer.as_mut_ptr() as usize).next_multiple_of(4096);
    let usable = buffer
        .len()
        .saturating_sub(start_addr - buffer.as_ptr() as usize);
    // A few threads' states (CPUs, tasks), at most an eighth of the buffer.
    let states = (usable / 8 / state).clamp(1, 8);
    let arena_len = states * state + 64;
    if usable < arena_len + (256 << 10) {
        return Err(InitError::BufferTooSmall);
    }
    let pool_len = (usable - arena_len) & !4095;
    THREAD_ID.store(thread_id as usize, Relaxed);
    let platform = Platform {
        thread_info: Some(kernel_thread_info),
        wait,
        ..Platform::default()
    };
    // SAFETY: the buffer is 'static and exclusively ours; the pool part is 4096-aligned and the
    // arena follows it inside the buffer.
    unsafe {
        start(
            start_addr as *mut u8,
            pool_len,
            (start_addr + pool_len) as *mut u8,
            arena_len,
            params,
            &Config::NONE,
            &platform,
        )
    }
}
