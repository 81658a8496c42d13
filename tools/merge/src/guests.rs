//! Each guest trace of a merge: opened with what lies beside it (its clock, its marker list,
//! its probe names), matched to its VMM in the capture (the threads whose `kvm_pio` carried
//! its markers, and their process), and aligned with that VMM's events only, so that several
//! guests of one capture each get their own clock model.
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use vftrace_format::clock::{ClockMap, ClockSource};
use vftrace_format::dir::TraceDir;
use vftrace_format::markers::{read_guest_markers, GuestMarkers};
use vftrace_format::probes::{read_probe_names, ProbeNames};
use vftrace_kvm::{Capture, KvmEventKind};

use crate::align::{choose_alignment, Alignment, AlignmentInput};
use crate::inputs::{attach_guest_markers, KvmInputs};
use crate::vmm::Vmm;
use crate::MergeError;

/// A guest trace and what lies beside it.
pub(crate) struct GuestInput {
    pub path: PathBuf,
    pub dir: TraceDir,
    pub clock: ClockMap,
    pub markers: Option<GuestMarkers>,
    pub probe_names: ProbeNames,
    /// The image's name (from `info`'s exename), for the process name.
    pub name: String,
}

pub(crate) fn open_guest(
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<GuestInput, MergeError> {
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
    let exename = &dir.info.exename;
    let name = exename.rsplit('/').next().unwrap_or(exename);
    let name = if name.is_empty() { "guest" } else { name }.to_string();
    Ok(GuestInput {
        path: path.to_path_buf(),
        markers: read_guest_markers(path)?,
        probe_names: read_probe_names(path)?,
        clock,
        dir,
        name,
    })
}

/// How a guest is placed.
pub(crate) struct GuestPlan {
    pub alignment: Alignment,
    pub kvm: KvmInputs,
    /// (markers the guest listed, how many the capture saw).
    pub listed_markers: (usize, usize),
    /// Its VMM's process, when the capture tells.
    pub vmm_pid: Option<u32>,
    /// The host threads of its VMM (None: the whole capture, as no marker tells).
    pub threads: Option<HashSet<u32>>,
    /// The host thread of each of its vCPU tracks (in tid order), when known.
    pub vcpu_threads: Vec<Option<u32>>,
}

pub(crate) struct PlanContext<'a> {
    pub capture: &'a Capture,
    pub vmm: &'a Vmm<'a>,
    pub marker_port: u16,
    pub max_latency_tsc: u64,
    pub guests: usize,
}

pub(crate) fn plan_guest(
    g: &GuestInput,
    ctx: &PlanContext,
    warnings: &mut Vec<String>,
) -> GuestPlan {
    let values: Option<HashSet<u64>> = g
        .markers
        .as_ref()
        .map(|m| m.markers.iter().map(|m| u64::from(m.value)).collect());
    if values.is_none() && ctx.guests > 1 {
        warnings.push(format!(
            "{}: no vftrace.markers, so its VMM cannot be told from the others'; all markers are used for it",
            g.path.display()
        ));
    }
    // The threads whose marker writes carry this guest's values.
    let marker_threads: HashSet<u32> = ctx
        .capture
        .events
        .iter()
        .filter(|e| match (&e.kind, &values) {
            (
                KvmEventKind::Pio {
                    write: true,
                    port,
                    val: Some(v),
                    ..
                },
                Some(values),
            ) => *port == ctx.marker_port && values.contains(v),
            _ => false,
        })
        .map(|e| e.pid)
        .collect();
    let mut pids: HashSet<u32> = marker_threads
        .iter()
        .filter_map(|t| ctx.vmm.tgid(*t))
        .collect();
    // No marker tells, but the capture holds one VMM: it is this guest's.
    let mut only_vcpu_thread = None;
    if marker_threads.is_empty() && ctx.guests == 1 {
        let vmms: HashSet<u32> = ctx
            .vmm
            .vcpu_threads
            .iter()
            .filter_map(|t| ctx.vmm.tgid(*t))
            .collect();
        if vmms.len() == 1 {
            pids = vmms;
            let mut vcpus = ctx.vmm.vcpu_threads.iter();
            if let (Some(t), None) = (vcpus.next(), vcpus.next()) {
                only_vcpu_thread = Some(*t);
            }
        }
    }
    let threads = (!marker_threads.is_empty()).then(|| {
        let mut t = marker_threads.clone();
        for pid in &pids {
            t.extend(ctx.vmm.threads_of(*pid));
        }
        t
    });
    if threads.is_none() && ctx.guests > 1 && values.is_some() && !ctx.capture.events.is_empty() {
        warnings.push(format!(
            "{}: none of its markers is in the capture; all of the capture's markers are used for it",
            g.path.display()
        ));
    }
    let mut kvm = KvmInputs::from_capture(ctx.capture, ctx.marker_port, threads.as_ref());
    let listed_markers =
        attach_guest_markers(&mut kvm, g.markers.as_ref(), ctx.marker_port, warnings);
    let alignment = choose_alignment(&AlignmentInput {
        offset_changes: &kvm.offset_changes,
        markers: &kvm.markers,
        guest_anchor: Some(g.clock.tsc_base),
        guest_span: Some((g.clock.tsc_base, g.clock.tsc_base)),
        host_span: ctx
            .capture
            .events
            .iter()
            .map(|e| e.tsc)
            .min()
            .zip(ctx.capture.events.iter().map(|e| e.tsc).max()),
        max_latency_tsc: ctx.max_latency_tsc,
    });
    let mut tids = g.dir.tids();
    tids.sort_unstable();
    tids.dedup();
    let vcpu_threads = (0..tids.len() as u32)
        .map(|vcpu| {
            let in_vmm = |t: &u32| threads.as_ref().is_none_or(|set| set.contains(t));
            // The thread that wrote this vCPU's TSC offset, else the one that wrote its
            // markers, else the only vCPU thread that wrote markers.
            let by_offset = alignment
                .model
                .thread_vcpu
                .iter()
                .find(|(t, v)| **v == vcpu && in_vmm(t))
                .map(|(t, _)| *t);
            let mut writers: BTreeMap<u32, usize> = BTreeMap::new();
            for p in alignment.pairs.iter().filter(|p| p.vcpu == vcpu) {
                *writers.entry(p.host_thread).or_default() += 1;
            }
            let by_markers = writers.iter().max_by_key(|(_, n)| **n).map(|(t, _)| *t);
            by_offset.or(by_markers).or_else(|| {
                let mut writers = marker_threads.iter();
                match (tids.len(), writers.next(), writers.next()) {
                    (1, Some(t), None) => Some(*t),
                    (1, None, _) => only_vcpu_thread,
                    _ => None,
                }
            })
        })
        .collect();
    GuestPlan {
        alignment,
        kvm,
        listed_markers,
        vmm_pid: (pids.len() == 1).then(|| *pids.iter().next().unwrap()),
        threads,
        vcpu_threads,
    }
}
