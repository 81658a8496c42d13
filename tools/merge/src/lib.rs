//! Guest/host clock alignment (KVM TSC offsets, marker events) and the merged timeline.
//!
//! [`merge`] puts on one timeline, through a [`TimelineSink`]:
//! - a guest trace (a uftrace directory whose `vftrace.clock`, `source=guest`, maps its
//!   nanoseconds back to the guest TSC): one track "guest vCPU N" per guest thread, in tid
//!   order;
//! - host KVM events from a capture (`vftrace kvm`, trace-cmd report or tracefs text): a "KVM"
//!   process with one track per host thread (the vCPU threads), pio/mmio/exits and TSC offset
//!   changes as instants, markers named `marker`;
//! - host program traces: vftrace traces (`vftrace.clock`, `source=host`) or plain uftrace
//!   traces on CLOCK_MONOTONIC (placed with the capture's clock pairs): "host: COMM PID";
//! - stack samples from `vftrace profile` ([`profile_samples`]): a track per sampled vCPU.
//!
//! The guest TSC is mapped to the host TSC by the model [`align::choose_alignment`] picks
//! (KVM's offsets, identity as under PVM, or an offset estimated from markers); see
//! [`align`] for the marker protocol. Host TSC becomes nanoseconds on the CLOCK_MONOTONIC
//! scale when the capture has clock pairs, else TSC / frequency.
use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use vftrace_convert::{ArgValue, ThreadTimeline, TimelineSink};
use vftrace_format::clock::{ClockMap, ClockSource};
use vftrace_format::dir::{Symbolizer, TraceDir};
use vftrace_format::error::FormatError;
use vftrace_format::record::{Record, RecordType};
use vftrace_format::task::TaskLine;
use vftrace_kvm::{Capture, CaptureError, KvmEvent, KvmEventKind};

pub mod align;
pub mod clocks;
pub mod guest_markers;
pub mod profile_samples;

use align::{choose_alignment, AlignmentInput, ClockModel};
pub use align::{
    AlignmentKind, Marker, MarkerPair, OffsetSegment, TscOffsetChange, DEFAULT_MARKER_PORT,
    MARKER_HIGH_PORT_DELTA,
};
use clocks::{detect_tsc_hz, HostClock, TscHzHints, TscHzSource};
use vftrace_format::markers::{read_guest_markers, GuestMarkers};

/// Process id of the guest's tracks in the output (above Linux's largest pid, 2^22).
pub const GUEST_PID: u32 = 0x4000_0001;
/// Process id of the KVM event tracks in the output.
pub const KVM_PID: u32 = 0x4000_0002;
/// Default largest believable delay from a guest's marker write to its `kvm_pio` (1 ms; it is
/// 3-5 us normally, up to 30 us for the first exit after a long native run).
pub const DEFAULT_MAX_MARKER_LATENCY_NS: f64 = 1e6;

/// What to merge.
#[derive(Clone, Debug)]
pub struct MergeOptions {
    /// Guest uftrace directory with `vftrace.clock` (source=guest).
    pub guest: Option<PathBuf>,
    /// Host KVM event capture.
    pub kvm: Option<PathBuf>,
    /// Host program traces (vftrace or uftrace directories).
    pub hosts: Vec<PathBuf>,
    /// Stack samples of `vftrace profile` (its `vftrace.samples`, or the profile directory).
    pub profile: Option<PathBuf>,
    /// Port the guest writes marker values to (its high half, if any, to port + 4).
    pub marker_port: u16,
    /// TSC frequency override (Hz).
    pub tsc_hz: Option<f64>,
    /// Markers whose pio comes later than this after the guest's write do not count as
    /// explained by a model.
    pub max_marker_latency_ns: f64,
    /// May the frequency be taken from this machine (kernel log, calibration) when the inputs
    /// do not give it? Right only when the capture was taken here.
    pub allow_local_tsc_hz: bool,
    /// Read inputs cut short or damaged as far as they go: a KVM capture without its `end`
    /// line or with unreadable lines (skipped), noted in the warnings. Record files read up to
    /// their damage are in [`MergeReport::data_errors`] either way.
    pub lenient: bool,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            guest: None,
            kvm: None,
            hosts: Vec::new(),
            profile: None,
            marker_port: DEFAULT_MARKER_PORT,
            tsc_hz: None,
            max_marker_latency_ns: DEFAULT_MAX_MARKER_LATENCY_NS,
            allow_local_tsc_hz: true,
            lenient: false,
        }
    }
}

/// Why a merge could not be done.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("nothing to merge: give a guest trace, a KVM capture, host traces or profile samples")]
    NoInput,
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Trace(#[from] FormatError),
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },
    #[error("cannot tell the TSC frequency: the capture has no clock pairs or tsc_hz and the guest trace no vftrace.clock; give --tsc-hz")]
    UnknownTscHz,
    /// Not `#[from]`: the message already includes the I/O error, which must not be repeated
    /// as a source by error reporters.
    #[error("writing the merged timeline: {0}")]
    Output(io::Error),
}

impl From<io::Error> for MergeError {
    fn from(e: io::Error) -> Self {
        MergeError::Output(e)
    }
}

/// min/median/max of a set of values, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResidualStats {
    pub min_ns: f64,
    pub median_ns: f64,
    pub max_ns: f64,
}

impl ResidualStats {
    pub fn of(values: &[f64]) -> Option<ResidualStats> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median_ns = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(ResidualStats {
            min_ns: v[0],
            median_ns,
            max_ns: v[v.len() - 1],
        })
    }
}

impl fmt::Display for ResidualStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "min {} / median {} / max {}",
            fmt_ns(self.min_ns),
            fmt_ns(self.median_ns),
            fmt_ns(self.max_ns)
        )
    }
}

fn fmt_ns(ns: f64) -> String {
    let a = ns.abs();
    if a >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if a >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if a >= 1e3 {
        format!("{:.2} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// How one candidate model did on the markers.
#[derive(Clone, Debug)]
pub struct CandidateReport {
    pub kind: AlignmentKind,
    /// Markers with a residual in [0, max latency].
    pub explained: usize,
    pub markers: usize,
    pub residuals: Option<ResidualStats>,
}

/// One host program trace in the output.
#[derive(Clone, Debug)]
pub struct HostTraceReport {
    pub dir: PathBuf,
    /// Track group names, "host: COMM PID".
    pub processes: Vec<String>,
    pub functions: u64,
    /// How its times were placed.
    pub clock: String,
}

/// What a merge did: the summary printed for the user and what tests check.
#[derive(Clone, Debug)]
pub struct MergeReport {
    pub alignment: AlignmentKind,
    /// Why this alignment.
    pub alignment_reason: String,
    /// No model explained all markers: the alignment is a best guess.
    pub alignment_doubtful: bool,
    pub candidates: Vec<CandidateReport>,
    pub marker_port: u16,
    /// Each marker as the chosen model explains it (guest write -> host pio).
    pub markers: Vec<MarkerPair>,
    /// The guest's phase number of each marker in `markers`, from its `vftrace.markers`.
    pub marker_phases: Vec<Option<u32>>,
    /// Markers the guest listed in `vftrace.markers`, and how many of them the capture saw.
    pub guest_markers: usize,
    pub guest_markers_matched: usize,
    /// `pio_host_tsc - guest_host_tsc` of each marker in ns; >= 0 means cause before effect.
    pub residuals_ns: Vec<f64>,
    pub residual_stats: Option<ResidualStats>,
    /// The offsets `kvm_write_tsc_offset` recorded, per vCPU (as signed values).
    pub recorded_offsets: BTreeMap<u32, Vec<OffsetSegment>>,
    /// The offsets the chosen model applies, per vCPU (key `u32::MAX`: all other vCPUs).
    pub applied_offsets: BTreeMap<u32, Vec<OffsetSegment>>,
    pub tsc_hz: f64,
    pub tsc_hz_source: String,
    /// "CLOCK_MONOTONIC ..." or "host TSC / frequency".
    pub timeline_clock: String,
    pub guest_dir: Option<PathBuf>,
    pub guest_tracks: usize,
    pub guest_functions: u64,
    pub kvm_file: Option<PathBuf>,
    pub kvm_events: u64,
    pub kvm_lost_events: u64,
    pub host_traces: Vec<HostTraceReport>,
    pub profile: Option<profile_samples::ProfileTracks>,
    /// Things the user should know (frequency from this machine, repaired records...).
    pub warnings: Vec<String>,
    /// Input data that could not be read completely (what came before was kept). A command
    /// should print these and fail.
    pub data_errors: Vec<String>,
}

impl fmt::Display for MergeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(dir) = &self.guest_dir {
            writeln!(
                f,
                "guest:     {}: {} functions on {} vCPU track(s)",
                dir.display(),
                self.guest_functions,
                self.guest_tracks
            )?;
        }
        if let Some(file) = &self.kvm_file {
            write!(
                f,
                "KVM:       {}: {} events",
                file.display(),
                self.kvm_events
            )?;
            if self.kvm_lost_events > 0 {
                write!(f, " ({} lost by the kernel)", self.kvm_lost_events)?;
            }
            writeln!(f)?;
        }
        for h in &self.host_traces {
            writeln!(
                f,
                "host:      {}: {} functions ({}; {})",
                h.dir.display(),
                h.functions,
                h.processes.join(", "),
                h.clock
            )?;
        }
        if let Some(p) = &self.profile {
            writeln!(
                f,
                "profile:   {}: {} samples on {} vCPU track(s)",
                p.path.display(),
                p.samples,
                p.vcpus
            )?;
        }
        writeln!(
            f,
            "TSC:       {:.3} MHz, {}",
            self.tsc_hz / 1e6,
            self.tsc_hz_source
        )?;
        writeln!(f, "timeline:  {}", self.timeline_clock)?;
        writeln!(f, "alignment: {}", self.alignment)?;
        writeln!(f, "           {}", self.alignment_reason)?;
        match &self.residual_stats {
            Some(s) => writeln!(
                f,
                "markers:   {} on port {:#x}; guest write -> host pio: {}",
                self.markers.len(),
                self.marker_port,
                s
            )?,
            None => writeln!(f, "markers:   none on port {:#x}", self.marker_port)?,
        }
        if self.guest_markers > 0 {
            writeln!(
                f,
                "           the guest listed {} marker(s) with full TSCs; {} paired with a kvm_pio",
                self.guest_markers, self.guest_markers_matched
            )?;
        }
        for c in self.candidates.iter().filter(|c| c.markers > 0) {
            write!(
                f,
                "           {:?}: explains {} of {}",
                c.kind, c.explained, c.markers
            )?;
            if let Some(r) = &c.residuals {
                write!(f, " ({r})")?;
            }
            writeln!(f)?;
        }
        let offsets = |f: &mut fmt::Formatter<'_>,
                       label: &str,
                       map: &BTreeMap<u32, Vec<OffsetSegment>>|
         -> fmt::Result {
            for (vcpu, segs) in map {
                let who = if *vcpu == u32::MAX {
                    "all vCPUs".to_string()
                } else {
                    format!("vCPU {vcpu}")
                };
                let list: Vec<String> = segs
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        if i == 0 {
                            format!("{}", s.offset)
                        } else {
                            format!("{} from host TSC {}", s.offset, s.host_start)
                        }
                    })
                    .collect();
                writeln!(f, "{label}{who}: {}", list.join(", "))?;
            }
            Ok(())
        };
        offsets(f, "recorded:  TSC offset ", &self.recorded_offsets)?;
        offsets(f, "applied:   TSC offset ", &self.applied_offsets)?;
        for w in &self.warnings {
            writeln!(f, "warning:   {w}")?;
        }
        for e in &self.data_errors {
            writeln!(f, "error:     {e}")?;
        }
        Ok(())
    }
}

/// Merges what `opts` names into `sink` and calls `sink.finish()`.
///
/// Unreadable inputs (missing files, corrupt capture, no `vftrace.clock` in the guest trace)
/// are errors before anything is written. A record file that turns out corrupt part-way is
/// kept up to the bad record and reported in [`MergeReport::data_errors`].
pub fn merge(opts: &MergeOptions, sink: &mut dyn TimelineSink) -> Result<MergeReport, MergeError> {
    if opts.guest.is_none() && opts.kvm.is_none() && opts.hosts.is_empty() && opts.profile.is_none()
    {
        return Err(MergeError::NoInput);
    }
    let mut warnings = Vec::new();
    let capture = match &opts.kvm {
        Some(path) => read_kvm(path, opts.lenient, &mut warnings)?,
        None => Capture::default(),
    };
    let guest = match &opts.guest {
        Some(path) => Some(open_guest(path, &mut warnings)?),
        None => None,
    };
    let guest_markers = match &opts.guest {
        Some(path) => read_guest_markers(path)?,
        None => None,
    };
    let hosts = opts
        .hosts
        .iter()
        .map(|p| TraceDir::open(p).map_err(MergeError::from))
        .collect::<Result<Vec<_>, _>>()?;

    let hints = TscHzHints {
        given: opts.tsc_hz,
        capture: capture.tsc_hz,
        syncs: &capture.syncs,
        guest_clock: guest.as_ref().map(|(_, c)| c.tsc_hz),
        allow_local: opts.allow_local_tsc_hz,
    };
    let (tsc_hz, hz_source) = detect_tsc_hz(&hints).ok_or(MergeError::UnknownTscHz)?;
    if matches!(
        hz_source,
        TscHzSource::KernelLog(_) | TscHzSource::Calibrated
    ) {
        warnings.push(format!(
            "TSC frequency {hz_source}: right only if the capture was taken on this machine"
        ));
    }
    let host_clock = HostClock::new(&capture.syncs, tsc_hz, hz_source == TscHzSource::Given);
    let timeline_clock = if host_clock.monotonic {
        format!(
            "CLOCK_MONOTONIC ns (from {} clock pair(s) of the capture)",
            capture.syncs.len()
        )
    } else {
        "host TSC / frequency, in ns (the capture has no clock pairs)".to_string()
    };

    // Alignment.
    let mut kvm = KvmInputs::from_capture(&capture, opts.marker_port);
    let (guest_marker_count, guest_markers_matched) = attach_guest_markers(
        &mut kvm,
        guest_markers.as_ref(),
        opts.marker_port,
        &mut warnings,
    );
    let max_latency_tsc = (opts.max_marker_latency_ns * tsc_hz / 1e9) as u64;
    let guest_anchor = guest.as_ref().map(|(_, c)| c.tsc_base);
    let host_span = capture
        .events
        .iter()
        .map(|e| e.tsc)
        .min()
        .zip(capture.events.iter().map(|e| e.tsc).max());
    let alignment = choose_alignment(&AlignmentInput {
        offset_changes: &kvm.offset_changes,
        markers: &kvm.markers,
        guest_anchor,
        guest_span: guest_anchor.map(|a| (a, a)),
        host_span,
        max_latency_tsc,
    });
    let ns_per_tick = 1e9 / tsc_hz;
    let residuals = |pairs: &[MarkerPair]| -> Vec<f64> {
        pairs
            .iter()
            .map(|p| p.residual_tsc() as f64 * ns_per_tick)
            .collect()
    };
    let residuals_ns = residuals(&alignment.pairs);
    let candidates = alignment
        .candidates
        .iter()
        .map(|c| CandidateReport {
            kind: c.model.kind,
            explained: c.explained,
            markers: c.pairs.len(),
            residuals: ResidualStats::of(&residuals(&c.pairs)),
        })
        .collect();

    let alignment_reason = match &guest {
        Some(_) => alignment.reason.clone(),
        None => "no guest trace: nothing to align".to_string(),
    };
    let mut report = MergeReport {
        alignment: alignment.model.kind,
        alignment_reason,
        alignment_doubtful: alignment.doubtful,
        candidates,
        marker_port: opts.marker_port,
        markers: alignment.pairs.clone(),
        marker_phases: kvm.marker_phases.clone(),
        guest_markers: guest_marker_count,
        guest_markers_matched,
        residual_stats: ResidualStats::of(&residuals_ns),
        residuals_ns,
        recorded_offsets: ClockModel::kvm_offsets(&kvm.offset_changes)
            .per_vcpu
            .iter()
            .map(|(v, t)| (*v, t.segments().to_vec()))
            .collect(),
        applied_offsets: applied_offsets(&alignment.model),
        tsc_hz,
        tsc_hz_source: hz_source.to_string(),
        timeline_clock,
        guest_dir: opts.guest.clone(),
        guest_tracks: 0,
        guest_functions: 0,
        kvm_file: opts.kvm.clone(),
        kvm_events: capture.events.len() as u64,
        kvm_lost_events: capture.lost_events,
        host_traces: Vec::new(),
        profile: None,
        warnings,
        data_errors: Vec::new(),
    };
    if alignment.doubtful && guest.is_some() {
        report.warnings.push(alignment.reason.clone());
    }

    if let Some((dir, clock)) = &guest {
        let markers: Vec<(MarkerPair, Option<u32>)> = alignment
            .pairs
            .iter()
            .copied()
            .zip(kvm.marker_phases.iter().copied())
            .collect();
        emit_guest(
            dir,
            clock,
            &alignment.model,
            &markers,
            &host_clock,
            sink,
            &mut report,
        )?;
    }
    if opts.kvm.is_some() {
        emit_kvm(
            &capture,
            &kvm,
            &alignment.model,
            &alignment.pairs,
            &host_clock,
            sink,
        )?;
    }
    for dir in &hosts {
        emit_host(dir, &host_clock, sink, &mut report)?;
    }
    if let Some(path) = &opts.profile {
        report.profile = Some(profile_samples::emit_profile(
            path,
            &host_clock,
            sink,
            &mut report.data_errors,
        )?);
    }
    sink.finish()?;
    Ok(report)
}

/// The capture at `path`; leniently read, what was skipped becomes warnings.
fn read_kvm(path: &Path, lenient: bool, warnings: &mut Vec<String>) -> Result<Capture, MergeError> {
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

fn applied_offsets(model: &ClockModel) -> BTreeMap<u32, Vec<OffsetSegment>> {
    let mut out: BTreeMap<u32, Vec<OffsetSegment>> = model
        .per_vcpu
        .iter()
        .map(|(v, t)| (*v, t.segments().to_vec()))
        .collect();
    if out.is_empty() {
        out.insert(u32::MAX, model.fallback.segments().to_vec());
    }
    out
}

fn open_guest(path: &Path, warnings: &mut Vec<String>) -> Result<(TraceDir, ClockMap), MergeError> {
    let dir = TraceDir::open(path)?;
    let Some(clock) = dir.clock else {
        return Err(MergeError::Input {
            path: path.join(vftrace_format::clock::CLOCK_FILE),
            message: "missing: a guest trace needs its vftrace.clock (source=guest) to map its times back to the guest TSC"
                .into(),
        });
    };
    if clock.source != ClockSource::Guest {
        warnings.push(format!(
            "{}: vftrace.clock says source={}; treating its TSC as the guest's anyway",
            path.display(),
            clock.source
        ));
    }
    Ok((dir, clock))
}

/// The capture's events as alignment inputs.
struct KvmInputs {
    offset_changes: Vec<TscOffsetChange>,
    markers: Vec<Marker>,
    /// Index into `capture.events` of each marker's low-half pio.
    marker_events: Vec<usize>,
    /// The guest's phase of each marker, when `vftrace.markers` names it.
    marker_phases: Vec<Option<u32>>,
}

/// Completes the markers with the guest's own list (full TSCs, phases) and warns when the
/// two sides do not agree.
fn attach_guest_markers(
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
    fn from_capture(capture: &Capture, marker_port: u16) -> KvmInputs {
        let high_port = marker_port.wrapping_add(MARKER_HIGH_PORT_DELTA);
        let mut inputs = KvmInputs {
            offset_changes: Vec::new(),
            markers: Vec::new(),
            marker_events: Vec::new(),
            marker_phases: Vec::new(),
        };
        // Host thread -> its latest marker still waiting for a high half.
        let mut awaiting_high: HashMap<u32, usize> = HashMap::new();
        let mut order: Vec<usize> = (0..capture.events.len()).collect();
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

/// Guest threads become "guest vCPU N" tracks, N in tid order; markers appear on them at the
/// moment the model says the guest wrote them.
fn emit_guest(
    dir: &TraceDir,
    clock: &ClockMap,
    model: &ClockModel,
    markers: &[(MarkerPair, Option<u32>)],
    host_clock: &HostClock,
    sink: &mut dyn TimelineSink,
    report: &mut MergeReport,
) -> Result<(), MergeError> {
    let symbolizer = dir.symbolizer()?;
    let mut tids = dir.tids();
    tids.sort_unstable();
    tids.dedup();
    sink.process(GUEST_PID, "guest")?;
    for (vcpu, tid) in tids.iter().enumerate() {
        let vcpu = vcpu as u32;
        sink.thread(GUEST_PID, vcpu, &format!("guest vCPU {vcpu}"))?;
        let mut markers: Vec<(u64, &MarkerPair, Option<u32>)> = markers
            .iter()
            .filter(|(p, _)| p.vcpu == vcpu)
            .map(|(p, phase)| (host_clock.tsc_to_ns(p.guest_host_tsc), p, *phase))
            .collect();
        markers.sort_by_key(|(ts, _, _)| *ts);
        let mut markers = markers.into_iter().peekable();
        let mut emit_markers_until = |sink: &mut dyn TimelineSink, ts: u64| -> io::Result<()> {
            while let Some((mts, p, phase)) = markers.next_if(|(mts, _, _)| *mts <= ts) {
                let mut args = vec![
                    ("guest_tsc", ArgValue::U64(p.guest_tsc)),
                    ("pio_host_tsc", ArgValue::U64(p.pio_host_tsc)),
                    (
                        "latency_ns",
                        ArgValue::I64((p.residual_tsc() as f64 * host_clock.ns_per_tick()) as i64),
                    ),
                ];
                if let Some(phase) = phase {
                    args.push(("phase", ArgValue::U64(phase.into())));
                }
                sink.instant(GUEST_PID, vcpu, mts, "marker (guest write)", &args)?;
            }
            Ok(())
        };
        let mut timeline = ThreadTimeline::new(GUEST_PID, vcpu, 0);
        let timeline_tsc = model.timeline(vcpu);
        let map = |ns: u64| host_clock.tsc_to_ns(timeline_tsc.guest_to_host(clock.ns_to_tsc(ns)));
        let result = stream_records(
            dir,
            *tid,
            &symbolizer,
            &mut timeline,
            sink,
            map,
            &mut emit_markers_until,
        );
        emit_markers_until(sink, u64::MAX)?;
        timeline.finish(sink)?;
        if let Err(e) = result? {
            report.data_errors.push(e.to_string());
        }
        report.guest_functions += timeline.slices;
        note_repairs(&mut report.warnings, &dir.path, *tid, &timeline);
    }
    report.guest_tracks = tids.len();
    Ok(())
}

/// Feeds one tid's records, times mapped by `map`, into `timeline`. The outer error is the
/// sink's; the inner one a record file that could not be read to its end.
fn stream_records(
    dir: &TraceDir,
    tid: u32,
    symbolizer: &Symbolizer,
    timeline: &mut ThreadTimeline,
    sink: &mut dyn TimelineSink,
    map: impl Fn(u64) -> u64,
    before_each: &mut dyn FnMut(&mut dyn TimelineSink, u64) -> io::Result<()>,
) -> io::Result<Result<(), FormatError>> {
    let mut reader = match dir.records(tid) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let mut batch: Vec<Record> = Vec::new();
    loop {
        batch.clear();
        let read = reader.read_batch(&mut batch);
        for r in &batch {
            let mut mapped = *r;
            mapped.time = map(r.time);
            before_each(sink, mapped.time)?;
            let name: Cow<str> = if r.kind == RecordType::Entry {
                symbolizer.name_or_hex(r.addr)
            } else {
                Cow::Borrowed("")
            };
            timeline.record(sink, &mapped, |_| &name)?;
        }
        match read {
            Ok(0) => return Ok(Ok(())),
            Ok(_) => {}
            Err(e) => return Ok(Err(e)),
        }
    }
}

fn note_repairs(warnings: &mut Vec<String>, dir: &Path, tid: u32, timeline: &ThreadTimeline) {
    let r = timeline.repairs();
    if r.lost_records > 0 || r.time_inversions > 0 {
        warnings.push(format!(
            "{} tid {tid}: {} records lost, {} timestamps out of order (clamped)",
            dir.display(),
            r.lost_records,
            r.time_inversions
        ));
    }
}

/// KVM events: a track per host thread; markers carry what the alignment made of them.
fn emit_kvm(
    capture: &Capture,
    kvm: &KvmInputs,
    model: &ClockModel,
    pairs: &[MarkerPair],
    host_clock: &HostClock,
    sink: &mut dyn TimelineSink,
) -> Result<(), MergeError> {
    sink.process(KVM_PID, "KVM")?;
    let marker_of: HashMap<usize, (&MarkerPair, Option<u32>)> = kvm
        .marker_events
        .iter()
        .copied()
        .zip(pairs.iter().zip(kvm.marker_phases.iter().copied()))
        .collect();
    let mut by_thread: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, e) in capture.events.iter().enumerate() {
        by_thread.entry(e.pid).or_default().push(i);
    }
    for (pid, mut events) in by_thread {
        events.sort_by_key(|&i| capture.events[i].tsc);
        let comm = &capture.events[events[0]].comm;
        let name = match model.thread_vcpu.get(&pid) {
            Some(vcpu) => format!("{comm} {pid} (vCPU {vcpu})"),
            None => format!("{comm} {pid}"),
        };
        sink.thread(KVM_PID, pid, &name)?;
        for i in events {
            let e = &capture.events[i];
            emit_kvm_event(
                sink,
                pid,
                host_clock.tsc_to_ns(e.tsc),
                e,
                marker_of.get(&i).copied(),
                host_clock,
            )?;
        }
    }
    Ok(())
}

fn emit_kvm_event(
    sink: &mut dyn TimelineSink,
    tid: u32,
    ts: u64,
    e: &KvmEvent,
    marker: Option<(&MarkerPair, Option<u32>)>,
    host_clock: &HostClock,
) -> io::Result<()> {
    let cpu = ("host_cpu", ArgValue::U64(e.cpu.into()));
    match &e.kind {
        KvmEventKind::WriteTscOffset { vcpu, prev, next } => {
            let args = [
                ("vcpu", ArgValue::U64((*vcpu).into())),
                ("prev", ArgValue::I64(*prev as i64)),
                ("next", ArgValue::I64(*next as i64)),
                cpu,
            ];
            sink.instant(KVM_PID, tid, ts, &format!("tsc offset vCPU {vcpu}"), &args)
        }
        KvmEventKind::Pio {
            write,
            port,
            size,
            count,
            val,
        } => {
            let mut args = vec![
                ("port", ArgValue::U64((*port).into())),
                ("size", ArgValue::U64((*size).into())),
                ("count", ArgValue::U64((*count).into())),
            ];
            if let Some(v) = val {
                args.push(("val", ArgValue::U64(*v)));
            }
            args.push(cpu);
            let name = match marker {
                Some((p, phase)) => {
                    if let Some(phase) = phase {
                        args.push(("phase", ArgValue::U64(phase.into())));
                    }
                    args.push(("guest_tsc", ArgValue::U64(p.guest_tsc)));
                    args.push(("guest_write_host_tsc", ArgValue::U64(p.guest_host_tsc)));
                    args.push((
                        "latency_ns",
                        ArgValue::I64((p.residual_tsc() as f64 * host_clock.ns_per_tick()) as i64),
                    ));
                    "marker".to_string()
                }
                None => format!("pio {} {port:#x}", if *write { "write" } else { "read" }),
            };
            sink.instant(KVM_PID, tid, ts, &name, &args)
        }
        KvmEventKind::Mmio {
            write,
            len,
            gpa,
            val,
        } => {
            let mut args = vec![
                ("gpa", ArgValue::U64(*gpa)),
                ("len", ArgValue::U64((*len).into())),
            ];
            if let Some(v) = val {
                args.push(("val", ArgValue::U64(*v)));
            }
            args.push(cpu);
            sink.instant(
                KVM_PID,
                tid,
                ts,
                &format!("mmio {} {gpa:#x}", if *write { "write" } else { "read" }),
                &args,
            )
        }
        KvmEventKind::Exit { reason, rip, vcpu } => {
            let mut args = vec![cpu];
            if let Some(r) = rip {
                args.push(("rip", ArgValue::U64(*r)));
            }
            if let Some(v) = vcpu {
                args.push(("vcpu", ArgValue::U64((*v).into())));
            }
            sink.instant(KVM_PID, tid, ts, &format!("exit {reason}"), &args)
        }
        KvmEventKind::Entry { vcpu, rip } => {
            let mut args = vec![cpu];
            if let Some(r) = rip {
                args.push(("rip", ArgValue::U64(*r)));
            }
            if let Some(v) = vcpu {
                args.push(("vcpu", ArgValue::U64((*v).into())));
            }
            sink.instant(KVM_PID, tid, ts, "entry", &args)
        }
        KvmEventKind::Hypercall { nr } => sink.instant(
            KVM_PID,
            tid,
            ts,
            &format!("hypercall {nr}"),
            &[("nr", ArgValue::U64(*nr)), cpu],
        ),
        KvmEventKind::Other { name, fields } => sink.instant(
            KVM_PID,
            tid,
            ts,
            name,
            &[("fields", ArgValue::Str(fields)), cpu],
        ),
    }
}

/// A host program trace: its times go to host TSC through its own `vftrace.clock`, or are
/// CLOCK_MONOTONIC already (plain uftrace), which the timeline uses when the capture has
/// clock pairs.
fn emit_host(
    dir: &TraceDir,
    host_clock: &HostClock,
    sink: &mut dyn TimelineSink,
    report: &mut MergeReport,
) -> Result<(), MergeError> {
    let clock_desc;
    let vclock = match dir.clock {
        Some(c) if c.source == ClockSource::Guest => {
            return Err(MergeError::Input {
                path: dir.path.clone(),
                message: "its vftrace.clock says source=guest: pass it with --guest".into(),
            })
        }
        Some(c) => {
            clock_desc = "vftrace.clock -> host TSC".to_string();
            Some(c)
        }
        None if host_clock.monotonic => {
            clock_desc = "CLOCK_MONOTONIC, placed with the capture's clock pairs".to_string();
            None
        }
        None => {
            return Err(MergeError::Input {
                path: dir.path.clone(),
                message: "no vftrace.clock (a uftrace trace on CLOCK_MONOTONIC), and no capture clock pairs to place it with; \
                          record the KVM events with `vftrace kvm`, which stores them"
                    .into(),
            })
        }
    };
    let map = |ns: u64| match &vclock {
        Some(c) => host_clock.tsc_to_ns(c.ns_to_tsc(ns)),
        None => ns,
    };
    let comm_of = |exename: &str| exename.rsplit('/').next().unwrap_or(exename).to_string();
    let mut processes = Vec::new();
    let mut symbolizers: HashMap<u32, Symbolizer> = HashMap::new();
    let mut comms: HashMap<u32, String> = HashMap::new();
    for sess in &dir.sessions {
        if comms.contains_key(&sess.pid) {
            continue;
        }
        let comm = comm_of(&sess.exename);
        let name = format!("host: {comm} {}", sess.pid);
        sink.process(sess.pid, &name)?;
        processes.push(name);
        comms.insert(sess.pid, comm);
        symbolizers.insert(sess.pid, dir.session_symbolizer(&sess.sid)?);
    }
    let fallback = dir.symbolizer()?;
    let mut functions = 0;
    for tid in dir.tids() {
        let pid = dir.tasks.iter().find_map(|l| match l {
            TaskLine::Task { tid: t, pid, .. } if *t == tid => Some(*pid),
            _ => None,
        });
        let pid = pid.unwrap_or(tid);
        if let Entry::Vacant(slot) = comms.entry(pid) {
            let comm = comm_of(&dir.info.exename);
            let name = format!("host: {comm} {pid}");
            sink.process(pid, &name)?;
            processes.push(name);
            slot.insert(comm);
        }
        sink.thread(pid, tid, &format!("{} {tid}", comms[&pid]))?;
        let symbolizer = symbolizers.get(&pid).unwrap_or(&fallback);
        let mut timeline = ThreadTimeline::new(pid, tid, 0);
        let result = stream_records(
            dir,
            tid,
            symbolizer,
            &mut timeline,
            sink,
            map,
            &mut |_, _| Ok(()),
        );
        timeline.finish(sink)?;
        if let Err(e) = result? {
            report.data_errors.push(e.to_string());
        }
        functions += timeline.slices;
        note_repairs(&mut report.warnings, &dir.path, tid, &timeline);
    }
    report.host_traces.push(HostTraceReport {
        dir: dir.path.clone(),
        processes,
        functions,
        clock: clock_desc,
    });
    Ok(())
}
