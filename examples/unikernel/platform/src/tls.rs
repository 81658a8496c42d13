//! The thread-local storage block of the (single) CPU, x86_64 ELF TLS variant II.
//!
//! The vftrace backend keeps its per-thread state in a `.tbss` variable reached through %fs in
//! the local-exec model: the linker computes each variable's offset from the thread pointer,
//! `offset = address_in_tls_segment - align_up(PT_TLS memsz, PT_TLS align)`, so the block sits
//! just below the thread pointer. The kernel therefore:
//! 1. takes `align_up(memsz, align)` bytes ending at a thread pointer aligned to `align`,
//! 2. copies the `.tdata` image to the start of the block and zeroes the rest (`.tbss`),
//! 3. stores the thread pointer itself at `[tp]` (the TCB self-pointer `mov rax, fs:0` reads),
//! 4. writes tp to FS.base (MSR 0xC0000100) at CPL0, before the drop to CPL3.

use crate::cpu::{wrmsr, MSR_FS_BASE};

/// Room for the TLS block and the 8-byte TCB above it. The backend's per-thread state must fit;
/// [`init`] checks.
const TLS_AREA_SIZE: usize = 256 * 1024;

#[repr(C, align(4096))]
struct TlsArea([u8; TLS_AREA_SIZE]);

static mut TLS_AREA: TlsArea = TlsArea([0; TLS_AREA_SIZE]);

extern "C" {
    // Defined by linker.ld; only their addresses carry meaning.
    static __tls_image_start: u8;
    static __tls_image_size: u8;
    static __tls_mem_size: u8;
    static __tls_align: u8;
}

/// The PT_TLS segment as the linker laid it out.
#[derive(Clone, Copy, Debug)]
pub struct TlsTemplate {
    pub image_start: usize,
    pub image_size: usize,
    pub mem_size: usize,
    pub align: usize,
}

pub fn template() -> TlsTemplate {
    // Only the addresses of the linker-defined symbols are taken (safe), never their contents.
    TlsTemplate {
        image_start: &raw const __tls_image_start as usize,
        image_size: &raw const __tls_image_size as usize,
        mem_size: &raw const __tls_mem_size as usize,
        align: (&raw const __tls_align as usize).max(16),
    }
}

/// Why the TLS block could not be built.
#[derive(Clone, Copy, Debug)]
pub enum TlsError {
    /// The TLS segment (plus alignment and the TCB) needs more than the reserved area.
    TooLarge { needed: usize, available: usize },
    /// The alignment is not a power of two or larger than the area's own alignment.
    BadAlign(usize),
}

/// Builds the CPU's TLS block and points FS.base at it; returns the thread pointer.
///
/// # Safety
/// CPL0 only, once, before any code reads thread-local variables.
pub unsafe fn init() -> Result<u64, TlsError> {
    let t = template();
    if !t.align.is_power_of_two() || t.align > 4096 {
        return Err(TlsError::BadAlign(t.align));
    }
    let block_size = t.mem_size.next_multiple_of(t.align);
    // The TCB (self-pointer) needs 8 bytes at tp; keep tp aligned to the segment's alignment.
    let needed = block_size + t.align;
    if needed > TLS_AREA_SIZE {
        return Err(TlsError::TooLarge {
            needed,
            available: TLS_AREA_SIZE,
        });
    }
    // SAFETY: the area is reserved for this and nothing has referenced it yet; the block and the
    // TCB lie inside it (checked above); the image is `image_size` readable bytes.
    unsafe {
        let area = (&raw mut TLS_AREA).cast::<u8>();
        let tp = area.add(block_size);
        let block = tp.sub(block_size);
        core::ptr::copy_nonoverlapping(t.image_start as *const u8, block, t.image_size);
        core::ptr::write_bytes(block.add(t.image_size), 0, block_size - t.image_size);
        (tp as *mut u64).write(tp as u64);
        wrmsr(MSR_FS_BASE, tp as u64);
        Ok(tp as u64)
    }
}
