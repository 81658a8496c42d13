//! The uftrace 0.13 trace format, owned in one place.
//!
//! The `record` module is `no_std` and allocation-free so that the in-process backend can
//! write records directly. Everything that touches files lives behind the `std` feature.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod record;
