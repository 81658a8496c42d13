//! Marker port writes that put guest time on the host's timeline: `out` of the low 32 bits of
//! the TSC (read just before) to the marker port. The host records each as a `kvm:kvm_pio`
//! event with its own TSC; the merge tool pairs the two by value. The guest keeps the full
//! 64-bit TSC of every marker, and the TSC read right after the write returned, and sends the
//! list with its trace: the host's stamp must fall between the two.
//!
//! Probes (`vftrace::probe`) are port writes too, without a TSC: the host stamps them. Their
//! names are declared here, in the image.

use unikernel_platform::port::{outl, rdtsc};
pub use vftrace::stream::Marker;

/// The port the host's merge tool looks for by default.
pub use vftrace::stream::DEFAULT_MARKER_PORT as MARKER_PORT;
pub const MAX_MARKERS: usize = 64;

/// The ids of the guest's probes.
pub mod probe_ids {
    /// fib's result (its low 24 bits).
    pub const FIB_RESULT: u8 = 1;
    /// 1 if the sorted data is in order, with the element count above bit 0.
    pub const SORT_CHECKED: u8 = 2;
    /// The round `helpers` has reached, every 256 rounds.
    pub const HELPERS_ROUND: u8 = 3;
}

vftrace::probe_names! {
    probe_ids::FIB_RESULT => "fib result",
    probe_ids::SORT_CHECKED => "sort checked",
    probe_ids::HELPERS_ROUND => "helpers round",
}

/// The run's phases: a marker is written when each begins or ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Phase {
    Boot = 1,
    FibStart = 2,
    FibEnd = 3,
    SortStart = 4,
    SortEnd = 5,
    HelpersStart = 6,
    HelpersEnd = 7,
    StreamStart = 8,
    StreamEnd = 9,
    SpinStart = 10,
    SpinEnd = 11,
}

pub struct Markers {
    list: [Marker; MAX_MARKERS],
    len: usize,
}

impl Markers {
    pub const fn new() -> Self {
        Markers {
            list: [Marker {
                tsc: 0,
                value: 0,
                phase: 0,
                tsc_after: 0,
            }; MAX_MARKERS],
            len: 0,
        }
    }

    /// Writes a marker to the port and remembers it (the list keeps the first MAX_MARKERS).
    #[inline(always)]
    pub fn mark(&mut self, phase: Phase) -> u64 {
        let tsc = rdtsc();
        outl(MARKER_PORT, tsc as u32);
        let tsc_after = rdtsc();
        if self.len < MAX_MARKERS {
            self.list[self.len] = Marker {
                tsc,
                value: tsc as u32,
                phase: phase as u32,
                tsc_after,
            };
            self.len += 1;
        }
        tsc
    }

    pub fn as_slice(&self) -> &[Marker] {
        &self.list[..self.len]
    }
}
