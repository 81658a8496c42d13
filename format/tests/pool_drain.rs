//! The consumer of a pool (`pool::drain::Drain`) against producers that follow the protocol and
//! against memory that a hostile producer scribbles over: every record of a well-behaved
//! thread arrives once, in order; a pool whose control words are overwritten is cut with a
//! message naming them; random damage never panics, never loops and never grows what the drain
//! keeps beyond its bounds.

mod common;

use std::sync::atomic::Ordering::*;

use common::TempDir;
use vftrace_format::clock::{ClockMap, ClockSource};
use vftrace_format::dir::{data_file_name, TraceDirWriter};
use vftrace_format::pool::drain::{Drain, MAX_THREADS};
use vftrace_format::pool::{
    chunk_state, message_kind, pool_flags, slot_state, HeaderMessage, Pool, PoolHeader, PoolMode,
    PoolParams, MESSAGE_PAYLOAD,
};
use vftrace_format::record::{pack_word, Record, RecordType};
use vftrace_format::stream::{Header, TscHzSource};

/// Page-aligned memory for a pool.
struct Mem(Vec<u8>, usize);

impl Mem {
    fn new(len: usize) -> Mem {
        let v = vec![0u8; len + 4096];
        let off = (4096 - v.as_ptr() as usize % 4096) % 4096;
        Mem(v, off)
    }
    fn ptr(&mut self) -> *mut u8 {
        // SAFETY: off + len fits in the vector.
        unsafe { self.0.as_mut_ptr().add(self.1) }
    }
}

const POOL_LEN: usize = 1 << 20;
const TID: u64 = 7;

fn drained_pool(mem: &mut Mem, mode: PoolMode) -> Pool {
    let params = PoolParams {
        flags: pool_flags::HAS_CONSUMER,
        ..PoolParams::new(4096, mode)
    };
    // SAFETY: fresh, aligned memory of POOL_LEN bytes, used by this test only.
    unsafe { Pool::create(mem.ptr(), POOL_LEN, &params) }.unwrap()
}

/// One thread writing records the way the backend does (chunk taken from the free list, each
/// record published with Release, the chunk published FULL when it is full), minus the call
/// tracking: it alternates entries and exits of one function.
struct Producer {
    pool: Pool,
    slot: u32,
    serial: u64,
    chunk: Option<(u32, u64, u64)>,
    time: u64,
    written: u64,
    lost: u64,
}

impl Producer {
    fn new(pool: Pool) -> Producer {
        Producer::with_tid(pool, TID)
    }

    fn with_tid(pool: Pool, tid: u64) -> Producer {
        let (slot, serial) = pool.claim_slot().unwrap();
        let s = pool.slot(slot);
        s.pid.store(1, Relaxed);
        s.tid.store(tid, Relaxed);
        s.serial.store(serial, Relaxed);
        Producer {
            pool,
            slot,
            serial,
            chunk: None,
            time: 1000,
            written: 0,
            lost: 0,
        }
    }

    /// Writes `n` records (entry/exit pairs); those without room are lost (counted). It keeps
    /// its own cursor, as the backend does, so that a scribbled descriptor cannot send its
    /// stores elsewhere.
    fn write(&mut self, n: u64) {
        for _ in 0..n {
            let kind = if self.written.is_multiple_of(2) {
                RecordType::Entry
            } else {
                RecordType::Exit
            };
            if !self.room() {
                self.lost += 1;
                self.pool.slot(self.slot).lost.store(self.lost, Relaxed);
                continue;
            }
            let (i, start, k) = self.chunk.as_mut().unwrap();
            self.time += 10;
            // SAFETY: k < 256 records: inside the chunk this producer owns.
            unsafe {
                self.pool
                    .chunk_data(*i)
                    .add(*k as usize)
                    .write([self.time, pack_word(kind, 0, 0x1000)])
            };
            *k += 1;
            self.pool.desc(*i).write.store(*start + *k * 16, Release);
            self.written += 1;
        }
    }

    fn room(&mut self) -> bool {
        if let Some((i, _, k)) = self.chunk {
            if k < 256 {
                return true;
            }
            self.pool.desc(i).state.store(chunk_state::FULL, Release);
            self.chunk = None;
        }
        let Some(i) = self.pool.pop_free() else {
            return false;
        };
        let s = self.pool.slot(self.slot);
        let seq = s.chunks.load(Relaxed);
        s.chunks.store(seq.wrapping_add(1), Relaxed);
        let d = self.pool.desc(i);
        // Producer addresses: anything; only their difference counts.
        let start = 0x4000_0000 + u64::from(i) * 4096;
        d.generation.fetch_add(1, Relaxed);
        d.serial.store(self.serial, Relaxed);
        d.seq.store(seq, Relaxed);
        d.slot.store(self.slot, Relaxed);
        d.flags.store(0, Relaxed);
        d.end.store(start + 4096, Relaxed);
        d.write.store(start, Release);
        d.state.store(chunk_state::OWNED, Release);
        self.chunk = Some((i, start, 0));
        true
    }
}

fn writer(dir: &TempDir) -> TraceDirWriter {
    TraceDirWriter::create(&dir.path().join("trace")).unwrap()
}

fn drain(pool: Pool) -> Drain {
    let mut d = Drain::new(pool);
    d.set_clock(ClockMap::new(1e9, 0, 0, ClockSource::Guest));
    d
}

/// The records in TID.dat, as written.
fn dat_records(dir: &TempDir) -> Vec<Record> {
    let bytes = std::fs::read(dir.path().join("trace").join(data_file_name(TID as u32))).unwrap();
    bytes
        .chunks_exact(16)
        .map(|c| Record::from_bytes(c.try_into().unwrap()).unwrap())
        .collect()
}

#[test]
fn every_record_arrives_once_in_order_and_chunks_come_back() {
    let mut mem = Mem::new(POOL_LEN);
    let pool = drained_pool(&mut mem, PoolMode::StopWhenFull);
    let chunks = pool.chunk_count() as u64;
    let dir = TempDir::new("drain-all");
    let mut w = writer(&dir);
    let mut d = drain(pool);
    let mut p = Producer::new(pool);
    // Ten pools' worth in rounds of half a pool: only a drain that hands chunks back keeps it.
    for _ in 0..20 {
        p.write(chunks * 256 / 2);
        d.pass(&mut w, false).unwrap();
    }
    d.pass(&mut w, true).unwrap();
    d.finish_threads(&mut w).unwrap();
    drop(w);
    assert_eq!(p.lost, 0);
    assert!(d.cut.is_none() && d.warnings.is_empty(), "{:?}", d.warnings);
    let got = dat_records(&dir);
    assert_eq!(got.len() as u64, p.written);
    assert!(
        got.windows(2).all(|r| r[0].time < r[1].time),
        "records out of order"
    );
    assert!(got.len() as u64 > 10 * chunks * 256 - 256);
    // Everything but the chunk still being written is free again.
    assert_eq!(pool.free_chunks_hint(), chunks - 1);
}

#[test]
fn records_without_room_are_lost_and_announced() {
    let mut mem = Mem::new(POOL_LEN);
    let pool = drained_pool(&mut mem, PoolMode::StopWhenFull);
    let chunks = pool.chunk_count() as u64;
    let dir = TempDir::new("drain-lost");
    let mut w = writer(&dir);
    let mut d = drain(pool);
    let mut p = Producer::new(pool);
    p.write(chunks * 256 + 1000);
    d.pass(&mut w, true).unwrap();
    d.finish_threads(&mut w).unwrap();
    drop(w);
    assert_eq!(p.lost, 1000);
    let got = dat_records(&dir);
    let lost: u64 = got
        .iter()
        .filter(|r| r.kind == RecordType::Lost)
        .map(|r| r.addr)
        .sum();
    let kept = got.iter().filter(|r| r.kind != RecordType::Lost).count() as u64;
    assert_eq!((kept, lost), (p.written, p.lost));
}

/// A thread that lives and ends while the pool is full never has a chunk: the drain knows it
/// only from its slot, and still says what it lost and frees its slot.
#[test]
fn a_thread_that_never_had_a_chunk_is_still_accounted_for() {
    let mut mem = Mem::new(POOL_LEN);
    let pool = drained_pool(&mut mem, PoolMode::StopWhenFull);
    let chunks = pool.chunk_count() as u64;
    let dir = TempDir::new("drain-chunkless");
    let mut w = writer(&dir);
    let mut d = drain(pool);
    let mut filler = Producer::new(pool);
    filler.write(chunks * 256);
    let mut short = Producer::with_tid(pool, TID + 1);
    short.write(6);
    assert_eq!(short.lost, 6);
    pool.slot(short.slot)
        .state
        .store(slot_state::EXITED, Release);
    d.pass(&mut w, false).unwrap();
    assert_eq!(
        pool.slot(short.slot).state.load(Acquire),
        slot_state::FREE,
        "its slot is freed"
    );
    d.pass(&mut w, true).unwrap();
    d.finish_threads(&mut w).unwrap();
    drop(w);
    let bytes = std::fs::read(
        dir.path()
            .join("trace")
            .join(data_file_name(TID as u32 + 1)),
    )
    .unwrap();
    let got: Vec<Record> = bytes
        .chunks_exact(16)
        .map(|c| Record::from_bytes(c.try_into().unwrap()).unwrap())
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].kind, got[0].addr), (RecordType::Lost, 6));
}

#[test]
fn a_kernels_header_message_is_read_back() {
    let mut mem = Mem::new(POOL_LEN);
    let pool = drained_pool(&mut mem, PoolMode::Wait);
    let long_cmdline = vec![b'x'; 1000];
    let header = Header {
        start_tsc: 123,
        tsc_hz: 2_600_000_000,
        tsc_hz_source: TscHzSource::Cpuid15,
        load_address: 0x10_0000,
        load_end: 0x20_0000,
        pid: 1,
        session_id: 99,
        image_name: b"guest",
        cmdline: &long_cmdline,
    };
    let mut buf = [0u8; MESSAGE_PAYLOAD];
    let n = HeaderMessage::encode(&header, &mut buf);
    assert!(n > 0 && n <= MESSAGE_PAYLOAD);
    pool.post_message(message_kind::STREAM_HEADER, &buf[..n]);
    // A damaged one is reported and does not replace the first.
    buf[20] ^= 1;
    pool.post_message(message_kind::STREAM_HEADER, &buf[..n]);
    let dir = TempDir::new("drain-header");
    let mut w = writer(&dir);
    let mut d = Drain::new(pool);
    d.pass(&mut w, false).unwrap();
    let got = d.kernel.as_ref().expect("the header message");
    assert_eq!(
        (got.start_tsc, got.tsc_hz, got.load_address, got.session_id),
        (123, 2_600_000_000, 0x10_0000, 99)
    );
    assert_eq!(got.image_name, b"guest");
    assert!(
        got.cmdline.len() > 300 && long_cmdline.starts_with(&got.cmdline),
        "cut to fit, not garbled"
    );
    assert!(
        d.warnings.iter().any(|w| w.contains("checksum")),
        "{:?}",
        d.warnings
    );
}

/// Overwriting the header's geometry, the free list head or a chunk's state cuts the trace:
/// what was drained stays, the pool is not read or written again, the heartbeat stops.
#[test]
fn overwritten_control_words_cut_the_trace() {
    type Scribble = fn(&Pool);
    let scribbles: [(&str, Scribble); 4] = [
        ("the header's chunk count", |p| {
            // SAFETY: the test's own pool memory; a plain store, as a scribbler would do.
            unsafe { (*(p.base() as *mut PoolHeader)).chunk_count = 5 }
        }),
        ("the header's magic", |p| {
            // SAFETY: as above.
            unsafe { (*(p.base() as *mut PoolHeader)).magic[3] = b'X' }
        }),
        ("the free list head", |p| {
            p.header().free_head.0.store(0xdead_beef_dead_beef, Relaxed)
        }),
        ("a chunk descriptor's state", |p| {
            p.desc(3).state.store(77, Relaxed)
        }),
    ];
    for (what, scribble) in scribbles {
        let mut mem = Mem::new(POOL_LEN);
        let pool = drained_pool(&mut mem, PoolMode::Wait);
        let dir = TempDir::new("drain-cut");
        let mut w = writer(&dir);
        let mut d = drain(pool);
        let mut p = Producer::new(pool);
        p.write(3 * 256);
        d.pass(&mut w, false).unwrap();
        let drained = d.totals.records;
        assert_eq!(drained, 2 * 256);
        scribble(&pool);
        p.write(256);
        let beat = pool.header().consumer_heartbeat.0.load(Relaxed);
        assert_eq!(d.pass(&mut w, false).unwrap(), 0);
        assert_eq!(d.pass(&mut w, true).unwrap(), 0);
        assert_eq!(
            pool.header().consumer_heartbeat.0.load(Relaxed),
            beat,
            "{what}: heartbeat"
        );
        let cut = d.cut.clone().unwrap_or_else(|| panic!("{what}: not cut"));
        assert!(cut.contains(what) && cut.contains("512 records"), "{cut}");
        d.finish_threads(&mut w).unwrap();
        drop(w);
        assert_eq!(dat_records(&dir).len() as u64, drained, "{what}");
    }
}

/// A tiny deterministic generator (xorshift64*), so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Random words in the descriptors, thread slots and message cells (and now and then the
/// header) between passes: the drain never panics, every pass ends, and what it keeps stays
/// bounded.
#[test]
fn random_scribbles_never_panic_or_grow_without_bound() {
    for seed in 1..=60u64 {
        let mut mem = Mem::new(POOL_LEN);
        let pool = drained_pool(&mut mem, PoolMode::StopWhenFull);
        let l = *pool.layout();
        let dir = TempDir::new("drain-fuzz");
        let mut w = writer(&dir);
        let mut d = drain(pool);
        let mut p = Producer::new(pool);
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for round in 0..200 {
            p.write(rng.next() % 2048);
            for _ in 0..rng.next() % 8 {
                let (lo, hi) = if rng.next().is_multiple_of(512) {
                    (0, l.descs_offset)
                } else {
                    (l.descs_offset, l.data_offset)
                };
                let at = (lo + (rng.next() as usize % (hi - lo))) & !7;
                let mut value = match rng.next() % 4 {
                    0 => rng.next(),
                    1 => rng.next() % 4,
                    2 => rng.next() % (l.chunk_count as u64 + 2),
                    _ => u64::MAX,
                };
                // Mostly a state the protocol knows (an unknown one cuts at once), so that the
                // rest of the drain meets the damage too.
                let state_word =
                    at >= l.descs_offset && at < l.slots_offset && (at - l.descs_offset) % 64 == 24;
                if state_word && !rng.next().is_multiple_of(16) {
                    value = (value & !0xffff_ffff) | (value % 3);
                }
                // SAFETY: inside the pool's tables; an aligned store, as a scribbler would do.
                unsafe { (mem.ptr().add(at) as *mut u64).write_volatile(value) };
            }
            d.pass(&mut w, round == 199)
                .unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"));
        }
        d.finish_threads(&mut w).unwrap();
        assert!(d.threads.len() <= MAX_THREADS);
        assert!(
            d.warnings.len() <= 33,
            "seed {seed}: {} warnings",
            d.warnings.len()
        );
    }
}
