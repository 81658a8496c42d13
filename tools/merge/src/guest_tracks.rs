//! A guest's vCPU tracks: its functions at host time, on the track of the host thread that
//! ran the vCPU, with that thread's host events in between (the times it did not run guest
//! code as "vCPU not running" spans, exits, probes), the guest's markers at the time it wrote
//! them with a flow to the host's event, and a "guest run" slice from its first to its last
//! event. Every function slice carries `not_running_ns`: how much of its wall time its vCPU
//! was not running guest code.
use std::collections::HashMap;
use std::io;

use vftrace_convert::{ArgValue, EventExtras, ThreadTimeline, TimelineSink};

use crate::align::MarkerPair;
use crate::clocks::HostClock;
use crate::guests::{GuestInput, GuestPlan};
use crate::host_traces::{note_repairs, stream_records, RecordSink};
use crate::items::{Arg, Cursor, Instant, Written};
use crate::report::{GuestReport, InflatedFunction};
use crate::vmm::{thread_items, ItemContext, Vmm};
use crate::MergeError;

/// Track id of a vCPU whose host thread is unknown (above Linux's largest pid).
pub const UNKNOWN_THREAD_TID: u32 = 0x4000_0000;
/// Name of the slice spanning a vCPU's traced run.
pub const GUEST_RUN: &str = "guest run";

/// Per function: (calls, own ns, own ns not running).
#[derive(Default)]
struct FunctionTime {
    calls: u64,
    self_ns: u64,
    not_running_ns: u64,
}

/// The sink the guest's records go through on one vCPU track.
struct GuestTrack<'a> {
    sink: &'a mut dyn TimelineSink,
    cursor: Cursor,
    /// Whether to add `not_running_ns` to slices (the capture shows the vCPU's host time).
    with_host_time: bool,
    /// Not running so far within the run, ns.
    not_running: u64,
    /// Open functions: (not_running at their begin, function).
    stack: Vec<(u64, usize)>,
    last_ts: u64,
    ids: HashMap<String, usize>,
    functions: Vec<(String, FunctionTime)>,
    /// The "guest run" slice is open (from the first record).
    run: Option<(u64, u64)>,
    running: bool,
    by_reason: std::collections::BTreeMap<String, u64>,
    periods: u64,
}

impl GuestTrack<'_> {
    fn account_own_time(&mut self, ts: u64) {
        if let Some(&(_, f)) = self.stack.last() {
            self.functions[f].1.self_ns += ts.saturating_sub(self.last_ts);
        }
        self.last_ts = ts;
    }

    /// Writes host items up to `until` and counts the spans that ended inside the run.
    fn host_until(&mut self, until: u64) -> io::Result<()> {
        let running = self.running;
        let mut ended: Vec<(u64, Vec<(String, u64)>)> = Vec::new();
        let mut on_end = |w: Written| {
            if running && w.span.name == "vCPU not running" {
                let parts = w.parts().map(|(n, d)| (n.to_string(), d)).collect();
                ended.push((w.end.saturating_sub(w.span.start), parts));
            }
        };
        self.cursor.advance(self.sink, until, &mut on_end)?;
        for (ns, parts) in ended {
            self.not_running += ns;
            self.periods += 1;
            if let Some(&(_, f)) = self.stack.last() {
                self.functions[f].1.not_running_ns += ns;
            }
            for (name, d) in parts {
                *self.by_reason.entry(name).or_default() += d;
            }
        }
        Ok(())
    }
}

impl TimelineSink for GuestTrack<'_> {
    fn process(&mut self, pid: u32, name: &str) -> io::Result<()> {
        self.sink.process(pid, name)
    }
    fn thread(&mut self, pid: u32, tid: u32, name: &str) -> io::Result<()> {
        self.sink.thread(pid, tid, name)
    }
    fn begin_with(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        name: &str,
        _: &EventExtras,
    ) -> io::Result<()> {
        self.account_own_time(ts_ns);
        let f = match self.ids.get(name) {
            Some(&f) => f,
            None => {
                self.functions
                    .push((name.to_string(), FunctionTime::default()));
                self.ids.insert(name.to_string(), self.functions.len() - 1);
                self.functions.len() - 1
            }
        };
        self.functions[f].1.calls += 1;
        self.stack.push((self.not_running, f));
        self.sink
            .begin_with(pid, tid, ts_ns, name, &EventExtras::category("guest"))
    }
    fn end_with(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        _: &[(&str, ArgValue)],
    ) -> io::Result<()> {
        self.account_own_time(ts_ns);
        let at_begin = self.stack.pop().map_or(self.not_running, |(n, _)| n);
        if self.with_host_time {
            let args = [("not_running_ns", ArgValue::U64(self.not_running - at_begin))];
            self.sink.end_with(pid, tid, ts_ns, &args)
        } else {
            self.sink.end(pid, tid, ts_ns)
        }
    }
    fn instant_with(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        name: &str,
        extras: &EventExtras,
    ) -> io::Result<()> {
        let extras = EventExtras {
            category: Some("guest"),
            ..*extras
        };
        self.sink.instant_with(pid, tid, ts_ns, name, &extras)
    }
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl RecordSink for GuestTrack<'_> {
    fn before_record(&mut self, ts_ns: u64) -> io::Result<()> {
        self.host_until(ts_ns)?;
        match &mut self.run {
            None => {
                self.run = Some((ts_ns, ts_ns));
                self.running = true;
                let (pid, tid) = (self.cursor.pid, self.cursor.tid);
                self.sink.begin_with(
                    pid,
                    tid,
                    ts_ns,
                    GUEST_RUN,
                    &EventExtras::category("guest"),
                )?;
            }
            Some((_, last)) => *last = ts_ns,
        }
        Ok(())
    }
}

/// What the guest's tracks need besides the guest.
pub(crate) struct GuestContext<'a> {
    pub vmm: &'a Vmm<'a>,
    pub host_clock: &'a HostClock,
    /// Flow id of the guest's first marker; marker i has `first_flow + i`.
    pub first_flow: u64,
}

/// Capture event index -> (flow id, pair, phase) of a guest's markers' `kvm_pio`.
pub(crate) fn marker_flows(
    plan: &GuestPlan,
    first_flow: u64,
) -> HashMap<usize, (u64, MarkerPair, Option<u32>)> {
    plan.kvm
        .marker_events
        .iter()
        .enumerate()
        .map(|(i, &event)| {
            let flow = first_flow + i as u64;
            (
                event,
                (flow, plan.alignment.pairs[i], plan.kvm.marker_phases[i]),
            )
        })
        .collect()
}

/// Writes the tracks of guest `g` (process `pid`, already named) and fills its report.
#[allow(clippy::too_many_arguments)]
pub(crate) fn emit_guest(
    g: &GuestInput,
    plan: &GuestPlan,
    pid: u32,
    ctx: &GuestContext,
    sink: &mut dyn TimelineSink,
    report: &mut GuestReport,
    warnings: &mut Vec<String>,
    data_errors: &mut Vec<String>,
) -> Result<(), MergeError> {
    let symbolizer = g.dir.symbolizer()?;
    let mut tids = g.dir.tids();
    tids.sort_unstable();
    tids.dedup();
    let pairs = &plan.alignment.pairs;
    let markers = marker_flows(plan, ctx.first_flow);
    let items = ItemContext {
        host_clock: ctx.host_clock,
        markers: &markers,
        probe_names: &g.probe_names,
    };
    let mut functions: HashMap<String, FunctionTime> = HashMap::new();
    for (vcpu, tid) in tids.iter().enumerate() {
        let host_thread = plan.vcpu_threads.get(vcpu).copied().flatten();
        let track = host_thread.unwrap_or(UNKNOWN_THREAD_TID + vcpu as u32);
        sink.thread(pid, track, &format!("vCPU {vcpu}"))?;
        let (spans, mut instants, probes) = match host_thread {
            Some(t) => thread_items(ctx.vmm, t, &items),
            None => Default::default(),
        };
        report.probes += probes;
        for (i, p) in pairs.iter().enumerate() {
            if p.vcpu != vcpu as u32 {
                continue;
            }
            let mut args = vec![
                ("guest_tsc", Arg::Hex(p.guest_tsc)),
                ("pio_host_tsc", Arg::Hex(p.pio_host_tsc)),
                (
                    "latency_ns",
                    Arg::I64((p.residual_tsc() as f64 * ctx.host_clock.ns_per_tick()) as i64),
                ),
            ];
            if let Some(w) = p.window_tsc() {
                args.push((
                    "window_ns",
                    Arg::U64((w as f64 * ctx.host_clock.ns_per_tick()) as u64),
                ));
            }
            if let Some(inside) = p.in_window() {
                args.push(("host_stamp_in_window", Arg::Bool(inside)));
            }
            if let Some(phase) = plan.kvm.marker_phases[i] {
                args.push(("phase", Arg::U64(phase.into())));
            }
            instants.push(Instant {
                ts: ctx.host_clock.tsc_to_ns(p.guest_host_tsc),
                name: "marker (guest write)".into(),
                category: "guest",
                args,
                flow_out: Some(ctx.first_flow + i as u64),
                flow_in: None,
            });
        }
        let mut track_sink = GuestTrack {
            sink: &mut *sink,
            cursor: Cursor::new(pid, track, spans, instants),
            with_host_time: host_thread.is_some_and(|t| ctx.vmm.shows_host_time(t)),
            not_running: 0,
            stack: Vec::new(),
            last_ts: 0,
            ids: HashMap::new(),
            functions: Vec::new(),
            run: None,
            running: false,
            by_reason: Default::default(),
            periods: 0,
        };
        let mut timeline = ThreadTimeline::new(pid, track, 0);
        let timeline_tsc = plan.alignment.model.timeline(vcpu as u32);
        let map = |ns: u64| {
            ctx.host_clock
                .tsc_to_ns(timeline_tsc.guest_to_host(g.clock.ns_to_tsc(ns)))
        };
        let result = stream_records(
            &g.dir,
            *tid,
            &symbolizer,
            &mut timeline,
            &mut track_sink,
            map,
        );
        timeline.finish(&mut track_sink)?;
        if let Some((first, last)) = track_sink.run {
            track_sink.sink.end(pid, track, last)?;
            report.run = Some(match report.run {
                Some((a, b)) => (a.min(first), b.max(last)),
                None => (first, last),
            });
            report.host_time.run_ns += last - first;
        }
        track_sink.running = false;
        track_sink.host_until(u64::MAX)?;
        if let Err(e) = result? {
            data_errors.push(e.to_string());
        }
        report.functions += timeline.slices;
        note_repairs(warnings, &g.dir.path, *tid, &timeline);
        let h = &mut report.host_time;
        h.known |= track_sink.with_host_time;
        h.not_running_ns += track_sink.not_running;
        h.periods += track_sink.periods;
        for (reason, ns) in std::mem::take(&mut track_sink.by_reason) {
            *h.by_reason.entry(reason).or_default() += ns;
        }
        for (name, t) in track_sink.functions {
            let f = functions.entry(name).or_default();
            f.calls += t.calls;
            f.self_ns += t.self_ns;
            f.not_running_ns += t.not_running_ns;
        }
    }
    let mut inflated: Vec<InflatedFunction> = functions
        .into_iter()
        .filter(|(_, t)| t.not_running_ns > 0)
        .map(|(name, t)| InflatedFunction {
            name,
            calls: t.calls,
            self_ns: t.self_ns,
            not_running_ns: t.not_running_ns,
        })
        .collect();
    inflated.sort_by(|a, b| {
        b.not_running_ns
            .cmp(&a.not_running_ns)
            .then(a.name.cmp(&b.name))
    });
    report.inflated = inflated;
    report.tracks = tids.len();
    Ok(())
}
