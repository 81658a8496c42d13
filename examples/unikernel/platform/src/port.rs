//! x86 port I/O. Usable at CPL0 and, because the kernel drops to CPL3 with IOPL=3, at CPL3.

use core::arch::asm;

/// Writes one byte to `port`.
#[inline(always)]
pub fn outb(port: u16, value: u8) {
    // SAFETY: port writes touch no memory; the ports this kernel uses are QEMU devices
    // (serial, isa-debug-exit, debugcon, the marker port) or unassigned.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// Writes one 32-bit value to `port`.
#[inline(always)]
pub fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Writes all of `bytes` to `port` with one `rep outsb`: KVM handles a string I/O instruction
/// in page-sized batches, so this costs one VM exit per batch instead of one per byte.
#[inline(always)]
pub fn outsb(port: u16, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    // SAFETY: rep outsb reads `len` bytes starting at `ptr`, all inside `bytes`; the direction
    // flag is clear (SysV guarantees it at calls, and the boot code clears it).
    unsafe {
        asm!(
            "rep outsb",
            in("dx") port,
            inout("rsi") bytes.as_ptr() => _,
            inout("rcx") bytes.len() => _,
            options(nostack, preserves_flags, readonly)
        )
    }
}

/// The time stamp counter. Under PVM the guest reads the host's TSC directly.
#[inline(always)]
pub fn rdtsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: rdtsc has no memory effects; CR4.TSD is clear, so it works at CPL3 too.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    (hi as u64) << 32 | lo as u64
}

/// About 10 us at the TSC rates of today's hosts (2-4 GHz), spent in `pause` at CPL3: no VM
/// exit. What the tracer calls while it waits for the host to hand back a chunk (a vftrace
/// `Platform::wait` callback). It lives here because this crate is never instrumented: a
/// callback of the tracer must not call `mcount` itself.
pub extern "C" fn spin_briefly() {
    const TICKS: u64 = 26_000;
    let start = rdtsc();
    while rdtsc().wrapping_sub(start) < TICKS {
        core::hint::spin_loop();
    }
}
