//! The capture's side of a merge: reading it, and the alignment inputs of one guest's VMM
//! (its TSC offset changes and marker port writes).
use std::collections::{HashMap, HashSet};
use std::path::Path;

use vftrace_format::markers::GuestMarkers;
use vftrace_kvm::{Capture, KvmEventKind};

use crate::align::{Marker, TscOffsetChange, MARKER_HIGH_PORT_DELTA};
use crate::{guest_markers, MergeError};

/// The capture at `path`; leniently read, what was skipped becomes warnings.
pub(crate) fn read_kvm(
    path: &Path,
    lenient: bool,
    warnings: &mut Vec<String>,
) -> Result<Capture, MergeError> {
    let parsed = vftrace_kvm::read_capture_with(path, &vftrace_kvm::ParseOptions { lenient })?;
    if parsed.cut_short {
        warnings.push(format!(
            "{}: cut short (no `end` line: was the recorder killed?); using its {} events",
            path.display(),
            parsed.capture.events.len()
        ));
    }
    if let Some(first) = parsed.skipped.first() {
        warnings.push(format!(
            "{} unreadable line(s) skipped, the first: {first}",
            parsed.skipped_lines
        ));
    }
    Ok(parsed.capture)
}

/// The capture's events as alignment inputs.
pub(crate) struct KvmInputs {
    pub offset_changes: Vec<TscOffsetChange>,
    pub markers: Vec<Marker>,
    /// Index into `capture.events` of each marker's low-half pio.
    pub marker_events: Vec<usize>,
    /// The guest's phase of each marker, when `vftrace.markers` names it.
    pub marker_phases: Vec<Option<u32>>,
}

/// Completes the markers with the guest's own list (full TSCs, phases) and warns when the
/// two sides do not agree.
pub(crate) fn attach_guest_markers(
    kvm: &mut KvmInputs,
    guest: Option<&GuestMarkers>,
    port: u16,
    warnings: &mut Vec<String>,
) -> (usize, usize) {
    let Some(guest) = guest else { return (0, 0) };
    if let Some(theirs) = guest.port.filter(|p| *p != port) {
        warnings.push(format!(
            "the guest wrote its markers to port {theirs:#x}, but port {port:#x} is searched; give --marker-port {theirs:#x}"
        ));
    }
    let (phases, matched) = guest_markers::attach(&mut kvm.markers, &guest.markers);
    kvm.marker_phases = phases;
    if matched < guest.markers.len() {
        warnings.push(format!(
            "{} of the guest's {} markers have no kvm_pio in the capture (was it recording the whole run?)",
            guest.markers.len() - matched,
            guest.markers.len()
        ));
    }
    (guest.markers.len(), matched)
}

impl KvmInputs {
    /// The inputs among the events of `threads` (all threads when None).
    pub fn from_capture(
        capture: &Capture,
        marker_port: u16,
        threads: Option<&HashSet<u32>>,
    ) -> KvmInputs {
        let high_port = marker_port.wrapping_add(MARKER_HIGH_PORT_DELTA);
        let mut inputs = KvmInputs {
            offset_changes: Vec::new(),
            markers: Vec::new(),
            marker_events: Vec::new(),
            marker_phases: Vec::new(),
        };
        // Host thread -> its latest marker still waiting for a high half.
        let mut awaiting_high: HashMap<u32, usize> = HashMap::new();
        let mut order: Vec<usize> = (0..capture.events.len())
            .filter(|&i| threads.is_none_or(|t| t.contains(&capture.events[i].pid)))
            .collect();
        order.sort_by_key(|&i| capture.events[i].tsc);
        for i in order {
            let e = &capture.events[i];
            match &e.kind {
                KvmEventKind::WriteTscOffset { vcpu, prev, next } => {
                    inputs.offset_changes.push(TscOffsetChange {
                        host_tsc: e.tsc,
                        host_thread: e.pid,
                        vcpu: *vcpu,
                        prev: *prev,
                        next: *next,
                    })
                }
                KvmEventKind::Pio {
                    write: true,
                    port,
                    count: 1,
                    val: Some(val),
                    ..
                } if *port == marker_port => {
                    awaiting_high.insert(e.pid, inputs.markers.len());
                    inputs.markers.push(Marker {
                        pio_host_tsc: e.tsc,
                        host_thread: e.pid,
                        guest_tsc_low: *val as u32,
                        guest_tsc_high: None,
                        guest_tsc_after: None,
                    });
                    inputs.marker_events.push(i);
                    inputs.marker_phases.push(None);
                }
                KvmEventKind::Pio {
                    write: true,
                    port,
                    count: 1,
                    val: Some(val),
                    ..
                } if *port == high_port => {
                    if let Some(m) = awaiting_high.remove(&e.pid) {
                        inputs.markers[m].guest_tsc_high = Some(*val as u32);
                    }
                }
                _ => {}
            }
        }
        inputs
    }
}
