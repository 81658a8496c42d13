//! A thread's records and chunks: writing a record into the current chunk, taking the next
//! chunk from the pool (free list, ring-mode reuse, or waiting for a consumer) and publishing
//! a full one. Only the owner thread writes its chunk and its slot's counters.
use crate::globals::Globals;
use crate::thread::{state_flags, ThreadState};
use core::sync::atomic::{AtomicU64, Ordering::*};
use vftrace_format::pool::{chunk_flags, chunk_state, ChunkDesc, Pool, PoolMode};
use vftrace_format::record::{pack_word, RecordType};

/// Owner-only counter increment: a load and a store, no locked instruction.
#[inline(always)]
pub fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Relaxed) + by, Relaxed);
}

/// Writes one record if there is room (taking a new chunk if needed). False: it was dropped
/// (and counted).
///
/// # Safety
/// `st` is the calling thread's registered state.
pub(crate) unsafe fn push_record(g: &Globals, st: &mut ThreadState, time: u64, word: u64) -> bool {
    // SAFETY: the chunk is this thread's (or null).
    if !unsafe { room(g, st) } {
        bump(&g.pool.slot(st.slot).lost, 1);
        st.pending_lost += 1;
        return false;
    }
    // What went missing since the last record is announced right before this one, in one LOST
    // record (uftrace shows it where it happened).
    if st.pending_lost > 0 {
        let lost = pack_word(
            RecordType::Lost,
            st.current_rdepth(g) as u16,
            st.pending_lost,
        );
        st.pending_lost = 0;
        // SAFETY: room() left space for one record.
        unsafe { write_record(st, time, lost) };
        // SAFETY: as above.
        if !unsafe { room(g, st) } {
            bump(&g.pool.slot(st.slot).lost, 1);
            st.pending_lost += 1;
            return false;
        }
    }
    // SAFETY: room() left a current chunk with space for one record.
    unsafe { write_record(st, time, word) };
    true
}

/// # Safety
/// The current chunk has room for one record.
#[inline(always)]
pub(crate) unsafe fn write_record(st: &mut ThreadState, time: u64, word: u64) {
    // SAFETY: the caller's contract.
    let d = unsafe { &*st.desc };
    let t = time.max(st.last_time);
    st.last_time = t;
    let w = d.write.load(Relaxed);
    // SAFETY: w < end: inside the chunk this thread owns.
    unsafe { (w as *mut [u64; 2]).write([t, word]) };
    d.write.store(w + 16, Release);
}

/// The second word of the thread's last record, if its current chunk holds one.
pub(crate) fn last_record_word(g: &Globals, st: &ThreadState) -> Option<u64> {
    if st.desc.is_null() {
        return None;
    }
    // SAFETY: the current chunk is this thread's.
    let d = unsafe { &*st.desc };
    let w = d.write.load(Relaxed);
    let start = d.end.load(Relaxed) - g.pool.layout().chunk_bytes as u64;
    // SAFETY: a record this thread wrote, inside its chunk.
    (w > start).then(|| unsafe { ((w - 8) as *const u64).read() })
}

/// Whether the current chunk has room for a record, taking a new one if not.
unsafe fn room(g: &Globals, st: &mut ThreadState) -> bool {
    if !st.desc.is_null() {
        // SAFETY: the current chunk is this thread's.
        let d = unsafe { &*st.desc };
        if d.write.load(Relaxed) != d.end.load(Relaxed) {
            return true;
        }
    }
    // SAFETY: forwarded.
    unsafe { next_chunk(g, st) }
}

/// Hands the current chunk over (if any) and starts a new one. False if none could be had:
/// the thread is chunkless until one is.
#[cold]
pub(crate) unsafe fn next_chunk(g: &Globals, st: &mut ThreadState) -> bool {
    if !st.desc.is_null() {
        // SAFETY: this thread's chunk.
        unsafe { publish(g, st, false) };
    }
    match take_chunk(g, st) {
        Some(i) => {
            if st.flags & state_flags::CHUNKLESS != 0 {
                st.flags &= !state_flags::CHUNKLESS;
                g.pool.header().chunkless_threads.fetch_sub(1, Relaxed);
            }
            start_chunk(g, st, i);
            true
        }
        None => {
            if st.flags & state_flags::CHUNKLESS == 0 {
                st.flags |= state_flags::CHUNKLESS;
                g.pool.header().chunkless_threads.fetch_add(1, Relaxed);
            }
            false
        }
    }
}

/// Publishes the current chunk: it is the consumer's from here on.
///
/// # Safety
/// `st.desc` is this thread's current chunk.
pub(crate) unsafe fn publish(g: &Globals, st: &mut ThreadState, last: bool) {
    // SAFETY: the caller's contract.
    let d = unsafe { &*st.desc };
    let bytes = g.pool.layout().chunk_bytes as u64;
    let records = (d.write.load(Relaxed) - (d.end.load(Relaxed) - bytes)) / 16;
    bump(&g.pool.slot(st.slot).records, records);
    if last {
        d.flags.store(chunk_flags::LAST, Relaxed);
    }
    d.last_time.store(st.last_time, Relaxed);
    d.state.store(chunk_state::FULL, Release);
    st.desc = core::ptr::null_mut();
}

fn take_chunk(g: &Globals, st: &ThreadState) -> Option<u32> {
    let pool = &g.pool;
    match pool.mode() {
        PoolMode::StopWhenFull => pool.pop_free(),
        PoolMode::Ring => {
            // A quarter of the pool stays for threads that start late: a thread that already
            // rotates through two chunks reuses its own oldest instead.
            let slot = pool.slot(st.slot);
            let reserve = slot.chunks.load(Relaxed) >= 2
                && pool.free_chunks_hint() < u64::from(pool.chunk_count()) / 4;
            if !reserve {
                if let Some(i) = pool.pop_free() {
                    return Some(i);
                }
            }
            reuse_oldest(pool, st)
        }
        // Waits as long as the consumer shows signs of life.
        PoolMode::Wait => pool.pop_free_waiting(g.platform.wait),
    }
}

/// Ring mode: takes back this thread's oldest published chunk.
fn reuse_oldest(pool: &Pool, st: &ThreadState) -> Option<u32> {
    let slot = pool.slot(st.slot);
    let oldest = slot.oldest.load(Relaxed).checked_sub(1)?;
    let d = pool.desc(oldest);
    d.state
        .compare_exchange(chunk_state::FULL, chunk_state::OWNED, Acquire, Relaxed)
        .ok()?;
    let bytes = pool.layout().chunk_bytes as u64;
    let held = (d.write.load(Relaxed) - (d.end.load(Relaxed) - bytes)) / 16;
    bump(&slot.overwritten, held);
    let next = d.next_in_thread.load(Relaxed);
    slot.oldest.store(next, Relaxed);
    if next == 0 {
        slot.newest.store(0, Relaxed);
    }
    Some(oldest)
}

fn start_chunk(g: &Globals, st: &mut ThreadState, i: u32) {
    let pool = &g.pool;
    let slot = pool.slot(st.slot);
    let d = pool.desc(i);
    let data = pool.chunk_data(i) as u64;
    d.generation
        .store(d.generation.load(Relaxed).wrapping_add(1), Relaxed);
    d.serial.store(st.serial, Relaxed);
    let seq = slot.chunks.load(Relaxed);
    d.seq.store(seq, Relaxed);
    slot.chunks.store(seq + 1, Relaxed);
    d.slot.store(st.slot, Relaxed);
    d.next_in_thread.store(0, Relaxed);
    d.flags.store(0, Relaxed);
    d.end
        .store(data + pool.layout().chunk_bytes as u64, Relaxed);
    d.write.store(data, Release);
    d.state.store(chunk_state::OWNED, Release);
    match slot.newest.load(Relaxed).checked_sub(1) {
        Some(prev) => pool.desc(prev).next_in_thread.store(i + 1, Relaxed),
        None => slot.oldest.store(i + 1, Relaxed),
    }
    slot.newest.store(i + 1, Relaxed);
    st.desc = d as *const ChunkDesc as *mut ChunkDesc;
    st.chunk = i;
}
