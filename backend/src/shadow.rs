//! The per-thread shadow stack: which return addresses this thread has hooked, and the
//! entry/exit bookkeeping that `mcount` and the trampoline call.
//!
//! Frames are matched to returns by the address of the stack slot that held the return
//! address, not just by position, so that frames skipped by `longjmp` or by unwinding are
//! recognised (their slot lies below the one returning) and closed instead of corrupting the
//! stack.
use crate::arch::{rdtsc, return_trampoline_address};
use crate::buffer::{self, ThreadBuf};
use vftrace_format::record::{pack_word, RecordType};

/// Deepest nesting that is hooked; uftrace's depth field has 10 bits.
pub const SHADOW_STACK_DEPTH: usize = 1024;

/// One hooked call.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Frame {
    /// The return address the trampoline replaced.
    ret: usize,
    /// Where it was stored: the function's return-address slot on the real stack.
    slot: usize,
    /// Address inside the function (mcount's call site), recorded with its exit.
    func: usize,
}

/// Everything a thread keeps in thread-local storage. Zero is the valid initial state
/// (it lives in .tbss).
#[repr(C)]
pub struct ThreadLocal {
    /// This thread's buffer; null before registration, `REGISTRATION_FAILED` after a failure.
    thread: *mut ThreadBuf,
    /// Non-zero while the backend itself runs on this thread: nothing is traced then, so
    /// neither the backend's callbacks nor signal handlers interrupting it can recurse.
    busy: u32,
    depth: u32,
    frames: [Frame; SHADOW_STACK_DEPTH],
}

const REGISTRATION_FAILED: *mut ThreadBuf = core::ptr::without_provenance_mut(1);

/// Called by `mcount` with the function's return-address slot and an address inside it.
///
/// The common case (registered thread, room on both stacks, a normal nested call) is handled
/// here without calling anything, so the function needs no callee-saved registers; everything
/// else goes to the cold `hook_slow` as a tail call.
///
/// # Safety
/// `tls` is the current thread's block and `slot` the live return-address slot of the
/// function that called mcount.
pub unsafe extern "C" fn on_entry(tls: *mut ThreadLocal, slot: *mut usize, func: usize) {
    // SAFETY: the block belongs to this thread; nothing else holds a reference to it.
    let tls = unsafe { &mut *tls };
    if tls.busy != 0 {
        return;
    }
    // An interrupt handler's "return address" is the interrupted RIP: not ours to hook.
    // SAFETY: `slot` is on a live stack (the caller's contract).
    #[cfg(feature = "interruptsafe")]
    if unsafe { crate::arch::is_interrupt_frame(slot) } {
        return;
    }
    tls.busy = 1;
    let thread = tls.thread;
    let depth = tls.depth as usize;
    let slot_addr = slot as usize;
    // SAFETY: `slot` is the live return-address slot (caller's contract).
    let ret = unsafe { slot.read() };
    let nested = depth == 0
        // SAFETY: 0 < depth <= SHADOW_STACK_DEPTH.
        || (depth < SHADOW_STACK_DEPTH && unsafe { tls.frames.get_unchecked(depth - 1) }.slot > slot_addr);
    if nested
        && (thread as usize) > REGISTRATION_FAILED as usize
        && ret != return_trampoline_address()
    {
        // SAFETY: registered buffers live in the pool for the rest of the program.
        let buf = unsafe { &mut *thread };
        let now = buf.clamp_time(rdtsc());
        if buf.try_push(now, pack_word(RecordType::Entry, depth as u16, func as u64)) {
            // SAFETY: depth < SHADOW_STACK_DEPTH (nested); `slot` as above.
            unsafe { push_frame(tls, depth, slot, ret, func) };
            tls.busy = 0;
            return;
        }
    }
    // SAFETY: forwarded.
    unsafe { hook_slow(tls, slot, func) }
}

#[cold]
#[inline(never)]
unsafe fn hook_slow(tls: &mut ThreadLocal, slot: *mut usize, func: usize) {
    // SAFETY: forwarded from on_entry.
    unsafe { hook(tls, slot, func) };
    tls.busy = 0;
}

/// Everything `on_entry` does, including registration, closing dead frames and taking a new
/// chunk.
#[inline(always)]
unsafe fn hook(tls: &mut ThreadLocal, slot: *mut usize, func: usize) {
    let mut thread = tls.thread;
    if (thread as usize) <= REGISTRATION_FAILED as usize {
        thread = register(tls);
        if thread.is_null() {
            return;
        }
    }
    // SAFETY: registered buffers live in the pool for the rest of the program.
    let thread = unsafe { &mut *thread };
    // SAFETY: `slot` is the live return-address slot (caller's contract).
    let ret = unsafe { slot.read() };
    // Already hooked: a tail call reuses its caller's return slot (or mcount ran twice in one
    // frame). The frame that hooked it is live and ends when the slot is returned through.
    if ret == return_trampoline_address() {
        return;
    }
    let slot_addr = slot as usize;
    let mut depth = tls.depth as usize;
    // A caller's slot lies above ours. A frame on the shadow stack whose slot does not is no
    // longer live: it was left by longjmp or unwinding.
    if depth > 0 && tls.frames[depth - 1].slot <= slot_addr {
        // SAFETY: forwarded.
        depth = unsafe { close_dead_frames(tls, thread, slot_addr) };
    }
    if depth >= SHADOW_STACK_DEPTH {
        thread.count_unhooked();
        return;
    }
    let now = thread.clamp_time(rdtsc());
    if !thread.push(now, pack_word(RecordType::Entry, depth as u16, func as u64)) {
        return;
    }
    // SAFETY: depth < SHADOW_STACK_DEPTH was checked above; `slot` as above.
    unsafe { push_frame(tls, depth, slot, ret, func) };
}

/// Puts the call on the shadow stack at `depth` and makes it return through the trampoline.
///
/// # Safety
/// `depth < SHADOW_STACK_DEPTH`; `slot` is the live return-address slot holding `ret`.
#[inline(always)]
unsafe fn push_frame(
    tls: &mut ThreadLocal,
    depth: usize,
    slot: *mut usize,
    ret: usize,
    func: usize,
) {
    let frame = Frame {
        ret,
        slot: slot as usize,
        func,
    };
    // SAFETY: the caller's contract.
    unsafe {
        *tls.frames.get_unchecked_mut(depth) = frame;
        slot.write(return_trampoline_address());
    }
    tls.depth = depth as u32 + 1;
}

/// Pops frames that are not ancestors of the function whose slot is `slot_addr`, recording
/// their exit now. Returns the new depth.
#[cold]
unsafe fn close_dead_frames(
    tls: &mut ThreadLocal,
    thread: &mut ThreadBuf,
    slot_addr: usize,
) -> usize {
    let mut depth = tls.depth as usize;
    while depth > 0 {
        let frame = tls.frames[depth - 1];
        if frame.slot > slot_addr {
            break;
        }
        // A frame whose slot still holds the trampoline and is not the slot now being
        // hooked may be live on another stack (a signal handler on sigaltstack): keep it.
        // SAFETY: the slot lies on this thread's stack, which stays mapped.
        if frame.slot != slot_addr
            && unsafe { (frame.slot as *const usize).read_volatile() }
                == return_trampoline_address()
        {
            break;
        }
        depth -= 1;
        let now = thread.clamp_time(rdtsc());
        thread.push(
            now,
            pack_word(RecordType::Exit, depth as u16, frame.func as u64),
        );
    }
    tls.depth = depth as u32;
    depth
}

/// Called by the trampoline with `rsp` as it was on entry (one past the slot the hooked
/// return address was in). Returns where the function really returns to. Like `on_entry`, the
/// common case calls nothing.
///
/// # Safety
/// `tls` is the current thread's block; the trampoline was reached by a hooked return.
pub unsafe extern "C" fn on_exit(tls: *mut ThreadLocal, sp: usize) -> usize {
    let now = rdtsc();
    // SAFETY: the block belongs to this thread.
    let tls = unsafe { &mut *tls };
    let was_busy = tls.busy;
    tls.busy = 1;
    let slot = sp - core::mem::size_of::<usize>();
    let depth = tls.depth as usize;
    if depth > 0 {
        // SAFETY: 0 < depth <= SHADOW_STACK_DEPTH.
        let frame = unsafe { *tls.frames.get_unchecked(depth - 1) };
        // SAFETY: a frame was hooked, so the thread registered successfully.
        let buf = unsafe { &mut *tls.thread };
        if frame.slot == slot {
            let now = buf.clamp_time(now);
            if buf.try_push(
                now,
                pack_word(RecordType::Exit, (depth - 1) as u16, frame.func as u64),
            ) {
                tls.depth = depth as u32 - 1;
                tls.busy = was_busy;
                return frame.ret;
            }
        }
    }
    // SAFETY: forwarded.
    unsafe { unhook_slow(tls, slot, now, was_busy) }
}

/// Everything `on_exit` does: closing frames skipped by longjmp, taking a new chunk.
#[cold]
#[inline(never)]
unsafe fn unhook_slow(tls: &mut ThreadLocal, slot: usize, now: u64, was_busy: u32) -> usize {
    // SAFETY: a frame was hooked, so the thread registered successfully.
    let thread = unsafe { &mut *tls.thread };
    let now = thread.clamp_time(now);
    let mut depth = tls.depth as usize;
    let ret = loop {
        if depth == 0 {
            broken_shadow_stack();
        }
        depth -= 1;
        // SAFETY: depth < SHADOW_STACK_DEPTH by construction.
        let frame = unsafe { *tls.frames.get_unchecked(depth) };
        if frame.slot > slot {
            // The returning frame is not on the shadow stack: nowhere safe to return to.
            broken_shadow_stack();
        }
        // Frames below the returning one were skipped (longjmp); they end now too.
        thread.push(
            now,
            pack_word(RecordType::Exit, depth as u16, frame.func as u64),
        );
        if frame.slot == slot {
            break frame.ret;
        }
    };
    tls.depth = depth as u32;
    tls.busy = was_busy;
    ret
}

/// The trampoline cannot know where to return: stop at once rather than jump anywhere.
#[cold]
fn broken_shadow_stack() -> ! {
    // SAFETY: ud2 raises #UD and nothing else.
    unsafe { core::arch::asm!("ud2", options(noreturn, nomem, nostack)) }
}

/// Registers the calling thread: names it and gives it a buffer.
#[cold]
#[inline(never)]
fn register(tls: &mut ThreadLocal) -> *mut ThreadBuf {
    if tls.thread == REGISTRATION_FAILED {
        return core::ptr::null_mut();
    }
    tls.thread = REGISTRATION_FAILED;
    match buffer::register_thread() {
        Some(t) => {
            tls.thread = t;
            t
        }
        None => core::ptr::null_mut(),
    }
}

/// Puts back the original return address of every frame this thread has hooked, so that an
/// unwinder sees real return addresses. The frames stay on the shadow stack; they are closed
/// when found dead.
///
/// # Safety
/// `tls` is the current thread's block.
pub unsafe fn unhook_all(tls: *mut ThreadLocal) {
    // SAFETY: the block belongs to this thread.
    let tls = unsafe { &mut *tls };
    let was_busy = tls.busy;
    tls.busy = 1;
    for frame in &tls.frames[..tls.depth as usize] {
        let slot = frame.slot as *mut usize;
        // SAFETY: hooked frames are live ancestors of the caller; their slots are on this
        // thread's stack. Only slots still holding the trampoline are touched.
        unsafe {
            if slot.read_volatile() == return_trampoline_address() {
                slot.write_volatile(frame.ret);
            }
        }
    }
    tls.busy = was_busy;
}
