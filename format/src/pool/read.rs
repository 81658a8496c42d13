//! Reading a pool as a consumer: which threads it holds, their chunks in order, their records.
//! Shared by the in-process dump, `vftrace record` and the host side of a guest. Everything in
//! the pool is untrusted here: indices and lengths are bounded, chunks whose owner or sequence
//! cannot be placed are reported, and a chunk reused while it was being copied is dropped.
use super::{chunk_flags, chunk_state, slot_state, Pool, PoolError};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::*;

/// What a thread's slot says about it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotInfo {
    pub pid: u32,
    pub tid: u64,
    pub serial: u64,
    pub session: u64,
    pub exited: bool,
    pub records: u64,
    pub lost: u64,
    pub overwritten: u64,
    pub unrecorded: u64,
    pub closed_early: u64,
    pub start_tsc: u64,
    pub end_tsc: u64,
}

impl SlotInfo {
    /// Records the trace should have had but has not: dropped ones, overwritten ones (ring
    /// mode) and two per call that was not recorded.
    pub fn missing_records(&self) -> u64 {
        self.lost
            .saturating_add(self.overwritten)
            .saturating_add(self.unrecorded.saturating_mul(2))
    }
}

/// Reads slot `i` if it is in use.
pub fn slot_info(pool: &Pool, i: u32) -> Option<SlotInfo> {
    let s = pool.slot(i);
    let state = s.state.load(Acquire);
    if state != slot_state::ACTIVE && state != slot_state::EXITED {
        return None;
    }
    Some(SlotInfo {
        pid: s.pid.load(Relaxed),
        tid: s.tid.load(Relaxed),
        serial: s.serial.load(Relaxed),
        session: s.session.load(Relaxed),
        exited: state == slot_state::EXITED,
        records: s.records.load(Relaxed),
        lost: s.lost.load(Relaxed),
        overwritten: s.overwritten.load(Relaxed),
        unrecorded: s.unrecorded.load(Relaxed),
        closed_early: s.closed_early.load(Relaxed),
        start_tsc: s.start_tsc.load(Relaxed),
        end_tsc: s.end_tsc.load(Relaxed),
    })
}

/// A chunk as found in a pass over the descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub index: u32,
    pub serial: u64,
    pub seq: u64,
    pub generation: u32,
    /// Published (FULL); otherwise still owned by a writer (live or dead).
    pub full: bool,
    /// Its thread ended after it.
    pub last: bool,
}

/// Every chunk that holds records (FULL or OWNED), grouped by owner serial, in sequence order.
pub fn chunks_by_thread(pool: &Pool) -> BTreeMap<u64, Vec<ChunkRef>> {
    let mut by: BTreeMap<u64, Vec<ChunkRef>> = BTreeMap::new();
    for i in 0..pool.chunk_count() {
        if let Some(c) = chunk_ref(pool, i) {
            by.entry(c.serial).or_default().push(c);
        }
    }
    for chunks in by.values_mut() {
        chunks.sort_by_key(|c| c.seq);
    }
    by
}

/// Chunk `i` if it holds records.
pub fn chunk_ref(pool: &Pool, i: u32) -> Option<ChunkRef> {
    let d = pool.desc(i);
    let state = d.state.load(Acquire);
    if state != chunk_state::FULL && state != chunk_state::OWNED {
        return None;
    }
    Some(ChunkRef {
        index: i,
        serial: d.serial.load(Relaxed),
        seq: d.seq.load(Relaxed),
        generation: d.generation.load(Relaxed),
        full: state == chunk_state::FULL,
        last: d.flags.load(Relaxed) & chunk_flags::LAST != 0,
    })
}

/// Appends chunk `c`'s records (raw words: time, packed word) to `out`. Returns how many, or
/// None if the chunk was reused while it was read (its records are then not the ones `c`
/// describes and are dropped).
pub fn read_chunk(
    pool: &Pool,
    c: &ChunkRef,
    out: &mut Vec<[u64; 2]>,
) -> Result<Option<usize>, PoolError> {
    let (data, count) = pool.readable(c.index)?;
    let start = out.len();
    out.reserve(count);
    for k in 0..count {
        // SAFETY: `readable` bounded `count` by the chunk; records before the published write
        // cursor are complete and not written again until the chunk is reused, which the
        // generation check below detects.
        out.push(unsafe { core::ptr::read_volatile(data.add(k)) });
    }
    if pool.desc(c.index).generation.load(Acquire) != c.generation {
        out.truncate(start);
        return Ok(None);
    }
    Ok(Some(count))
}

/// What [`ThreadRecords::convert_in_place`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Converted {
    /// Records converted (from the start).
    pub count: usize,
    /// Times of the first and last of them.
    pub times: Option<(u64, u64)>,
    /// What stopped it: the index of a word that is not a record.
    pub error: Option<(usize, crate::record::RecordError)>,
}

/// Turns one thread's raw records (TSC times, in chunk order) into the records of its `TID.dat`:
/// nanosecond times, ring-mode repair (no exit without its entry), and LOST records for what
/// the thread could not keep, where it is known.
pub struct ThreadRecords {
    to_ns: crate::clock::TscToNs,
    repair: Option<crate::record::ThreadRepair>,
    /// Ring mode: records overwritten before the first kept one, announced before it.
    overwritten: u64,
    /// Records the backend announced in LOST records of its own.
    announced: u64,
    last: Option<crate::record::Record>,
    first_ns: Option<u64>,
}

impl ThreadRecords {
    /// `ring`: the pool overwrote this thread's oldest records (`overwritten` of them).
    pub fn new(to_ns: crate::clock::TscToNs, ring: bool, overwritten: u64) -> ThreadRecords {
        ThreadRecords {
            to_ns,
            repair: ring.then(crate::record::ThreadRepair::default),
            overwritten,
            announced: 0,
            last: None,
            first_ns: None,
        }
    }

    /// Converts `raw` and appends the records to `out`. Stops at the first word that is not a
    /// record the backend writes (the pool was overwritten) and says which and why.
    pub fn push(
        &mut self,
        raw: &[[u64; 2]],
        out: &mut Vec<crate::record::Record>,
    ) -> Result<(), (usize, String)> {
        use crate::record::{Record, RecordType};
        for (k, &[time, word]) in raw.iter().enumerate() {
            let mut r = Record::from_words(time, word).map_err(|e| (k, e.to_string()))?;
            if r.more {
                return Err((
                    k,
                    "a record with the `more` bit set (the backend writes none)".into(),
                ));
            }
            r.time = self.to_ns.convert(r.time);
            if let Some(prev) = self.last {
                r.time = r.time.max(prev.time);
            }
            if let Some(repair) = &mut self.repair {
                if !repair.accept(&mut r) {
                    continue;
                }
            }
            if self.first_ns.is_none() {
                self.first_ns = Some(r.time);
                if self.overwritten > 0 {
                    out.push(Record::lost(r.time, r.depth, self.overwritten));
                }
            }
            if r.kind == RecordType::Lost {
                self.announced = self.announced.saturating_add(r.addr);
            }
            self.last = Some(r);
            out.push(r);
        }
        Ok(())
    }

    /// The fast path of [`ThreadRecords::push`] for a trace without repair (not a ring): the
    /// records are converted where they lie (to little-endian file records), so that they can
    /// be written out without a copy. Stops at the first word that is not a record. Returns how
    /// many were converted, the times of the first and last of them, and the error if one
    /// stopped it.
    pub fn convert_in_place(&mut self, raw: &mut [[u64; 2]]) -> Converted {
        use crate::record::{RecordError, RecordType, RECORD_MAGIC};
        assert!(
            self.repair.is_none(),
            "a ring's records are repaired, not converted in place"
        );
        let mut last = self.last.map_or(0, |r| r.time);
        let mut out = Converted::default();
        let mut last_word = 0;
        for (k, rec) in raw.iter_mut().enumerate() {
            let word = rec[1];
            let magic = ((word >> 3) & 7) as u8;
            if u64::from(magic) != RECORD_MAGIC {
                out.error = Some((k, RecordError::BadMagic(magic)));
                break;
            }
            if word & 3 == RecordType::Lost as u64 {
                self.announced = self.announced.saturating_add(word >> 16);
            }
            let t = self.to_ns.convert(rec[0]).max(last);
            last = t;
            out.times.get_or_insert((t, t)).1 = t;
            out.count = k + 1;
            last_word = word;
            rec[0] = t.to_le();
            rec[1] = word.to_le();
        }
        if let Some((first, last)) = out.times {
            self.first_ns.get_or_insert(first);
            self.last = crate::record::Record::from_words(last, last_word).ok();
        }
        out
    }

    /// Time of the first record kept.
    pub fn first_ns(&self) -> Option<u64> {
        self.first_ns
    }

    /// The end of the thread's records: what is still missing beyond what LOST records said
    /// (`missing`: all records the thread should have had but has not, overwritten ones
    /// included) becomes one LOST record after the last one, at `end_ns` if there was none.
    pub fn finish(&mut self, missing: u64, end_ns: u64, out: &mut Vec<crate::record::Record>) {
        let said = self.announced.saturating_add(if self.first_ns.is_some() {
            self.overwritten
        } else {
            0
        });
        let rest = missing.saturating_sub(said);
        if rest > 0 {
            let (time, depth) = self.last.map_or((end_ns, 0), |r| (r.time, r.depth));
            let r = crate::record::Record::lost(time, depth, rest);
            self.last = Some(r);
            self.announced = self.announced.saturating_add(rest);
            out.push(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ClockMap, ClockSource};
    use crate::record::{pack_word, RecordType};

    fn raw() -> Vec<[u64; 2]> {
        vec![
            [1000, pack_word(RecordType::Entry, 0, 0x400100)],
            [1500, pack_word(RecordType::Lost, 1, 7)],
            [1400, pack_word(RecordType::Entry, 1, 0x400200)],
            [2600, pack_word(RecordType::Exit, 1, 0x400200)],
            [3000, pack_word(RecordType::Exit, 0, 0x400100)],
        ]
    }

    #[test]
    fn converting_in_place_gives_what_push_gives() {
        let clock = ClockMap::new(2.5e9, 1000, 5_000, ClockSource::Host);
        let mut slow = ThreadRecords::new(clock.converter(), false, 0);
        let mut out = Vec::new();
        slow.push(&raw(), &mut out).unwrap();
        let mut fast = ThreadRecords::new(clock.converter(), false, 0);
        let mut records = raw();
        let done = fast.convert_in_place(&mut records);
        assert_eq!((done.count, done.error), (5, None));
        let bytes: Vec<u8> = out.iter().flat_map(|r| r.to_bytes()).collect();
        let in_place: Vec<u8> = records
            .iter()
            .flat_map(|[t, w]| [t.to_le_bytes(), w.to_le_bytes()].concat())
            .collect();
        assert_eq!(bytes, in_place);
        assert_eq!(done.times, Some((out[0].time, out[4].time)));
        // Times never go back (the backward 1400 is clamped), LOST counts are kept.
        assert!(out.windows(2).all(|w| w[0].time <= w[1].time));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        slow.finish(10, 0, &mut a);
        fast.finish(10, 0, &mut b);
        assert_eq!(a, b);
        assert_eq!(a[0].addr, 3);
    }

    #[test]
    fn converting_stops_at_a_word_that_is_not_a_record() {
        let clock = ClockMap::new(1e9, 0, 0, ClockSource::Host);
        let mut t = ThreadRecords::new(clock.converter(), false, 0);
        let mut records = raw();
        records[3][1] = 0;
        let done = t.convert_in_place(&mut records);
        assert_eq!(done.count, 3);
        assert_eq!(done.error.map(|(k, _)| k), Some(3));
        assert_eq!(t.first_ns(), Some(1000));
    }
}
