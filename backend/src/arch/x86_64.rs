//! x86_64 System V: `mcount`, `__fentry__`, the return trampoline and the thread-local pointer.
//!
//! `mcount` is called after the instrumented function's frame-pointer prologue
//! (`push rbp; mov rbp, rsp; call mcount`), so the function's own return address lives at
//! `[rbp + 8]`. `__fentry__` (`-pg -mfentry`) is called before any prologue, so it lives just
//! above `__fentry__`'s own return address. Both save every argument register (and xmm0-7
//! where the target has SSE), because the function has not read its arguments yet; they share
//! everything but where they find the slot. The trampoline replaces a hooked return address; it
//! saves the return value registers (rax, rdx, and xmm0/xmm1 with SSE) around the exit
//! bookkeeping. Before anything else they read the word `ENABLED_WORD` points to (r11 is
//! free to use: no argument lives there), so that tracing off costs a load and a compare.
//!
//! With the `interruptsafe` feature all of them also preserve every other scratch register and
//! the flags, for code such as interrupt handlers that is entered without a call.
//!
//! Thread-local state is one pointer in `.tbss`, reached through %fs: in the local-exec model
//! when the backend is linked into the executable (or kernel), in the initial-exec model
//! (feature `initial-exec`) when it is a preloaded shared library. The program (or kernel)
//! must give each thread a TLS block and put the thread pointer at `%fs:0`, as glibc does and
//! as the example unikernel does.
use crate::globals::ENABLED_WORD;
use crate::shadow::{on_entry, on_exit};

#[cfg(feature = "interruptsafe")]
macro_rules! save_extra_gprs {
    () => {
        "pushfq\n cld\n push r11\n"
    };
}
#[cfg(feature = "interruptsafe")]
macro_rules! restore_extra_gprs {
    () => {
        "pop r11\n popfq\n"
    };
}
#[cfg(not(feature = "interruptsafe"))]
macro_rules! save_extra_gprs {
    () => {
        ""
    };
}
#[cfg(not(feature = "interruptsafe"))]
macro_rules! restore_extra_gprs {
    () => {
        ""
    };
}
#[cfg(feature = "interruptsafe")]
const EXTRA_GPRS: usize = 2;
#[cfg(not(feature = "interruptsafe"))]
const EXTRA_GPRS: usize = 0;

// Vector registers: with SSE, mcount keeps xmm0-7 (arguments) and the trampoline xmm0-1
// (return values); interruptsafe keeps all sixteen. Without SSE there is nothing to keep.
#[cfg(all(target_feature = "sse", not(feature = "interruptsafe")))]
macro_rules! mcount_xmm {
    ($op:ident) => {
        xmm_ops!($op 0 1 2 3 4 5 6 7)
    };
}
#[cfg(all(target_feature = "sse", not(feature = "interruptsafe")))]
macro_rules! trampoline_xmm {
    ($op:ident) => {
        xmm_ops!($op 0 1)
    };
}
#[cfg(all(target_feature = "sse", feature = "interruptsafe"))]
macro_rules! mcount_xmm {
    ($op:ident) => {
        xmm_ops!($op 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)
    };
}
#[cfg(all(target_feature = "sse", feature = "interruptsafe"))]
macro_rules! trampoline_xmm {
    ($op:ident) => {
        mcount_xmm!($op)
    };
}
#[cfg(not(target_feature = "sse"))]
macro_rules! mcount_xmm {
    ($op:ident) => {
        ""
    };
}
#[cfg(not(target_feature = "sse"))]
macro_rules! trampoline_xmm {
    ($op:ident) => {
        ""
    };
}
#[cfg(target_feature = "sse")]
macro_rules! xmm_ops {
    (save $($n:literal)*) => {
        concat!($("movaps xmmword ptr [rsp + ", $n, " * 16], xmm", $n, "\n",)*)
    };
    (restore $($n:literal)*) => {
        concat!($("movaps xmm", $n, ", xmmword ptr [rsp + ", $n, " * 16]\n",)*)
    };
}

const fn xmm_count(mcount: bool) -> usize {
    if cfg!(not(target_feature = "sse")) {
        0
    } else if cfg!(feature = "interruptsafe") {
        16
    } else if mcount {
        8
    } else {
        2
    }
}

// gcc -pg calls mcount with whatever alignment the prologue left, so both entry points
// save rbx, keep the entry rsp in it, and align rsp to 16 themselves.

/// General registers mcount pushes: 8 argument registers (rax for varargs, r10 static
/// chain), the extras, and rbx.
const MCOUNT_PUSHED: usize = 8 + EXTRA_GPRS + 1;
/// Offset from rbx (the rsp after the pushes) to mcount's return address.
const MCOUNT_RET: usize = MCOUNT_PUSHED * 8;
const MCOUNT_XMM_AREA: usize = xmm_count(true) * 16;

/// The trampoline pushes rax, rdx, the other scratch registers when interruptsafe (rcx, rsi,
/// rdi, r8, r9, r10 and the extras), and rbx, below a reserved slot for the real return address.
const TRAMP_PUSHED: usize =
    2 + if cfg!(feature = "interruptsafe") {
        6 + EXTRA_GPRS
    } else {
        0
    } + 1;
/// Offset from rbx to the reserved return slot.
const TRAMP_SLOT: usize = TRAMP_PUSHED * 8;
const TRAMP_XMM_AREA: usize = xmm_count(false) * 16;

// The trampoline leaves with an indirect jmp where it may clobber r11. The hooked function's
// own `ret` already used (and mispredicted) the return-stack-buffer entry of its call; a second
// `ret` here would pop its caller's entry too, so every later return up the stack would be
// mispredicted as well (measured: about 4 ns per traced call in a tight loop).
#[cfg(feature = "interruptsafe")]
macro_rules! tramp_return {
    () => {
        "ret\n"
    };
}
#[cfg(not(feature = "interruptsafe"))]
macro_rules! tramp_return {
    () => {
        "pop r11\n jmp r11\n"
    };
}

#[cfg(feature = "interruptsafe")]
macro_rules! tramp_save_scratch {
    () => {
        "push rcx\n push rsi\n push rdi\n push r8\n push r9\n push r10\n"
    };
}
#[cfg(feature = "interruptsafe")]
macro_rules! tramp_restore_scratch {
    () => {
        "pop r10\n pop r9\n pop r8\n pop rdi\n pop rsi\n pop rcx\n"
    };
}
#[cfg(not(feature = "interruptsafe"))]
macro_rules! tramp_save_scratch {
    () => {
        ""
    };
}
#[cfg(not(feature = "interruptsafe"))]
macro_rules! tramp_restore_scratch {
    () => {
        ""
    };
}

// Loads the thread's state pointer into rdi.
#[cfg(not(feature = "initial-exec"))]
macro_rules! load_state {
    () => {
        "mov rdi, qword ptr fs:[vftrace_thread_state@tpoff]\n"
    };
}
#[cfg(feature = "initial-exec")]
macro_rules! load_state {
    () => {
        "mov rdi, qword ptr [rip + vftrace_thread_state@gottpoff]\n mov rdi, qword ptr fs:[rdi]\n"
    };
}

// The per-thread pointer to the thread's state (0 until it registers).
core::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 3",
    ".globl vftrace_thread_state",
    ".hidden vftrace_thread_state",
    ".type vftrace_thread_state,@object",
    ".size vftrace_thread_state, 8",
    "vftrace_thread_state:",
    ".zero 8",
    ".popsection",
);

// mcount and __fentry__ differ only in where the function's return-address slot is; each has
// its own copy of the rest so that neither pays a jump.
macro_rules! entry_prologue {
    () => {
        concat!(
            // interruptsafe saves the flags (and r11) before anything can change them.
            save_extra_gprs!(),
            "mov r11, qword ptr [rip + {enabled}]\n",
            "cmp dword ptr [r11], 0\n",
            "je 2f\n",
            "push rax\n push rdi\n push rsi\n push rdx\n push rcx\n push r8\n push r9\n push r10\n",
            "push rbx\n",
            "mov rbx, rsp\n",
        )
    };
}
macro_rules! entry_body {
    () => {
        concat!(
            "mov rdx, qword ptr [rbx + {mcount_ret}]\n",
            "and rsp, -16\n",
            "sub rsp, {mcount_xmm_area}\n",
            mcount_xmm!(save),
            load_state!(),
            "call {on_entry}\n",
            mcount_xmm!(restore),
            "mov rsp, rbx\n",
            "pop rbx\n",
            "pop r10\n pop r9\n pop r8\n pop rcx\n pop rdx\n pop rsi\n pop rdi\n pop rax\n",
            "2:\n",
            restore_extra_gprs!(),
            "ret\n",
        )
    };
}

/// Called by `gcc -pg` and `rustc -Z instrument-mcount` code right after the function's
/// frame-pointer prologue: the function's return address is at `rbp + 8`.
///
/// # Safety
/// Only instrumented code calls it, as described above.
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn mcount() {
    core::arch::naked_asm!(
        concat!(
            entry_prologue!(),
            "lea rsi, [rbp + 8]\n",
            // r10 as it came: a realigning prologue's pointer to the real slot (see on_entry).
            "mov rcx, qword ptr [rbx + 8]\n",
            entry_body!()
        ),
        enabled = sym ENABLED_WORD,
        mcount_xmm_area = const MCOUNT_XMM_AREA,
        mcount_ret = const MCOUNT_RET,
        on_entry = sym on_entry,
    )
}

/// glibc's other name for `mcount`.
///
/// # Safety
/// As for [`mcount`].
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn _mcount() {
    core::arch::naked_asm!("jmp {mcount}", mcount = sym mcount)
}

/// Called by `-pg -mfentry` code before any prologue: the function's return address is the
/// word just above `__fentry__`'s own.
///
/// # Safety
/// Only instrumented code calls it, as described above.
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn __fentry__() {
    core::arch::naked_asm!(
        concat!(
            entry_prologue!(),
            "lea rsi, [rbx + {mcount_ret} + 8]\n",
            "xor ecx, ecx\n",
            entry_body!()
        ),
        enabled = sym ENABLED_WORD,
        mcount_xmm_area = const MCOUNT_XMM_AREA,
        mcount_ret = const MCOUNT_RET,
        on_entry = sym on_entry,
    )
}

/// Where a hooked function returns instead of to its caller.
///
/// # Safety
/// Only reached through a return address the backend hooked.
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn vftrace_return_trampoline() {
    core::arch::naked_asm!(
        concat!(
            // The slot for the real return address (lea: the flags are not saved yet).
            "lea rsp, [rsp - 8]\n",
            save_extra_gprs!(),
            tramp_save_scratch!(),
            "push rax\n push rdx\n",
            "push rbx\n",
            "mov rbx, rsp\n",
            "and rsp, -16\n",
            "sub rsp, {tramp_xmm_area}\n",
            trampoline_xmm!(save),
            load_state!(),
            "lea rsi, [rbx + {tramp_slot} + 8]\n",
            "call {on_exit}\n",
            "mov qword ptr [rbx + {tramp_slot}], rax\n",
            trampoline_xmm!(restore),
            "mov rsp, rbx\n",
            "pop rbx\n",
            "pop rdx\n pop rax\n",
            tramp_restore_scratch!(),
            restore_extra_gprs!(),
            tramp_return!(),
        ),
        tramp_xmm_area = const TRAMP_XMM_AREA,
        tramp_slot = const TRAMP_SLOT,
        on_exit = sym on_exit,
    )
}

/// Address that hooked frames return through.
#[inline(always)]
pub fn return_trampoline_address() -> usize {
    vftrace_return_trampoline as *const () as usize
}

/// The calling thread's TLS word: its `ThreadState` pointer, 0 before registration.
///
/// # Safety
/// The thread has a TLS block (the platform's contract, see the module documentation).
#[inline(always)]
pub unsafe fn tls_get() -> usize {
    let v: usize;
    // SAFETY: reads this thread's TLS word; no other memory is touched.
    unsafe {
        #[cfg(not(feature = "initial-exec"))]
        core::arch::asm!(
            "mov {v}, qword ptr fs:[vftrace_thread_state@tpoff]",
            v = out(reg) v,
            options(nostack, readonly, preserves_flags),
        );
        #[cfg(feature = "initial-exec")]
        core::arch::asm!(
            "mov {v}, qword ptr [rip + vftrace_thread_state@gottpoff]",
            "mov {v}, qword ptr fs:[{v}]",
            v = out(reg) v,
            options(nostack, readonly, preserves_flags),
        );
    }
    v
}

/// Sets the calling thread's TLS word.
///
/// # Safety
/// As for [`tls_get`]; `v` is 0, `TLS_FAILED` or a state of this thread.
#[inline(always)]
pub unsafe fn tls_set(v: usize) {
    // SAFETY: writes this thread's TLS word only.
    unsafe {
        #[cfg(not(feature = "initial-exec"))]
        core::arch::asm!(
            "mov qword ptr fs:[vftrace_thread_state@tpoff], {v}",
            v = in(reg) v,
            options(nostack, preserves_flags),
        );
        #[cfg(feature = "initial-exec")]
        core::arch::asm!(
            "mov {t}, qword ptr [rip + vftrace_thread_state@gottpoff]",
            "mov qword ptr fs:[{t}], {v}",
            v = in(reg) v,
            t = out(reg) _,
            options(nostack, preserves_flags),
        );
    }
}

/// Whether the return-address slot of an instrumented function is really the start of a
/// hardware interrupt frame (RIP, CS, RFLAGS, RSP, SS; or error code, RIP, ...): kernels
/// instrument their interrupt handlers too, and hooking there would send `iretq` to the
/// trampoline. Both CS and SS must match the current selectors, which ordinary stack data
/// (small integers) practically never does twice at these offsets.
///
/// # Safety
/// `slot` points into a live stack with at least six words above it, or the first compare
/// fails (a frame whose next word is not CS is not read further).
#[cfg(feature = "interruptsafe")]
#[inline(always)]
pub unsafe fn is_interrupt_frame(slot: *const usize) -> bool {
    let (cs, ss): (usize, usize);
    // SAFETY: reading segment selectors has no side effects.
    unsafe {
        core::arch::asm!(
            "mov {cs:x}, cs", "movzx {cs:e}, {cs:x}", "mov {ss:x}, ss", "movzx {ss:e}, {ss:x}",
            cs = out(reg) cs, ss = out(reg) ss,
            options(nomem, nostack, preserves_flags),
        );
    }
    // SAFETY: the caller's contract; each later word is read only if the earlier one matched.
    unsafe {
        (slot.add(1).read() == cs && slot.add(4).read() == ss)
            || (slot.add(2).read() == cs && slot.add(5).read() == ss)
    }
}

/// The time-stamp counter. `rdtsc` is not serializing; per-thread clamping in the buffer keeps
/// the times of one thread monotonic.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64 (user mode may read it unless CR4.TSD).
    unsafe { core::arch::x86_64::_rdtsc() }
}
