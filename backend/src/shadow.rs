//! Entry and exit bookkeeping: what `mcount`/`__fentry__` and the return trampoline call.
//!
//! The fast paths (a nested call, a return of the newest frame, room in the chunk) call
//! nothing and touch only this thread's state and chunk. Everything else goes to the cold slow
//! paths, which keep the shadow stack true to the real one:
//!
//! - **Frames are matched by the address of their return slot.** A return through a slot that
//!   is not the newest frame's means the newer frames were left without returning (longjmp,
//!   unwinding, a stack switch): they are closed, their exit stamped now and counted as
//!   `closed_early`.
//! - **Every frame knows which stack it is on**: the thread's own (its bounds come from the
//!   platform), the signal stack it was running on, or another one (a coroutine's). A new call
//!   decides which frames are over ([`settle`]): on its own stack, a frame whose slot is not
//!   above the new call's is dead (`longjmp`, unwinding); back on the thread's stack, frames of
//!   a signal handler are dead (it `siglongjmp`ed out). Frames on another stack are suspended
//!   (a coroutine switched away), not dead: they stay, and their return is recorded when it
//!   really happens, even with other frames newer than them on the shadow stack.
//! - Without stack bounds (a kernel) the shadow stack is one stack ordered by address, and a
//!   frame closed there gets its original return address back, in case it was live elsewhere
//!   (an interrupt stack): nothing can return through a frame the tracer forgot. Frames below
//!   the current call on the current stack are never written (that memory may already be the
//!   current function's frame).
//! - **Tail calls**: a function entered by `jmp` reuses its caller's hooked slot. It gets a
//!   frame of its own whose "return address" is the trampoline, so its exit runs the
//!   trampoline again for the caller's: `a() { b() { c() } }`, as uftrace shows.
//! - **Unwinding** (C++ exceptions, Rust panics, `pthread_exit`): the frontend's wrappers of the
//!   unwinder call [`crate::unwind::unhook_all`] before it walks the stack (it cannot step
//!   through the trampoline); the next event closes the unwound frames and hooks the survivors
//!   again.
//! - **Busy**: while the backend runs on a thread, a signal handler's calls are not traced
//!   (counted). A busy mark left by a handler that `siglongjmp`ed out of the backend is stale
//!   as soon as an event happens above it on the same stack, or any return is seen.
use crate::arch::{rdtsc, return_trampoline_address};
use crate::chunk::{bump, last_record_word, push_record};
use crate::filter::{action, ConfigExt};
use crate::globals::{self, Globals};
use crate::platform::PlatformExt;
use crate::thread::{
    self, count_unrecorded, frame_flags, state_flags, take_signal_skips, Frame, ThreadState,
    GATE_OPEN, GATE_SLOW, SHADOW_STACK_DEPTH, TLS_FAILED,
};
use core::sync::atomic::{compiler_fence, Ordering::*};
use vftrace_format::record::{pack_word, RecordType};

/// Called by `mcount`/`__fentry__` with the thread's state (0 before it registered), the
/// function's return-address slot as the frame pointer shows it, an address inside the
/// function, and (mcount only) r10 as the function left it.
///
/// # Safety
/// `st` is the calling thread's TLS value; `slot` the live return-address slot of the function
/// that called mcount (or a copy of it, see [`real_slot`]).
pub unsafe extern "C" fn on_entry(st: *mut ThreadState, slot: *mut usize, func: usize, r10: usize) {
    // SAFETY: forwarded.
    let slot = unsafe { real_slot(slot, r10) };
    // An interrupt handler's "return address" is the interrupted RIP: not ours to hook.
    // SAFETY: `slot` is on a live stack (the caller's contract).
    #[cfg(feature = "interruptsafe")]
    if unsafe { crate::arch::is_interrupt_frame(slot) } {
        return;
    }
    if (st as usize) > TLS_FAILED {
        // SAFETY: a registered state of this thread; nothing else holds a reference to it.
        let st = unsafe { &mut *st };
        let depth = st.depth as usize;
        let s = slot as usize;
        if st.gate == GATE_OPEN
            && depth < SHADOW_STACK_DEPTH
            // SAFETY: depth < SHADOW_STACK_DEPTH; the base frame's slot is above everything.
            && unsafe { (*ThreadState::below(st, depth)).slot } > s
        {
            // SAFETY: the caller's contract.
            let ret = unsafe { slot.read() };
            // SAFETY: GATE_OPEN implies a current chunk.
            let d = unsafe { &*st.desc };
            let w = d.write.load(Relaxed);
            if ret != return_trampoline_address() && w != d.end.load(Relaxed) {
                st.gate = s;
                // The frame first (it counts only once the depth says so), so that fewer values
                // live across rdtsc and the fast path needs no callee-saved register.
                // SAFETY: depth < SHADOW_STACK_DEPTH.
                let f = unsafe { st.frames.get_unchecked_mut(depth) };
                f.ret = ret;
                f.slot = s;
                f.func = func;
                f.meta = Frame::meta(frame_flags::RECORDED, depth as u32);
                let word = pack_word(RecordType::Entry, depth as u16, func as u64);
                let t = rdtsc().max(st.last_time);
                st.last_time = t;
                // SAFETY: w < end: inside the chunk this thread owns.
                unsafe { (w as *mut [u64; 2]).write([t, word]) };
                d.write.store(w + 16, Release);
                // SAFETY: depth < SHADOW_STACK_DEPTH, its frame written; `slot` as above.
                unsafe { commit_frame(st, depth, slot) };
                st.gate = GATE_OPEN;
                return;
            }
        }
    }
    // SAFETY: forwarded.
    unsafe { entry_slow(st, slot, func) }
}

/// gcc realigns some functions' stacks (`main` with an over-aligned local) through a DRAP
/// register: `lea r10, [rsp + 8]; and rsp, -32; push [r10 - 8]; push rbp; mov rbp, rsp`. The
/// word above the frame pointer is then a copy of the return address; the function returns
/// through the original at `r10 - 8`, a few bytes higher. Hooking the copy would lose the
/// return (uftrace 0.13 does). The original is recognised by where it is and what it holds.
///
/// # Safety
/// `slot` is a live return-address slot; the 256 bytes above it are mapped (a caller's frame).
#[inline(always)]
unsafe fn real_slot(slot: *mut usize, r10: usize) -> *mut usize {
    let original = r10.wrapping_sub(8);
    // SAFETY: `original` lies 8 to 256 bytes above a live slot (checked first).
    if original.wrapping_sub(slot as usize).wrapping_sub(8) < 256 - 8 + 1
        && unsafe { (original as *const usize).read() == slot.read() }
    {
        original as *mut usize
    } else {
        slot
    }
}

/// Counts the frame written at `depth` and makes its call return through the trampoline. The
/// order matters to a signal handler interrupting it: the frame, then the depth, then the slot,
/// so that a slot never holds the trampoline without its frame.
///
/// # Safety
/// `depth < SHADOW_STACK_DEPTH`; `slot` is the live return-address slot of the frame there.
#[inline(always)]
unsafe fn commit_frame(st: &mut ThreadState, depth: usize, slot: *mut usize) {
    compiler_fence(Release);
    st.depth = depth as u32 + 1;
    compiler_fence(Release);
    // SAFETY: the caller's contract.
    unsafe { slot.write(return_trampoline_address()) };
}

#[cold]
#[inline(never)]
unsafe fn entry_slow(st: *mut ThreadState, slot: *mut usize, func: usize) {
    let Some(g) = globals::get() else { return };
    let s = slot as usize;
    let st = match st as usize {
        0 => match unsafe { thread::register(g) } {
            Some(st) => st,
            None => return,
        },
        TLS_FAILED => return,
        // SAFETY: a registered state of this thread.
        p => unsafe { &mut *(p as *mut ThreadState) },
    };
    if st.gate == usize::MAX {
        // The backend's own callbacks (they may be instrumented): not the program's calls.
        return;
    }
    if st.gate > GATE_SLOW {
        if !busy_is_stale(g, st, st.gate, s) {
            // A signal handler interrupted the backend: not traced, but counted.
            let n = st.signal_skipped.load(Relaxed);
            st.signal_skipped.store(n + 1, Relaxed);
            return;
        }
        // SAFETY: the state is this thread's.
        unsafe { finish_interrupted(g, st, st.gate) };
    }
    st.gate = s;
    st.forget_signal_stack();
    // SAFETY: the state is this thread's; `slot` is live.
    unsafe { entry(g, st, slot, func) };
    st.gate = st.settled_gate(g);
}

/// The slow path of an entry, with the gate closed.
unsafe fn entry(g: &Globals, st: &mut ThreadState, slot: *mut usize, func: usize) {
    let s = slot as usize;
    let now = rdtsc();
    if st.flags & state_flags::REREGISTER != 0 && !thread::reregister(g, st) {
        return;
    }
    // SAFETY: forwarded; the frames' slots are on this thread's stacks.
    take_signal_skips(g, st);
    unsafe {
        settle(g, st, s, now);
        if st.flags & state_flags::UNWOUND != 0 {
            crate::unwind::rehook_all(st);
            st.flags &= !state_flags::UNWOUND;
        }
    }
    let depth = st.depth as usize;
    // SAFETY: `slot` is live.
    let ret = unsafe { slot.read() };
    if ret == return_trampoline_address() {
        // A tail call: `settle` kept the frame of this slot on top (or a slot we do not know
        // holds the trampoline, which must be left as it is).
        if depth == 0 || st.frames[depth - 1].slot != s {
            count_unrecorded(g, st, 1);
            return;
        }
    }
    // What the options say about this call.
    let mut flags = frame_flags::RECORDED;
    if g.config.any() {
        if st.filter_never > 0 {
            return;
        }
        match g.config.action_for(func as u64) {
            action::NEVER => flags = frame_flags::NEVER,
            action::ONLY => flags |= frame_flags::ONLY,
            _ if g.has_only && st.filter_only == 0 => return,
            _ => {}
        }
        if flags & frame_flags::RECORDED != 0 && st.record_depth as usize >= g.max_depth {
            return;
        }
        if flags & frame_flags::RECORDED != 0 && g.config.time_threshold != 0 {
            flags = (flags & !frame_flags::RECORDED) | frame_flags::DEFERRED;
        }
    }
    if depth >= SHADOW_STACK_DEPTH {
        count_unrecorded(g, st, 1);
        return;
    }
    let rdepth = st.current_rdepth(g);
    let at = region(g, st, s);
    flags |= region_flags(at);
    // The frame before its entry record (see `finish_interrupted`).
    st.frames[depth] = Frame {
        ret,
        slot: s,
        func,
        meta: Frame::meta(flags, rdepth),
        entry_time: if flags & frame_flags::DEFERRED != 0 {
            now.max(st.last_time)
        } else {
            0
        },
    };
    if flags & frame_flags::RECORDED != 0 {
        let word = pack_word(RecordType::Entry, rdepth as u16, func as u64);
        // SAFETY: the state is registered.
        if !unsafe { push_record(g, st, now, word) } {
            // The exit will not be written either.
            bump(&g.pool.slot(st.slot).lost, 1);
            st.pending_lost += 1;
            return;
        }
    }
    if at != Region::Home {
        st.off_home += 1;
        st.flags |= state_flags::OFF_HOME;
    }
    // SAFETY: depth < SHADOW_STACK_DEPTH; `slot` is live and holds `ret`.
    unsafe { commit_frame(st, depth, slot) };
    if flags & (frame_flags::RECORDED | frame_flags::DEFERRED) != 0 {
        st.record_depth += 1;
    }
    if flags & frame_flags::ONLY != 0 {
        st.filter_only += 1;
    }
    if flags & frame_flags::NEVER != 0 {
        st.filter_never += 1;
    }
}

/// Where a stack address is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Region {
    /// The thread's own stack (or any stack, when its bounds are unknown).
    Home,
    /// The signal stack the thread runs on now.
    Signal,
    /// Elsewhere: a coroutine's stack.
    Other,
}

fn region(g: &Globals, st: &ThreadState, addr: usize) -> Region {
    if st.stack_hi == 0 || (st.stack_lo..st.stack_hi).contains(&addr) {
        return Region::Home;
    }
    match st.signal_stack(g) {
        Some((lo, hi)) if (lo..hi).contains(&addr) => Region::Signal,
        _ => Region::Other,
    }
}

fn region_flags(r: Region) -> u32 {
    match r {
        Region::Home => 0,
        Region::Signal => frame_flags::ON_SIGNAL_STACK,
        Region::Other => frame_flags::ON_OTHER_STACK,
    }
}

fn frame_region(f: &Frame) -> Region {
    if f.flags() & frame_flags::ON_SIGNAL_STACK != 0 {
        Region::Signal
    } else if f.flags() & frame_flags::ON_OTHER_STACK != 0 {
        Region::Other
    } else {
        Region::Home
    }
}

/// What an event on region `at`, slot `s`, says about frame `f`.
#[derive(PartialEq, Eq)]
enum Verdict {
    /// On the event's stack and above it: a caller (and so are the older frames of that stack).
    Ancestor,
    /// Over: left without a return through it.
    Dead,
    /// On another stack, waiting there.
    Suspended,
}

fn verdict(at: Region, s: usize, f: &Frame) -> Verdict {
    match (at, frame_region(f)) {
        (Region::Home, Region::Home) | (Region::Signal, Region::Signal) => {
            // The same slot still hooked is a tail call of that frame: it stays.
            // SAFETY: `s` is the live slot of the calling function.
            if f.slot > s
                || (f.slot == s
                    && unsafe { (s as *const usize).read() } == return_trampoline_address())
            {
                Verdict::Ancestor
            } else {
                Verdict::Dead
            }
        }
        // Back on the thread's own stack: a signal handler left without returning.
        (Region::Home, Region::Signal) => Verdict::Dead,
        _ => Verdict::Suspended,
    }
}

/// Whether a busy mark (the slot `busy` of the call whose mcount set it) was left behind. The
/// backend runs below that slot; a signal handler interrupting it runs further below, so an
/// event at or above the slot on the same stack means that backend call is gone (a handler
/// `siglongjmp`ed out of it). Without stack bounds nothing can be told: never stale.
fn busy_is_stale(g: &Globals, st: &ThreadState, busy: usize, s: usize) -> bool {
    // usize::MAX marks the backend's own non-call work (registration, unwinding support).
    if st.stack_hi == 0 || busy == usize::MAX || s < busy {
        return false;
    }
    let (a, b) = (region(g, st, s), region(g, st, busy));
    a == b && a != Region::Other
}

/// Completes what a handler that `siglongjmp`ed out of the backend (busy mark `busy`) left
/// half done. Publishing a record and counting it on the shadow stack are two stores that no
/// order makes one, so the thread's last record tells: an entry of the frame above the top
/// (frames are written before their entry is published) was recorded but not pushed; an exit
/// of the top frame was recorded but not popped. Without this the first leaves an entry that
/// never ends and the second a second exit. The counts that follow the frames are then taken
/// again from the frames.
///
/// # Safety
/// The state is this thread's, and nothing of the backend runs on it but the caller.
unsafe fn finish_interrupted(g: &Globals, st: &mut ThreadState, busy: usize) {
    let Some(last) = last_record_word(g, st) else {
        return;
    };
    let depth = st.depth as usize;
    let recorded = |f: &Frame| f.flags() & frame_flags::RECORDED != 0;
    let word = |kind, f: &Frame| pack_word(kind, f.rdepth() as u16, f.func as u64);
    if depth < SHADOW_STACK_DEPTH {
        let f = &st.frames[depth];
        if f.slot == busy && recorded(f) && last == word(RecordType::Entry, f) {
            st.depth += 1;
        }
    }
    if depth > 0 && st.depth as usize == depth {
        let f = &st.frames[depth - 1];
        if recorded(f) && last == word(RecordType::Exit, f) {
            st.depth -= 1;
        }
    }
    st.recount();
}

/// Closes the frames that a call at slot `s` shows to be over (see the module documentation).
/// Frames of other stacks are skipped, not closed; the scan stops at the first ancestor on the
/// call's own stack (every older frame of that stack is an ancestor too).
///
/// # Safety
/// The state is this thread's.
pub(crate) unsafe fn settle(g: &Globals, st: &mut ThreadState, s: usize, now: u64) {
    let at = region(g, st, s);
    let mut k = st.depth as usize;
    while k > 0 {
        k -= 1;
        match verdict(at, s, &st.frames[k]) {
            Verdict::Ancestor => break,
            Verdict::Suspended => {}
            // SAFETY: forwarded; the slot is not written (see `remove_frame`).
            Verdict::Dead => unsafe { remove_frame(g, st, k, s, now) },
        }
    }
}

/// The current stack pointer, near enough: the address of a local.
#[inline(always)]
fn current_sp() -> usize {
    let here = 0u8;
    core::ptr::addr_of!(here) as usize
}

/// Removes frame `k` (not returned through) from the shadow stack: its exit is recorded now
/// (an estimate, counted). Without stack bounds its slot gets the original return address back
/// if it still holds the trampoline and lies outside the current call's frame (`[sp, s)`).
///
/// # Safety
/// The state is this thread's; `k < depth`.
unsafe fn remove_frame(g: &Globals, st: &mut ThreadState, k: usize, s: usize, now: u64) {
    let f = st.frames[k];
    if st.stack_hi == 0 && !(current_sp()..s).contains(&f.slot) {
        let p = f.slot as *mut usize;
        // SAFETY: without bounds every frame is on a stack of this thread that stays mapped.
        unsafe {
            if p.read_volatile() == return_trampoline_address() {
                p.write_volatile(f.ret);
            }
        }
    }
    // SAFETY: forwarded.
    if unsafe { pop_frame(g, st, k, now) } {
        bump(&g.pool.slot(st.slot).closed_early, 1);
    }
}

/// Takes frame `k` off the shadow stack once its exit is recorded. The record comes first, as
/// in the fast path, so that a handler leaving the backend between the two leaves a state that
/// [`finish_interrupted`] can complete. Returns whether the exit was recorded.
///
/// # Safety
/// The state is this thread's; `k < depth`.
unsafe fn pop_frame(g: &Globals, st: &mut ThreadState, k: usize, now: u64) -> bool {
    let f = st.frames[k];
    // SAFETY: forwarded.
    let recorded = unsafe { end_frame(g, st, k, now) };
    let depth = st.depth as usize;
    st.frames.copy_within(k + 1..depth, k);
    compiler_fence(Release);
    st.depth = depth as u32 - 1;
    forget_region(st, &f);
    recorded
}

/// Keeps the count of frames off the thread's own stack when frame `f` leaves.
fn forget_region(st: &mut ThreadState, f: &Frame) {
    if f.flags() & frame_flags::STACK_MASK != 0 {
        st.off_home -= 1;
        if st.off_home == 0 {
            st.flags &= !state_flags::OFF_HOME;
        }
    }
}

/// Removes the newest frame when its thread ends (its stack is going away): its exit is
/// recorded now.
///
/// # Safety
/// The state is this thread's and has a frame.
pub(crate) unsafe fn close_top(g: &Globals, st: &mut ThreadState, now: u64) {
    // SAFETY: forwarded; the state has a frame.
    if unsafe { pop_frame(g, st, st.depth as usize - 1, now) } {
        bump(&g.pool.slot(st.slot).closed_early, 1);
    }
}

/// The bookkeeping of frame `k`, which ended (returned or closed) and is still on the shadow
/// stack: its exit record (or, for a deferred call that proved long enough, its entry and
/// exit), the filter counts. Returns whether it was recorded.
unsafe fn end_frame(g: &Globals, st: &mut ThreadState, k: usize, now: u64) -> bool {
    let f = st.frames[k];
    if f.flags() & frame_flags::ONLY != 0 {
        st.filter_only -= 1;
    }
    if f.flags() & frame_flags::NEVER != 0 {
        st.filter_never -= 1;
    }
    let counted = frame_flags::RECORDED | frame_flags::DEFERRED;
    if f.flags() & counted == 0 {
        return false;
    }
    st.record_depth -= 1;
    if f.flags() & frame_flags::DEFERRED != 0 {
        if now.saturating_sub(f.entry_time) < g.config.time_threshold {
            return false; // too short: dropped, as asked
        }
        // SAFETY: forwarded.
        unsafe {
            write_deferred_ancestors(g, st, k);
            let word = pack_word(RecordType::Entry, f.rdepth() as u16, f.func as u64);
            push_record(g, st, f.entry_time, word);
        }
    }
    let word = pack_word(RecordType::Exit, f.rdepth() as u16, f.func as u64);
    // SAFETY: the state is registered.
    unsafe { push_record(g, st, now, word) }
}

/// `-t`: call `ending` is kept, so every other deferred frame still on the stack (its
/// ancestors) gets its entry written now, oldest first, with its own entry time.
unsafe fn write_deferred_ancestors(g: &Globals, st: &mut ThreadState, ending: usize) {
    for k in 0..st.depth as usize {
        let f = st.frames[k];
        if k == ending {
            continue;
        }
        if f.flags() & frame_flags::DEFERRED == 0 {
            continue;
        }
        let word = pack_word(RecordType::Entry, f.rdepth() as u16, f.func as u64);
        // SAFETY: the state is registered.
        unsafe { push_record(g, st, f.entry_time, word) };
        st.frames[k].set_flags((f.flags() & !frame_flags::DEFERRED) | frame_flags::RECORDED);
    }
}

/// Called by the trampoline with `rsp` as it was on entry (one past the slot the hooked
/// return address was in). Returns where the function really returns to.
///
/// # Safety
/// `st` is the calling thread's state; the trampoline was reached by a hooked return.
pub unsafe extern "C" fn on_exit(st: *mut ThreadState, sp: usize) -> usize {
    let now = rdtsc();
    let slot = sp - core::mem::size_of::<usize>();
    if (st as usize) > TLS_FAILED {
        // SAFETY: a registered state of this thread.
        let st = unsafe { &mut *st };
        let depth = st.depth as usize;
        if st.gate == GATE_OPEN {
            // SAFETY: depth <= SHADOW_STACK_DEPTH; with no frame, the base frame, whose slot
            // matches no return.
            let f = unsafe { *ThreadState::below(st, depth) };
            // SAFETY: GATE_OPEN implies a current chunk.
            let d = unsafe { &*st.desc };
            let w = d.write.load(Relaxed);
            if f.slot == slot && w != d.end.load(Relaxed) {
                st.gate = slot;
                let t = now.max(st.last_time);
                st.last_time = t;
                let word = pack_word(RecordType::Exit, (depth - 1) as u16, f.func as u64);
                // SAFETY: w < end: inside the chunk this thread owns.
                unsafe { (w as *mut [u64; 2]).write([t, word]) };
                d.write.store(w + 16, Release);
                st.depth = depth as u32 - 1;
                st.gate = GATE_OPEN;
                return f.ret;
            }
        }
    }
    // SAFETY: forwarded.
    unsafe { exit_slow(st, slot, now) }
}

#[cold]
#[inline(never)]
unsafe fn exit_slow(st: *mut ThreadState, slot: usize, now: u64) -> usize {
    let Some(g) = globals::get() else {
        broken(None, "a hooked return before the backend was set up")
    };
    if (st as usize) <= TLS_FAILED {
        broken(Some(g), "a hooked return on a thread without tracer state");
    }
    // SAFETY: a registered state of this thread.
    let st = unsafe { &mut *st };
    // A return cannot happen while the backend runs on this thread: a busy mark is stale.
    if st.gate > GATE_SLOW && st.gate != usize::MAX {
        // SAFETY: the state is this thread's.
        unsafe { finish_interrupted(g, st, st.gate) };
    }
    st.gate = slot;
    st.forget_signal_stack();
    let depth = st.depth as usize;
    let Some(k) = (0..depth).rev().find(|&k| st.frames[k].slot == slot) else {
        broken(
            Some(g),
            "a return through a frame this thread never hooked (a stack that moved to another thread?)",
        )
    };
    take_signal_skips(g, st);
    // Frames newer than the returning one on its own stack were left without a return (they
    // are below it); frames of other stacks are suspended there and stay.
    let at = region(g, st, slot);
    let returning = st.frames[k];
    for j in (k + 1..st.depth as usize).rev() {
        let f = st.frames[j];
        let dead = matches!(
            (at, frame_region(&f)),
            (Region::Home, Region::Home | Region::Signal) | (Region::Signal, Region::Signal)
        );
        if dead {
            // SAFETY: the state is ours; j < depth.
            unsafe { remove_frame(g, st, j, slot, now) };
        }
    }
    let k = (0..st.depth as usize)
        .rev()
        .find(|&j| st.frames[j].slot == slot)
        .unwrap_or(k);
    debug_assert_eq!(st.frames[k].slot, returning.slot);
    // SAFETY: the state is registered; k < depth.
    unsafe { pop_frame(g, st, k, now) };
    st.gate = st.settled_gate(g);
    returning.ret
}

#[cold]
fn broken(g: Option<&Globals>, why: &str) -> ! {
    match g {
        Some(g) => g.platform.fatal(why),
        // SAFETY: ud2 raises #UD and nothing else.
        None => unsafe { core::arch::asm!("ud2", options(noreturn, nomem, nostack)) },
    }
}
