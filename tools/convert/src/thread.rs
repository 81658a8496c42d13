//! Turns one thread's uftrace records into balanced slices on a [`TimelineSink`] track.
//!
//! uftrace's own converters trust the records to be balanced; these do not: the format crate's
//! [`CallBalancer`] repairs a LOST record, an exit whose entry was never recorded (tracing
//! enabled mid-stack) or an entry that never exits (the program ended or crashed), so the
//! output is always well nested.

use std::io;

pub use vftrace_format::balance::Repairs;
use vftrace_format::balance::{CallBalancer, Then};
use vftrace_format::record::Record;

use crate::{ArgValue, TimelineSink};

/// The open slices of one thread and where its output goes.
pub struct ThreadTimeline {
    pid: u32,
    tid: u32,
    calls: CallBalancer,
    pub slices: u64,
}

impl ThreadTimeline {
    pub fn new(pid: u32, tid: u32, offset_ns: i64) -> Self {
        ThreadTimeline {
            pid,
            tid,
            calls: CallBalancer::new(offset_ns),
            slices: 0,
        }
    }

    /// Adds one record. `name_of(addr)` names the function of an entry.
    #[inline]
    pub fn record<'n>(
        &mut self,
        sink: &mut dyn TimelineSink,
        record: &Record,
        name_of: impl FnOnce(u64) -> &'n str,
    ) -> io::Result<()> {
        let step = self.calls.step(record);
        let ts = step.time;
        for _ in 0..step.close_first {
            sink.end(self.pid, self.tid, ts)?;
        }
        match step.then {
            Then::Enter => {
                self.slices += 1;
                sink.begin(self.pid, self.tid, ts, name_of(record.addr))
            }
            Then::Exit => sink.end(self.pid, self.tid, ts),
            Then::Skip => Ok(()),
            Then::Lost { count } => {
                let name = format!("lost {count} records");
                sink.instant(
                    self.pid,
                    self.tid,
                    ts,
                    &name,
                    &[("count", ArgValue::U64(count))],
                )
            }
            Then::Event { id } => {
                let name = format!("event {id:#x}");
                sink.instant(self.pid, self.tid, ts, &name, &[("id", ArgValue::U64(id))])
            }
        }
    }

    /// Closes every slice still open at the thread's last timestamp.
    pub fn finish(&mut self, sink: &mut dyn TimelineSink) -> io::Result<()> {
        let (last, open) = self.calls.finish();
        for _ in 0..open {
            sink.end(self.pid, self.tid, last)?;
        }
        Ok(())
    }

    /// What had to be repaired so far.
    pub fn repairs(&self) -> &Repairs {
        &self.calls.repairs
    }

    /// Number of slices open right now.
    pub fn open_slices(&self) -> usize {
        self.calls.open_calls()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChromeJsonWriter;
    use vftrace_format::record::RecordType;

    /// Converts records and returns the parsed Chrome JSON events.
    fn convert(records: &[Record]) -> (Vec<serde_json::Value>, ThreadTimeline) {
        let mut sink = ChromeJsonWriter::new(Vec::new()).unwrap();
        let mut t = ThreadTimeline::new(1, 2, 0);
        for r in records {
            t.record(&mut sink, r, |addr| if addr == 0x10 { "f" } else { "g" })
                .unwrap();
        }
        t.finish(&mut sink).unwrap();
        sink.finish().unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&sink.into_inner()).unwrap();
        (doc["traceEvents"].as_array().unwrap().clone(), t)
    }

    /// Checks B/E balance and time order; returns the slices as (name, begin µs, end µs, depth).
    fn slices(events: &[serde_json::Value]) -> Vec<(String, f64, f64, usize)> {
        let mut open: Vec<(String, f64)> = Vec::new();
        let mut out = Vec::new();
        let mut last = f64::MIN;
        for e in events {
            let ts = e["ts"].as_f64().unwrap();
            assert!(ts >= last, "time went backwards at {e}");
            last = ts;
            match e["ph"].as_str().unwrap() {
                "B" => open.push((e["name"].as_str().unwrap().to_string(), ts)),
                "E" => {
                    let (name, begin) = open.pop().expect("E without B");
                    out.push((name, begin, ts, open.len()));
                }
                _ => {}
            }
        }
        assert!(open.is_empty(), "unclosed slices {open:?}");
        out
    }

    fn entry(t: u64, depth: u16, addr: u64) -> Record {
        Record::new(t, RecordType::Entry, depth, addr)
    }
    fn exit(t: u64, depth: u16, addr: u64) -> Record {
        Record::new(t, RecordType::Exit, depth, addr)
    }

    #[test]
    fn balanced_records_nest() {
        let (events, t) = convert(&[
            entry(1000, 0, 0x10),
            entry(2000, 1, 0x20),
            exit(3000, 1, 0x20),
            exit(4000, 0, 0x10),
        ]);
        assert_eq!(
            slices(&events),
            [("g".into(), 2.0, 3.0, 1), ("f".into(), 1.0, 4.0, 0)]
        );
        assert_eq!(*t.repairs(), Repairs::default());
    }

    #[test]
    fn exit_without_entry_is_skipped() {
        // Tracing began inside g, called from f: both exits come without entries.
        let (events, t) = convert(&[
            entry(1000, 2, 0x10),
            exit(2000, 2, 0x10),
            exit(3000, 1, 0x20),
            exit(4000, 0, 0x10),
        ]);
        assert_eq!(slices(&events), [("f".into(), 1.0, 2.0, 0)]);
        assert_eq!(t.repairs().unmatched_exits, 2);
    }

    #[test]
    fn entries_never_exited_close_at_the_end() {
        let (events, t) = convert(&[
            entry(1000, 0, 0x10),
            entry(2000, 1, 0x20),
            entry(3000, 2, 0x20),
            exit(3500, 2, 0x20),
        ]);
        assert_eq!(
            slices(&events),
            [
                ("g".into(), 3.0, 3.5, 2),
                ("g".into(), 2.0, 3.5, 1),
                ("f".into(), 1.0, 3.5, 0)
            ]
        );
        assert_eq!(t.repairs().closed_at_end, 2);
    }

    #[test]
    fn lost_records_resync_by_depth() {
        // f > g > h, then 5 records are lost (h's exit, g's exit, ...), then f calls g again.
        let (events, t) = convert(&[
            entry(1000, 0, 0x10),
            entry(2000, 1, 0x20),
            entry(3000, 2, 0x20),
            Record::lost(4000, 2, 5),
            entry(5000, 1, 0x20),
            exit(6000, 1, 0x20),
            exit(7000, 0, 0x10),
        ]);
        let s = slices(&events);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0], ("g".into(), 3.0, 5.0, 2));
        assert_eq!(s[1], ("g".into(), 2.0, 5.0, 1));
        assert_eq!(s[2], ("g".into(), 5.0, 6.0, 1));
        assert_eq!(s[3], ("f".into(), 1.0, 7.0, 0));
        let lost: Vec<_> = events.iter().filter(|e| e["ph"] == "i").collect();
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0]["name"], "lost 5 records");
        assert_eq!(lost[0]["args"]["count"], 5);
        assert_eq!(t.repairs().lost_records, 5);
        assert_eq!(t.repairs().closed_by_depth, 2);
    }

    #[test]
    fn exit_deeper_than_expected_closes_missed_exits() {
        let (events, t) = convert(&[
            entry(1000, 0, 0x10),
            entry(2000, 1, 0x20),
            entry(2500, 2, 0x20),
            exit(3000, 0, 0x10),
        ]);
        assert_eq!(slices(&events).len(), 3);
        assert_eq!(t.repairs().closed_by_depth, 2);
    }

    #[test]
    fn inverted_time_is_clamped() {
        let (events, t) = convert(&[
            entry(5000, 0, 0x10),
            entry(4000, 1, 0x20),
            exit(6000, 1, 0x20),
            exit(7000, 0, 0x10),
        ]);
        assert_eq!(slices(&events)[0], ("g".into(), 5.0, 6.0, 1));
        assert_eq!(t.repairs().time_inversions, 1);
    }

    #[test]
    fn stack_stays_bounded_by_depth() {
        let mut sink = ChromeJsonWriter::new(io::sink()).unwrap();
        let mut t = ThreadTimeline::new(1, 2, 0);
        // 100k entries without exits, at every depth in turn.
        for i in 0..100_000u64 {
            t.record(&mut sink, &entry(i, (i % 1024) as u16, 0x10), |_| "f")
                .unwrap();
            assert!(t.open_slices() <= 1024);
        }
        t.finish(&mut sink).unwrap();
    }

    #[test]
    fn offset_moves_time() {
        let mut sink = ChromeJsonWriter::new(Vec::new()).unwrap();
        let mut t = ThreadTimeline::new(1, 2, -500);
        t.record(&mut sink, &entry(1000, 0, 0x10), |_| "f").unwrap();
        t.record(&mut sink, &exit(2000, 0, 0x10), |_| "f").unwrap();
        sink.finish().unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&sink.into_inner()).unwrap();
        assert_eq!(doc["traceEvents"][0]["ts"].as_f64().unwrap(), 0.5);
        assert_eq!(doc["traceEvents"][1]["ts"].as_f64().unwrap(), 1.5);
    }
}
