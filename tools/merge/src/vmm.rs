//! The VMMs in a capture: their threads (vCPU threads and others), the processes they belong
//! to, and each thread's events as items of its track: host events as instants, the times a
//! vCPU did not run guest code (and the times another VMM thread ran) as spans.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use vftrace_format::probes::{self, ProbeNames, PROBE_PORT};
use vftrace_kvm::{Capture, KvmEvent, KvmEventKind};

use crate::align::MarkerPair;
use crate::clocks::HostClock;
use crate::items::{Arg, Args, Instant, Part, Span};
use crate::vcpu_time::{concerns, not_running_periods, running_spans, CaptureHas, Period};

/// The VMM threads of a capture and their events.
pub(crate) struct Vmm<'c> {
    pub capture: &'c Capture,
    /// Each VMM thread's events (its own and the scheduler's about it), in time order.
    pub threads: BTreeMap<u32, Vec<usize>>,
    /// Threads that run a vCPU (they enter and leave `KVM_RUN`, exit, do port I/O).
    pub vcpu_threads: BTreeSet<u32>,
    pub has: CaptureHas,
    pub sched_events: u64,
}

impl<'c> Vmm<'c> {
    pub fn of(capture: &'c Capture) -> Vmm<'c> {
        let is_sched = |e: &KvmEvent| {
            matches!(
                e.kind,
                KvmEventKind::SchedSwitch { .. } | KvmEventKind::SchedWakeup { .. }
            )
        };
        // Threads with events of their own are the VMM's (the recorder keeps only its
        // threads); so are the other threads of their processes.
        let own: BTreeSet<u32> = capture
            .events
            .iter()
            .filter(|e| !is_sched(e))
            .map(|e| e.pid)
            .collect();
        let pids: BTreeSet<u32> = own
            .iter()
            .filter_map(|t| capture.tgids.get(t))
            .copied()
            .collect();
        let mut set = own.clone();
        set.extend(
            capture
                .tgids
                .iter()
                .filter(|(_, p)| pids.contains(p))
                .map(|(t, _)| *t),
        );
        let mut threads: BTreeMap<u32, Vec<usize>> = set.iter().map(|t| (*t, Vec::new())).collect();
        let mut order: Vec<usize> = (0..capture.events.len()).collect();
        order.sort_by_key(|&i| capture.events[i].tsc);
        let mut sched_events = 0;
        let mut vcpu_threads = BTreeSet::new();
        for i in order {
            let e = &capture.events[i];
            let concerned: Vec<u32> = match &e.kind {
                KvmEventKind::SchedSwitch {
                    prev_pid, next_pid, ..
                } => vec![*prev_pid, *next_pid],
                KvmEventKind::SchedWakeup { pid, .. } => vec![*pid],
                kind => {
                    if matches!(
                        kind,
                        KvmEventKind::Fpu { .. }
                            | KvmEventKind::UserspaceExit { .. }
                            | KvmEventKind::Exit { .. }
                            | KvmEventKind::Entry { .. }
                            | KvmEventKind::Pio { .. }
                            | KvmEventKind::Mmio { .. }
                    ) {
                        vcpu_threads.insert(e.pid);
                    }
                    vec![e.pid]
                }
            };
            let mut any = false;
            for t in concerned {
                if let Some(list) = threads.get_mut(&t) {
                    if list.last() != Some(&i) {
                        list.push(i);
                    }
                    any = true;
                }
            }
            sched_events += (any && is_sched(e)) as u64;
        }
        Vmm {
            capture,
            threads,
            vcpu_threads,
            has: CaptureHas::of(&capture.events),
            sched_events,
        }
    }

    pub fn tgid(&self, tid: u32) -> Option<u32> {
        self.capture.tgids.get(&tid).copied()
    }

    /// A thread's name: the comm of its latest own event, else what the scheduler called it.
    pub fn comm(&self, tid: u32) -> String {
        let events = self.threads.get(&tid).map(Vec::as_slice).unwrap_or(&[]);
        let mut name = None;
        for &i in events {
            let e = &self.capture.events[i];
            if e.pid == tid {
                name = Some(e.comm.clone());
            } else if let KvmEventKind::SchedSwitch {
                next_pid,
                next_comm,
                ..
            } = &e.kind
            {
                if *next_pid == tid && name.is_none() {
                    name = Some(next_comm.clone());
                }
            }
        }
        name.unwrap_or_else(|| format!("thread {tid}"))
    }

    /// The VMM threads of process `pid`.
    pub fn threads_of(&self, pid: u32) -> Vec<u32> {
        self.threads
            .keys()
            .filter(|t| self.tgid(**t) == Some(pid))
            .copied()
            .collect()
    }

    fn events_of(&self, tid: u32) -> impl Iterator<Item = &KvmEvent> + '_ {
        self.threads
            .get(&tid)
            .into_iter()
            .flatten()
            .map(|&i| &self.capture.events[i])
            .filter(move |e| concerns(e, tid))
    }

    /// The periods vCPU thread `tid` did not run guest code.
    pub fn not_running(&self, tid: u32) -> Vec<Period> {
        not_running_periods(self.events_of(tid), tid, self.has)
    }

    /// Does the capture show when `tid` did not run guest code at all?
    pub fn shows_host_time(&self, tid: u32) -> bool {
        self.events_of(tid).any(|e| {
            matches!(
                e.kind,
                KvmEventKind::SchedSwitch { .. }
                    | KvmEventKind::Exit { .. }
                    | KvmEventKind::Fpu { .. }
            )
        })
    }
}

/// How a thread's host events are shown.
pub(crate) struct ItemContext<'a> {
    pub host_clock: &'a HostClock,
    /// Event index -> (flow id, marker pair, phase) of the markers of the thread's guest.
    pub markers: &'a HashMap<usize, (u64, MarkerPair, Option<u32>)>,
    /// The probe names of the thread's guest.
    pub probe_names: &'a ProbeNames,
}

/// The items of VMM thread `tid`: its events as instants (those that begin or end a span
/// become part of it instead), and spans: when it did not run guest code for a vCPU thread,
/// when it ran for the others. Returns (spans, instants, probes among the instants).
pub(crate) fn thread_items(
    vmm: &Vmm,
    tid: u32,
    ctx: &ItemContext,
) -> (Vec<Span>, Vec<Instant>, u64) {
    let ns = |tsc: u64| ctx.host_clock.tsc_to_ns(tsc);
    let mut instants = Vec::new();
    let mut probes = 0;
    for &i in vmm.threads.get(&tid).into_iter().flatten() {
        let e = &vmm.capture.events[i];
        if e.pid != tid {
            continue;
        }
        if let Some(instant) = event_instant(e, i, ctx, &mut probes) {
            instants.push(Instant {
                ts: ns(e.tsc),
                ..instant
            });
        }
    }
    let spans = if vmm.vcpu_threads.contains(&tid) {
        vmm.not_running(tid)
            .iter()
            .map(|p| period_span(p, ctx.host_clock))
            .collect()
    } else {
        let events = vmm.events_of(tid);
        running_spans(events, tid)
            .into_iter()
            .map(|(start, end, cpu)| Span {
                start: ns(start),
                end: ns(end),
                name: "running".into(),
                category: "sched",
                args: vec![("host_cpu", Arg::U64(cpu.into()))],
                parts: Vec::new(),
            })
            .collect()
    };
    (spans, instants, probes)
}

fn period_span(p: &Period, clock: &HostClock) -> Span {
    let parts: Vec<Part> = p
        .segments
        .iter()
        .map(|s| Part {
            start: clock.tsc_to_ns(s.start),
            end: clock.tsc_to_ns(s.end),
            name: s.reason.label(),
            category: s.reason.category(),
        })
        .collect();
    let mut reasons: Vec<&str> = Vec::new();
    for part in &parts {
        if !reasons.contains(&part.name.as_str()) {
            reasons.push(&part.name);
        }
    }
    Span {
        start: clock.tsc_to_ns(p.start),
        end: clock.tsc_to_ns(p.end),
        name: "vCPU not running".into(),
        category: "host",
        args: vec![("reasons", Arg::Str(reasons.join(", ")))],
        parts,
    }
}

/// The instant of one of a thread's own events (`ts` left 0), or None for events shown as
/// the ends of spans.
fn event_instant(
    e: &KvmEvent,
    index: usize,
    ctx: &ItemContext,
    probes: &mut u64,
) -> Option<Instant> {
    let host_cpu = Arg::U64(e.cpu.into());
    let cpu = ("host_cpu", host_cpu.clone());
    let instant = |name: String, category, args: Args| Instant {
        ts: 0,
        name,
        category,
        args,
        flow_out: None,
        flow_in: None,
    };
    Some(match &e.kind {
        KvmEventKind::Fpu { .. }
        | KvmEventKind::UserspaceExit { .. }
        | KvmEventKind::Exit { .. }
        | KvmEventKind::Entry { .. }
        | KvmEventKind::SchedSwitch { .. }
        | KvmEventKind::SchedWakeup { .. } => return None,
        KvmEventKind::WriteTscOffset { vcpu, prev, next } => instant(
            format!("tsc offset vCPU {vcpu}"),
            "kvm",
            vec![
                ("vcpu", Arg::U64((*vcpu).into())),
                ("prev", Arg::I64(*prev as i64)),
                ("next", Arg::I64(*next as i64)),
                cpu,
            ],
        ),
        KvmEventKind::Pio {
            write,
            port,
            size,
            count,
            val,
        } => {
            let mut args = vec![
                ("port", Arg::Hex((*port).into())),
                ("size", Arg::U64((*size).into())),
                ("count", Arg::U64((*count).into())),
            ];
            if let Some(v) = val {
                args.push(("val", Arg::Hex(*v)));
            }
            args.push(cpu);
            if let Some((flow, pair, phase)) = ctx.markers.get(&index) {
                if let Some(phase) = phase {
                    args.push(("phase", Arg::U64((*phase).into())));
                }
                args.push(("guest_tsc", Arg::Hex(pair.guest_tsc)));
                args.push((
                    "latency_ns",
                    Arg::I64((pair.residual_tsc() as f64 * ctx.host_clock.ns_per_tick()) as i64),
                ));
                if let Some(inside) = pair.in_window() {
                    args.push(("in_guest_window", Arg::Bool(inside)));
                }
                return Some(Instant {
                    flow_in: Some(*flow),
                    ..instant("marker (kvm_pio)".into(), "kvm", args)
                });
            }
            match (*write, *port, *count, *val) {
                (true, PROBE_PORT, 1, Some(v)) => {
                    let (id, value) = probes::decode(v as u32);
                    *probes += 1;
                    let name = match ctx.probe_names.get(&id) {
                        Some(n) => format!("probe: {n}"),
                        None => format!("probe {id}"),
                    };
                    instant(
                        name,
                        "probe",
                        vec![
                            ("id", Arg::U64(id.into())),
                            ("value", Arg::U64(value.into())),
                            ("host_cpu", host_cpu),
                        ],
                    )
                }
                _ => instant(
                    format!("pio {} {port:#x}", if *write { "write" } else { "read" }),
                    "kvm",
                    args,
                ),
            }
        }
        KvmEventKind::Mmio {
            write,
            len,
            gpa,
            val,
        } => {
            let mut args = vec![("gpa", Arg::Hex(*gpa)), ("len", Arg::U64((*len).into()))];
            if let Some(v) = val {
                args.push(("val", Arg::Hex(*v)));
            }
            args.push(cpu);
            instant(
                format!("mmio {} {gpa:#x}", if *write { "write" } else { "read" }),
                "kvm",
                args,
            )
        }
        KvmEventKind::Hypercall { nr } => instant(
            format!("hypercall {nr}"),
            "kvm",
            vec![("nr", Arg::Hex(*nr)), cpu],
        ),
        KvmEventKind::Other { name, fields } => instant(
            name.clone(),
            "kvm",
            vec![("fields", Arg::Str(fields.clone())), cpu],
        ),
    })
}
