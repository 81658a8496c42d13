//! Turns one thread's uftrace records into balanced slices on a [`TimelineSink`] track.
//!
//! uftrace's own converters trust the records to be balanced; these do not: a LOST record, an
//! exit whose entry was never recorded (tracing enabled mid-stack) or an entry that never
//! exits (the program ended or crashed) still give well-nested output.

use std::io;

use vftrace_format::record::{Record, RecordType};

use crate::{ArgValue, TimelineSink};

/// What went wrong with the records of a thread (all of it repaired in the output).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Records lost according to LOST records (sum of their counts).
    pub lost_records: u64,
    /// LOST records seen.
    pub lost_markers: u64,
    /// Exits without a matching entry, skipped.
    pub unmatched_exits: u64,
    /// Slices closed early because a record at a shallower depth showed their exit was missed.
    pub closed_by_depth: u64,
    /// Slices still open at the end of the thread, closed at its last timestamp.
    pub closed_at_end: u64,
    /// Records older than the one before them; their time was raised to keep slices valid.
    pub time_inversions: u64,
}

impl Repairs {
    pub fn add(&mut self, other: &Repairs) {
        self.lost_records = self.lost_records.saturating_add(other.lost_records);
        self.lost_markers += other.lost_markers;
        self.unmatched_exits += other.unmatched_exits;
        self.closed_by_depth += other.closed_by_depth;
        self.closed_at_end += other.closed_at_end;
        self.time_inversions += other.time_inversions;
    }
}

/// The open slices of one thread and where its output goes.
pub struct ThreadTimeline {
    pid: u32,
    tid: u32,
    /// Added to every record time.
    offset_ns: i64,
    /// uftrace depth of each open slice, strictly increasing from the bottom. Depths are 10-bit
    /// values, so this never holds more than 1024 entries.
    open_depths: Vec<u16>,
    /// Output time of the latest event; nothing is written earlier than this.
    last_ts: u64,
    pub slices: u64,
    pub repairs: Repairs,
}

impl ThreadTimeline {
    pub fn new(pid: u32, tid: u32, offset_ns: i64) -> Self {
        ThreadTimeline {
            pid,
            tid,
            offset_ns,
            open_depths: Vec::with_capacity(64),
            last_ts: 0,
            slices: 0,
            repairs: Repairs::default(),
        }
    }

    /// The output time of a record: shifted by the offset, never before the previous event.
    #[inline]
    fn time_of(&mut self, record_time: u64) -> u64 {
        let ts = record_time.saturating_add_signed(self.offset_ns);
        if ts < self.last_ts {
            self.repairs.time_inversions += 1;
            return self.last_ts;
        }
        self.last_ts = ts;
        ts
    }

    /// Closes open slices while the innermost one is at `depth` or deeper.
    #[inline]
    fn close_from_depth(
        &mut self,
        sink: &mut dyn TimelineSink,
        depth: u16,
        ts: u64,
    ) -> io::Result<()> {
        while let Some(&open) = self.open_depths.last() {
            if open < depth {
                break;
            }
            self.open_depths.pop();
            self.repairs.closed_by_depth += 1;
            sink.end(self.pid, self.tid, ts)?;
        }
        Ok(())
    }

    /// Adds one record. `name_of(addr)` names the function of an entry.
    #[inline]
    pub fn record<'n>(
        &mut self,
        sink: &mut dyn TimelineSink,
        record: &Record,
        name_of: impl FnOnce(u64) -> &'n str,
    ) -> io::Result<()> {
        let ts = self.time_of(record.time);
        match record.kind {
            RecordType::Entry => {
                // An open slice at this depth or deeper means its exit was never recorded.
                if matches!(self.open_depths.last(), Some(&open) if open >= record.depth) {
                    self.close_from_depth(sink, record.depth, ts)?;
                }
                self.open_depths.push(record.depth);
                self.slices += 1;
                sink.begin(self.pid, self.tid, ts, name_of(record.addr))
            }
            RecordType::Exit => {
                if matches!(self.open_depths.last(), Some(&open) if open > record.depth) {
                    self.close_from_depth(sink, record.depth + 1, ts)?;
                }
                match self.open_depths.last() {
                    Some(&open) if open == record.depth => {
                        self.open_depths.pop();
                        sink.end(self.pid, self.tid, ts)
                    }
                    // The entry happened before tracing started (or was lost): nothing to close.
                    _ => {
                        self.repairs.unmatched_exits += 1;
                        Ok(())
                    }
                }
            }
            RecordType::Lost => {
                self.repairs.lost_markers += 1;
                // A count from the file: many LOST records must not overflow the sum.
                self.repairs.lost_records = self.repairs.lost_records.saturating_add(record.addr);
                let name = format!("lost {} records", record.addr);
                sink.instant(
                    self.pid,
                    self.tid,
                    ts,
                    &name,
                    &[("count", ArgValue::U64(record.addr))],
                )
            }
            RecordType::Event => {
                let name = format!("event {:#x}", record.addr);
                sink.instant(
                    self.pid,
                    self.tid,
                    ts,
                    &name,
                    &[("id", ArgValue::U64(record.addr))],
                )
            }
        }
    }

    /// Closes every slice still open at the thread's last timestamp.
    pub fn finish(&mut self, sink: &mut dyn TimelineSink) -> io::Result<()> {
        while self.open_depths.pop().is_some() {
            self.repairs.closed_at_end += 1;
            sink.end(self.pid, self.tid, self.last_ts)?;
        }
        Ok(())
    }

    /// Number of slices open right now.
    pub fn open_slices(&self) -> usize {
        self.open_depths.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChromeJsonWriter;

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
        assert_eq!(t.repairs, Repairs::default());
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
        assert_eq!(t.repairs.unmatched_exits, 2);
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
        assert_eq!(t.repairs.closed_at_end, 2);
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
        assert_eq!(t.repairs.lost_records, 5);
        assert_eq!(t.repairs.closed_by_depth, 2);
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
        assert_eq!(t.repairs.closed_by_depth, 2);
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
        assert_eq!(t.repairs.time_inversions, 1);
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
