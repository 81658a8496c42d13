//! The consumer side of a pool while its producers run (`vftrace record` draining a program,
//! the host draining a guest): full chunks are copied into their
//! threads' `TID.dat` in sequence order and handed back; slots of ended threads are collected
//! and freed; messages (sessions, forks, libraries) are kept for task.txt. At the end, what is
//! left (chunks of threads still running, or of processes that died) is read as far as it is
//! complete.
//!
//! Everything read from the pool is untrusted: a chunk whose owner cannot be placed, or a
//! record that is not a record, ends that thread's trace with a message, never the recording.
//! A pool whose control words were overwritten (its header, free list or chunk states: see
//! [`Pool::check_control_words`]) is no longer read at all: the trace is cut there
//! ([`Drain::cut`]), with everything drained before kept. What the drain keeps is bounded
//! whatever the pool says: at most [`MAX_THREADS`] threads (about 300 bytes each) and
//! [`MAX_MESSAGES`] messages.
use super::{
    message_kind, slot_state, DlopenMessage, ForkMessage, HeaderMessage, Pool, PoolMode,
    SessionMessage,
};
use crate::clock::ClockMap;
use crate::dir::TraceDirWriter;
use crate::stream::OwnedHeader;
use std::collections::{BTreeMap, HashMap};

use super::read::{self as pool_read, ChunkRef, SlotInfo, ThreadRecords};
use crate::record::Record;

/// Most threads one drain follows over the whole recording (a program that starts and ends
/// threads all the time reaches it only after a quarter of a million); the chunks of later
/// threads are handed back unread, and counted.
pub const MAX_THREADS: usize = 1 << 18;
/// Most messages (sessions, forks, libraries) one drain keeps; later ones are dropped.
pub const MAX_MESSAGES: usize = 65_536;
const MAX_WARNINGS: usize = 32;

/// A process image's session (its `Session` message).
#[derive(Clone, Debug)]
pub struct Session {
    pub ticket: u64,
    pub pid: u32,
    pub ppid: u32,
    pub tsc: u64,
    pub sid: String,
    pub exe: String,
}

#[derive(Clone, Debug)]
pub struct Library {
    pub pid: u32,
    pub tid: u32,
    pub tsc: u64,
    pub base: u64,
    pub path: String,
}

/// One traced thread as the recorder knows it.
pub struct Thread {
    pub info: SlotInfo,
    slot: u32,
    next_seq: u64,
    records: ThreadRecords,
    /// Its LAST chunk was drained: the slot may be freed once it says EXITED.
    ended: bool,
    /// A problem that stopped its trace (bad data in the pool).
    pub cut: Option<String>,
    pub written: u64,
}

#[derive(Default, Debug, Clone, Copy)]
pub struct Totals {
    pub chunks: u64,
    pub records: u64,
    pub bytes: u64,
}

pub struct Drain {
    pool: Pool,
    clock: Option<ClockMap>,
    pub threads: BTreeMap<u64, Thread>,
    pub sessions: Vec<Session>,
    pub forks: Vec<ForkMessage>,
    pub libraries: Vec<Library>,
    /// What a kernel said it runs (its `STREAM_HEADER` message; the first one counts).
    pub kernel: Option<OwnedHeader>,
    pub totals: Totals,
    /// Records of threads beyond [`MAX_THREADS`], not kept.
    pub skipped_records: u64,
    /// Problems worth telling the user (each once).
    pub warnings: Vec<String>,
    /// Why the pool is no longer read (its control words were overwritten): the trace ends
    /// with what was drained before.
    pub cut: Option<String>,
    raw: Vec<[u64; 2]>,
    out: Vec<Record>,
}

impl Drain {
    pub fn new(pool: Pool) -> Drain {
        Drain {
            pool,
            clock: None,
            threads: BTreeMap::new(),
            sessions: Vec::new(),
            forks: Vec::new(),
            libraries: Vec::new(),
            kernel: None,
            totals: Totals::default(),
            skipped_records: 0,
            warnings: Vec::new(),
            cut: None,
            raw: Vec::new(),
            out: Vec::new(),
        }
    }

    /// From now on records can be converted to nanoseconds.
    pub fn set_clock(&mut self, clock: ClockMap) {
        self.clock = Some(clock);
    }

    pub fn clock(&self) -> Option<&ClockMap> {
        self.clock.as_ref()
    }

    /// One pass: messages, then (once the clock is known, and unless the pool is a ring, which
    /// is read only at the end) every full chunk that is next in its thread's sequence.
    /// `last`: the program is gone; chunks still owned are read as far as they got. Returns
    /// how many chunks were drained. Once the trace is cut, a pass does nothing (not even the
    /// heartbeat: producers that wait for chunks stop waiting).
    pub fn pass(&mut self, writer: &mut TraceDirWriter, last: bool) -> std::io::Result<u64> {
        if self.cut.is_some() {
            return Ok(0);
        }
        if let Err(e) = self.pool.check_control_words() {
            self.cut_trace(e.to_string());
            return Ok(0);
        }
        self.pool
            .header()
            .consumer_heartbeat
            .0
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.take_messages();
        if self.clock.is_none() || (self.pool.mode() == PoolMode::Ring && !last) {
            return Ok(0);
        }
        self.adopt_chunkless(last);
        let mut by_thread: BTreeMap<u64, Vec<ChunkRef>> = BTreeMap::new();
        for i in 0..self.pool.chunk_count() {
            match pool_read::chunk_ref(&self.pool, i) {
                Some(c) if c.full || last => by_thread.entry(c.serial).or_default().push(c),
                _ => {}
            }
        }
        let mut drained = 0;
        for (serial, mut chunks) in by_thread {
            chunks.sort_by_key(|c| c.seq);
            drained += self.drain_thread(writer, serial, &chunks, last)?;
            if self.cut.is_some() {
                break;
            }
        }
        self.collect_ended();
        Ok(drained)
    }

    /// Stops reading the pool for good: `why` names what was overwritten.
    fn cut_trace(&mut self, why: String) {
        let records = self.totals.records;
        let w =
            format!("{why}; the trace is cut there ({records} records drained before are kept)");
        // Said once: no pass runs after this one.
        self.warnings.push(w.clone());
        self.cut = Some(w);
    }

    fn drain_thread(
        &mut self,
        writer: &mut TraceDirWriter,
        serial: u64,
        chunks: &[ChunkRef],
        last: bool,
    ) -> std::io::Result<u64> {
        let ring = self.pool.mode() == PoolMode::Ring;
        if !self.threads.contains_key(&serial) {
            if self.threads.len() >= MAX_THREADS {
                let records: u64 = chunks
                    .iter()
                    .filter_map(|c| self.pool.readable(c.index).ok())
                    .map(|(_, n)| n as u64)
                    .sum();
                self.skipped_records += records;
                self.warn(format!(
                    "more than {MAX_THREADS} threads: the records of later ones are not kept (counted in the summary)"
                ));
                for c in chunks.iter().filter(|c| c.full) {
                    let _ = self.pool.push_free(c.index);
                }
                return Ok(0);
            }
            let Some(slot) = chunks.first().map(|c| {
                self.pool
                    .desc(c.index)
                    .slot
                    .load(std::sync::atomic::Ordering::Relaxed)
            }) else {
                return Ok(0);
            };
            let info = (slot < self.pool.slot_count())
                .then(|| pool_read::slot_info(&self.pool, slot))
                .flatten()
                .filter(|i| i.serial == serial);
            let Some(info) = info else {
                self.warn(format!(
                    "chunks of an unknown thread (serial {serial}) were skipped: the pool's thread table was overwritten"
                ));
                for c in chunks.iter().filter(|c| c.full) {
                    let _ = self.pool.push_free(c.index);
                }
                return Ok(0);
            };
            let clock = self.clock.as_ref().expect("pass() checked");
            self.threads.insert(
                serial,
                Thread {
                    info,
                    slot,
                    next_seq: 0,
                    records: ThreadRecords::new(
                        clock.converter(),
                        ring,
                        if ring { info.overwritten } else { 0 },
                    ),
                    ended: false,
                    cut: None,
                    written: 0,
                },
            );
        }
        let mut drained = 0;
        for c in chunks {
            let t = self.threads.get_mut(&serial).expect("inserted above");
            // In order: a later chunk waits for the earlier one (unless the program is gone,
            // or a ring overwrote the earlier ones).
            if c.seq != t.next_seq && !(last || ring) {
                break;
            }
            if t.cut.is_none() {
                let written = if ring {
                    Self::copy_chunk(&self.pool, c, t, &mut self.raw, &mut self.out, writer)?
                } else {
                    Self::write_chunk_in_place(&self.pool, c, t, writer)?
                };
                t.written += written;
                self.totals.records += written;
                self.totals.bytes += 16 * written;
            }
            t.next_seq = c.seq.wrapping_add(1);
            t.ended |= c.last;
            self.totals.chunks += 1;
            drained += 1;
            if c.full && !ring {
                if let Err(e) = self.pool.push_free(c.index) {
                    self.cut_trace(format!("cannot hand chunk {} back: {e}", c.index));
                    break;
                }
            }
        }
        Ok(drained)
    }

    /// A chunk whose records need repair (a ring's): copied out, converted, written.
    fn copy_chunk(
        pool: &Pool,
        c: &ChunkRef,
        t: &mut Thread,
        raw: &mut Vec<[u64; 2]>,
        out: &mut Vec<Record>,
        writer: &mut TraceDirWriter,
    ) -> std::io::Result<u64> {
        raw.clear();
        out.clear();
        match pool_read::read_chunk(pool, c, raw) {
            Ok(Some(_)) => {
                if let Err((k, e)) = t.records.push(raw, out) {
                    t.cut = Some(format!("chunk {} record {k}: {e}", c.index));
                }
            }
            Ok(None) => {}
            Err(e) => t.cut = Some(format!("chunk {}: {e}", c.index)),
        }
        let n = out.len() as u64;
        writer.write_records(t.info.tid as u32, out.drain(..))?;
        Ok(n)
    }

    /// A published chunk, the consumer's until it is handed back: converted where it lies and
    /// written to the file straight from the pool.
    fn write_chunk_in_place(
        pool: &Pool,
        c: &ChunkRef,
        t: &mut Thread,
        writer: &mut TraceDirWriter,
    ) -> std::io::Result<u64> {
        let (data, count) = match pool.readable(c.index) {
            Ok(r) => r,
            Err(e) => {
                t.cut = Some(format!("chunk {}: {e}", c.index));
                return Ok(0);
            }
        };
        // SAFETY: `readable` bounded the records by the chunk; a published chunk (or one whose
        // writer is gone, at the end) is not written by anyone else until it is handed back.
        let records = unsafe { std::slice::from_raw_parts_mut(data as *mut [u64; 2], count) };
        let done = t.records.convert_in_place(records);
        if let Some((k, e)) = done.error {
            t.cut = Some(format!("chunk {} record {k}: {e}", c.index));
        }
        let (good, Some((first, last))) = (done.count, done.times) else {
            return Ok(0);
        };
        // SAFETY: `good` whole records, converted above.
        let bytes = unsafe { std::slice::from_raw_parts(records.as_ptr() as *const u8, good * 16) };
        writer.write_raw_records(t.info.tid as u32, bytes, first, last)?;
        Ok(good as u64)
    }

    /// Threads that never had a chunk (the pool was full all their life) are known only by
    /// their slot: once they end (or at the end, `last`) they are taken in like any other, so
    /// that what they lost is said and their slot is freed.
    fn adopt_chunkless(&mut self, last: bool) {
        let ring = self.pool.mode() == PoolMode::Ring;
        let clock = self.clock.expect("pass() checked");
        for i in 0..self.pool.slot_count() {
            let Some(info) = pool_read::slot_info(&self.pool, i) else {
                continue;
            };
            // After the state (Acquire): an ended thread's count of chunks is final.
            let chunks = self
                .pool
                .slot(i)
                .chunks
                .load(std::sync::atomic::Ordering::Relaxed);
            if chunks != 0 || !(info.exited || last) || self.threads.contains_key(&info.serial) {
                continue;
            }
            if self.threads.len() >= MAX_THREADS {
                self.skipped_records += info.missing_records();
                continue;
            }
            self.threads.insert(
                info.serial,
                Thread {
                    info,
                    slot: i,
                    next_seq: 0,
                    records: ThreadRecords::new(
                        clock.converter(),
                        ring,
                        if ring { info.overwritten } else { 0 },
                    ),
                    ended: true,
                    cut: None,
                    written: 0,
                },
            );
        }
    }

    /// Slots of threads that ended and whose last chunk is written: their final counters are
    /// kept and the slot is freed for new threads.
    fn collect_ended(&mut self) {
        for t in self.threads.values_mut() {
            // (A thread whose slot is freed already may come back "ended" from a hostile pool.)
            if t.ended && t.slot != u32::MAX {
                if let Some(info) =
                    pool_read::slot_info(&self.pool, t.slot).filter(|i| i.serial == t.info.serial)
                {
                    t.info = info;
                    if info.exited {
                        self.pool
                            .slot(t.slot)
                            .state
                            .store(slot_state::FREE, std::sync::atomic::Ordering::Release);
                        t.ended = false;
                        t.slot = u32::MAX;
                    }
                }
            }
        }
    }

    /// At the end: the final counters of every thread still holding its slot, and the LOST
    /// records for what each thread could not keep.
    pub fn finish_threads(&mut self, writer: &mut TraceDirWriter) -> std::io::Result<()> {
        let clock = self.clock.expect("finish after the clock");
        // A cut pool is not read again: its counters are what they were when last read.
        let trusted = self.cut.is_none();
        for t in self.threads.values_mut() {
            if trusted && t.slot != u32::MAX {
                if let Some(info) =
                    pool_read::slot_info(&self.pool, t.slot).filter(|i| i.serial == t.info.serial)
                {
                    t.info = info;
                }
            }
            let end = clock
                .converter()
                .convert(t.info.end_tsc.max(t.info.start_tsc));
            self.out.clear();
            t.records
                .finish(t.info.missing_records(), end, &mut self.out);
            t.written += self.out.len() as u64;
            writer.write_records(t.info.tid as u32, self.out.drain(..))?;
        }
        Ok(())
    }

    pub fn first_ns(&self, serial: u64) -> Option<u64> {
        self.threads.get(&serial).and_then(|t| t.records.first_ns())
    }

    fn take_messages(&mut self) {
        let mut sessions = Vec::new();
        let mut forks = Vec::new();
        let mut libs = Vec::new();
        let mut headers = Vec::new();
        let mut bad = Vec::new();
        self.pool.take_messages(|ticket, kind, payload| match kind {
            message_kind::SESSION => match SessionMessage::decode(payload) {
                Some(m) => sessions.push(Session {
                    ticket,
                    pid: m.pid,
                    ppid: m.ppid,
                    tsc: m.tsc,
                    sid: String::from_utf8_lossy(&m.sid).into_owned(),
                    exe: String::from_utf8_lossy(m.exe).into_owned(),
                }),
                None => bad.push("a session message too short".to_string()),
            },
            message_kind::FORK => match ForkMessage::decode(payload) {
                Some(m) => forks.push(m),
                None => bad.push("a fork message too short".to_string()),
            },
            message_kind::DLOPEN => match DlopenMessage::decode(payload) {
                Some(m) => libs.push(Library {
                    pid: m.pid,
                    tid: m.tid as u32,
                    tsc: m.tsc,
                    base: m.base,
                    path: String::from_utf8_lossy(m.path).into_owned(),
                }),
                None => bad.push("a library message too short".to_string()),
            },
            message_kind::STREAM_HEADER => match HeaderMessage::decode(payload) {
                Ok(h) => headers.push(h),
                Err(e) => bad.push(format!("a kernel's header message: {e}")),
            },
            other => bad.push(format!("a message of unknown kind {other}")),
        });
        if let Some(first) = bad.first() {
            self.warn(format!(
                "{} message(s) in the pool could not be read and were skipped ({first})",
                bad.len()
            ));
        }
        for h in headers {
            match &self.kernel {
                None => self.kernel = Some(h),
                Some(first) if *first == h => {}
                Some(_) => self.warn(
                    "the kernel posted a second, different header; the first one is kept".into(),
                ),
            }
        }
        let kept = self.sessions.len() + self.forks.len() + self.libraries.len();
        if kept + sessions.len() + forks.len() + libs.len() > MAX_MESSAGES {
            self.warn(format!(
                "more than {MAX_MESSAGES} process messages: later ones were dropped"
            ));
            return;
        }
        self.sessions.extend(sessions);
        self.forks.extend(forks);
        self.libraries.extend(libs);
    }

    /// Keeps a warning for the user, once, and at most [`MAX_WARNINGS`] of them (a hostile pool
    /// could make up new ones on every pass).
    fn warn(&mut self, w: String) {
        if self.warnings.len() < MAX_WARNINGS && !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    /// The threads by tid (a tid the kernel reused holds the threads in turn).
    pub fn threads_by_tid(&self) -> HashMap<u32, Vec<&Thread>> {
        let mut by: HashMap<u32, Vec<&Thread>> = HashMap::new();
        for t in self.threads.values() {
            by.entry(t.info.tid as u32).or_default().push(t);
        }
        by
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl Thread {
    pub fn first_ns(&self) -> Option<u64> {
        self.records.first_ns()
    }
}
