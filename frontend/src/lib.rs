//! vftrace: function tracing for programs built with `-Z instrument-mcount` or `gcc -pg`.
//!
//! Link this crate, call [`init`] and [`enable`], and every instrumented function entry and
//! exit is recorded with the TSC by the backend (a separately built, never instrumented static
//! library). With `std`, [`dump`] writes a complete uftrace directory; without it, the
//! [`stream`] module writes the trace through whatever byte sink a kernel has.
#![cfg_attr(not(feature = "std"), no_std)]

mod backend;
pub use backend::{disable, enable, rdtsc, unwind_begin, InitError, Mode};
#[doc(hidden)]
pub use backend::{disable_here, walk_end};
mod setup;
#[doc(hidden)]
pub use setup::pool as active_pool;
pub use setup::{init_drained, init_with_buffer, WhenFull};
pub mod probe;
pub mod stream;
pub use probe::probe;

#[cfg(feature = "std")]
mod calibrate;
#[cfg(feature = "std")]
pub mod capi;
#[cfg(feature = "std")]
mod dump;
#[cfg(all(feature = "std", not(target_os = "hermit")))]
mod filters;
#[cfg(feature = "std")]
mod os;
/// What the preload library shares with the in-process library on Linux.
#[cfg(all(feature = "std", not(target_os = "hermit")))]
#[doc(hidden)]
pub mod os_linux {
    pub use crate::os::unwind::Next;
}
#[cfg(feature = "std")]
pub use dump::{dump, init, DumpSummary};
