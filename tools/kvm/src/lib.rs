//! Host KVM events and the scheduler's view of the VMM's threads: recording them from tracefs and reading captures (vftrace's own, trace-cmd
//! report text, raw tracefs text).
//!
//! Recording ([`record`]) drives a private tracefs instance with the `x86-tsc` trace clock, so
//! every event carries the host's raw TSC. The capture also stores (TSC, CLOCK_MONOTONIC) pairs
//! measured at the start and end of the recording and the TSC frequency derived from them, so
//! host programs traced by an unpatched uftrace (CLOCK_MONOTONIC) can be put on the TSC scale.
//!
//! Reading ([`read_capture`], [`parse_capture`]) auto-detects the format; the vftrace capture
//! format is described in [`capture`].

pub mod capture;
pub mod clock;
mod event_text;
pub mod process;
mod record;
mod trace_line;
pub mod tracefs;

use std::fmt;
use std::path::PathBuf;

pub use capture::{
    parse_capture, parse_capture_with, read_capture, read_capture_with, write_capture,
    CaptureWriter, ParseOptions, Parsed, CAPTURE_MAGIC,
};
pub use clock::{monotonic_ns, tsc_now};
pub use record::{record, RecordOptions, RecordSummary, StopReason, DEFAULT_EVENTS, SCHED_EVENTS};

/// One host kernel event; `tsc` is the host's TSC (trace clock `x86-tsc`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmEvent {
    pub tsc: u64,
    pub cpu: u32,
    pub pid: u32,
    /// The task's name as tracefs printed it (`<...>` when the kernel no longer knew it).
    pub comm: String,
    pub kind: KvmEventKind,
}

/// The events vftrace interprets; everything else is kept as [`KvmEventKind::Other`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvmEventKind {
    /// `kvm_write_tsc_offset`. The offsets are printed by the kernel as u64; read them as i64
    /// (guest TSC = host TSC + offset on VMX/SVM; under PVM the offset is not applied).
    WriteTscOffset { vcpu: u32, prev: u64, next: u64 },
    /// `kvm_pio`. `val` is absent on kernels that did not print it.
    Pio {
        write: bool,
        port: u16,
        size: u8,
        count: u32,
        val: Option<u64>,
    },
    /// `kvm_mmio`. `val` is None for an unsatisfied read.
    Mmio {
        write: bool,
        len: u32,
        gpa: u64,
        val: Option<u64>,
    },
    /// `kvm_exit` (never fires under PVM). `vcpu` is printed by newer kernels only.
    Exit {
        reason: String,
        rip: Option<u64>,
        vcpu: Option<u32>,
    },
    /// `kvm_entry` (never fires under PVM).
    Entry { vcpu: Option<u32>, rip: Option<u64> },
    /// `kvm_hypercall`.
    Hypercall { nr: u64 },
    /// `kvm_fpu`: `load` when the vCPU thread enters `KVM_RUN` (about to run the guest),
    /// `unload` when it leaves it for the VMM. It fires under PVM too, so it brackets the time
    /// a vCPU thread spends in its VMM where `kvm_exit`/`kvm_entry` do not fire.
    Fpu { load: bool },
    /// `kvm_userspace_exit`: `KVM_RUN` returns to the VMM; `reason` as printed
    /// (`KVM_EXIT_IO (2)`, `restart (4)` after a signal...).
    UserspaceExit { reason: String },
    /// `sched:sched_switch`: `prev` leaves the CPU in state `prev_state` (`R` or `R+`:
    /// preempted, `S`: sleeping, `D`: uninterruptible...), `next` runs.
    SchedSwitch {
        prev_comm: String,
        prev_pid: u32,
        prev_state: String,
        next_comm: String,
        next_pid: u32,
    },
    /// `sched:sched_wakeup`: task `pid` becomes runnable (on `target_cpu`).
    SchedWakeup {
        comm: String,
        pid: u32,
        target_cpu: u32,
    },
    /// Any other event, or a known one whose fields had a shape this crate does not know.
    Other { name: String, fields: String },
}

impl KvmEventKind {
    /// The tracefs event name (without the `kvm:` system prefix).
    pub fn name(&self) -> &str {
        match self {
            KvmEventKind::WriteTscOffset { .. } => "kvm_write_tsc_offset",
            KvmEventKind::Pio { .. } => "kvm_pio",
            KvmEventKind::Mmio { .. } => "kvm_mmio",
            KvmEventKind::Exit { .. } => "kvm_exit",
            KvmEventKind::Entry { .. } => "kvm_entry",
            KvmEventKind::Hypercall { .. } => "kvm_hypercall",
            KvmEventKind::Fpu { .. } => "kvm_fpu",
            KvmEventKind::UserspaceExit { .. } => "kvm_userspace_exit",
            KvmEventKind::SchedSwitch { .. } => "sched_switch",
            KvmEventKind::SchedWakeup { .. } => "sched_wakeup",
            KvmEventKind::Other { name, .. } => name,
        }
    }
}

/// A simultaneous reading of the TSC and CLOCK_MONOTONIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSync {
    pub tsc: u64,
    pub mono_ns: u64,
}

/// Everything read from a capture file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Capture {
    pub events: Vec<KvmEvent>,
    /// Clock pairs in time order (vftrace captures: the start pair first, the end pair last;
    /// other sources have none).
    pub syncs: Vec<ClockSync>,
    /// Host TSC frequency measured during the recording (vftrace captures only).
    pub tsc_hz: Option<f64>,
    /// Events the kernel dropped (ring buffer overruns) as far as the source tells.
    pub lost_events: u64,
    /// "vftrace", "trace-cmd report" or "tracefs text".
    pub source: String,
    /// Thread id -> process id (tgid), as far as the source tells (tracefs's `record-tgid`
    /// column; `vftrace kvm` records it).
    pub tgids: std::collections::BTreeMap<u32, u32>,
}

impl Capture {
    /// CLOCK_MONOTONIC nanoseconds at host TSC value `tsc`, from the first clock pair and the
    /// measured frequency; None when the capture has neither (foreign formats).
    pub fn tsc_to_monotonic_ns(&self, tsc: u64) -> Option<f64> {
        let base = self.syncs.first()?;
        let hz = self.tsc_hz?;
        Some(base.mono_ns as f64 + (tsc as f64 - base.tsc as f64) * 1e9 / hz)
    }

    /// Host TSC value at CLOCK_MONOTONIC time `mono_ns` (the inverse of
    /// [`Capture::tsc_to_monotonic_ns`]).
    pub fn monotonic_ns_to_tsc(&self, mono_ns: u64) -> Option<f64> {
        let base = self.syncs.first()?;
        let hz = self.tsc_hz?;
        Some(base.tsc as f64 + (mono_ns as f64 - base.mono_ns as f64) * hz / 1e9)
    }
}

/// A capture that could not be read: the file, the 1-based line (0 when the problem is not
/// tied to a line, e.g. an I/O error) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

impl std::error::Error for CaptureError {}
