//! Host program traces (vftrace or plain uftrace directories) on the timeline, and the
//! record streaming all trace directories share.
use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::io;
use std::path::Path;

use vftrace_convert::{ArgValue, EventExtras, ThreadTimeline, TimelineSink};
use vftrace_format::clock::ClockSource;
use vftrace_format::dir::{Symbolizer, TraceDir};
use vftrace_format::error::FormatError;
use vftrace_format::record::{Record, RecordType};
use vftrace_format::task::TaskLine;

use crate::clocks::HostClock;
use crate::report::{HostTraceReport, MergeReport};
use crate::MergeError;

/// A sink that also hears of each record's (mapped) time before the record is added: the
/// guest's tracks put host events in between there.
pub(crate) trait RecordSink: TimelineSink {
    fn before_record(&mut self, ts_ns: u64) -> io::Result<()>;
}

/// A sink with nothing to put between records; slices get `category`.
pub(crate) struct Plain<'a> {
    pub sink: &'a mut dyn TimelineSink,
    pub category: &'static str,
}

impl<'e> Plain<'_> {
    /// `extras`, in `category` unless they name their own.
    fn categorized(&self, extras: &EventExtras<'e>) -> EventExtras<'e> {
        EventExtras {
            category: extras.category.or(Some(self.category)),
            ..*extras
        }
    }
}

impl TimelineSink for Plain<'_> {
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
        extras: &EventExtras,
    ) -> io::Result<()> {
        self.sink
            .begin_with(pid, tid, ts_ns, name, &self.categorized(extras))
    }
    fn end_with(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        args: &[(&str, ArgValue)],
    ) -> io::Result<()> {
        self.sink.end_with(pid, tid, ts_ns, args)
    }
    fn instant_with(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        name: &str,
        extras: &EventExtras,
    ) -> io::Result<()> {
        self.sink
            .instant_with(pid, tid, ts_ns, name, &self.categorized(extras))
    }
    fn finish(&mut self) -> io::Result<()> {
        self.sink.finish()
    }
}

impl RecordSink for Plain<'_> {
    fn before_record(&mut self, _: u64) -> io::Result<()> {
        Ok(())
    }
}

/// Feeds one tid's records, times mapped by `map`, into `timeline`. The outer error is the
/// sink's; the inner one a record file that could not be read to its end.
pub(crate) fn stream_records(
    dir: &TraceDir,
    tid: u32,
    symbolizer: &Symbolizer,
    timeline: &mut ThreadTimeline,
    sink: &mut dyn RecordSink,
    map: impl Fn(u64) -> u64,
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
            sink.before_record(mapped.time)?;
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

pub(crate) fn note_repairs(
    warnings: &mut Vec<String>,
    dir: &Path,
    tid: u32,
    timeline: &ThreadTimeline,
) {
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

/// A host program trace: its times go to host TSC through its own `vftrace.clock`, or are
/// CLOCK_MONOTONIC already (plain uftrace), which the timeline uses when the capture has
/// clock pairs.
pub(crate) fn emit_host(
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
        let mut plain = Plain {
            sink: &mut *sink,
            category: "host",
        };
        let result = stream_records(dir, tid, symbolizer, &mut timeline, &mut plain, map);
        timeline.finish(&mut plain)?;
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
