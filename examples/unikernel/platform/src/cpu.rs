//! Descriptor tables (GDT with user segments and a TSS, IDT for exceptions), MSRs and the drop
//! from CPL0 to CPL3. Everything here runs once at CPL0, where KVM under PVM emulates each
//! instruction, so it is kept short and free of SSE (the target is soft-float).

use core::arch::{asm, global_asm};
use core::mem::size_of;

pub const KERNEL_CODE: u16 = 0x08;
pub const KERNEL_DATA: u16 = 0x10;
pub const USER_DATA: u16 = 0x18 | 3;
pub const USER_CODE: u16 = 0x20 | 3;
pub const TSS_SELECTOR: u16 = 0x28;

/// RFLAGS for the workload: IOPL=3 (port I/O allowed at CPL3 on hardware; PVM ignores it and
/// uses the TSS I/O bitmap), interrupts off, bit 1 set.
const USER_RFLAGS: u64 = (3 << 12) | (1 << 1);

pub const MSR_EFER: u32 = 0xC000_0080;
pub const MSR_FS_BASE: u32 = 0xC000_0100;

global_asm!(
    // The GDT lives in .data: the TSS descriptor is filled in at run time and `ltr` marks it busy.
    ".pushsection .data",
    ".p2align 4",
    ".global GDT",
    "GDT:",
    ".quad 0",
    ".quad 0x00af9a000000ffff", // 0x08 kernel code, 64-bit
    ".quad 0x00cf92000000ffff", // 0x10 kernel data
    ".quad 0x00cff2000000ffff", // 0x18 user data (DPL 3)
    ".quad 0x00affa000000ffff", // 0x20 user code, 64-bit (DPL 3)
    ".quad 0, 0",               // 0x28 TSS (16 bytes)
    "GDT_END:",
    ".p2align 4",
    ".global GDT_POINTER",
    "GDT_POINTER:",
    ".word GDT_END - GDT - 1",
    ".quad GDT",
    ".popsection",
    //
    // Exception entry stubs, 16 bytes apart: push a zero error code where the CPU pushes none,
    // push the vector, and hand the frame to `platform_exception`.
    ".pushsection .text",
    ".p2align 4",
    ".global EXCEPTION_STUBS",
    "EXCEPTION_STUBS:",
    ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    ".p2align 4",
    ".if (\\n == 8) || ((\\n >= 10) && (\\n <= 14)) || (\\n == 17) || (\\n == 21) || (\\n == 29) || (\\n == 30)",
    ".else",
    "pushq $0",
    ".endif",
    "pushq $\\n",
    "jmp exception_common",
    ".endr",
    "exception_common:",
    "movq %rsp, %rdi",
    "andq $-16, %rsp",
    "call platform_exception",
    "ud2",
    ".popsection",
    options(att_syntax)
);

extern "C" {
    static mut GDT: [u64; 7];
    static EXCEPTION_STUBS: u8;
}

/// The 64-bit task state segment: only RSP0 matters (the stack for exceptions from CPL3).
#[repr(C, packed(4))]
struct TaskStateSegment {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

/// The TSS followed by an I/O permission bitmap that allows every port at CPL3. IOPL=3 in
/// RFLAGS would be enough on hardware, but KVM under PVM keeps the guest's user-mode IOPL at 0
/// and checks this bitmap instead when it emulates the `in`/`out` that trapped.
#[repr(C, packed(4))]
struct TssWithIoBitmap {
    tss: TaskStateSegment,
    /// One bit per port, 0 = allowed; the CPU reads one byte past the last port, which must be 0xff.
    io_bitmap: [u8; 65536 / 8 + 1],
}

static mut TSS: TssWithIoBitmap = TssWithIoBitmap {
    tss: TaskStateSegment {
        reserved0: 0,
        rsp: [0; 3],
        reserved1: 0,
        ist: [0; 7],
        reserved2: 0,
        reserved3: 0,
        iomap_base: size_of::<TaskStateSegment>() as u16,
    },
    io_bitmap: {
        let mut bitmap = [0; 65536 / 8 + 1];
        bitmap[65536 / 8] = 0xff;
        bitmap
    },
};

#[repr(C, align(16))]
struct Idt([[u64; 2]; 32]);

static mut IDT: Idt = Idt([[0; 2]; 32]);

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Fills the TSS descriptor (RSP0 = `kernel_stack_top`) and loads the task register.
///
/// # Safety
/// CPL0 only, once, before the drop to CPL3; `kernel_stack_top` must be a 16-byte aligned
/// stack top that nothing else uses after the drop.
pub unsafe fn load_tss(kernel_stack_top: u64) {
    // SAFETY: single-threaded boot code; nobody else references TSS or GDT yet.
    unsafe {
        let tss = &raw mut TSS;
        (*tss).tss.rsp[0] = kernel_stack_top;
        let base = tss as u64;
        let limit = (size_of::<TssWithIoBitmap>() - 1) as u64;
        let low = (limit & 0xffff)
            | (base & 0xff_ffff) << 16
            | 0x89 << 40 // present, DPL 0, available 64-bit TSS
            | (limit >> 16 & 0xf) << 48
            | (base >> 24 & 0xff) << 56;
        let gdt = &raw mut GDT;
        (*gdt)[5] = low;
        (*gdt)[6] = base >> 32;
        asm!("ltr {0:x}", in(reg) TSS_SELECTOR, options(nostack, preserves_flags));
    }
}

/// Points the 32 exception vectors at the stubs and loads the IDT.
///
/// # Safety
/// CPL0 only, once, before the drop to CPL3.
pub unsafe fn load_idt() {
    // SAFETY: single-threaded boot code; EXCEPTION_STUBS is the start of 32 16-byte stubs.
    unsafe {
        let stubs = &raw const EXCEPTION_STUBS as u64;
        let idt = &raw mut IDT;
        for (vector, gate) in (*idt).0.iter_mut().enumerate() {
            let handler = stubs + 16 * vector as u64;
            gate[0] = (handler & 0xffff)
                | (KERNEL_CODE as u64) << 16
                | 0x8E << 40 // present, DPL 0, 64-bit interrupt gate
                | (handler >> 16 & 0xffff) << 48;
            gate[1] = handler >> 32;
        }
        let pointer = DescriptorPointer {
            limit: (size_of::<Idt>() - 1) as u16,
            base: idt as u64,
        };
        asm!("lidt [{0}]", in(reg) &pointer, options(readonly, nostack, preserves_flags));
    }
}

/// Writes a model-specific register.
///
/// # Safety
/// CPL0 only; `msr` and `value` must be valid for this CPU.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees CPL0 and a valid MSR/value pair.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    }
}

/// Leaves CPL0 for good: `iretq` to `entry` at CPL3 with IOPL=3, on `user_stack_top`, with
/// `arg` in rdi. The stack is set up as if `entry` had just been called (SysV alignment).
///
/// # Safety
/// CPL0 only; `entry` must never return; `user_stack_top` must be 16-byte aligned, mapped
/// user-accessible and at least a few hundred KiB deep.
pub unsafe fn enter_user(entry: extern "C" fn(u64) -> !, arg: u64, user_stack_top: u64) -> ! {
    // A zero "return address" below the top: rsp + 8 is 16-byte aligned at entry, as after a call.
    let rsp = user_stack_top - 8;
    // SAFETY: the caller guarantees the stack; the zero slot is inside it.
    unsafe {
        (rsp as *mut u64).write(0);
        asm!(
            "push {ss}",
            "push {rsp}",
            "push {rflags}",
            "push {cs}",
            "push {rip}",
            "iretq",
            ss = in(reg) USER_DATA as u64,
            rsp = in(reg) rsp,
            rflags = in(reg) USER_RFLAGS,
            cs = in(reg) USER_CODE as u64,
            rip = in(reg) entry as usize as u64,
            in("rdi") arg,
            options(noreturn)
        )
    }
}
