//! Everything a C program needs in one static library: `vftrace_init`, `vftrace_enable`,
//! `vftrace_disable`, `vftrace_dump` (see ../include/vftrace.h) and the backend's `mcount`.
pub use vftrace::capi::*;
