//! What a merge did: the summary printed for the user and what tests check.
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::align::{AlignmentKind, MarkerPair, OffsetSegment};
use crate::profile_samples::ProfileTracks;

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

pub(crate) fn fmt_ns(ns: f64) -> String {
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
    /// Markers explained (see `align::CandidateFit::explained`).
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

/// How long a guest's vCPUs were not running guest code while it was traced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostTime {
    /// Whether the capture shows it at all (scheduler events or VM exits of the vCPU threads).
    pub known: bool,
    /// Not running, within the guest's traced run, in ns.
    pub not_running_ns: u64,
    /// Of which, by reason ("preempted", "in the VMM (KVM_EXIT_IO (2))"...).
    pub by_reason: BTreeMap<String, u64>,
    /// Periods of not running inside the run.
    pub periods: u64,
    /// The guest's run (first to last guest event), summed over its vCPUs, in ns.
    pub run_ns: u64,
}

/// A guest function's own time (not its callees'), and how much of it its vCPU was not
/// running guest code.
#[derive(Clone, Debug, PartialEq)]
pub struct InflatedFunction {
    pub name: String,
    pub calls: u64,
    pub self_ns: u64,
    pub not_running_ns: u64,
}

/// One guest trace in the output.
#[derive(Clone, Debug)]
pub struct GuestReport {
    pub dir: PathBuf,
    /// Its image's name (the process name on the timeline).
    pub name: String,
    /// Its process id on the timeline: its VMM's when the capture tells which.
    pub pid: u32,
    pub vmm_pid: Option<u32>,
    /// Host thread of each vCPU track, when known.
    pub vcpu_threads: Vec<Option<u32>>,
    pub alignment: AlignmentKind,
    /// Why this alignment.
    pub alignment_reason: String,
    /// No model explained all markers: the alignment is a best guess.
    pub alignment_doubtful: bool,
    pub candidates: Vec<CandidateReport>,
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
    /// Widths of the guest's windows (TSC before to TSC after the write), in ns.
    pub window_stats: Option<ResidualStats>,
    /// Markers with a window, and those whose host stamp falls outside it.
    pub windows: usize,
    pub window_violations: usize,
    /// The offsets `kvm_write_tsc_offset` recorded, per vCPU (as signed values).
    pub recorded_offsets: BTreeMap<u32, Vec<OffsetSegment>>,
    /// The offsets the chosen model applies, per vCPU (key `u32::MAX`: all other vCPUs).
    pub applied_offsets: BTreeMap<u32, Vec<OffsetSegment>>,
    pub tracks: usize,
    pub functions: u64,
    /// First and last guest event on the timeline (ns).
    pub run: Option<(u64, u64)>,
    pub host_time: HostTime,
    /// The functions whose own time holds the most host time, most first.
    pub inflated: Vec<InflatedFunction>,
    pub probes: u64,
}

/// What a merge did.
#[derive(Clone, Debug)]
pub struct MergeReport {
    pub guests: Vec<GuestReport>,
    pub marker_port: u16,
    pub tsc_hz: f64,
    pub tsc_hz_source: String,
    /// "CLOCK_MONOTONIC ..." or "host TSC / frequency".
    pub timeline_clock: String,
    pub kvm_file: Option<PathBuf>,
    pub kvm_events: u64,
    pub kvm_lost_events: u64,
    /// Threads of the VMMs in the capture, and scheduler events of theirs.
    pub vmm_threads: usize,
    pub sched_events: u64,
    /// Probes seen, over all guests.
    pub probes: u64,
    pub host_traces: Vec<HostTraceReport>,
    pub profile: Option<ProfileTracks>,
    /// Things the user should know (frequency from this machine, repaired records...).
    pub warnings: Vec<String>,
    /// Input data that could not be read completely (what came before was kept). A command
    /// should print these and fail.
    pub data_errors: Vec<String>,
}

/// Functions listed as inflated by the host.
pub const INFLATED_SHOWN: usize = 5;

impl fmt::Display for MergeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
            writeln!(
                f,
                "; {} VMM thread(s), {} scheduler events",
                self.vmm_threads, self.sched_events
            )?;
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
        for g in &self.guests {
            g.fmt_with_port(f, self.marker_port)?;
        }
        if self.guests.len() > 1 && self.probes > 0 {
            writeln!(
                f,
                "probes:    {} from {} guests, on one host-time order",
                self.probes,
                self.guests.len()
            )?;
        }
        for w in &self.warnings {
            writeln!(f, "warning:   {w}")?;
        }
        for e in &self.data_errors {
            writeln!(f, "error:     {e}")?;
        }
        Ok(())
    }
}

impl GuestReport {
    fn fmt_with_port(&self, f: &mut fmt::Formatter<'_>, port: u16) -> fmt::Result {
        let vmm = match self.vmm_pid {
            Some(p) => format!("in VMM process {p}"),
            None => "VMM process unknown".to_string(),
        };
        writeln!(
            f,
            "guest:     {}: \"{}\", {} functions on {} vCPU track(s), {vmm}",
            self.dir.display(),
            self.name,
            self.functions,
            self.tracks
        )?;
        if let Some((first, last)) = self.run {
            writeln!(
                f,
                "           its run: {} from {:.6} s to {:.6} s on the timeline (the \"guest run\" slice; in Perfetto select it and press F)",
                fmt_ns((last - first) as f64),
                first as f64 / 1e9,
                last as f64 / 1e9
            )?;
        }
        writeln!(f, "alignment: {}", self.alignment)?;
        writeln!(f, "           {}", self.alignment_reason)?;
        match &self.residual_stats {
            Some(s) => writeln!(
                f,
                "markers:   {} on port {port:#x}; guest write -> host pio: {s}",
                self.markers.len()
            )?,
            None => writeln!(f, "markers:   none on port {port:#x}")?,
        }
        if self.guest_markers > 0 {
            writeln!(
                f,
                "           the guest listed {} marker(s) with full TSCs; {} paired with a kvm_pio",
                self.guest_markers, self.guest_markers_matched
            )?;
        }
        if let Some(w) = &self.window_stats {
            writeln!(
                f,
                "windows:   guest TSC before -> after each write: {w}; host stamp outside the window: {} of {}",
                self.window_violations, self.windows
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
        let h = &self.host_time;
        if h.known {
            let share = if h.run_ns > 0 {
                100.0 * h.not_running_ns as f64 / h.run_ns as f64
            } else {
                0.0
            };
            let reasons: Vec<String> = h
                .by_reason
                .iter()
                .map(|(r, ns)| format!("{r} {}", fmt_ns(*ns as f64)))
                .collect();
            writeln!(
                f,
                "host time: the vCPUs were not running guest code for {} of the run's {} ({share:.1}%, {} periods){}{}",
                fmt_ns(h.not_running_ns as f64),
                fmt_ns(h.run_ns as f64),
                h.periods,
                if reasons.is_empty() { "" } else { ": " },
                reasons.join(", ")
            )?;
            for i in self.inflated.iter().take(INFLATED_SHOWN) {
                writeln!(
                    f,
                    "inflated:  {}: {} of its {} own time was host time ({:.1}%, {} calls)",
                    i.name,
                    fmt_ns(i.not_running_ns as f64),
                    fmt_ns(i.self_ns as f64),
                    100.0 * i.not_running_ns as f64 / i.self_ns.max(1) as f64,
                    i.calls
                )?;
            }
        } else if !self.vcpu_threads.is_empty() {
            writeln!(
                f,
                "host time: unknown (the capture has no scheduler events or VM exits of the vCPU threads; record with `vftrace kvm -- CMD`)"
            )?;
        }
        if self.probes > 0 {
            writeln!(f, "probes:    {} at host time", self.probes)?;
        }
        Ok(())
    }
}

/// The residuals of `pairs` in ns.
pub(crate) fn residuals_ns(pairs: &[MarkerPair], ns_per_tick: f64) -> Vec<f64> {
    pairs
        .iter()
        .map(|p| p.residual_tsc() as f64 * ns_per_tick)
        .collect()
}
