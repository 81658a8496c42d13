//! Everything of the example unikernel that runs at CPL0, or that must not be instrumented:
//! the PVH entry and long mode (`boot`), descriptor tables and the drop to CPL3 (`cpu`), the TLS
//! block (`tls`), port I/O, the serial console, the exit device, exceptions and panics.
//!
//! KVM on PVM hosts emulates CPL0 code one instruction at a time (about 600x slower, and
//! without SSE), so CPL0 work is kept to a few thousand instructions and the kernel's own code
//! runs at CPL3 with IOPL=3. This crate is built without `-Z instrument-mcount`.
#![no_std]

pub mod boot;
pub mod cpu;
pub mod exit;
pub mod port;
pub mod serial;
pub mod start;
pub mod tls;

pub use start::BootInfo;
