//! Guest/host clock alignment (KVM TSC offsets, marker events) and the merged timeline.
//!
//! [`merge`] puts on one timeline, through a [`TimelineSink`]:
//! - guest traces (uftrace directories whose `vftrace.clock`, `source=guest`, maps their
//!   nanoseconds back to the guest TSC), each a process named after its image with its VMM's
//!   pid, one track "vCPU N" per guest thread on the host thread that ran it
//!   ([`guest_tracks`]): the guest's functions, the host's events of that thread, the times
//!   it did not run guest code ([`vcpu_time`]), markers with flows to their `kvm_pio`, probes;
//! - the other threads of the VMMs in a KVM capture (`vftrace kvm`, trace-cmd report or
//!   tracefs text), in their processes ([`vmm`]);
//! - host program traces ([`host_traces`]): vftrace traces (`vftrace.clock`, `source=host`)
//!   or plain uftrace traces on CLOCK_MONOTONIC (placed with the capture's clock pairs);
//! - stack samples from `vftrace profile` ([`profile_samples`]): a track per sampled vCPU.
//!
//! Each guest's TSC is mapped to the host TSC by the model [`align::choose_alignment`] picks
//! from its own VMM's events ([`guests`]): KVM's offsets, identity as under PVM, or an offset
//! estimated from markers; see [`align`] for the marker protocol. Host TSC becomes
//! nanoseconds on the CLOCK_MONOTONIC scale when the capture has clock pairs, else TSC /
//! frequency ([`clocks`]). [`report`] is what the merge tells.
use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::PathBuf;

use vftrace_convert::TimelineSink;
use vftrace_format::dir::TraceDir;
use vftrace_format::error::FormatError;
use vftrace_kvm::{Capture, CaptureError};

pub mod align;
pub mod clocks;
pub mod guest_markers;
mod guest_tracks;
mod guests;
mod host_traces;
mod inputs;
mod items;
pub mod profile_samples;
pub mod report;
pub mod vcpu_time;
mod vmm;

pub use align::{
    AlignmentKind, Marker, MarkerPair, TscOffsetChange, DEFAULT_MARKER_PORT, MARKER_HIGH_PORT_DELTA,
};
use align::{ClockModel, OffsetSegment};
use clocks::{detect_tsc_hz, HostClock, TscHzHints, TscHzSource};
pub use guest_tracks::{GUEST_RUN, UNKNOWN_THREAD_TID};
pub use report::{
    CandidateReport, GuestReport, HostTime, HostTraceReport, InflatedFunction, MergeReport,
    ResidualStats,
};

/// Process id of a guest whose VMM the capture does not name: this plus its index (above
/// Linux's largest pid, 2^22).
pub const UNKNOWN_VMM_GUEST_PID: u32 = 0x4000_0010;
/// Process id of the host threads whose process the capture does not name.
pub const KVM_PID: u32 = 0x4000_0100;
/// Default largest believable delay from a guest's marker write to its `kvm_pio` (1 ms; it is
/// 3-5 us normally, up to 30 us for the first exit after a long native run).
pub const DEFAULT_MAX_MARKER_LATENCY_NS: f64 = 1e6;

/// What to merge.
#[derive(Clone, Debug)]
pub struct MergeOptions {
    /// Guest uftrace directories with `vftrace.clock` (source=guest): several guests of one
    /// capture each become a process of their own.
    pub guests: Vec<PathBuf>,
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
            guests: Vec::new(),
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

/// Merges what `opts` names into `sink` and calls `sink.finish()`.
///
/// Unreadable inputs (missing files, corrupt capture, no `vftrace.clock` in a guest trace)
/// are errors before anything is written. A record file that turns out corrupt part-way is
/// kept up to the bad record and reported in [`MergeReport::data_errors`].
pub fn merge(opts: &MergeOptions, sink: &mut dyn TimelineSink) -> Result<MergeReport, MergeError> {
    if opts.guests.is_empty()
        && opts.kvm.is_none()
        && opts.hosts.is_empty()
        && opts.profile.is_none()
    {
        return Err(MergeError::NoInput);
    }
    let mut warnings = Vec::new();
    let capture = match &opts.kvm {
        Some(path) => inputs::read_kvm(path, opts.lenient, &mut warnings)?,
        None => Capture::default(),
    };
    let guests = opts
        .guests
        .iter()
        .map(|p| guests::open_guest(p, &mut warnings))
        .collect::<Result<Vec<_>, _>>()?;
    let hosts = opts
        .hosts
        .iter()
        .map(|p| TraceDir::open(p).map_err(MergeError::from))
        .collect::<Result<Vec<_>, _>>()?;

    let hints = TscHzHints {
        given: opts.tsc_hz,
        capture: capture.tsc_hz,
        syncs: &capture.syncs,
        guest_clock: guests.first().map(|g| g.clock.tsc_hz),
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
    let vmm = vmm::Vmm::of(&capture);
    let ns_per_tick = 1e9 / tsc_hz;
    let plan_ctx = guests::PlanContext {
        capture: &capture,
        vmm: &vmm,
        marker_port: opts.marker_port,
        max_latency_tsc: (opts.max_marker_latency_ns * tsc_hz / 1e9) as u64,
        guests: guests.len(),
    };
    let plans: Vec<guests::GuestPlan> = guests
        .iter()
        .map(|g| guests::plan_guest(g, &plan_ctx, &mut warnings))
        .collect();
    let mut report = MergeReport {
        guests: Vec::new(),
        marker_port: opts.marker_port,
        tsc_hz,
        tsc_hz_source: hz_source.to_string(),
        timeline_clock,
        kvm_file: opts.kvm.clone(),
        kvm_events: capture.events.len() as u64,
        kvm_lost_events: capture.lost_events,
        vmm_threads: vmm.threads.len(),
        sched_events: vmm.sched_events,
        probes: 0,
        host_traces: Vec::new(),
        profile: None,
        warnings,
        data_errors: Vec::new(),
    };

    // The guests, each in its VMM's process.
    let mut named: HashSet<u32> = HashSet::new();
    let mut guest_threads: HashSet<u32> = HashSet::new();
    for (index, (g, plan)) in guests.iter().zip(&plans).enumerate() {
        let pid = match plan.vmm_pid {
            Some(p) if !named.contains(&p) => p,
            _ => UNKNOWN_VMM_GUEST_PID + index as u32,
        };
        named.insert(pid);
        sink.process(pid, &g.name)?;
        guest_threads.extend(plan.vcpu_threads.iter().flatten());
        let mut guest = guest_report(g, plan, pid, ns_per_tick);
        if plan.alignment.doubtful {
            report.warnings.push(plan.alignment.reason.clone());
        }
        let ctx = guest_tracks::GuestContext {
            vmm: &vmm,
            host_clock: &host_clock,
            first_flow: flow_base(index),
        };
        guest_tracks::emit_guest(
            g,
            plan,
            pid,
            &ctx,
            sink,
            &mut guest,
            &mut report.warnings,
            &mut report.data_errors,
        )?;
        report.probes += guest.probes;
        report.guests.push(guest);
    }

    // The VMMs' other threads, in their processes.
    for &tid in vmm.threads.keys() {
        if guest_threads.contains(&tid) {
            continue;
        }
        let pid = vmm.tgid(tid).unwrap_or(KVM_PID);
        if named.insert(pid) {
            let name = if pid == KVM_PID {
                "KVM (host threads of unknown processes)".to_string()
            } else if vmm.threads.contains_key(&pid) {
                vmm.comm(pid)
            } else {
                vmm.comm(tid)
            };
            sink.process(pid, &name)?;
        }
        sink.thread(pid, tid, &vmm.comm(tid))?;
        // Its guest's markers and probe names, if it belongs to one.
        let owner = plans
            .iter()
            .position(|p| p.threads.as_ref().is_some_and(|t| t.contains(&tid)))
            .or((plans.len() == 1 && plans[0].threads.is_none()).then_some(0));
        let markers = owner
            .map(|i| guest_tracks::marker_flows(&plans[i], flow_base(i)))
            .unwrap_or_default();
        let no_names = Default::default();
        let ctx = vmm::ItemContext {
            host_clock: &host_clock,
            markers: &markers,
            probe_names: owner.map_or(&no_names, |i| &guests[i].probe_names),
        };
        let (spans, instants, probes) = vmm::thread_items(&vmm, tid, &ctx);
        if let Some(i) = owner {
            report.guests[i].probes += probes;
        }
        report.probes += probes;
        items::Cursor::new(pid, tid, spans, instants).advance(sink, u64::MAX, &mut |_| {})?;
    }

    for dir in &hosts {
        host_traces::emit_host(dir, &host_clock, sink, &mut report)?;
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

/// Flow ids of guest `index`'s markers start here.
fn flow_base(index: usize) -> u64 {
    (index as u64 + 1) << 32
}

/// The report of a guest before its tracks are written.
fn guest_report(
    g: &guests::GuestInput,
    plan: &guests::GuestPlan,
    pid: u32,
    ns_per_tick: f64,
) -> GuestReport {
    let a = &plan.alignment;
    let residuals_ns = report::residuals_ns(&a.pairs, ns_per_tick);
    let windows: Vec<f64> = a
        .pairs
        .iter()
        .filter_map(|p| p.window_tsc())
        .map(|w| w as f64 * ns_per_tick)
        .collect();
    GuestReport {
        dir: g.path.clone(),
        name: g.name.clone(),
        pid,
        vmm_pid: plan.vmm_pid,
        vcpu_threads: plan.vcpu_threads.clone(),
        alignment: a.model.kind,
        alignment_reason: a.reason.clone(),
        alignment_doubtful: a.doubtful,
        candidates: a
            .candidates
            .iter()
            .map(|c| CandidateReport {
                kind: c.model.kind,
                explained: c.explained,
                markers: c.pairs.len(),
                residuals: ResidualStats::of(&report::residuals_ns(&c.pairs, ns_per_tick)),
            })
            .collect(),
        markers: a.pairs.clone(),
        marker_phases: plan.kvm.marker_phases.clone(),
        guest_markers: plan.listed_markers.0,
        guest_markers_matched: plan.listed_markers.1,
        residual_stats: ResidualStats::of(&residuals_ns),
        residuals_ns,
        window_stats: ResidualStats::of(&windows),
        windows: windows.len(),
        window_violations: a
            .pairs
            .iter()
            .filter(|p| p.in_window() == Some(false))
            .count(),
        recorded_offsets: ClockModel::kvm_offsets(&plan.kvm.offset_changes)
            .per_vcpu
            .iter()
            .map(|(v, t)| (*v, t.segments().to_vec()))
            .collect(),
        applied_offsets: applied_offsets(&a.model),
        tracks: 0,
        functions: 0,
        run: None,
        host_time: HostTime::default(),
        inflated: Vec::new(),
        probes: 0,
    }
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
