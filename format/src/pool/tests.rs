use super::*;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

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

fn pool(len: usize, chunk: u32, mode: PoolMode) -> (Mem, Pool) {
    let mut m = Mem::new(len);
    // SAFETY: fresh, aligned memory of `len` bytes.
    let p = unsafe { Pool::create(m.ptr(), len, &PoolParams::new(chunk, mode)) }.unwrap();
    (m, p)
}

#[test]
fn layout_fits_and_attach_agrees() {
    for len in [64 << 10, 1 << 20, (8 << 20) + 12345] {
        let (mut m, p) = pool(len, 4096, PoolMode::StopWhenFull);
        let l = p.layout();
        assert!(
            l.data_offset + l.chunk_count * l.chunk_bytes <= len,
            "{l:?}"
        );
        assert!(l.data_offset % 4096 == 0);
        // SAFETY: same memory.
        let q = unsafe { Pool::attach(m.ptr(), len) }.unwrap();
        assert_eq!(q.layout(), l);
    }
}

#[test]
fn attach_rejects_a_bad_header() {
    let (mut m, _) = pool(1 << 20, 4096, PoolMode::StopWhenFull);
    // SAFETY: the memory is ours; we damage the header on purpose.
    unsafe {
        let h = m.ptr() as *mut PoolHeader;
        (*h).data_offset += 4096;
        assert_eq!(
            Pool::attach(m.ptr(), 1 << 20).unwrap_err(),
            PoolError::BadGeometry("offsets or chunk count")
        );
        (*h).version = 9;
        assert_eq!(
            Pool::attach(m.ptr(), 1 << 20).unwrap_err(),
            PoolError::BadVersion(9)
        );
        (*h).magic[0] = 0;
        assert_eq!(
            Pool::attach(m.ptr(), 1 << 20).unwrap_err(),
            PoolError::BadMagic
        );
        assert!(matches!(
            Pool::attach(m.ptr(), 100),
            Err(PoolError::TooSmall { .. })
        ));
    }
}

#[test]
fn free_list_hands_out_every_chunk_once() {
    let (_m, p) = pool(1 << 20, 4096, PoolMode::StopWhenFull);
    let mut seen = std::collections::HashSet::new();
    while let Some(i) = p.pop_free() {
        assert!(seen.insert(i));
    }
    assert_eq!(seen.len(), p.chunk_count() as usize);
    for &i in &seen {
        p.push_free(i).unwrap();
    }
    assert_eq!(
        std::iter::from_fn(|| p.pop_free()).count(),
        p.chunk_count() as usize
    );
    assert!(p.push_free(p.chunk_count()).is_err());
}

/// Producers fill and publish chunks while a consumer drains them: every record arrives
/// exactly once, in order per thread.
#[test]
fn concurrent_hand_over_loses_nothing() {
    let len = 1 << 20;
    let (mut m, _p) = pool(len, 4096, PoolMode::Wait);
    let base = m.ptr() as usize;
    let done = Arc::new(AtomicBool::new(false));
    let per_thread = 200_000u64;
    let producers: Vec<_> = (0..3u64)
        .map(|t| {
            std::thread::spawn(move || {
                // SAFETY: the pool outlives the threads (joined below).
                let p = unsafe { Pool::attach(base as *mut u8, len) }.unwrap();
                let cap = p.chunk_records() as u64;
                let mut seq = 0;
                let mut n = 0;
                while n < per_thread {
                    let i = loop {
                        match p.pop_free() {
                            Some(i) => break i,
                            None => std::thread::yield_now(),
                        }
                    };
                    let d = p.desc(i);
                    let data = p.chunk_data(i);
                    let start = data as u64;
                    d.serial.store(t + 1, Relaxed);
                    d.seq.store(seq, Relaxed);
                    d.end.store(start + cap * 16, Relaxed);
                    d.write.store(start, Relaxed);
                    d.state.store(chunk_state::OWNED, Relaxed);
                    let mut k = 0;
                    while k < cap && n < per_thread {
                        // SAFETY: k < cap: inside the chunk this thread owns.
                        unsafe { data.add(k as usize).write([n, t]) };
                        d.write.store(start + (k + 1) * 16, Release);
                        k += 1;
                        n += 1;
                    }
                    d.state.store(chunk_state::FULL, Release);
                    seq += 1;
                }
            })
        })
        .collect();
    let consumer = {
        let done = done.clone();
        std::thread::spawn(move || {
            // SAFETY: as above.
            let p = unsafe { Pool::attach(base as *mut u8, len) }.unwrap();
            let mut next = [0u64; 3];
            let mut next_seq = [0u64; 3];
            loop {
                let finished = done.load(Acquire);
                let mut progress = false;
                for i in 0..p.chunk_count() {
                    let d = p.desc(i);
                    if d.state.load(Acquire) != chunk_state::FULL {
                        continue;
                    }
                    let t = d.serial.load(Relaxed) as usize - 1;
                    if d.seq.load(Relaxed) != next_seq[t] {
                        continue; // an earlier chunk of this thread is not drained yet
                    }
                    let (recs, count) = p.readable(i).unwrap();
                    for k in 0..count {
                        // SAFETY: FULL (Acquire): the records are the consumer's.
                        let [v, tt] = unsafe { recs.add(k).read() };
                        assert_eq!((v, tt), (next[t], t as u64));
                        next[t] += 1;
                    }
                    next_seq[t] += 1;
                    p.push_free(i).unwrap();
                    progress = true;
                }
                if finished && !progress && next.iter().all(|&n| n == per_thread) {
                    return next;
                }
                if !progress {
                    std::thread::yield_now();
                }
            }
        })
    };
    for t in producers {
        t.join().unwrap();
    }
    done.store(true, Release);
    assert_eq!(consumer.join().unwrap(), [per_thread; 3]);
}

#[test]
fn messages_arrive_in_ticket_order_and_drop_when_full() {
    let (_m, p) = pool(1 << 20, 4096, PoolMode::StopWhenFull);
    let mut buf = [0u8; MESSAGE_PAYLOAD];
    for k in 0..70u32 {
        let m = ForkMessage {
            pid: 100 + k,
            ppid: 1,
            tid: 7,
            tsc: k as u64,
        };
        let n = m.encode(&mut buf);
        p.post_message(message_kind::FORK, &buf[..n]);
    }
    assert_eq!(p.header().messages_dropped.load(Relaxed), 6);
    let mut got = Vec::new();
    p.take_messages(|ticket, kind, payload| {
        assert_eq!(kind, message_kind::FORK);
        got.push((ticket, ForkMessage::decode(payload).unwrap().pid));
    });
    assert_eq!(got.len(), 64);
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(got[0].1, 100);
}

#[test]
fn messages_decode_what_they_encode_and_reject_short_payloads() {
    let mut buf = [0u8; MESSAGE_PAYLOAD];
    let s = SessionMessage {
        pid: 5,
        ppid: 4,
        tsc: 99,
        sid: *b"0123456789abcdef",
        exe: b"/bin/true",
    };
    let n = s.encode(&mut buf);
    assert_eq!(SessionMessage::decode(&buf[..n]), Some(s));
    assert_eq!(SessionMessage::decode(&buf[..10]), None);
    let d = DlopenMessage {
        pid: 5,
        tid: 6,
        tsc: 7,
        base: 0x7f00_0000_0000,
        path: b"/lib/libx.so",
    };
    let n = d.encode(&mut buf);
    assert_eq!(DlopenMessage::decode(&buf[..n]), Some(d));
    assert_eq!(ForkMessage::decode(&buf[..3]), None);
}

#[test]
fn a_waiting_producer_gives_up_once_per_silent_consumer() {
    use core::sync::atomic::AtomicU32 as Counter;
    static WAITS: Counter = Counter::new(0);
    extern "C" fn wait() {
        WAITS.fetch_add(1, Relaxed);
    }
    let (_m, p) = pool(1 << 20, 4096, PoolMode::Wait);
    assert!(p.check_control_words().is_ok());
    while p.pop_free().is_some() {}
    assert_eq!(p.pop_free_waiting(Some(wait)), None);
    assert_eq!(WAITS.load(Relaxed), WAIT_IDLE_LIMIT + 1);
    // The consumer is still silent: no second wait.
    assert_eq!(p.pop_free_waiting(Some(wait)), None);
    assert_eq!(WAITS.load(Relaxed), WAIT_IDLE_LIMIT + 1);
    // It shows signs of life again and hands a chunk back: taken at once.
    p.header().consumer_heartbeat.fetch_add(1, Relaxed);
    p.push_free(0).unwrap();
    assert_eq!(p.pop_free_waiting(Some(wait)), Some(0));
    // Next time there is none, it waits again before giving up.
    assert_eq!(p.pop_free_waiting(Some(wait)), None);
    assert_eq!(WAITS.load(Relaxed), 2 * (WAIT_IDLE_LIMIT + 1));
}

#[test]
fn readable_bounds_the_cursor() {
    let (_m, p) = pool(1 << 20, 4096, PoolMode::StopWhenFull);
    let d = p.desc(0);
    d.end.store(0x10_0000 + 4096, Relaxed);
    d.write.store(0x10_0000 + 160, Relaxed);
    assert_eq!(p.readable(0).unwrap().1, 10);
    d.write.store(0x10_0000 + 4096 + 16, Relaxed);
    assert!(p.readable(0).is_err());
    d.write.store(0x10_0000 + 8, Relaxed);
    assert!(p.readable(0).is_err());
    assert!(p.readable(p.chunk_count()).is_err());
}
