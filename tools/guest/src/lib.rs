//! The host side of a guest traced by vftrace from the inside.
//!
//! - [`capture`]: a guest's byte stream (`vftrace_format::stream`) becomes a uftrace directory:
//!   records converted from the guest TSC to nanoseconds (`vftrace.clock`, source=guest,
//!   ns_base 0 at the guest's first TSC), symbols from the guest ELF, and the guest's marker
//!   list in `vftrace.markers`. The stream is untrusted: a damaged or cut stream is reported
//!   with its byte offset, and every frame before the damage still lands in the directory.
//! - [`extract_stream`]: finds the stream in a guest's RAM file from the announcement line the
//!   example unikernel writes to its debug console.
//! - [`live`]: drains a running guest's trace pool from its RAM file (no VM exit, no size
//!   limit), into the same kind of directory.
pub mod capture;
pub mod extract;
pub mod live;
pub mod qemu;

pub use capture::{capture, CaptureOptions, CaptureReport};
pub use extract::{extract_stream, parse_announcement, Announcement};
pub use live::{drain_while, LiveCapture, LiveOptions, LiveReport};
pub use qemu::{run_guest, GuestOutcome, GuestRun, GuestSession};
