//! Guest/host TSC alignment: which clock relation holds, checked against marker port writes.
//!
//! On VMX/SVM hosts the guest reads `guest_tsc = host_tsc + offset`, where `offset` is what
//! `kvm:kvm_write_tsc_offset` last set for that vCPU (`next`, read as signed 64-bit). Under
//! PVM the offset is recorded but not applied: the guest reads the host TSC. Marker writes tell
//! the two apart: the guest writes the low 32 bits of its TSC to the marker port, and the host
//! sees the `kvm_pio` a few microseconds later. Under the right model every marker's guest TSC,
//! mapped to host time, lies shortly *before* its pio (cause before effect).
//!
//! Marker protocol (what a guest does; see [`DEFAULT_MARKER_PORT`]):
//! 1. `t = rdtsc()`, then a 32-bit `out` of `t as u32` to the marker port (default 0x6a0);
//! 2. optionally, right after, a 32-bit `out` of `(t >> 32) as u32` to port + 4 (0x6a4), which
//!    gives the host the full 64-bit value and makes unwrapping unnecessary.
//!
//! Any number of markers may be written (one is enough to pick a model; a few spread over the
//! run also show drift). Without the high half the host unwraps the low 32 bits (period 2^32
//! cycles, about 1.65 s at 2.6 GHz) around the value the candidate model predicts.
use std::collections::BTreeMap;
use std::fmt;

pub use vftrace_format::stream::DEFAULT_MARKER_PORT;

/// Offset from the marker port of the optional port receiving the high 32 bits.
pub const MARKER_HIGH_PORT_DELTA: u16 = 4;

/// One `kvm:kvm_write_tsc_offset` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscOffsetChange {
    /// Host TSC at which the new offset took effect.
    pub host_tsc: u64,
    /// Host thread that wrote it: QEMU does this from each vCPU's own thread, which is how a
    /// marker's `kvm_pio` (which names only the thread) is tied to a vCPU.
    pub host_thread: u32,
    pub vcpu: u32,
    /// Offset before, as KVM prints it (u64; read as i64).
    pub prev: u64,
    /// Offset after (u64; read as i64).
    pub next: u64,
}

/// One marker as the host saw it: a `kvm_pio` write of the guest's TSC low bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    /// Host TSC of the `kvm_pio` event.
    pub pio_host_tsc: u64,
    /// Host thread that did the exit (the vCPU thread).
    pub host_thread: u32,
    pub guest_tsc_low: u32,
    /// High 32 bits, when the guest also wrote them to the marker port + 4.
    pub guest_tsc_high: Option<u32>,
    /// The guest TSC read just after the write returned (from the guest's own list), which
    /// bounds the host's stamp from above.
    pub guest_tsc_after: Option<u64>,
}

/// One part of an [`OffsetTimeline`]: from `host_start` on, guest = host + `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetSegment {
    pub host_start: u64,
    pub offset: i64,
}

/// The TSC offset of one vCPU as a step function of host time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetTimeline {
    /// Sorted by `host_start`; the first starts at 0; neighbours have different offsets.
    segments: Vec<OffsetSegment>,
}

impl OffsetTimeline {
    /// guest = host + `offset` at all times.
    pub fn constant(offset: i64) -> Self {
        OffsetTimeline {
            segments: vec![OffsetSegment {
                host_start: 0,
                offset,
            }],
        }
    }

    /// The timeline set by `changes` (one vCPU's, any order). Before the first change the
    /// offset is that change's `prev`.
    pub fn from_changes(changes: &[TscOffsetChange]) -> Self {
        let mut sorted = changes.to_vec();
        sorted.sort_by_key(|c| c.host_tsc);
        let first = sorted.first().map_or(0, |c| c.prev as i64);
        let mut timeline = OffsetTimeline::constant(first);
        for change in sorted {
            timeline.push(change.host_tsc, change.next as i64);
        }
        timeline
    }

    fn push(&mut self, host_start: u64, offset: i64) {
        let last = self
            .segments
            .last_mut()
            .expect("a timeline always has a segment");
        if last.offset == offset {
            return;
        }
        if last.host_start == host_start {
            last.offset = offset;
            // Two changes at one instant: the earlier segment may now equal the new offset.
            if self.segments.len() >= 2 && self.segments[self.segments.len() - 2].offset == offset {
                self.segments.pop();
            }
            return;
        }
        self.segments.push(OffsetSegment { host_start, offset });
    }

    pub fn segments(&self) -> &[OffsetSegment] {
        &self.segments
    }

    /// Index of the segment in force at host time `host`.
    fn segment_at_host(&self, host: u64) -> usize {
        self.segments
            .partition_point(|s| s.host_start <= host)
            .saturating_sub(1)
    }

    /// The offset in force at host time `host`.
    pub fn offset_at_host(&self, host: u64) -> i64 {
        self.segments[self.segment_at_host(host)].offset
    }

    /// The guest TSC the guest reads at host time `host`.
    pub fn host_to_guest(&self, host: u64) -> u64 {
        host.wrapping_add(self.offset_at_host(host) as u64)
    }

    /// The host time at which the guest read `guest`.
    ///
    /// Segment k covers guest times [start_k + o_k, start_k+1 + o_k). When an offset change
    /// moved guest time back, a guest value lies in two segments: the most recent one wins
    /// (traces are normally taken after the guest set its clock). When it moved guest time
    /// forward, values in the jumped-over gap never occurred; they map to the change's time.
    pub fn guest_to_host(&self, guest: u64) -> u64 {
        let guest = guest as i128;
        for (k, seg) in self.segments.iter().enumerate().rev() {
            let host = guest - seg.offset as i128;
            let end = self
                .segments
                .get(k + 1)
                .map_or(i128::MAX, |next| next.host_start as i128);
            let start = if k == 0 {
                i128::MIN
            } else {
                seg.host_start as i128
            };
            if host >= start && host < end {
                return clamp_u64(host);
            }
        }
        // In a forward gap: the first segment whose guest range starts after `guest`.
        for seg in &self.segments[1..] {
            if seg.host_start as i128 + seg.offset as i128 > guest {
                return seg.host_start;
            }
        }
        clamp_u64(guest - self.segments.last().map_or(0, |s| s.offset) as i128)
    }
}

fn clamp_u64(v: i128) -> u64 {
    v.clamp(0, u64::MAX as i128) as u64
}

/// Which relation between guest and host TSC a merge used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlignmentKind {
    /// guest = host + the offset `kvm_write_tsc_offset` set (VMX/SVM).
    KvmOffset,
    /// guest = host: the offset is not applied (PVM).
    Identity,
    /// guest = host + an offset estimated from the markers (neither of the above fits).
    MarkerEstimated,
}

impl fmt::Display for AlignmentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AlignmentKind::KvmOffset => {
                "KVM TSC offset applied (guest = host + kvm_write_tsc_offset)"
            }
            AlignmentKind::Identity => {
                "identity (guest TSC = host TSC, offset not applied, as under PVM)"
            }
            AlignmentKind::MarkerEstimated => "offset estimated from markers",
        })
    }
}

/// A guest/host clock relation: one offset timeline per vCPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockModel {
    pub kind: AlignmentKind,
    /// Timelines of the vCPUs that have their own; others use `fallback`.
    pub per_vcpu: BTreeMap<u32, OffsetTimeline>,
    pub fallback: OffsetTimeline,
    /// Host thread -> vCPU, from the threads that wrote exactly one vCPU's offset.
    pub thread_vcpu: BTreeMap<u32, u32>,
}

impl ClockModel {
    pub fn identity() -> Self {
        ClockModel {
            kind: AlignmentKind::Identity,
            per_vcpu: BTreeMap::new(),
            fallback: OffsetTimeline::constant(0),
            thread_vcpu: BTreeMap::new(),
        }
    }

    pub fn estimated(offset: i64) -> Self {
        ClockModel {
            kind: AlignmentKind::MarkerEstimated,
            per_vcpu: BTreeMap::new(),
            fallback: OffsetTimeline::constant(offset),
            thread_vcpu: BTreeMap::new(),
        }
    }

    /// The model KVM's recorded offsets describe. vCPUs without events get vCPU 0's timeline
    /// (KVM keeps vCPUs of one VM in sync), or the lowest-numbered vCPU's.
    pub fn kvm_offsets(changes: &[TscOffsetChange]) -> Self {
        let mut by_vcpu: BTreeMap<u32, Vec<TscOffsetChange>> = BTreeMap::new();
        let mut thread_vcpus: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for c in changes {
            by_vcpu.entry(c.vcpu).or_default().push(*c);
            thread_vcpus.entry(c.host_thread).or_default().push(c.vcpu);
        }
        let thread_vcpu = thread_vcpus
            .into_iter()
            .filter(|(_, vcpus)| vcpus.iter().all(|v| *v == vcpus[0]))
            .map(|(thread, vcpus)| (thread, vcpus[0]))
            .collect();
        let per_vcpu: BTreeMap<u32, OffsetTimeline> = by_vcpu
            .into_iter()
            .map(|(vcpu, cs)| (vcpu, OffsetTimeline::from_changes(&cs)))
            .collect();
        let fallback = per_vcpu
            .values()
            .next()
            .cloned()
            .unwrap_or_else(|| OffsetTimeline::constant(0));
        ClockModel {
            kind: AlignmentKind::KvmOffset,
            per_vcpu,
            fallback,
            thread_vcpu,
        }
    }

    pub fn timeline(&self, vcpu: u32) -> &OffsetTimeline {
        self.per_vcpu.get(&vcpu).unwrap_or(&self.fallback)
    }

    pub fn guest_to_host(&self, vcpu: u32, guest_tsc: u64) -> u64 {
        self.timeline(vcpu).guest_to_host(guest_tsc)
    }

    /// All (vCPU, timeline) pairs a marker written through `host_thread` might come from.
    fn candidates(&self, host_thread: u32) -> Vec<(u32, &OffsetTimeline)> {
        if let Some(&vcpu) = self.thread_vcpu.get(&host_thread) {
            vec![(vcpu, self.timeline(vcpu))]
        } else if self.per_vcpu.is_empty() {
            vec![(0, &self.fallback)]
        } else {
            self.per_vcpu.iter().map(|(v, t)| (*v, t)).collect()
        }
    }
}

/// A marker explained by a model: when the guest wrote it and when the host saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkerPair {
    /// The guest TSC the marker carried, completed to 64 bits.
    pub guest_tsc: u64,
    /// Host TSC at which the guest wrote the marker, according to the model.
    pub guest_host_tsc: u64,
    /// Host TSC of the `kvm_pio` event.
    pub pio_host_tsc: u64,
    /// The vCPU whose offset explains the marker best.
    pub vcpu: u32,
    /// Host TSC at which the guest read its TSC after the write, according to the model.
    pub guest_after_host_tsc: Option<u64>,
    /// Host thread of the `kvm_pio`.
    pub host_thread: u32,
}

impl MarkerPair {
    /// Host cycles from the guest's write to the host's event; >= 0 when the model is right.
    pub fn residual_tsc(&self) -> i64 {
        (self.pio_host_tsc as i128 - self.guest_host_tsc as i128)
            .clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// Host cycles between the guest's TSC reads before and after the write.
    pub fn window_tsc(&self) -> Option<u64> {
        self.guest_after_host_tsc
            .map(|after| after.saturating_sub(self.guest_host_tsc))
    }

    /// Does the host's stamp fall inside the guest's window (None: no TSC after the write)?
    pub fn in_window(&self) -> Option<bool> {
        self.guest_after_host_tsc
            .map(|after| (self.guest_host_tsc..=after).contains(&self.pio_host_tsc))
    }
}

/// The 64-bit value congruent to `low` mod 2^32 nearest to `predicted` (never below zero: a
/// TSC does not go negative).
pub fn unwrap_low32(low: u32, predicted: u64) -> u64 {
    let delta = low.wrapping_sub(predicted as u32) as i32;
    match predicted.checked_add_signed(i64::from(delta)) {
        Some(v) => v,
        None if delta < 0 => predicted
            .wrapping_add(i64::from(delta) as u64)
            .wrapping_add(1 << 32),
        None => predicted.wrapping_add(i64::from(delta) as u64),
    }
}

/// Explains each marker with `model`: completes its guest TSC around what the model predicts
/// at the pio's host time, and maps it back to host time. The vCPU is the one whose offset
/// the pio's host thread wrote; if that is unknown, the one giving the smallest non-negative
/// residual.
pub fn explain_markers(model: &ClockModel, markers: &[Marker]) -> Vec<MarkerPair> {
    markers
        .iter()
        .map(|m| {
            let candidates = model.candidates(m.host_thread);
            let pairs = candidates.iter().map(|(vcpu, timeline)| {
                let guest_tsc = match m.guest_tsc_high {
                    Some(high) => (u64::from(high) << 32) | u64::from(m.guest_tsc_low),
                    None => unwrap_low32(m.guest_tsc_low, timeline.host_to_guest(m.pio_host_tsc)),
                };
                MarkerPair {
                    guest_tsc,
                    guest_host_tsc: timeline.guest_to_host(guest_tsc),
                    pio_host_tsc: m.pio_host_tsc,
                    vcpu: *vcpu,
                    guest_after_host_tsc: m.guest_tsc_after.map(|a| timeline.guest_to_host(a)),
                    host_thread: m.host_thread,
                }
            });
            // Stamps inside the guest's window first, then non-negative residuals, then the
            // smallest magnitude.
            pairs
                .min_by_key(|p| {
                    (
                        p.in_window() == Some(false),
                        p.residual_tsc() < 0,
                        p.residual_tsc().unsigned_abs(),
                    )
                })
                .expect("a model has at least one timeline")
        })
        .collect()
}

/// The constant offset that puts the earliest-latency marker exactly at its pio.
///
/// Needs each marker's full guest TSC: from its high half, or unwrapped in time order starting
/// from `guest_anchor` (a guest TSC known to be within about 0.8 s of the first marker, e.g.
/// the guest trace's first TSC). The estimate makes guest events appear late by the smallest
/// marker latency (a few microseconds).
pub fn estimate_offset(markers: &[Marker], guest_anchor: Option<u64>) -> Option<i64> {
    let mut sorted = markers.to_vec();
    sorted.sort_by_key(|m| m.pio_host_tsc);
    let mut prev: Option<(u64, u64)> = None; // (pio host tsc, full guest tsc)
    let mut best: Option<i128> = None;
    for m in &sorted {
        let full = match (m.guest_tsc_high, prev, guest_anchor) {
            (Some(high), _, _) => (u64::from(high) << 32) | u64::from(m.guest_tsc_low),
            (None, Some((pio, guest)), _) => unwrap_low32(
                m.guest_tsc_low,
                guest.wrapping_add(m.pio_host_tsc.wrapping_sub(pio)),
            ),
            (None, None, Some(anchor)) => unwrap_low32(m.guest_tsc_low, anchor),
            (None, None, None) => return None,
        };
        prev = Some((m.pio_host_tsc, full));
        let d = full as i128 - m.pio_host_tsc as i128;
        best = Some(best.map_or(d, |b| b.max(d)));
    }
    best.map(|d| d.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
}

/// What the choice of a model is based on.
#[derive(Clone, Debug, Default)]
pub struct AlignmentInput<'a> {
    pub offset_changes: &'a [TscOffsetChange],
    pub markers: &'a [Marker],
    /// A guest TSC near the first marker (the guest trace's first TSC), for unwrapping.
    pub guest_anchor: Option<u64>,
    /// First and last guest TSC of the guest trace, for the plausibility check without markers.
    pub guest_span: Option<(u64, u64)>,
    /// First and last host TSC of the capture.
    pub host_span: Option<(u64, u64)>,
    /// Largest believable marker latency in host cycles (default: 1 ms worth).
    pub max_latency_tsc: u64,
}

/// How well one candidate model explains the markers.
#[derive(Clone, Debug)]
pub struct CandidateFit {
    pub model: ClockModel,
    pub pairs: Vec<MarkerPair>,
    /// Markers with a residual in [0, max latency] and a stamp inside the guest's window.
    pub explained: usize,
}

impl CandidateFit {
    pub fn consistent(&self) -> bool {
        !self.pairs.is_empty() && self.explained == self.pairs.len()
    }
}

/// The chosen model, why, and how every candidate did.
#[derive(Clone, Debug)]
pub struct Alignment {
    pub model: ClockModel,
    /// The chosen model's marker pairs (empty without markers).
    pub pairs: Vec<MarkerPair>,
    pub candidates: Vec<CandidateFit>,
    /// One sentence for the user: why this model.
    pub reason: String,
    /// True when no model explained all markers (the result is a best guess).
    pub doubtful: bool,
}

/// Picks the guest/host clock relation (see the module documentation).
pub fn choose_alignment(input: &AlignmentInput) -> Alignment {
    let recorded = ClockModel::kvm_offsets(input.offset_changes);
    // Which host thread runs which vCPU is known from the offset writes whatever the model.
    let with_threads = |m: ClockModel| ClockModel {
        thread_vcpu: recorded.thread_vcpu.clone(),
        ..m
    };
    let mut models = Vec::new();
    if !input.offset_changes.is_empty() {
        models.push(recorded.clone());
    }
    models.push(with_threads(ClockModel::identity()));
    if let Some(offset) = estimate_offset(input.markers, input.guest_anchor) {
        models.push(with_threads(ClockModel::estimated(offset)));
    }
    let max = i64::try_from(input.max_latency_tsc).unwrap_or(i64::MAX);
    let candidates: Vec<CandidateFit> = models
        .into_iter()
        .map(|model| {
            let pairs = explain_markers(&model, input.markers);
            // Explained: the stamp comes after the guest's write, soon, and (when the guest
            // gave its TSC after the write) before the write returned.
            let explained = pairs
                .iter()
                .filter(|p| (0..=max).contains(&p.residual_tsc()) && p.in_window() != Some(false))
                .count();
            CandidateFit {
                model,
                pairs,
                explained,
            }
        })
        .collect();

    if input.markers.is_empty() {
        return choose_without_markers(input, candidates);
    }
    let n = input.markers.len();
    if let Some(fit) = candidates.iter().find(|c| c.consistent()) {
        let reason = format!(
            "under this model every marker's kvm_pio ({n}) comes after the guest's write, within the latency limit{}",
            rejected_note(&candidates, fit.model.kind)
        );
        return Alignment {
            model: fit.model.clone(),
            pairs: fit.pairs.clone(),
            candidates: candidates.clone(),
            reason,
            doubtful: false,
        };
    }
    // Nothing explains every marker: take the one explaining most, and say so.
    let best = candidates
        .iter()
        .max_by_key(|c| (c.explained, std::cmp::Reverse(c.model.kind)))
        .expect("identity is always a candidate");
    let reason = format!(
        "no model explains all {n} markers (best: {} of {n}); the alignment is a guess: check the marker port and that the guest writes its own rdtsc",
        best.explained
    );
    Alignment {
        model: best.model.clone(),
        pairs: best.pairs.clone(),
        candidates: candidates.clone(),
        reason,
        doubtful: true,
    }
}

fn rejected_note(candidates: &[CandidateFit], chosen: AlignmentKind) -> String {
    let rejected: Vec<String> = candidates
        .iter()
        .filter(|c| c.model.kind < chosen && !c.consistent())
        .map(|c| {
            format!(
                "{:?} explains {} of {}",
                c.model.kind,
                c.explained,
                c.pairs.len()
            )
        })
        .collect();
    if rejected.is_empty() {
        String::new()
    } else {
        format!(" (rejected: {})", rejected.join("; "))
    }
}

fn choose_without_markers(input: &AlignmentInput, candidates: Vec<CandidateFit>) -> Alignment {
    let kvm = candidates
        .iter()
        .find(|c| c.model.kind == AlignmentKind::KvmOffset);
    let identity = candidates
        .iter()
        .find(|c| c.model.kind == AlignmentKind::Identity)
        .expect("identity is always a candidate");
    let (chosen, reason) = match kvm {
        None => (
            identity,
            "no markers and no kvm_write_tsc_offset events: assuming guest TSC = host TSC"
                .to_string(),
        ),
        Some(kvm) => {
            // Without markers, the guest trace should at least fall inside the capture.
            let plausible = |m: &ClockModel| match (input.guest_span, input.host_span) {
                (Some((g0, g1)), Some((h0, h1))) => {
                    let slack = 1u64 << 32;
                    let (a, b) = (m.guest_to_host(0, g0), m.guest_to_host(0, g1));
                    a.saturating_add(slack) >= h0 && b <= h1.saturating_add(slack)
                }
                _ => true,
            };
            if !plausible(&kvm.model) && plausible(&identity.model) {
                (
                    identity,
                    "no markers; the KVM offsets would put the guest trace outside the capture while guest = host \
                     puts it inside, so the offset is taken as not applied (as under PVM); write markers to be sure"
                        .to_string(),
                )
            } else {
                (kvm, "no markers: using the kvm_write_tsc_offset offsets as recorded (unverified; write markers to check)".to_string())
            }
        }
    };
    Alignment {
        model: chosen.model.clone(),
        pairs: Vec::new(),
        candidates: candidates.clone(),
        reason,
        doubtful: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 2_600; // host cycles per microsecond at 2.6 GHz
    const MAX_LATENCY: u64 = 1_000 * US;

    /// vCPU N's thread is 100 + N.
    fn change(host_tsc: u64, vcpu: u32, prev: i64, next: i64) -> TscOffsetChange {
        TscOffsetChange {
            host_tsc,
            host_thread: 100 + vcpu,
            vcpu,
            prev: prev as u64,
            next: next as u64,
        }
    }

    fn marker(pio_host_tsc: u64, guest_tsc: u64) -> Marker {
        Marker {
            pio_host_tsc,
            host_thread: 100,
            guest_tsc_low: guest_tsc as u32,
            guest_tsc_high: None,
            guest_tsc_after: None,
        }
    }

    /// Markers written at host times `writes` (latency `lat[i]` each) by a guest whose TSC is
    /// `guest_of(host)`.
    fn markers_at(writes: &[u64], lat: &[u64], guest_of: impl Fn(u64) -> u64) -> Vec<Marker> {
        writes
            .iter()
            .zip(lat.iter().cycle())
            .map(|(&h, &l)| marker(h + l, guest_of(h)))
            .collect()
    }

    fn input<'a>(changes: &'a [TscOffsetChange], markers: &'a [Marker]) -> AlignmentInput<'a> {
        AlignmentInput {
            offset_changes: changes,
            markers,
            max_latency_tsc: MAX_LATENCY,
            ..Default::default()
        }
    }

    #[test]
    fn unwrap_picks_nearest_congruent_value() {
        assert_eq!(unwrap_low32(5, 10 << 32), (10 << 32) + 5);
        assert_eq!(
            unwrap_low32(0xffff_fff0, (10 << 32) + 3),
            (9 << 32) + 0xffff_fff0
        );
        assert_eq!(unwrap_low32(3, (10 << 32) - 5), (10 << 32) + 3);
        assert_eq!(unwrap_low32(0x1234, 0), 0x1234);
        // Near zero the value below would be negative: take the one above.
        assert_eq!(unwrap_low32(0xffff_ff00, 0x10), 0xffff_ff00);
    }

    #[test]
    fn offset_in_force_changes_at_the_event_time() {
        let t =
            OffsetTimeline::from_changes(&[change(1000, 0, 0, -500), change(5000, 0, -500, 700)]);
        assert_eq!(t.offset_at_host(0), 0);
        assert_eq!(t.offset_at_host(999), 0);
        assert_eq!(t.offset_at_host(1000), -500);
        assert_eq!(t.offset_at_host(4999), -500);
        assert_eq!(t.offset_at_host(5000), 700);
        assert_eq!(t.host_to_guest(2000), 1500);
        assert_eq!(t.host_to_guest(6000), 6700);
    }

    #[test]
    fn repeated_identical_offsets_collapse() {
        // PVM writes the same offset three times per VM.
        let off = -1_000_000_000i64;
        let t = OffsetTimeline::from_changes(&[
            change(10, 0, 0, off),
            change(20, 0, off, off),
            change(30, 0, off, off),
        ]);
        assert_eq!(t.segments().len(), 2);
    }

    #[test]
    fn guest_to_host_inverts_across_several_changes() {
        // Offsets: 0, then a big negative one (VM creation), then guest wrote its TSC (forward
        // jump), then backward by a little (guest time overlaps).
        let changes = [
            change(1_000_000, 0, 0, -900_000),
            change(5_000_000, 0, -900_000, 40_000_000),
            change(9_000_000, 0, 40_000_000, 39_000_000),
        ];
        let t = OffsetTimeline::from_changes(&changes);
        for host in (0..12_000_000).step_by(1_337) {
            let guest = t.host_to_guest(host);
            let back = t.guest_to_host(guest);
            // Where a change moved guest time back, guest values repeat and the most recent
            // segment wins: the change at 1_000_000 repeats the guest times of hosts
            // [100_000, 1_000_000), the one at 9_000_000 those of [8_000_000, 9_000_000).
            let expected = match host {
                100_000..1_000_000 => host + 900_000,
                8_000_000..9_000_000 => host + 1_000_000,
                _ => host,
            };
            assert_eq!(back, expected, "host {host}");
        }
        // A guest value inside the forward jump never happened: it maps to the jump's time.
        let in_gap = 5_000_000 - 900_000 + 10;
        assert_eq!(t.guest_to_host(in_gap), 5_000_000);
    }

    #[test]
    fn kvm_offsets_two_vcpus_with_changes_chosen_from_markers() {
        // VMX-like: the offset applies; vCPU 1 gets its offset later and changes it twice.
        let base = 50_000_000_000_000u64; // host TSC ~ 5 h of uptime
        let off0 = -(base as i64) + 123_456;
        let off1a = off0 + 77;
        let off1b = off1a + 3 * (1 << 32) + 999; // a large change (guest wrote its TSC)
        let changes = [
            change(base, 0, 0, off0),
            change(base + 10, 1, 0, off1a),
            change(base + 500 * US * 1000, 1, off1a as u64 as i64, off1b),
        ];
        let model = ClockModel::kvm_offsets(&changes);
        // vCPU 0 writes three markers, vCPU 1 writes two before and two after its change.
        let lat = [30 * US, 3 * US, 4 * US, 5 * US];
        let mut markers = markers_at(
            &[base + 1_000 * US, base + 300_000 * US, base + 900_000 * US],
            &lat,
            |h| model.timeline(0).host_to_guest(h),
        );
        let vcpu1 = markers_at(
            &[
                base + 2_000 * US,
                base + 400_000 * US,
                base + 600_000 * US,
                base + 2_000_000 * US,
            ],
            &lat[1..],
            |h| model.timeline(1).host_to_guest(h),
        );
        markers.extend(vcpu1.into_iter().map(|m| Marker {
            host_thread: 101,
            ..m
        }));
        let a = choose_alignment(&input(&changes, &markers));
        assert_eq!(a.model.kind, AlignmentKind::KvmOffset, "{}", a.reason);
        assert!(!a.doubtful);
        assert_eq!(a.pairs.len(), 7);
        for (pair, m) in a.pairs.iter().zip(&markers) {
            assert!(pair.residual_tsc() >= 0, "cause after effect: {pair:?}");
            assert!(pair.residual_tsc() as u64 <= 30 * US);
            assert_eq!(pair.pio_host_tsc, m.pio_host_tsc);
        }
        let residuals: Vec<i64> = a.pairs.iter().map(|p| p.residual_tsc()).collect();
        assert_eq!(
            residuals,
            [30 * US, 3 * US, 4 * US, 3 * US, 4 * US, 5 * US, 3 * US]
                .iter()
                .map(|&r| r as i64)
                .collect::<Vec<_>>()
        );
        // Identity must have been rejected.
        let identity = a
            .candidates
            .iter()
            .find(|c| c.model.kind == AlignmentKind::Identity)
            .unwrap();
        assert!(!identity.consistent());
        // Guest->host of each marker gives back the host time of the write.
        assert_eq!(a.pairs[3].guest_host_tsc, base + 2_000 * US);
        assert_eq!(a.pairs[6].guest_host_tsc, base + 2_000_000 * US);
    }

    #[test]
    fn pvm_guest_reads_host_tsc_despite_recorded_offsets() {
        let base = 80_000_000_000_000u64;
        let off = -(base as i64) - 5_555;
        let changes = [
            change(base, 0, 0, off),
            change(base + 100, 0, off, off),
            change(base + 200, 0, off, off),
        ];
        let writes: Vec<u64> = (0..10)
            .map(|i| base + 5_000 * US + i * 7_777 * US)
            .collect();
        let markers = markers_at(&writes, &[30 * US, 3 * US, 5 * US, 4 * US], |h| h);
        let a = choose_alignment(&input(&changes, &markers));
        assert_eq!(a.model.kind, AlignmentKind::Identity, "{}", a.reason);
        assert!(a.reason.contains("KvmOffset explains"), "{}", a.reason);
        for pair in &a.pairs {
            assert_eq!(pair.guest_tsc, pair.guest_host_tsc);
            assert!((3 * US..=30 * US).contains(&(pair.residual_tsc() as u64)));
        }
        let kvm = a
            .candidates
            .iter()
            .find(|c| c.model.kind == AlignmentKind::KvmOffset)
            .unwrap();
        assert_eq!(kvm.explained, 0);
    }

    #[test]
    fn markers_whose_low_bits_wrap() {
        // The guest TSC crosses a multiple of 2^32 between the guest's write and the pio, and
        // markers are further apart than the 2^32-cycle period.
        let wrap = 7u64 << 32;
        let writes = [
            wrap - 2 * US,
            wrap - 1,
            wrap + (3 << 32) + 17,
            wrap + (5 << 32) - US,
        ];
        let markers = markers_at(&writes, &[4 * US], |h| h);
        assert!(markers[0].guest_tsc_low > 0xffff_0000);
        assert!(
            (markers[0].pio_host_tsc as u32) < 0x10_0000,
            "pio is past the wrap"
        );
        let a = choose_alignment(&input(&[], &markers));
        assert_eq!(a.model.kind, AlignmentKind::Identity);
        let guest: Vec<u64> = a.pairs.iter().map(|p| p.guest_tsc).collect();
        assert_eq!(guest, writes.to_vec());
    }

    #[test]
    fn wrapping_markers_under_a_negative_kvm_offset() {
        let base = 3u64 << 40;
        let off = -(base as i64) + (1 << 32) - 100; // guest TSC near 2^32 right after creation
        let changes = [change(base - 1000, 0, 0, off)];
        let model = ClockModel::kvm_offsets(&changes);
        let writes = [base + 50, base + 90, base + (1 << 33)];
        let markers = markers_at(&writes, &[5 * US], |h| model.timeline(0).host_to_guest(h));
        let a = choose_alignment(&input(&changes, &markers));
        assert_eq!(a.model.kind, AlignmentKind::KvmOffset, "{}", a.reason);
        assert_eq!(a.pairs[0].guest_tsc, (1 << 32) - 50);
        assert_eq!(a.pairs[1].guest_tsc, (1 << 32) - 10);
        assert!(a.pairs.iter().all(|p| p.residual_tsc() == 5 * US as i64));
    }

    #[test]
    fn unknown_offset_is_estimated_from_markers_with_an_anchor() {
        // Neither recorded offsets nor identity hold (e.g. the capture started after VM
        // creation and the guest TSC runs 12.3 s behind).
        let true_off = -(32_000_000_000i64);
        let base = 60_000_000_000_000u64;
        let guest_of = |h: u64| h.wrapping_add(true_off as u64);
        let writes: Vec<u64> = (0..6).map(|i| base + i * 900_000 * US).collect(); // 0.9 s apart: wraps
        let markers = markers_at(&writes, &[6 * US, 3 * US, 4 * US], guest_of);
        let inp = AlignmentInput {
            guest_anchor: Some(guest_of(base) - 200_000 * US),
            ..input(&[], &markers)
        };
        let a = choose_alignment(&inp);
        assert_eq!(a.model.kind, AlignmentKind::MarkerEstimated, "{}", a.reason);
        // Biased by the smallest latency: guest events show up 3 us late at most.
        assert_eq!(
            a.model.timeline(0).offset_at_host(0),
            true_off - 3 * US as i64
        );
        let residuals: Vec<i64> = a.pairs.iter().map(|p| p.residual_tsc()).collect();
        assert_eq!(residuals.iter().min(), Some(&0));
        assert_eq!(residuals.iter().max(), Some(&(3 * US as i64)));
    }

    #[test]
    fn high_half_gives_the_full_value() {
        let true_off = 1i64 << 45;
        let writes = [1u64 << 41, (1 << 41) + 10 * (1 << 32)];
        let markers: Vec<Marker> = writes
            .iter()
            .map(|&h| {
                let g = h + true_off as u64;
                Marker {
                    pio_host_tsc: h + 4 * US,
                    host_thread: 1,
                    guest_tsc_low: g as u32,
                    guest_tsc_high: Some((g >> 32) as u32),
                    guest_tsc_after: None,
                }
            })
            .collect();
        assert_eq!(
            estimate_offset(&markers, None),
            Some(true_off - 4 * US as i64)
        );
        let a = choose_alignment(&input(&[], &markers));
        assert_eq!(a.model.kind, AlignmentKind::MarkerEstimated);
        assert!(a.pairs.iter().all(|p| p.residual_tsc() == 0));
    }

    #[test]
    fn the_window_after_the_write_rejects_a_model_that_stamps_too_late() {
        // The guest TSC runs 40 us behind the host. Identity puts every pio 44 us after its
        // write (a believable latency), but after the write had returned (12 us window): the
        // window tells it is wrong; the estimated offset puts the stamps inside.
        let behind = 40 * US;
        let writes: Vec<u64> = (0..4).map(|i| (1 << 40) + i * 1_000 * US).collect();
        let markers: Vec<Marker> = markers_at(&writes, &[4 * US], |h| h - behind)
            .into_iter()
            .map(|m| Marker {
                guest_tsc_after: Some(m.pio_host_tsc - behind + 8 * US),
                ..m
            })
            .collect();
        let inp = AlignmentInput {
            guest_anchor: Some((1 << 40) - behind),
            ..input(&[], &markers)
        };
        let a = choose_alignment(&inp);
        let identity = a
            .candidates
            .iter()
            .find(|c| c.model.kind == AlignmentKind::Identity)
            .unwrap();
        assert_eq!(identity.explained, 0, "stamps after the window");
        assert_eq!(a.model.kind, AlignmentKind::MarkerEstimated, "{}", a.reason);
        for p in &a.pairs {
            assert_eq!(p.in_window(), Some(true));
            assert_eq!(p.window_tsc(), Some(12 * US));
        }
    }

    #[test]
    fn markers_after_their_pio_are_rejected() {
        // Guest TSC ahead of the host by 1 ms: under identity every marker would come after
        // its pio, which cannot be.
        let markers = markers_at(&[1 << 40, (1 << 40) + 1_000_000], &[4 * US], |h| {
            h + 1_000 * US
        });
        let identity = explain_markers(&ClockModel::identity(), &markers);
        assert!(identity.iter().all(|p| p.residual_tsc() < 0));
        // Without an anchor nothing else can be tried: the result says it is a guess.
        let a = choose_alignment(&input(&[], &markers));
        assert!(a.doubtful, "{}", a.reason);
        let inp = AlignmentInput {
            guest_anchor: Some((1 << 40) + 1_000 * US),
            ..input(&[], &markers)
        };
        let a = choose_alignment(&inp);
        assert_eq!(a.model.kind, AlignmentKind::MarkerEstimated, "{}", a.reason);
        assert!(!a.doubtful);
    }

    #[test]
    fn without_markers_offsets_are_used_if_recorded_else_identity() {
        let changes = [change(100, 0, 0, -50)];
        let a = choose_alignment(&input(&changes, &[]));
        assert_eq!(a.model.kind, AlignmentKind::KvmOffset);
        assert!(a.reason.contains("no markers"));
        let a = choose_alignment(&input(&[], &[]));
        assert_eq!(a.model.kind, AlignmentKind::Identity);
        assert!(a.reason.contains("no markers"));
    }

    #[test]
    fn without_markers_an_implausible_offset_falls_back_to_identity() {
        // PVM-like: offset = -host TSC at creation, but the guest trace's TSCs are host TSCs.
        let base = 90_000_000_000_000u64;
        let changes = [change(base, 0, 0, -(base as i64))];
        let inp = AlignmentInput {
            guest_span: Some((base + 1_000, base + 2_000_000)),
            host_span: Some((base - 10_000, base + 3_000_000)),
            ..input(&changes, &[])
        };
        let a = choose_alignment(&inp);
        assert_eq!(a.model.kind, AlignmentKind::Identity, "{}", a.reason);
        // And a VMX-like guest (small guest TSCs) keeps the offsets.
        let inp = AlignmentInput {
            guest_span: Some((1_000, 2_000_000)),
            ..inp
        };
        assert_eq!(choose_alignment(&inp).model.kind, AlignmentKind::KvmOffset);
    }
}
