//! The Rust side of boot, at CPL0: CPU tables, TLS, the command line, then the drop to CPL3
//! where the kernel's `guest_main` runs natively.

use crate::boot::Stack;
use crate::cpu;
use crate::exit::{exit, ExitCode};
use crate::port::rdtsc;
use crate::println;

/// `hvm_start_info.magic` (xen/include/public/arch-x86/hvm/start_info.h).
const HVM_START_MAGIC: u32 = 0x336e_c578;
const CMDLINE_MAX: usize = 512;
const USER_STACK_SIZE: usize = 1024 * 1024;
/// Stack for exceptions taken from CPL3 (TSS.RSP0); the boot stack is abandoned at the drop.
const EXCEPTION_STACK_SIZE: usize = 16 * 1024;

static mut USER_STACK: Stack<USER_STACK_SIZE> = Stack([0; USER_STACK_SIZE]);
static mut EXCEPTION_STACK: Stack<EXCEPTION_STACK_SIZE> = Stack([0; EXCEPTION_STACK_SIZE]);

/// What the kernel hands to `guest_main`.
pub struct BootInfo {
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
    /// TSC when the Rust boot code started (CPL0, right after entering long mode).
    pub boot_tsc: u64,
    /// TSC just before the drop to CPL3.
    pub user_entry_tsc: u64,
    /// The thread pointer (FS.base) of the CPU.
    pub thread_pointer: u64,
    /// First and last byte + 1 of the loaded image.
    pub image_start: u64,
    pub image_end: u64,
}

impl BootInfo {
    /// The kernel command line (`-append`), or "" when it is absent or not UTF-8.
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }
}

static mut BOOT_INFO: BootInfo = BootInfo {
    cmdline: [0; CMDLINE_MAX],
    cmdline_len: 0,
    boot_tsc: 0,
    user_entry_tsc: 0,
    thread_pointer: 0,
    image_start: 0,
    image_end: 0,
};

extern "C" {
    /// The kernel's CPL3 entry point, defined by the binary crate.
    fn guest_main(info: u64) -> !;
    static __image_start: u8;
    static __image_end: u8;
}

/// Called by the boot assembly in long mode with the physical address of `hvm_start_info`.
#[no_mangle]
extern "C" fn platform_start(start_info: u64) -> ! {
    let boot_tsc = rdtsc();
    // SAFETY: boot is single-threaded and runs once; BOOT_INFO is written here only, then read
    // through a shared reference at CPL3. Identity mapping covers start_info and the cmdline.
    unsafe {
        let info_ptr = &raw mut BOOT_INFO;
        let info = &mut *info_ptr;
        info.boot_tsc = boot_tsc;
        info.image_start = &raw const __image_start as u64;
        info.image_end = &raw const __image_end as u64;
        copy_cmdline(start_info, info);

        cpu::load_tss((&raw mut EXCEPTION_STACK) as u64 + EXCEPTION_STACK_SIZE as u64);
        cpu::load_idt();
        match crate::tls::init() {
            Ok(tp) => info.thread_pointer = tp,
            Err(e) => {
                println!("unikernel: cannot set up TLS: {e:?}");
                exit(ExitCode::Exception);
            }
        }
        info.user_entry_tsc = rdtsc();
        let entry: extern "C" fn(u64) -> ! =
            core::mem::transmute(guest_main as unsafe extern "C" fn(u64) -> !);
        cpu::enter_user(
            entry,
            info as *const BootInfo as u64,
            (&raw mut USER_STACK) as u64 + USER_STACK_SIZE as u64,
        )
    }
}

/// Copies the NUL-terminated command line out of the start info, if QEMU passed one.
///
/// # Safety
/// `start_info` is 0 or the identity-mapped address QEMU passed in ebx.
unsafe fn copy_cmdline(start_info: u64, info: &mut BootInfo) {
    if start_info == 0 {
        return;
    }
    // SAFETY: hvm_start_info: magic u32 at 0, cmdline_paddr u64 at 24 (version 0 and later).
    unsafe {
        if (start_info as *const u32).read_volatile() != HVM_START_MAGIC {
            return;
        }
        let cmdline = ((start_info + 24) as *const u64).read_volatile();
        if cmdline == 0 {
            return;
        }
        let mut len = 0;
        while len < CMDLINE_MAX {
            let byte = ((cmdline + len as u64) as *const u8).read_volatile();
            if byte == 0 {
                break;
            }
            info.cmdline[len] = byte;
            len += 1;
        }
        info.cmdline_len = len;
    }
}

/// The CPU exception frame built by the stubs in `cpu.rs`.
#[repr(C)]
struct ExceptionFrame {
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

/// Every CPU exception ends the run: report it and exit with [`ExitCode::Exception`].
#[no_mangle]
extern "C" fn platform_exception(frame: &ExceptionFrame) -> ! {
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects; exceptions are handled at CPL0.
    unsafe {
        core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags))
    };
    println!(
        "unikernel: CPU exception {} (error code {:#x}) at rip {:#x}, cs {:#x}, rflags {:#x}, rsp {:#x}, cr2 {:#x}",
        frame.vector, frame.error_code, frame.rip, frame.cs, frame.rflags, frame.rsp, cr2
    );
    exit(ExitCode::Exception)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("unikernel: panic: {info}");
    exit(ExitCode::Panic)
}
