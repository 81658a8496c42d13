//! The backend as a static library. Only the C ABI (mcount, the trampoline, `vftrace_backend_*`)
//! stays global after frontend/build.rs localizes every other symbol.
#![no_std]

pub use vftrace_backend::*;

/// The backend is written not to panic; if it ever does, stopping the program is the only
/// thing that cannot make matters worse inside mcount.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: ud2 raises #UD; it has no other effect.
    unsafe { core::arch::asm!("ud2", options(noreturn)) }
}
