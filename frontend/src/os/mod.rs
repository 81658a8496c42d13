//! What differs between the systems the uftrace directory writer runs on: thread ids, the
//! executable and its mapping, machine facts, symbols, and TSC-to-ns conversion.
#[cfg(target_os = "hermit")]
mod hermit;
#[cfg(target_os = "hermit")]
pub use hermit::*;
#[cfg(not(target_os = "hermit"))]
mod linux;
#[cfg(not(target_os = "hermit"))]
pub use linux::*;
