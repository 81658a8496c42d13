//! mcount and the trampoline must give instrumented code back every register it may rely on:
//! the argument registers after mcount, the return registers after the trampoline, and with
//! `interruptsafe` every scratch register and the flags. A hand-written "instrumented" function
//! loads known values, calls mcount, records what it sees, loads new values and returns
//! through the trampoline; its caller records what arrives.
use core::arch::global_asm;
use std::sync::OnceLock;
use vftrace_backend::{vftrace_backend_enable, vftrace_backend_init, Platform, ThreadInfo};
use vftrace_format::pool::{Pool, PoolMode, PoolParams};

/// Registers as stored by the probes: flags, rax, rcx, rdx, rsi, rdi, r8, r9, r10, r11,
/// then xmm0..xmm15 (low 64 bits).
#[repr(C)]
#[derive(Default, Debug)]
struct Regs([u64; 26]);

#[no_mangle]
static mut PROBE_AFTER_MCOUNT: Regs = Regs([0; 26]);
#[no_mangle]
static mut PROBE_AFTER_RETURN: Regs = Regs([0; 26]);
#[no_mangle]
static mut PROBE_AFTER_FENTRY: Regs = Regs([0; 26]);
#[no_mangle]
static mut PROBE_AFTER_FENTRY_RETURN: Regs = Regs([0; 26]);

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
    // The same as gcc -pg -mfentry makes it: __fentry__ first, before any prologue.
    ".globl vftrace_probe_fentry_function\n",
    "vftrace_probe_fentry_function:\n",
    load_all!("0x3000"),
    "call __fentry__\n",
    store_all!("PROBE_AFTER_FENTRY"),
    "push rbp\n mov rbp, rsp\n",
    load_all!("0x4000"),
    "pop rbp\n",
    "ret\n",
    ".globl vftrace_probe_fentry_caller\n",
    "vftrace_probe_fentry_caller:\n",
    "push rbx\n",
    "call vftrace_probe_fentry_function\n",
    store_all!("PROBE_AFTER_FENTRY_RETURN"),
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
    fn vftrace_probe_fentry_caller();
    fn vftrace_probe_fentry_function();
    #[cfg(feature = "interruptsafe")]
    fn vftrace_fake_interrupt();
}

/// The pool every test of this binary records into (tracing is per process).
fn init_once() -> Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    *POOL.get_or_init(|| {
        let len = 1 << 20;
        let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: a non-zero layout; the memory is never freed.
        let mem = unsafe { std::alloc::alloc_zeroed(layout) };
        let arena: &'static mut [u8] = Vec::leak(vec![0u8; 4 << 20]);
        let platform = Platform {
            thread_info: Some(thread_info),
            ..Platform::default()
        };
        // SAFETY: both blocks are leaked, so they stay valid and ours for the rest of the test
        // binary; the pool memory is 4096-aligned.
        unsafe {
            let pool =
                Pool::create(mem, len, &PoolParams::new(4096, PoolMode::StopWhenFull)).unwrap();
            let status = vftrace_backend_init(
                mem,
                len,
                arena.as_mut_ptr(),
                arena.len(),
                std::ptr::null(),
                &platform,
            );
            assert_eq!(status, 0);
            vftrace_backend_enable();
            pool
        }
    })
}

/// Every record of the threads registered so far, per slot.
fn records(pool: &Pool) -> Vec<Vec<[u64; 2]>> {
    (0..pool.slot_count())
        .filter(|&s| {
            pool.slot(s)
                .state
                .load(std::sync::atomic::Ordering::Acquire)
                != 0
        })
        .map(|s| {
            let mut out = Vec::new();
            for c in pool.thread_chunks(s) {
                let (data, n) = pool.readable(c).unwrap();
                // SAFETY: `readable` bounds n by the chunk.
                out.extend((0..n).map(|k| unsafe { data.add(k).read() }));
            }
            out
        })
        .collect()
}

/// With `interruptsafe`, an instrumented interrupt handler is not hooked: its iretq returns
/// to the interrupted code, not to the trampoline (which would crash this test).
#[cfg(feature = "interruptsafe")]
#[test]
fn interrupt_frames_are_not_hooked() {
    let pool = init_once();
    // SAFETY: the fake interrupt returns to its caller with every callee-saved register intact.
    unsafe { vftrace_fake_interrupt() };
    // Not hooked: nothing of the handler was recorded (other tests may record meanwhile).
    let handler = vftrace_fake_interrupt as *const () as u64;
    let all = records(&pool);
    assert!(
        !all.iter()
            .flatten()
            .any(|[_, w]| (handler..handler + 0x100).contains(&(w >> 16))),
        "{all:x?}"
    );
}

extern "C" fn thread_info(out: *mut ThreadInfo) {
    // SAFETY: the backend passes a valid out-pointer.
    unsafe {
        (*out).pid = std::process::id();
        (*out).tid = 42;
    }
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
    let pool = init_once();

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
    expect_one_call(&pool, vftrace_probe_function as *const () as u64);
}

/// The probe's entry and exit, at depth 0, somewhere in the records (other tests of this binary
/// may have recorded on other threads).
fn expect_one_call(pool: &Pool, probe: u64) {
    let all = records(pool);
    let mine: Vec<[u64; 2]> = all
        .iter()
        .flatten()
        .copied()
        .filter(|[_, w]| (probe..probe + 0x400).contains(&(w >> 16)))
        .collect();
    assert_eq!(
        mine.len(),
        2,
        "entry and exit of the probe at {probe:#x}: {all:x?}"
    );
    for (i, kind) in [(0usize, 0u64), (1, 1)] {
        let word = mine[i][1];
        assert_eq!(word & 3, kind, "record {i} type");
        assert_eq!((word >> 6) & 0x3ff, 0, "record {i} depth");
    }
}

#[test]
fn fentry_preserves_registers_and_records_the_call() {
    let pool = init_once();
    // SAFETY: the probe follows the System V ABI towards its caller.
    unsafe { vftrace_probe_fentry_caller() };
    // SAFETY: written by the probe above, on this thread.
    let (after_fentry, after_return) = unsafe {
        (
            &*std::ptr::addr_of!(PROBE_AFTER_FENTRY),
            &*std::ptr::addr_of!(PROBE_AFTER_FENTRY_RETURN),
        )
    };
    let args = ["rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10"];
    let sse_args = [
        "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
    ];
    expect_preserved("after __fentry__", after_fentry, 0x3000, &args);
    expect_preserved("after __fentry__", after_fentry, 0x3000, &sse_args);
    expect_preserved(
        "after the trampoline",
        after_return,
        0x4000,
        &["rax", "rdx", "xmm0", "xmm1"],
    );
    if cfg!(feature = "interruptsafe") {
        expect_preserved(
            "after __fentry__ (interruptsafe)",
            after_fentry,
            0x3000,
            &NAMES,
        );
        expect_preserved(
            "after the trampoline (interruptsafe)",
            after_return,
            0x4000,
            &NAMES,
        );
    }
    expect_one_call(&pool, vftrace_probe_fentry_function as *const () as u64);
}
