//! Per-architecture parts: the assembly entry points and how to reach thread-local storage.
#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(all(target_arch = "x86_64", feature = "interruptsafe"))]
pub use self::x86_64::is_interrupt_frame;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::{rdtsc, return_trampoline_address, tls_get, tls_set};

#[cfg(not(target_arch = "x86_64"))]
compile_error!("vftrace's backend supports x86_64 (System V) only");
