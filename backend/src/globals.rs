//! What the backend is given once, at init: the pool, the options, the platform callbacks and
//! the memory for per-thread state. Written before tracing can start, read-only afterwards.
use crate::filter::Config;
use crate::platform::Platform;
use crate::thread::StateArena;
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering::*};
use vftrace_format::pool::Pool;

pub(crate) struct Globals {
    pub pool: Pool,
    pub config: Config,
    pub platform: Platform,
    /// Some filter range says "trace only".
    pub has_only: bool,
    /// Deepest recorded level + 1.
    pub max_depth: usize,
    pub arena: StateArena,
}

struct Slot(UnsafeCell<MaybeUninit<Globals>>);
// SAFETY: written once by the one init that wins `CLAIMED`, published with `READY` (Release),
// read-only after that.
unsafe impl Sync for Slot {}

static GLOBALS: Slot = Slot(UnsafeCell::new(MaybeUninit::uninit()));
static CLAIMED: AtomicBool = AtomicBool::new(false);
static READY: AtomicBool = AtomicBool::new(false);

/// Before init, mcount reads this zero: tracing is off.
static OFF: AtomicU32 = AtomicU32::new(0);

/// Where mcount and `__fentry__` look first: the pool's `enabled` word once there is a pool, so
/// that a consumer (`vftrace record`) can turn tracing on and off from outside.
pub(crate) static ENABLED_WORD: AtomicPtr<AtomicU32> =
    AtomicPtr::new(&OFF as *const AtomicU32 as *mut AtomicU32);

/// Installs the globals. Returns false if someone already did.
pub(crate) fn install(g: Globals) -> bool {
    if CLAIMED.swap(true, AcqRel) {
        return false;
    }
    // SAFETY: we won CLAIMED, so nobody else writes; nobody reads before READY.
    let installed = unsafe { (*GLOBALS.0.get()).write(g) };
    if SILENCED.load(Acquire) {
        READY.store(true, Release);
        return true;
    }
    ENABLED_WORD.store(
        &installed.pool.header().enabled.0 as *const AtomicU32 as *mut AtomicU32,
        Release,
    );
    READY.store(true, Release);
    true
}

#[inline(always)]
pub(crate) fn get() -> Option<&'static Globals> {
    if READY.load(Acquire) {
        // SAFETY: READY is stored after the write (Release/Acquire); never written again.
        Some(unsafe { (*GLOBALS.0.get()).assume_init_ref() })
    } else {
        None
    }
}

static SILENCED: AtomicBool = AtomicBool::new(false);

/// Points mcount at the zero word again, for good.
pub(crate) fn silence() {
    SILENCED.store(true, Release);
    ENABLED_WORD.store(&OFF as *const AtomicU32 as *mut AtomicU32, Release);
}
