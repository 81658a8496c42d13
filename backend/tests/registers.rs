//! mcount and the trampoline must give instrumented code back every register it may rely on:
//! the argument registers after mcount, the return registers after the trampoline, and with
//! `interruptsafe` every scratch register and the flags. A hand-written "instrumented" function
//! loads known values, calls mcount, records what it sees, loads new values and returns
//! through the trampoline; its caller records what arrives.
use core::arch::global_asm;
use vftrace_backend::{vftrace_backend_enable, vftrace_backend_init, vftrace_backend_thread_read};

/// Registers as stored by the probes: flags, rax, rcx, rdx, rsi, rdi, r8, r9, r10, r11,
/// then xmm0..xmm15 (low 64 bits).
#[repr(C)]
#[derive(Default, Debug)]
struct Regs([u64; 26]);

#[no_mangle]
static mut PROBE_AFTER_MCOUNT: Regs = Regs([0; 26]);
#[no_mangle]
static mut PROBE_AFTER_RETURN: Regs = Regs([0; 26]);

macro_rules! store_all {
    ($dest:literal) => {
        concat!(
            "pushfq\n pop qword ptr [rip + ",
            $dest,
            "]\n",
            "mov [rip + ",
            $dest,
            " + 8], rax\n mov [rip + ",
            $dest,
            " + 16], rcx\n",
            "mov [rip + ",
            $dest,
            " + 24], rdx\n mov [rip + ",
            $dest,
            " + 32], rsi\n",
            "mov [rip + ",
            $dest,
            " + 40], rdi\n mov [rip + ",
            $dest,
            " + 48], r8\n",
            "mov [rip + ",
            $dest,
            " + 56], r9\n mov [rip + ",
            $dest,
            " + 64], r10\n",
            "mov [rip + ",
            $dest,
            " + 72], r11\n",
            "movq [rip + ",
            $dest,
            " + 80], xmm0\n movq [rip + ",
            $dest,
            " + 88], xmm1\n",
            "movq [rip + ",
            $dest,
            " + 96], xmm2\n movq [rip + ",
            $dest,
            " + 104], xmm3\n",
            "movq [rip + ",
            $dest,
            " + 112], xmm4\n movq [rip + ",
            $dest,
            " + 120], xmm5\n",
            "movq [rip + ",
            $dest,
            " + 128], xmm6\n movq [rip + ",
            $dest,
            " + 136], xmm7\n",
            "movq [rip + ",
            $dest,
            " + 144], xmm8\n movq [rip + ",
            $dest,
            " + 152], xmm9\n",
            "movq [rip + ",
            $dest,
            " + 160], xmm10\n movq [rip + ",
            $dest,
            " + 168], xmm11\n",
            "movq [rip + ",
            $dest,
            " + 176], xmm12\n movq [rip + ",
            $dest,
            " + 184], xmm13\n",
            "movq [rip + ",
            $dest,
            " + 192], xmm14\n movq [rip + ",
            $dest,
            " + 200], xmm15\n",
        )
    };
}

/// Loads `base + n` into register n (and sets CF and DF-free flags to a known state).
macro_rules! load_all {
    ($base:literal) => {
        concat!(
            "mov rax, ",
            $base,
            " + 16\n movq xmm0, rax\n mov rax, ",
            $base,
            " + 17\n movq xmm1, rax\n",
            "mov rax, ",
            $base,
            " + 18\n movq xmm2, rax\n mov rax, ",
            $base,
            " + 19\n movq xmm3, rax\n",
            "mov rax, ",
            $base,
            " + 20\n movq xmm4, rax\n mov rax, ",
            $base,
            " + 21\n movq xmm5, rax\n",
            "mov rax, ",
            $base,
            " + 22\n movq xmm6, rax\n mov rax, ",
            $base,
            " + 23\n movq xmm7, rax\n",
            "mov rax, ",
            $base,
            " + 24\n movq xmm8, rax\n mov rax, ",
            $base,
            " + 25\n movq xmm9, rax\n",
            "mov rax, ",
            $base,
            " + 26\n movq xmm10, rax\n mov rax, ",
            $base,
            " + 27\n movq xmm11, rax\n",
            "mov rax, ",
            $base,
            " + 28\n movq xmm12, rax\n mov rax, ",
            $base,
            " + 29\n movq xmm13, rax\n",
            "mov rax, ",
            $base,
            " + 30\n movq xmm14, rax\n mov rax, ",
            $base,
            " + 31\n movq xmm15, rax\n",
            "mov rax, ",
            $base,
            " + 1\n mov rcx, ",
            $base,
            " + 2\n mov rdx, ",
            $base,
            " + 3\n",
            "mov rsi, ",
            $base,
            " + 4\n mov rdi, ",
            $base,
            " + 5\n mov r8, ",
            $base,
            " + 6\n",
            "mov r9, ",
            $base,
            " + 7\n mov r10, ",
            $base,
            " + 8\n mov r11, ",
            $base,
            " + 9\n",
            // CF=1, ZF=0, SF=0: `cmp 1, 2` style state that a stray `add`/`cmp` would change.
            "stc\n",
        )
    };
}

global_asm!(concat!(
    // An instrumented function as gcc -pg makes it, with an odd number of pushes so that mcount
    // is entered with a misaligned stack.
    ".globl vftrace_probe_function\n",
    "vftrace_probe_function:\n",
    "push rbp\n mov rbp, rsp\n push rbx\n",
    load_all!("0x1000"),
    "call mcount\n",
    store_all!("PROBE_AFTER_MCOUNT"),
    load_all!("0x2000"),
    "pop rbx\n pop rbp\n",
    "ret\n",
    // Its caller: records what the trampoline hands back.
    ".globl vftrace_probe_caller\n",
    "vftrace_probe_caller:\n",
    "push rbx\n",
    "call vftrace_probe_function\n",
    store_all!("PROBE_AFTER_RETURN"),
    "pop rbx\n",
    "ret\n",
));

// A fake hardware interrupt: push the frame the CPU would (SS, RSP, RFLAGS, CS, RIP) and
// enter an instrumented handler that ends with iretq, which works at CPL3 too.
global_asm!(
    ".globl vftrace_fake_interrupt",
    "vftrace_fake_interrupt:",
    "mov rax, rsp",
    "mov rcx, ss",
    "push rcx",
    "push rax",
    "pushfq",
    "mov rcx, cs",
    "push rcx",
    "lea rcx, [rip + 2f]",
    "push rcx",
    "jmp vftrace_fake_handler",
    "2:",
    "ret",
    "vftrace_fake_handler:",
    "push rbp",
    "mov rbp, rsp",
    "call mcount",
    "pop rbp",
    "iretq",
);

extern "C" {
    fn vftrace_probe_caller();
    fn vftrace_probe_function();
    #[cfg(feature = "interruptsafe")]
    fn vftrace_fake_interrupt();
}

fn init_once() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let pool: &'static mut [u8] = Vec::leak(vec![0u8; 1 << 20]);
        // SAFETY: the pool is leaked, so it stays valid and ours for the rest of the test binary.
        let status = unsafe { vftrace_backend_init(pool.as_mut_ptr(), pool.len(), 0, Some(tid)) };
        assert_eq!(status, 0);
        vftrace_backend_enable();
    });
}

/// With `interruptsafe`, an instrumented interrupt handler is not hooked: its iretq returns
/// to the interrupted code, not to the trampoline (which would crash this test).
#[cfg(feature = "interruptsafe")]
#[test]
fn interrupt_frames_are_not_hooked() {
    init_once();
    let before = vftrace_backend::vftrace_backend_thread_count();
    // SAFETY: the fake interrupt returns to its caller with every callee-saved register intact.
    unsafe { vftrace_fake_interrupt() };
    // Not hooked, so this thread did not even register.
    assert_eq!(vftrace_backend::vftrace_backend_thread_count(), before);
}

extern "C" fn tid() -> u64 {
    42
}

/// Register names in `Regs` order.
const NAMES: [&str; 26] = [
    "flags", "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "xmm0", "xmm1", "xmm2",
    "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13",
    "xmm14", "xmm15",
];

fn expect_preserved(what: &str, regs: &Regs, base: u64, names: &[&str]) {
    for (i, name) in NAMES.iter().enumerate() {
        if !names.contains(name) {
            continue;
        }
        let got = regs.0[i];
        if *name == "flags" {
            assert_eq!(got & 1, 1, "{what}: carry flag lost (flags {got:#x})");
        } else {
            let n = if i < 10 { i as u64 } else { i as u64 + 6 };
            assert_eq!(
                got,
                base + n,
                "{what}: {name} is {got:#x}, expected {:#x}",
                base + n
            );
        }
    }
}

#[test]
fn mcount_and_trampoline_preserve_registers_and_record_the_call() {
    init_once();

    // SAFETY: the probe follows the System V ABI towards its caller (it only clobbers scratch
    // registers and returns normally).
    unsafe { vftrace_probe_caller() };

    // SAFETY: written by the probe above, on this thread.
    let (after_mcount, after_return) = unsafe {
        (
            &*std::ptr::addr_of!(PROBE_AFTER_MCOUNT),
            &*std::ptr::addr_of!(PROBE_AFTER_RETURN),
        )
    };
    let args = ["rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10"];
    let sse_args = [
        "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
    ];
    expect_preserved("after mcount", after_mcount, 0x1000, &args);
    expect_preserved("after mcount", after_mcount, 0x1000, &sse_args);
    expect_preserved(
        "after the trampoline",
        after_return,
        0x2000,
        &["rax", "rdx", "xmm0", "xmm1"],
    );
    if cfg!(feature = "interruptsafe") {
        expect_preserved("after mcount (interruptsafe)", after_mcount, 0x1000, &NAMES);
        expect_preserved(
            "after the trampoline (interruptsafe)",
            after_return,
            0x2000,
            &NAMES,
        );
    }

    // One entry and one exit of the probe, at depth 0.
    let mut raw = [[0u8; 16]; 8];
    // SAFETY: `raw` holds 8 records.
    let n = unsafe { vftrace_backend_thread_read(0, 0, raw.as_mut_ptr(), raw.len()) };
    assert_eq!(n, 2, "entry and exit");
    let probe = vftrace_probe_function as *const () as u64;
    for (i, kind) in [(0usize, 0u64), (1, 1)] {
        let word = u64::from_le_bytes(raw[i][8..].try_into().unwrap());
        assert_eq!(word & 3, kind, "record {i} type");
        assert_eq!((word >> 6) & 0x3ff, 0, "record {i} depth");
        let addr = word >> 16;
        assert!(
            (probe..probe + 0x400).contains(&addr),
            "record {i} address {addr:#x} not in the probe at {probe:#x}"
        );
    }
}
