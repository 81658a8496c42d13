//! The uftrace 0.13 trace format, owned in one place.
//!
//! The `record` module is `no_std` and allocation-free so that the in-process backend can
//! write records directly. Everything that touches files lives behind the `std` feature:
//!
//! - [`info`]: the `info` file (binary header + text sections), [`task`]: `task.txt`,
//!   [`maps`]: `sid-SID.map`, [`sym`]: `basename.sym` files and uftrace-style demangling,
//!   [`clock`]: `vftrace.clock` (ns <-> TSC), [`reader`]: fast `TID.dat` reading,
//!   [`balance`]: properly nested calls out of damaged records.
//! - [`dir`]: [`dir::TraceDirWriter`] writes a directory uftrace 0.13 reads;
//!   [`dir::TraceDir`] opens one (ours or uftrace's) and gives records and a
//!   [`symbolizer::Symbolizer`].
//!
//! Every parser returns [`FormatError`], which names the file and the byte offset or line.
//! What uftrace needs of each file is documented in each module and in
//! /work/shared/UFTRACE-FORMAT.md; the tests have the real uftrace judge what we write.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod record;
pub mod stats;

#[cfg(feature = "std")]
pub mod balance;
#[cfg(feature = "std")]
pub mod clock;
#[cfg(feature = "std")]
pub mod dir;
#[cfg(feature = "std")]
pub mod error;
#[cfg(feature = "std")]
pub mod info;
#[cfg(feature = "std")]
pub mod maps;
#[cfg(feature = "std")]
pub mod markers;
#[cfg(feature = "std")]
pub mod reader;
#[cfg(feature = "std")]
pub mod sym;
#[cfg(feature = "std")]
pub mod symbolizer;
#[cfg(feature = "std")]
pub mod task;

#[cfg(feature = "std")]
pub use error::FormatError;
pub mod stream;
