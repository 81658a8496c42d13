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
//! - **A new call decides what the frames above it are** ([`settle`]): on the same stack, a frame
//!   whose slot is not above the new call's is dead. Whether two slots are on the same stack is
//!   known from the thread's own stack bounds (from the platform) and the signal stack: a call
//!   on another stack (a coroutine, a signal handler on `sigaltstack`) nests over the frames it
//!   interrupts; coming back to the thread's stack closes the frames of the stack it left.
//! - **A frame is dropped only once nothing can return through it**: when it is closed while
//!   it may still be live elsewhere (another stack), its original return address is put back.
//!   Frames on the current stack below the caller's slot are dead and never written (that
//!   memory may already be the current function's frame).
//! - **Tail calls**: a function entered by `jmp` reuses its caller's hooked slot. It gets a
//!   frame of its own whose "return address" is the trampoline, so its exit runs the
//!   trampoline again for the caller's: `a() { b() { c() } }`, as uftrace shows.
//! - **Unwinding** (C++ exceptions, Rust panics, `pthread_exit`): the frontend's wrappers of the
//!   unwinder call [`unhook_all`] before it walks the stack (it cannot step through the
//!   trampoline); the next event closes the unwound frames and hooks the survivors again.
//! - **Busy**: while the backend runs on a thread, a signal handler's calls are not traced
//!   (counted). A busy mark left by a handler that `siglongjmp`ed out of the backend is stale
//!   as soon as an event happens above it on the same stack, or any return is seen.
use crate::arch::{rdtsc, return_trampoline_address};
use crate::filter::{action, ConfigExt};
use crate::platform::PlatformExt;
use crate::globals::{self, Globals};
use crate::thread::{
    self, bump, count_unrecorded, frame_flags, push_record, state_flags, take_signal_skips, Frame, ThreadState, GATE_OPEN, GATE_SLOW, SHADOW_STACK_DEPTH, TLS_FAILED,
};
use core::sync::atomic::{compiler_fence, Ordering::*};
use vftrace_format::record::{pack_word, RecordType};

/// Called by `mcount`/`__fentry__` with the thread's state (0 before it registered), the
/// function's return-address slot and an address inside the function.
///
/// # Safety
/// `st` is the calling thread's TLS value; `slot` the live return-address slot of the function
/// that called mcount.
pub unsafe extern "C" fn on_entry(st: *mut ThreadState, slot: *mut usize, func: usize) {
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
            // SAFETY: 0 < depth < SHADOW_STACK_DEPTH.
            && (depth == 0 || unsafe { st.frames.get_unchecked(depth - 1) }.slot > s)
        {
            // SAFETY: the caller's contract.
            let ret = unsafe { slot.read() };
            // SAFETY: GATE_OPEN implies a current chunk.
            let d = unsafe { &*st.desc };
            let w = d.write.load(Relaxed);
            if ret != return_trampoline_address() && w != d.end.load(Relaxed) {
                st.gate = s;
                let t = rdtsc().max(st.last_time);
                st.last_time = t;
                d.last_time.store(t, Relaxed);
                let word = pack_word(RecordType::Entry, depth as u16, func as u64);
                // SAFETY: w < end: inside the chunk this thread owns.
                unsafe { (w as *mut [u64; 2]).write([t, word]) };
                d.write.store(w + 16, Release);
                // SAFETY: depth < SHADOW_STACK_DEPTH; `slot` as above.
                unsafe { push_frame(st, depth, slot, ret, func, frame_flags::RECORDED, depth as u32) };
                st.gate = GATE_OPEN;
                return;
            }
        }
    }
    // SAFETY: forwarded.
    unsafe { entry_slow(st, slot, func) }
}

/// Puts the call on the shadow stack at `depth` and makes it return through the trampoline.
/// The order matters to a signal handler interrupting it: the frame, then the depth, then the
/// slot, so that a slot never holds the trampoline without its frame.
///
/// # Safety
/// `depth < SHADOW_STACK_DEPTH`; `slot` is the live return-address slot holding `ret`.
#[inline(always)]
unsafe fn push_frame(
    st: &mut ThreadState,
    depth: usize,
    slot: *mut usize,
    ret: usize,
    func: usize,
    flags: u32,
    rdepth: u32,
) {
    // SAFETY: the caller's contract.
    let f = unsafe { st.frames.get_unchecked_mut(depth) };
    f.ret = ret;
    f.slot = slot as usize;
    f.func = func;
    f.flags = flags;
    f.rdepth = rdepth;
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
    if st.gate > GATE_SLOW && !busy_is_stale(g, st, st.gate, s) {
        // A signal handler interrupted the backend: not traced, but counted.
        let n = st.signal_skipped.load(Relaxed);
        st.signal_skipped.store(n + 1, Relaxed);
        return;
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
            rehook_all(st);
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
    let mut entry_time = 0;
    if flags & frame_flags::RECORDED != 0 {
        let word = pack_word(RecordType::Entry, rdepth as u16, func as u64);
        // SAFETY: the state is registered.
        if !unsafe { push_record(g, st, now, word) } {
            // The exit will not be written either.
            bump(&g.pool.slot(st.slot).lost, 1);
            st.pending_lost += 1;
            return;
        }
    } else if flags & frame_flags::DEFERRED != 0 {
        entry_time = now.max(st.last_time);
    }
    // SAFETY: depth < SHADOW_STACK_DEPTH; `slot` is live and holds `ret`.
    unsafe { push_frame(st, depth, slot, ret, func, flags, rdepth) };
    st.frames[depth].entry_time = entry_time;
    if flags & (frame_flags::RECORDED | frame_flags::DEFERRED) != 0 {
        st.record_depth += 1;
    }
    if flags & frame_flags::ONLY != 0 {
        st.filter_only += 1;
    }
    if flags & frame_flags::NEVER != 0 {
        st.filter_never += 1;
    }
    if st.stack_hi != 0 && region(g, st, s) != Region::Home {
        st.flags |= state_flags::OFF_HOME;
    }
}

/// Where a stack address is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Region {
    /// The thread's own stack.
    Home,
    /// The signal stack the thread runs on now.
    Signal,
    /// Elsewhere: a coroutine's stack, or the thread's stack when its bounds are unknown.
    Other,
}

fn region(g: &Globals, st: &ThreadState, addr: usize) -> Region {
    if st.stack_hi != 0 && (st.stack_lo..st.stack_hi).contains(&addr) {
        return Region::Home;
    }
    match st.signal_stack(g) {
        Some((lo, hi)) if (lo..hi).contains(&addr) => Region::Signal,
        _ => Region::Other,
    }
}

/// Slots this close together outside any known stack are taken to be on one stack.
const OTHER_STACK_SPAN: usize = 256 << 10;

fn same_stack(g: &Globals, st: &ThreadState, a: usize, b: usize) -> bool {
    if st.stack_hi == 0 {
        return true; // no bounds: one stack, ordered by address
    }
    match (region(g, st, a), region(g, st, b)) {
        (Region::Home, Region::Home) | (Region::Signal, Region::Signal) => true,
        (Region::Other, Region::Other) => a.abs_diff(b) < OTHER_STACK_SPAN,
        _ => false,
    }
}

/// Whether a busy mark (the slot `busy` of the call whose mcount set it) was left behind. The
/// backend runs below that slot; a signal handler interrupting it runs further below, so an
/// event at or above the slot on the same stack means that backend call is gone (a handler
/// `siglongjmp`ed out of it). Without stack bounds nothing can be told: never stale.
fn busy_is_stale(g: &Globals, st: &ThreadState, busy: usize, s: usize) -> bool {
    // usize::MAX marks the backend's own non-call work (registration, unwinding support).
    st.stack_hi != 0 && busy != usize::MAX && s >= busy && same_stack(g, st, s, busy)
}

/// Closes the frames that a call at slot `s` shows to be over: dead frames on its own stack,
/// and the frames of a stack the thread left.
///
/// # Safety
/// The state is this thread's.
unsafe fn settle(g: &Globals, st: &mut ThreadState, s: usize, now: u64) {
    while st.depth > 0 {
        let top = st.frames[st.depth as usize - 1];
        let close = if same_stack(g, st, top.slot, s) {
            if top.slot > s {
                break; // an ancestor
            }
            // The same slot still hooked: a tail call of the newest frame.
            // SAFETY: `s` is the live slot of the calling function.
            if top.slot == s && unsafe { (s as *const usize).read() } == return_trampoline_address()
            {
                break;
            }
            true
        } else {
            match region(g, st, s) {
                // A signal handler on its own stack: it interrupts whatever was running.
                Region::Signal => false,
                // The thread's stack switches to a coroutine's: its frames wait.
                Region::Other => region(g, st, top.slot) != Region::Home,
                // Back on the thread's stack: the frames of the stack it left are closed.
                Region::Home => true,
            }
        };
        if !close {
            break;
        }
        // Dead frames on the current stack at or below `s` are not written; frames on other
        // stacks may be live there and get their return address back.
        let restore = !same_stack(g, st, top.slot, s) || top.slot > s;
        // SAFETY: forwarded.
        unsafe { close_top(g, st, now, restore) };
    }
    if st.flags & state_flags::OFF_HOME != 0 && st.stack_hi != 0 {
        let off = st.frames[..st.depth as usize]
            .iter()
            .any(|f| region(g, st, f.slot) != Region::Home);
        if !off {
            st.flags &= !state_flags::OFF_HOME;
        }
    }
}

/// Removes the newest frame without a return through it: its exit is recorded now (an
/// estimate, counted), and with `restore` its slot gets the original return address back if it
/// still holds the trampoline.
///
/// # Safety
/// The state is this thread's; with `restore`, the frame's slot is still mapped.
pub(crate) unsafe fn close_top(g: &Globals, st: &mut ThreadState, now: u64, restore: bool) {
    let depth = st.depth as usize - 1;
    let f = st.frames[depth];
    if restore {
        let p = f.slot as *mut usize;
        // SAFETY: the caller's contract.
        unsafe {
            if p.read_volatile() == return_trampoline_address() {
                p.write_volatile(f.ret);
            }
        }
    }
    st.depth = depth as u32;
    // SAFETY: forwarded.
    if unsafe { end_frame(g, st, &f, now) } {
        bump(&g.pool.slot(st.slot).closed_early, 1);
    }
}

/// The bookkeeping of a frame that ended (returned or closed): its exit record (or, for a
/// deferred call that proved long enough, its entry and exit), the filter counts. Returns
/// whether it was recorded.
unsafe fn end_frame(g: &Globals, st: &mut ThreadState, f: &Frame, now: u64) -> bool {
    if f.flags & frame_flags::ONLY != 0 {
        st.filter_only -= 1;
    }
    if f.flags & frame_flags::NEVER != 0 {
        st.filter_never -= 1;
    }
    let counted = frame_flags::RECORDED | frame_flags::DEFERRED;
    if f.flags & counted == 0 {
        return false;
    }
    st.record_depth -= 1;
    if f.flags & frame_flags::DEFERRED != 0 {
        if now.saturating_sub(f.entry_time) < g.config.time_threshold {
            return false; // too short: dropped, as asked
        }
        // SAFETY: forwarded.
        unsafe {
            write_deferred_ancestors(g, st);
            let word = pack_word(RecordType::Entry, f.rdepth as u16, f.func as u64);
            push_record(g, st, f.entry_time, word);
        }
    }
    let word = pack_word(RecordType::Exit, f.rdepth as u16, f.func as u64);
    // SAFETY: the state is registered.
    unsafe { push_record(g, st, now, word) }
}

/// `-t`: a call is kept, so every deferred frame still on the stack (its ancestors) gets its
/// entry written now, oldest first, with its own entry time.
unsafe fn write_deferred_ancestors(g: &Globals, st: &mut ThreadState) {
    for k in 0..st.depth as usize {
        let f = st.frames[k];
        if f.flags & frame_flags::DEFERRED == 0 {
            continue;
        }
        let word = pack_word(RecordType::Entry, f.rdepth as u16, f.func as u64);
        // SAFETY: the state is registered.
        unsafe { push_record(g, st, f.entry_time, word) };
        st.frames[k].flags = (f.flags & !frame_flags::DEFERRED) | frame_flags::RECORDED;
    }
}

/// Puts the trampoline back into the slots of frames whose return address was restored for an
/// unwinder and that survived it.
unsafe fn rehook_all(st: &mut ThreadState) {
    for k in 0..st.depth as usize {
        let f = st.frames[k];
        let p = f.slot as *mut usize;
        // SAFETY: surviving frames are live on their stacks.
        unsafe {
            if p.read_volatile() == f.ret {
                p.write_volatile(return_trampoline_address());
            }
        }
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
        if st.gate == GATE_OPEN && depth > 0 {
            // SAFETY: 0 < depth <= SHADOW_STACK_DEPTH.
            let f = unsafe { *st.frames.get_unchecked(depth - 1) };
            // SAFETY: GATE_OPEN implies a current chunk.
            let d = unsafe { &*st.desc };
            let w = d.write.load(Relaxed);
            if f.slot == slot && w != d.end.load(Relaxed) {
                st.gate = slot;
                let t = now.max(st.last_time);
                st.last_time = t;
                d.last_time.store(t, Relaxed);
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
    // Frames newer than the returning one were left without a return. Those on this stack are
    // below us (dead, not written); those on other stacks may be live there.
    while st.depth as usize > k + 1 {
        let top = st.frames[st.depth as usize - 1];
        let restore = !same_stack(g, st, top.slot, slot);
        // SAFETY: the state is ours.
        unsafe { close_top(g, st, now, restore) };
    }
    let f = st.frames[k];
    st.depth = k as u32;
    // SAFETY: the state is registered.
    unsafe { end_frame(g, st, &f, now) };
    st.gate = st.settled_gate(g);
    f.ret
}

#[cold]
fn broken(g: Option<&Globals>, why: &str) -> ! {
    match g {
        Some(g) => g.platform.fatal(why),
        // SAFETY: ud2 raises #UD and nothing else.
        None => unsafe { core::arch::asm!("ud2", options(noreturn, nomem, nostack)) },
    }
}

/// Before an unwinder walks this thread's stack: every hooked slot gets its original return
/// address back. The next event closes what was unwound and hooks the rest again.
///
/// # Safety
/// Called on the thread whose stack is about to be unwound, outside the backend.
pub(crate) unsafe fn unhook_all(g: &Globals) {
    // SAFETY: TLS of the calling thread.
    let raw = unsafe { crate::arch::tls_get() };
    if raw <= TLS_FAILED {
        return;
    }
    // SAFETY: this thread's state.
    let st = unsafe { &mut *(raw as *mut ThreadState) };
    let gate = st.gate;
    st.gate = usize::MAX;
    // Newest first, so that a tail-call chain's slot ends up with its oldest frame's address.
    for k in (0..st.depth as usize).rev() {
        let f = st.frames[k];
        let p = f.slot as *mut usize;
        // SAFETY: hooked frames' slots are on this thread's stacks; only slots still holding
        // the trampoline are touched.
        unsafe {
            if p.read_volatile() == return_trampoline_address() {
                p.write_volatile(f.ret);
            }
        }
    }
    st.flags |= state_flags::UNWOUND;
    st.gate = if gate > GATE_SLOW { gate } else { GATE_SLOW };
    let _ = g;
}

/// The unwinder handed control to a handler (a C++ `catch`) running with its stack at `sp`:
/// frames below it are over, the rest are hooked again now, so that the catching function's
/// own return is seen.
///
/// # Safety
/// Called on the thread that caught, from the handler's function, outside the backend.
pub(crate) unsafe fn caught(g: &Globals, sp: usize) {
    // SAFETY: TLS of the calling thread.
    let raw = unsafe { crate::arch::tls_get() };
    if raw <= TLS_FAILED {
        return;
    }
    // SAFETY: this thread's state.
    let st = unsafe { &mut *(raw as *mut ThreadState) };
    if st.flags & state_flags::UNWOUND == 0 || st.gate > GATE_SLOW {
        return;
    }
    st.gate = usize::MAX;
    st.forget_signal_stack();
    // SAFETY: as in `entry`, with the handler's call slot.
    unsafe {
        settle(g, st, sp - core::mem::size_of::<usize>(), rdtsc());
        rehook_all(st);
    }
    st.flags &= !state_flags::UNWOUND;
    st.gate = st.settled_gate(g);
}

/// After a stack walk that needed real return addresses (`backtrace`): hooks them again.
///
/// # Safety
/// Called on the thread that walked its stack, right after [`unhook_all`].
pub(crate) unsafe fn rehook_after_walk() {
    // SAFETY: TLS of the calling thread.
    let raw = unsafe { crate::arch::tls_get() };
    if raw <= TLS_FAILED {
        return;
    }
    // SAFETY: this thread's state.
    let st = unsafe { &mut *(raw as *mut ThreadState) };
    // SAFETY: the frames are the walker's callers, all live.
    unsafe { rehook_all(st) };
    st.flags &= !state_flags::UNWOUND;
    if let Some(g) = globals::get() {
        if st.gate <= GATE_SLOW {
            st.gate = st.settled_gate(g);
        }
    }
}
