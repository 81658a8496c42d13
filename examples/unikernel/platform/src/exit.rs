//! Leaving QEMU through isa-debug-exit (port 0xf4): writing v makes QEMU exit with status
//! (v << 1) | 1. A triple fault (QEMU run with -no-reboot) exits with status 0 instead.

use crate::port::outl;

pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Why the guest stopped; the host sees `(code << 1) | 1` as QEMU's exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// The workload ran and the trace was written: QEMU exits with 1.
    Success = 0,
    /// A Rust panic: QEMU exits with 5.
    Panic = 2,
    /// A CPU exception: QEMU exits with 7.
    Exception = 3,
    /// The kernel command line asked for something this kernel does not understand: 9.
    BadCommandLine = 4,
}

/// QEMU's exit status for `code`.
pub const fn qemu_status(code: ExitCode) -> i32 {
    ((code as i32) << 1) | 1
}

/// Stops the VM. Works at CPL0 and at CPL3 (IOPL=3).
pub fn exit(code: ExitCode) -> ! {
    outl(DEBUG_EXIT_PORT, code as u32);
    // Without the isa-debug-exit device the write does nothing; stop here.
    loop {
        core::hint::spin_loop();
    }
}
