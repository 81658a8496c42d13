//! The PVH entry: 32-bit protected mode, paging off (QEMU's PVH boot protocol). It builds
//! identity-mapped page tables for the first GiB (2 MiB pages, user-accessible, because the
//! workload runs at CPL3 and touches everything), enters long mode and calls
//! [`crate::start::platform_start`] on the kernel stack.

use core::arch::global_asm;

/// Bytes of the stack used at CPL0 (boot, then exceptions through TSS.RSP0).
pub const KERNEL_STACK_SIZE: usize = 32 * 1024;

#[repr(C, align(4096))]
pub struct PageTable(pub [u64; 512]);

#[repr(C, align(16))]
pub struct Stack<const N: usize>(pub [u8; N]);

#[no_mangle]
static mut BOOT_PML4: PageTable = PageTable([0; 512]);
#[no_mangle]
static mut BOOT_PDPT: PageTable = PageTable([0; 512]);
#[no_mangle]
static mut BOOT_PD: PageTable = PageTable([0; 512]);
#[no_mangle]
static mut KERNEL_STACK: Stack<KERNEL_STACK_SIZE> = Stack([0; KERNEL_STACK_SIZE]);

global_asm!(
    // XEN_ELFNOTE_PHYS32_ENTRY (18): QEMU reads the descriptor of a 64-bit ELF as 8 bytes.
    ".pushsection .note.pvh, \"a\", @note",
    ".p2align 2",
    ".long 4", // namesz: "Xen\0"
    ".long 8", // descsz
    ".long 18",
    ".asciz \"Xen\"",
    ".p2align 2",
    ".quad pvh_start",
    ".popsection",
    //
    ".pushsection .text.boot, \"ax\"",
    ".code32",
    ".global pvh_start",
    "pvh_start:",
    "cli",
    "cld",
    // ebx = physical address of the hvm_start_info; keep it in edi for the Rust entry.
    "movl %ebx, %edi",
    // PML4[0] -> PDPT, PDPT[0] -> PD; flags: present | writable | user.
    "movl $BOOT_PDPT, %eax",
    "orl $7, %eax",
    "movl %eax, BOOT_PML4",
    "movl $BOOT_PD, %eax",
    "orl $7, %eax",
    "movl %eax, BOOT_PDPT",
    // PD[i] = i * 2 MiB | present | writable | user | huge.
    "xorl %ecx, %ecx",
    "1:",
    "movl %ecx, %eax",
    "shll $21, %eax",
    "orl $0x87, %eax",
    "movl %eax, BOOT_PD(,%ecx,8)",
    "movl $0, BOOT_PD+4(,%ecx,8)",
    "incl %ecx",
    "cmpl $512, %ecx",
    "jne 1b",
    "movl $BOOT_PML4, %eax",
    "movl %eax, %cr3",
    // CR4.PAE
    "movl %cr4, %eax",
    "orl $0x20, %eax",
    "movl %eax, %cr4",
    // EFER.LME
    "movl $0xC0000080, %ecx",
    "rdmsr",
    "orl $0x100, %eax",
    "wrmsr",
    "lgdt GDT_POINTER",
    // CR0.PG | CR0.PE
    "movl %cr0, %eax",
    "orl $0x80000001, %eax",
    "movl %eax, %cr0",
    "ljmp $0x08, $2f",
    ".code64",
    "2:",
    "movw $0x10, %ax",
    "movw %ax, %ds",
    "movw %ax, %es",
    "movw %ax, %ss",
    "xorl %eax, %eax",
    "movw %ax, %fs",
    "movw %ax, %gs",
    // The upper halves of 64-bit registers are undefined after the mode switch.
    "movl %edi, %edi",
    "leaq KERNEL_STACK+{stack_size}(%rip), %rsp",
    // SysV: rsp + 8 is 16-byte aligned at function entry, which this call produces.
    "call platform_start",
    "ud2",
    ".popsection",
    stack_size = const KERNEL_STACK_SIZE,
    options(att_syntax)
);
