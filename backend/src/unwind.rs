//! Unwinders and stack walkers (C++ exceptions, Rust panics, `pthread_exit`, `backtrace`)
//! cannot step through the trampoline: before they read a thread's stack every hooked slot
//! gets its real return address back, and afterwards the frames that survived are hooked
//! again. The frames the unwinder removed are closed by the next event (`shadow::settle`).
use crate::arch::return_trampoline_address;
use crate::globals::{self, Globals};
use crate::thread::{state_flags, ThreadState, GATE_SLOW, TLS_FAILED};

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
        crate::shadow::settle(
            g,
            st,
            sp - core::mem::size_of::<usize>(),
            crate::arch::rdtsc(),
        );
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

/// Puts the trampoline back into the slots of frames whose return address was restored for an
/// unwinder and that survived it.
pub(crate) unsafe fn rehook_all(st: &mut ThreadState) {
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
