//! Balanced calls out of one thread's records, whatever damage they carry.
//!
//! uftrace's own readers trust the records to be balanced; [`CallBalancer`] does not: a LOST
//! record, an exit whose entry was never recorded (tracing enabled mid-stack) or an entry that
//! never exits (the program ended or crashed) still give properly nested calls. Every reader
//! that rebuilds calls (the timeline converter, report, replay, flame graphs) uses it, so they
//! all repair a trace the same way.

use crate::record::{Record, RecordType};

/// What went wrong with the records of a thread (all of it repaired by [`CallBalancer`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Records lost according to LOST records (sum of their counts).
    pub lost_records: u64,
    /// LOST records seen.
    pub lost_markers: u64,
    /// Exits without a matching entry, skipped.
    pub unmatched_exits: u64,
    /// Calls closed early because a record at a shallower depth showed their exit was missed.
    pub closed_by_depth: u64,
    /// Calls still open at the end of the thread, closed at its last timestamp.
    pub closed_at_end: u64,
    /// Records older than the one before them; their time was raised to keep calls valid.
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

    /// True when something had to be repaired besides lost records.
    pub fn unbalanced(&self) -> bool {
        self.unmatched_exits + self.closed_by_depth + self.closed_at_end + self.time_inversions > 0
    }
}

/// What to do with one record, in order: close the `close_first` innermost open calls at
/// `time` (their exits were missed), then act on the record itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The record's time, shifted by the offset and never before the previous record's.
    pub time: u64,
    pub close_first: usize,
    pub then: Then,
}

/// The record's own effect once the missed exits are closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// A call of `record.addr` opens.
    Enter,
    /// The innermost open call ends.
    Exit,
    /// An exit without an open call: nothing happens.
    Skip,
    /// `count` records were lost here.
    Lost { count: u64 },
    /// Event `id` happened here.
    Event { id: u64 },
}

/// The open calls of one thread, by uftrace depth.
#[derive(Clone, Debug)]
pub struct CallBalancer {
    /// Added to every record time.
    offset_ns: i64,
    /// uftrace depth of each open call, strictly increasing from the bottom. Depths are 10-bit
    /// values, so this never holds more than 1024 entries.
    open_depths: Vec<u16>,
    /// Time of the latest record; nothing happens earlier than this.
    last_time: u64,
    pub repairs: Repairs,
}

impl Default for CallBalancer {
    fn default() -> Self {
        CallBalancer::new(0)
    }
}

impl CallBalancer {
    /// A balancer that shifts every record time by `offset_ns`.
    pub fn new(offset_ns: i64) -> Self {
        CallBalancer {
            offset_ns,
            open_depths: Vec::with_capacity(64),
            last_time: 0,
            repairs: Repairs::default(),
        }
    }

    #[inline(always)]
    fn time_of(&mut self, record_time: u64) -> u64 {
        let ts = record_time.saturating_add_signed(self.offset_ns);
        if ts < self.last_time {
            return self.inverted();
        }
        self.last_time = ts;
        ts
    }

    #[cold]
    fn inverted(&mut self) -> u64 {
        self.repairs.time_inversions += 1;
        self.last_time
    }

    /// Pops open calls at `depth` or deeper; returns how many.
    fn close_from_depth(&mut self, depth: u16) -> usize {
        let keep = self.open_depths.partition_point(|&open| open < depth);
        let closed = self.open_depths.len() - keep;
        self.open_depths.truncate(keep);
        self.repairs.closed_by_depth += closed as u64;
        closed
    }

    /// Takes one record of the thread, in file order. The balanced case is a few instructions
    /// (every reader calls this per record); repairs are out of line.
    #[inline(always)]
    pub fn step(&mut self, record: &Record) -> Step {
        let time = self.time_of(record.time);
        let plain = |then| Step {
            time,
            close_first: 0,
            then,
        };
        match record.kind {
            RecordType::Entry => match self.open_depths.last() {
                // An open call at this depth or deeper means its exit was never recorded.
                Some(&open) if open >= record.depth => self.enter_after_missed_exits(record, time),
                _ => {
                    self.open_depths.push(record.depth);
                    plain(Then::Enter)
                }
            },
            RecordType::Exit => match self.open_depths.last() {
                Some(&open) if open == record.depth => {
                    self.open_depths.pop();
                    plain(Then::Exit)
                }
                _ => self.unbalanced_exit(record, time),
            },
            RecordType::Lost | RecordType::Event => self.marker(record, time),
        }
    }

    #[cold]
    fn enter_after_missed_exits(&mut self, record: &Record, time: u64) -> Step {
        let close_first = self.close_from_depth(record.depth);
        self.open_depths.push(record.depth);
        Step {
            time,
            close_first,
            then: Then::Enter,
        }
    }

    #[cold]
    fn unbalanced_exit(&mut self, record: &Record, time: u64) -> Step {
        let close_first = match self.open_depths.last() {
            Some(&open) if open > record.depth => self.close_from_depth(record.depth + 1),
            _ => 0,
        };
        let then = match self.open_depths.last() {
            Some(&open) if open == record.depth => {
                self.open_depths.pop();
                Then::Exit
            }
            // The entry happened before tracing started (or was lost).
            _ => {
                self.repairs.unmatched_exits += 1;
                Then::Skip
            }
        };
        Step {
            time,
            close_first,
            then,
        }
    }

    fn marker(&mut self, record: &Record, time: u64) -> Step {
        let then = if record.kind == RecordType::Lost {
            self.repairs.lost_markers += 1;
            // A count from the file: many LOST records must not overflow the sum.
            self.repairs.lost_records = self.repairs.lost_records.saturating_add(record.addr);
            Then::Lost { count: record.addr }
        } else {
            Then::Event { id: record.addr }
        };
        Step {
            time,
            close_first: 0,
            then,
        }
    }

    /// Ends the thread: returns the time of its last record and how many calls are still open
    /// (to be closed at that time, innermost first).
    pub fn finish(&mut self) -> (u64, usize) {
        let open = self.open_depths.len();
        self.open_depths.clear();
        self.repairs.closed_at_end += open as u64;
        (self.last_time, open)
    }

    /// Number of calls open right now.
    pub fn open_calls(&self) -> usize {
        self.open_depths.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(t: u64, depth: u16) -> Record {
        Record::new(t, RecordType::Entry, depth, 0x10)
    }
    fn exit(t: u64, depth: u16) -> Record {
        Record::new(t, RecordType::Exit, depth, 0x10)
    }

    fn steps(records: &[Record]) -> (Vec<(usize, Then)>, CallBalancer) {
        let mut b = CallBalancer::default();
        let s = records
            .iter()
            .map(|r| {
                let s = b.step(r);
                (s.close_first, s.then)
            })
            .collect();
        (s, b)
    }

    #[test]
    fn balanced_records_pass_through() {
        let (s, b) = steps(&[entry(1, 0), entry(2, 1), exit(3, 1), exit(4, 0)]);
        assert_eq!(
            s,
            [
                (0, Then::Enter),
                (0, Then::Enter),
                (0, Then::Exit),
                (0, Then::Exit)
            ]
        );
        assert_eq!(b.repairs, Repairs::default());
    }

    #[test]
    fn missed_exits_are_closed_by_depth() {
        // f > g > h, the exits of h and g lost, then f calls g again.
        let (s, mut b) = steps(&[
            entry(1, 0),
            entry(2, 1),
            entry(3, 2),
            Record::lost(4, 2, 5),
            entry(5, 1),
            exit(6, 1),
            exit(7, 3),
        ]);
        assert_eq!(s[3], (0, Then::Lost { count: 5 }));
        assert_eq!(s[4], (2, Then::Enter));
        assert_eq!(s[6], (0, Then::Skip));
        assert_eq!(b.finish(), (7, 1));
        assert_eq!(b.repairs.closed_by_depth, 2);
        assert_eq!(b.repairs.unmatched_exits, 1);
        assert_eq!(b.repairs.closed_at_end, 1);
    }

    #[test]
    fn inverted_time_is_clamped() {
        let mut b = CallBalancer::new(-500);
        assert_eq!(b.step(&entry(5000, 0)).time, 4500);
        assert_eq!(b.step(&entry(4000, 1)).time, 4500);
        assert_eq!(b.repairs.time_inversions, 1);
    }
}
