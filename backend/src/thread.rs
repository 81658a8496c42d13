//! Per-thread state: the shadow stack, the chunk the thread writes and what it still has to
//! say; registering a thread, ending it, and a forked child's restart. (Its records and chunks
//! are `chunk.rs`'s.)
//!
//! Thread-local storage holds one pointer to a [`ThreadState`] (8 bytes of TLS, so that the
//! tracer does not take stack away from threads with small stacks); the state itself comes
//! from an arena of private memory the frontend hands over, recycled when threads end.
use crate::arch::{self, rdtsc};
use crate::chunk::{bump, next_chunk, publish};
use crate::filter::ConfigExt;
use crate::globals::Globals;
use crate::platform::PlatformExt;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};
use vftrace_format::pool::{slot_state, ChunkDesc};

/// Deepest nesting that is hooked; uftrace's depth field has 10 bits.
pub const SHADOW_STACK_DEPTH: usize = 1024;

/// `ThreadState::gate`: the fast paths run only when it is `GATE_OPEN`.
pub const GATE_OPEN: usize = 1;
/// Every event takes the slow path (filters on, something pending).
pub const GATE_SLOW: usize = 2;
// Any other value: the backend is running on this thread; the value is the return slot of the
// call it is handling, so that a mark left behind by `siglongjmp` can be told from a live one.

/// The TLS value of a thread that could not be registered (no state or slot was free): it is
/// not traced, and not retried on every call.
pub const TLS_FAILED: usize = 1;

pub mod frame_flags {
    /// Its entry is in the trace: its exit goes there too.
    pub const RECORDED: u32 = 1;
    /// `-t`: its entry is kept back until the call proves long enough.
    pub const DEFERRED: u32 = 2;
    /// `-F`: tracing is on inside it.
    pub const ONLY: u32 = 4;
    /// `-N`: tracing is off inside it (hooked only to see it return).
    pub const NEVER: u32 = 8;
    /// Its slot is on the signal stack the thread ran on when it was hooked.
    pub const ON_SIGNAL_STACK: u32 = 16;
    /// Its slot is on a stack that is neither the thread's own nor a signal stack (a
    /// coroutine's): it may be suspended there while other frames come and go.
    pub const ON_OTHER_STACK: u32 = 32;
    pub const STACK_MASK: u32 = ON_SIGNAL_STACK | ON_OTHER_STACK;
}

pub mod state_flags {
    /// Return addresses were put back for an unwinder: hook the surviving frames again at the
    /// next event.
    pub const UNWOUND: u32 = 1;
    /// A forked child: take a slot and chunk of its own before the next record.
    pub const REREGISTER: u32 = 2;
    /// Some frame lies outside the thread's own stack (a coroutine, a signal stack): the fast
    /// paths' "the newest frame is the caller" rule does not hold, so every event is
    /// classified (`off_home` counts those frames).
    pub const OFF_HOME: u32 = 4;
    /// No chunk: records are being dropped.
    pub const CHUNKLESS: u32 = 8;
}

/// One hooked call.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Frame {
    /// The return address the trampoline replaced (the trampoline itself for a tail call).
    pub ret: usize,
    /// Where it was: the function's return-address slot.
    pub slot: usize,
    /// An address inside the function (mcount's call site).
    pub func: usize,
    /// [`frame_flags`] (low half) and its depth among recorded calls (high half), one word so
    /// that the fast path stores both at once.
    pub meta: u64,
    /// Its entry time, while `DEFERRED`.
    pub entry_time: u64,
}

impl Frame {
    #[inline(always)]
    pub const fn meta(flags: u32, rdepth: u32) -> u64 {
        flags as u64 | (rdepth as u64) << 32
    }

    pub fn flags(&self) -> u32 {
        self.meta as u32
    }

    pub fn rdepth(&self) -> u32 {
        (self.meta >> 32) as u32
    }

    pub fn set_flags(&mut self, flags: u32) {
        self.meta = Frame::meta(flags, self.rdepth());
    }
}

#[repr(C)]
pub struct ThreadState {
    /// See [`GATE_OPEN`]. First, so that the fast paths find it at offset 0.
    pub gate: usize,
    pub depth: u32,
    /// [`state_flags`].
    pub flags: u32,
    /// The chunk being written (null: none).
    pub desc: *mut ChunkDesc,
    pub chunk: u32,
    /// Thread slot index in the pool.
    pub slot: u32,
    pub serial: u64,
    /// Latest timestamp, carried from chunk to chunk.
    pub last_time: u64,
    /// Records to announce in a LOST record as soon as one can be written.
    pub pending_lost: u64,
    /// Calls a signal handler made while the backend ran on this thread; only the handler's
    /// path adds to it, the normal path takes it with one `swap`.
    pub signal_skipped: AtomicU64,
    /// Recorded frames on the shadow stack (with filters, fewer than `depth`).
    pub record_depth: u32,
    /// Active `-F` frames and `-N` frames.
    pub filter_only: u32,
    pub filter_never: u32,
    /// Frames on the shadow stack whose slot is not on the thread's own stack.
    pub off_home: u32,
    /// The thread's own stack (0, 0: unknown).
    pub stack_lo: usize,
    pub stack_hi: usize,
    /// The signal stack as last asked of the platform in this slow path: `[lo, hi, known]`.
    pub sig_cache: core::cell::Cell<[usize; 3]>,
    /// Arena free-list link (index + 1).
    next_free: usize,
    /// Below the oldest frame: a frame no slot is above (`slot` = usize::MAX), so that the
    /// fast paths read "the frame below" without testing for an empty shadow stack.
    pub base: Frame,
    pub frames: [Frame; SHADOW_STACK_DEPTH],
}

impl ThreadState {
    /// The frame below `depth` (the newest one, or [`ThreadState::base`] when there is none).
    ///
    /// # Safety
    /// `depth <= SHADOW_STACK_DEPTH`.
    #[inline(always)]
    pub unsafe fn below(this: *const ThreadState, depth: usize) -> *const Frame {
        // SAFETY: `base` is followed by `frames` (repr(C), no padding: both are Frames), so
        // base + depth lies in the state for depth <= SHADOW_STACK_DEPTH.
        unsafe { core::ptr::addr_of!((*this).base).add(depth) }
    }

    /// The gate value for this thread when the backend is not running on it.
    pub fn settled_gate(&self, g: &Globals) -> usize {
        let slow = self.flags != 0
            || self.desc.is_null()
            || self.pending_lost != 0
            || self.signal_skipped.load(Relaxed) != 0
            || g.config.any();
        if slow {
            GATE_SLOW
        } else {
            GATE_OPEN
        }
    }

    /// The signal stack the thread runs on, asked of the platform once per slow path.
    pub fn signal_stack(&self, g: &Globals) -> Option<(usize, usize)> {
        let [lo, hi, known] = self.sig_cache.get();
        if known != 0 {
            return (lo < hi).then_some((lo, hi));
        }
        let found = g.platform.signal_stack();
        let (lo, hi) = found.unwrap_or((0, 0));
        self.sig_cache.set([lo, hi, 1]);
        found
    }

    /// Forgets the cached signal stack (at the start of each slow path).
    pub fn forget_signal_stack(&self) {
        self.sig_cache.set([0, 0, 0]);
    }

    /// Takes the counts that follow the frames (recorded depth, active filters, frames off the
    /// thread's stack) again from the frames.
    pub fn recount(&mut self) {
        let (mut recorded, mut only, mut never, mut off_home) = (0, 0, 0, 0);
        for f in &self.frames[..self.depth as usize] {
            let flags = f.flags();
            recorded += (flags & (frame_flags::RECORDED | frame_flags::DEFERRED) != 0) as u32;
            only += (flags & frame_flags::ONLY != 0) as u32;
            never += (flags & frame_flags::NEVER != 0) as u32;
            off_home += (flags & frame_flags::STACK_MASK != 0) as u32;
        }
        self.record_depth = recorded;
        self.filter_only = only;
        self.filter_never = never;
        self.off_home = off_home;
        if off_home == 0 {
            self.flags &= !state_flags::OFF_HOME;
        } else {
            self.flags |= state_flags::OFF_HOME;
        }
    }

    /// The recorded depth a new record of this thread has.
    pub fn current_rdepth(&self, g: &Globals) -> u32 {
        if g.config.any() {
            self.record_depth
        } else {
            self.depth
        }
    }
}

/// Private memory cut into `ThreadState`s, recycled through a tagged free list.
pub(crate) struct StateArena {
    base: usize,
    count: usize,
    bump: AtomicUsize,
    /// `(tag << 32) | (index + 1)`.
    free: AtomicU64,
}

impl StateArena {
    /// # Safety
    /// `mem` points to `len` bytes of private memory, aligned to 64, kept for the program.
    pub unsafe fn new(mem: *mut u8, len: usize) -> StateArena {
        let start = (mem as usize).next_multiple_of(64);
        let usable = len.saturating_sub(start - mem as usize);
        StateArena {
            base: start,
            count: usable / core::mem::size_of::<ThreadState>(),
            bump: AtomicUsize::new(0),
            free: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.count
    }

    fn at(&self, index: usize) -> *mut ThreadState {
        (self.base + index * core::mem::size_of::<ThreadState>()) as *mut ThreadState
    }

    /// A zeroed state, or None if the arena is used up.
    pub fn alloc(&self) -> Option<*mut ThreadState> {
        let mut h = self.free.load(Acquire);
        let index = loop {
            let i = (h & 0xffff_ffff) as usize;
            if i == 0 {
                if self.bump.load(Relaxed) >= self.count {
                    return None;
                }
                let i = self.bump.fetch_add(1, Relaxed);
                if i >= self.count {
                    return None;
                }
                break i;
            }
            // SAFETY: i - 1 < count: free-list entries came from this arena.
            let next = unsafe { (*self.at(i - 1)).next_free } as u64;
            let tagged = ((h >> 32).wrapping_add(1) << 32) | next;
            match self.free.compare_exchange_weak(h, tagged, Acquire, Acquire) {
                Ok(_) => break i - 1,
                Err(now) => h = now,
            }
        };
        let st = self.at(index);
        // SAFETY: the state is ours now; all-zero is a valid `ThreadState`.
        unsafe { core::ptr::write_bytes(st as *mut u8, 0, core::mem::size_of::<ThreadState>()) };
        Some(st)
    }

    /// # Safety
    /// `st` came from `alloc` and is no longer used by its thread.
    pub unsafe fn free(&self, st: *mut ThreadState) {
        let index = (st as usize - self.base) / core::mem::size_of::<ThreadState>();
        let mut h = self.free.load(Relaxed);
        loop {
            // SAFETY: the caller hands the state back; nobody else touches it.
            unsafe { (*st).next_free = (h & 0xffff_ffff) as usize };
            let tagged = ((h >> 32).wrapping_add(1) << 32) | (index as u64 + 1);
            match self.free.compare_exchange_weak(h, tagged, Release, Relaxed) {
                Ok(_) => return,
                Err(now) => h = now,
            }
        }
    }
}

/// Registers the calling thread: a state, a slot, a first chunk. None if it cannot be traced
/// (counted once, in the pool header).
///
/// # Safety
/// Called from the slow path of the calling thread, which has no state yet.
#[allow(clippy::mut_from_ref)] // the state comes from the arena, not from `g`
pub(crate) unsafe fn register(g: &'static Globals) -> Option<&'static mut ThreadState> {
    let Some(st) = g.arena.alloc() else {
        untraceable(g);
        return None;
    };
    // SAFETY: fresh state, owned by this thread.
    let st = unsafe { &mut *st };
    st.gate = usize::MAX; // busy while the callbacks run (they may be instrumented)
    st.base.slot = usize::MAX;
    // SAFETY: TLS of the calling thread.
    unsafe { arch::tls_set(st as *mut ThreadState as usize) };
    let info = g.platform.thread_info();
    st.stack_lo = info.stack_lo;
    st.stack_hi = info.stack_hi;
    if !attach_slot(g, st, &info) {
        // SAFETY: nobody else has seen the state.
        unsafe {
            arch::tls_set(TLS_FAILED);
            g.arena.free(st);
        }
        untraceable(g);
        return None;
    }
    if let Some(started) = g.platform.thread_started {
        started();
    }
    st.gate = GATE_SLOW;
    Some(st)
}

fn untraceable(g: &Globals) {
    g.pool.header().threads_untraced.fetch_add(1, Relaxed);
    // SAFETY: TLS of the calling thread.
    unsafe { arch::tls_set(TLS_FAILED) };
}

/// The process-wide session (the message ticket of this image's `Session` message).
pub(crate) static SESSION: AtomicU64 = AtomicU64::new(0);

/// Takes a thread slot for `st` and its first chunk.
fn attach_slot(g: &Globals, st: &mut ThreadState, info: &crate::platform::ThreadInfo) -> bool {
    let Some((index, serial)) = g.pool.claim_slot() else {
        return false;
    };
    let slot = g.pool.slot(index);
    slot.pid.store(info.pid, Relaxed);
    slot.tid.store(info.tid, Relaxed);
    slot.serial.store(serial, Relaxed);
    slot.session.store(SESSION.load(Relaxed), Relaxed);
    for counter in [
        &slot.chunks,
        &slot.records,
        &slot.lost,
        &slot.overwritten,
        &slot.unrecorded,
        &slot.closed_early,
        &slot.end_tsc,
    ] {
        counter.store(0, Relaxed);
    }
    slot.oldest.store(0, Relaxed);
    slot.newest.store(0, Relaxed);
    slot.start_tsc.store(rdtsc(), Relaxed);
    st.slot = index;
    st.serial = serial;
    st.desc = core::ptr::null_mut();
    // Without a chunk the thread still counts what it loses.
    // SAFETY: the state and slot are this thread's.
    unsafe { next_chunk(g, st) };
    true
}

/// The calling thread ends: its open frames are closed, its chunk published with the LAST
/// flag, its slot marked EXITED and its state recycled. Events after this (later TLS
/// destructors) register it again.
///
/// # Safety
/// Called on the ending thread, outside the backend.
pub(crate) unsafe fn thread_exit(g: &Globals) {
    // SAFETY: TLS of the calling thread.
    let raw = unsafe { arch::tls_get() };
    if raw <= TLS_FAILED {
        return;
    }
    // SAFETY: a registered state of this thread.
    let st = unsafe { &mut *(raw as *mut ThreadState) };
    st.gate = usize::MAX;
    let now = rdtsc();
    // The thread's stack is going away: frames still open ended with it.
    while st.depth > 0 {
        // SAFETY: the state is ours; the frames' slots are not touched (the stack is dying).
        unsafe { crate::shadow::close_top(g, st, now) };
    }
    if st.flags & state_flags::REREGISTER == 0 {
        if !st.desc.is_null() {
            // SAFETY: our chunk.
            unsafe { publish(g, st, true) };
        }
        if st.flags & state_flags::CHUNKLESS != 0 {
            g.pool.header().chunkless_threads.fetch_sub(1, Relaxed);
        }
        let slot = g.pool.slot(st.slot);
        slot.end_tsc.store(now, Relaxed);
        slot.state.store(slot_state::EXITED, Release);
    }
    // SAFETY: TLS of the calling thread; the state is no longer reachable from it.
    unsafe {
        arch::tls_set(0);
        g.arena.free(st);
    }
}

/// In a forked child: the calling thread (the only one) keeps its shadow stack, but its slot
/// and chunk are the parent's. It takes its own before its next record.
///
/// # Safety
/// Called in the child right after fork, before any traced code runs.
pub(crate) unsafe fn fork_child() {
    // SAFETY: TLS of the calling thread.
    let raw = unsafe { arch::tls_get() };
    if raw <= TLS_FAILED {
        return;
    }
    // SAFETY: the state is this thread's own copy.
    let st = unsafe { &mut *(raw as *mut ThreadState) };
    st.desc = core::ptr::null_mut();
    st.flags = (st.flags | state_flags::REREGISTER) & !state_flags::CHUNKLESS;
    st.pending_lost = 0;
    st.gate = GATE_SLOW;
}

/// A forked child's first event: a slot and chunk of its own (ids from the platform again).
pub(crate) fn reregister(g: &Globals, st: &mut ThreadState) -> bool {
    st.flags &= !state_flags::REREGISTER;
    let info = g.platform.thread_info();
    if !attach_slot(g, st, &info) {
        return false;
    }
    if let Some(started) = g.platform.thread_started {
        started();
    }
    true
}

/// Counts a call that could not be recorded, to be announced as a LOST record (two records:
/// its entry and its exit).
pub(crate) fn count_unrecorded(g: &Globals, st: &mut ThreadState, calls: u64) {
    bump(&g.pool.slot(st.slot).unrecorded, calls);
    st.pending_lost += 2 * calls;
}

/// Takes the calls a signal handler could not trace into the pending count (announced with the
/// next record).
pub(crate) fn take_signal_skips(g: &Globals, st: &mut ThreadState) {
    let skipped = st.signal_skipped.swap(0, Relaxed);
    if skipped != 0 {
        count_unrecorded(g, st, skipped);
    }
}

// Tools read a guest's shadow stack from outside (`vftrace profile`); the layout they read is
// stated once, in the shared ABI module, and checked here.
const _: () = {
    use core::mem::{offset_of, size_of};
    use vftrace_format::abi::shadow_layout as l;
    assert!(offset_of!(ThreadState, depth) == l::DEPTH_OFFSET);
    assert!(offset_of!(ThreadState, frames) == l::FRAMES_OFFSET);
    assert!(size_of::<Frame>() == l::FRAME_BYTES);
    assert!(offset_of!(Frame, ret) == l::FRAME_RET);
    assert!(offset_of!(Frame, slot) == l::FRAME_SLOT);
    assert!(SHADOW_STACK_DEPTH == l::MAX_DEPTH);
};
