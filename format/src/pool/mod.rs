//! The trace pool: one block of memory that traced threads fill with records, chunk by chunk,
//! and that a consumer drains while they run. `no_std`, no allocation, no system calls: the
//! same pool lives in a program's own heap (in-process tracing), in shared memory that
//! `vftrace record` maps, or in a guest's RAM that the host reads.
//!
//! ```text
//! +--------------+ offset 0
//! | PoolHeader   | magic, geometry, control words (each on its own cache line)
//! +--------------+ descs_offset
//! | ChunkDesc[n] | one per chunk: state, owner thread, sequence, write cursor
//! +--------------+ slots_offset
//! | ThreadSlot[] | one per live (or, without a consumer, ever seen) thread: ids and counters
//! +--------------+ messages_offset
//! | MessageCell[]| rare events: a process starts or execs, forks, loads a library
//! +--------------+ data_offset (page aligned)
//! | chunk data   | n * chunk_bytes of 16-byte uftrace records, raw TSC times
//! +--------------+
//! ```
//!
//! ## Chunk states and memory ordering
//!
//! ```text
//!   FREE --(producer pops the free list)--> OWNED --(producer: last record, then Release)--> FULL
//!    ^                                                                                      |
//!    +---------------(consumer: copies the records, then Release, pushes free list)---------+
//! ```
//! - A chunk has one writer at a time. Its owner writes records with plain stores and publishes
//!   each with a Release store of `write`, so a reader that loads `write` with Acquire sees whole
//!   records up to it (a program killed mid-record leaves only complete records behind).
//! - `state = FULL` is stored with Release after the last record; a consumer that loads FULL
//!   with Acquire owns the chunk's records and may copy them, then stores FREE (Release) and
//!   pushes the chunk on the free list (a Treiber stack whose head carries an ABA tag).
//! - In ring mode nobody drains while the program runs: a thread without a free chunk takes back
//!   its own oldest FULL chunk (CAS FULL -> OWNED, `generation` bumped), so the pool keeps the
//!   newest records. A reader that races a reuse sees `generation` change and drops the copy.
//! - Producers never wait for the consumer, except in `WAIT` mode when no chunk is free.
//!
//! The consumer treats everything here as hostile (a guest, or a program that scribbles over
//! its memory): it validates the header once ([`Pool::attach`]), keeps its own copy of the
//! geometry, bounds every index and length it reads, and bounds every retry loop.
use core::cell::UnsafeCell;
use core::mem::size_of;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

pub const POOL_MAGIC: [u8; 8] = *b"VFTPOOL\x01";
pub const POOL_VERSION: u32 = 1;
/// The header occupies the first page.
pub const HEADER_BYTES: usize = 4096;
pub const MIN_CHUNK_BYTES: u32 = 4096;
pub const MAX_CHUNK_BYTES: u32 = 16 << 20;
/// Bytes of a message's payload.
pub const MESSAGE_PAYLOAD: usize = 448;
/// Index values are stored +1 so that 0 means "none".
const NONE: u32 = 0;
/// Wait mode: waits for a free chunk without a consumer heartbeat before a producer gives up
/// and drops ([`Pool::pop_free_waiting`]).
pub const WAIT_IDLE_LIMIT: u32 = 20_000;

/// What producers do when no chunk is free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum PoolMode {
    /// Keep the oldest records; count the rest as lost.
    StopWhenFull = 0,
    /// Keep the newest records: a thread reuses its own oldest chunk.
    Ring = 1,
    /// Wait until the consumer frees a chunk (nothing is lost; the program is slowed down).
    Wait = 2,
}

impl PoolMode {
    pub const fn from_u32(v: u32) -> Option<PoolMode> {
        match v {
            0 => Some(PoolMode::StopWhenFull),
            1 => Some(PoolMode::Ring),
            2 => Some(PoolMode::Wait),
            _ => None,
        }
    }
}

/// Chunk states (`ChunkDesc::state`).
pub mod chunk_state {
    pub const FREE: u32 = 0;
    pub const OWNED: u32 = 1;
    pub const FULL: u32 = 2;
}

/// Thread slot states (`ThreadSlot::state`).
pub mod slot_state {
    pub const FREE: u32 = 0;
    pub const ACTIVE: u32 = 1;
    /// The thread ended (its last chunk is published); the consumer may collect and free it.
    pub const EXITED: u32 = 2;
}

/// `ChunkDesc::flags`.
pub mod chunk_flags {
    /// The owner thread ended after this chunk.
    pub const LAST: u32 = 1;
}

/// `PoolHeader::flags`.
pub mod pool_flags {
    /// A consumer drains FULL chunks while the program runs (`vftrace record`, a host draining
    /// a guest). Without one, thread slots are never recycled: they hold the final counters the
    /// in-process dump reads.
    pub const HAS_CONSUMER: u32 = 1;
}

/// A word on its own cache line, so that producers and the consumer do not share lines.
#[repr(C, align(64))]
pub struct Line<T>(pub T);

impl<T> core::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The first page of the pool.
#[repr(C)]
pub struct PoolHeader {
    pub magic: [u8; 8],
    pub version: u32,
    pub header_bytes: u32,
    pub total_bytes: u64,
    pub chunk_bytes: u32,
    pub chunk_count: u32,
    pub slot_count: u32,
    pub message_count: u32,
    pub descs_offset: u64,
    pub slots_offset: u64,
    pub messages_offset: u64,
    pub data_offset: u64,
    /// [`PoolMode`].
    pub mode: u32,
    /// [`pool_flags`].
    pub flags: u32,
    /// Non-zero while tracing is on. `mcount` reads it first; the consumer may flip it.
    pub enabled: Line<AtomicU32>,
    /// Free list head: `(tag << 32) | (index + 1)`.
    pub free_head: Line<AtomicU64>,
    /// Chunks on the free list (a hint: updated after each push and pop).
    pub free_count: AtomicU64,
    /// Bumped by the consumer on each pass over the pool; producers waiting for a chunk give up
    /// when it stops moving.
    pub consumer_heartbeat: Line<AtomicU64>,
    /// Serial numbers of threads (unique over the pool's life, from 1).
    pub next_serial: Line<AtomicU64>,
    /// Where the next slot search starts.
    pub slot_hint: Line<AtomicU32>,
    /// Message tickets (unique, in posting order).
    pub next_ticket: Line<AtomicU64>,
    /// Threads that could not be traced at all (no slot, no thread state).
    pub threads_untraced: Line<AtomicU64>,
    /// Records lost by threads that ended without a chunk to say so in.
    pub lost_unattributed: AtomicU64,
    /// Messages dropped because every cell was busy.
    pub messages_dropped: AtomicU64,
    /// Threads that are losing records right now because they have no chunk.
    pub chunkless_threads: AtomicU64,
    /// Wait mode: the consumer heartbeat + 1 at which a producer last gave up waiting (0:
    /// never). While the heartbeat stays there, producers do not wait again.
    pub wait_gave_up: AtomicU64,
}

const _: () = assert!(size_of::<PoolHeader>() <= HEADER_BYTES);

/// One chunk's bookkeeping. The first two words are the owner's hot path.
#[repr(C, align(64))]
pub struct ChunkDesc {
    /// Producer address of the next record (Release after each record).
    pub write: AtomicU64,
    /// Producer address just past the chunk's last record.
    pub end: AtomicU64,
    /// The time of the chunk's last record, set when it is published.
    pub last_time: AtomicU64,
    /// [`chunk_state`].
    pub state: AtomicU32,
    /// Bumped each time the chunk is (re)taken.
    pub generation: AtomicU32,
    /// Serial of the owner thread.
    pub serial: AtomicU64,
    /// The chunk's place in its thread's sequence (0, 1, ...).
    pub seq: AtomicU64,
    /// Owner's thread slot index.
    pub slot: AtomicU32,
    /// Free list link (index + 1).
    pub next_free: AtomicU32,
    /// The owner thread's next chunk (index + 1), for ring-mode reuse.
    pub next_in_thread: AtomicU32,
    /// [`chunk_flags`].
    pub flags: AtomicU32,
}

const _: () = assert!(size_of::<ChunkDesc>() == 64);

/// One traced thread: its identity and counters. Written by the owner only (plain loads and
/// stores, no read-modify-write), read by anyone.
#[repr(C, align(64))]
pub struct ThreadSlot {
    /// [`slot_state`].
    pub state: AtomicU32,
    pub pid: AtomicU32,
    pub tid: AtomicU64,
    pub serial: AtomicU64,
    /// The message ticket of the owner process's session (its `Session` message), 0 if none.
    pub session: AtomicU64,
    /// Chunks taken so far (the next chunk's `seq`).
    pub chunks: AtomicU64,
    /// Records written (including those overwritten since).
    pub records: AtomicU64,
    /// Records dropped (stop-when-full: no chunk).
    pub lost: AtomicU64,
    /// Records overwritten by newer ones (ring mode).
    pub overwritten: AtomicU64,
    /// Calls not recorded: shadow stack full, signal while the tracer ran, no thread state.
    pub unrecorded: AtomicU64,
    /// Calls whose return was not seen (longjmp, unwinding, a stack switch): their exit is
    /// recorded when the tracer noticed, so its time is an estimate.
    pub closed_early: AtomicU64,
    /// Ring mode: the thread's oldest and newest chunk (index + 1).
    pub oldest: AtomicU32,
    pub newest: AtomicU32,
    /// TSC at registration and when the thread ended (0 while it runs).
    pub start_tsc: AtomicU64,
    pub end_tsc: AtomicU64,
}

const _: () = assert!(size_of::<ThreadSlot>() == 128);

/// One message: `state` FREE -> WRITING (producer's CAS) -> READY (Release) -> FREE (consumer).
#[repr(C, align(64))]
pub struct MessageCell {
    pub state: AtomicU32,
    pub kind: AtomicU32,
    pub ticket: AtomicU64,
    pub len: AtomicU32,
    _pad: u32,
    payload: UnsafeCell<[u8; MESSAGE_PAYLOAD]>,
}

const _: () = assert!(size_of::<MessageCell>() == 512);

pub mod message_state {
    pub const FREE: u32 = 0;
    pub const WRITING: u32 = 1;
    pub const READY: u32 = 2;
}

/// How a pool is cut up. Computed from the creation parameters by the creator and, again, by
/// every consumer (which never trusts the offsets the header states).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub total_bytes: usize,
    pub chunk_bytes: usize,
    pub chunk_count: usize,
    pub slot_count: usize,
    pub message_count: usize,
    pub descs_offset: usize,
    pub slots_offset: usize,
    pub messages_offset: usize,
    pub data_offset: usize,
}

/// What to make of a pool of a given size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolParams {
    pub chunk_bytes: u32,
    /// Thread slots; 0 = one per 4 KiB of pool (at least 64).
    pub slots: u32,
    pub messages: u32,
    pub mode: PoolMode,
    pub flags: u32,
}

impl PoolParams {
    pub const fn new(chunk_bytes: u32, mode: PoolMode) -> PoolParams {
        PoolParams {
            chunk_bytes,
            slots: 0,
            messages: 64,
            mode,
            flags: 0,
        }
    }
}

/// Why a pool cannot be made or used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolError {
    /// Too small for the header, the tables and at least one chunk.
    TooSmall {
        needed: usize,
        have: usize,
    },
    BadChunkSize(u32),
    BadMagic,
    BadVersion(u32),
    /// A header field disagrees with the geometry the consumer computes itself.
    BadGeometry(&'static str),
    /// A control word or descriptor holds a value that cannot be (the memory was overwritten).
    Corrupt(&'static str),
}

impl core::fmt::Display for PoolError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PoolError::TooSmall { needed, have } => write!(
                f,
                "the trace pool is too small: {have} bytes, at least {needed} needed"
            ),
            PoolError::BadChunkSize(n) => write!(
                f,
                "chunk size {n} is not a power of two between {MIN_CHUNK_BYTES} and {MAX_CHUNK_BYTES}"
            ),
            PoolError::BadMagic => f.write_str("not a vftrace pool (bad magic)"),
            PoolError::BadVersion(v) => {
                write!(f, "pool version {v} (this vftrace reads {POOL_VERSION})")
            }
            PoolError::BadGeometry(what) => write!(f, "pool header is inconsistent: {what}"),
            PoolError::Corrupt(what) => write!(f, "pool memory was overwritten: {what}"),
        }
    }
}

const fn align_up(v: usize, a: usize) -> usize {
    (v + a - 1) & !(a - 1)
}

impl Layout {
    pub fn compute(total_bytes: usize, p: &PoolParams) -> Result<Layout, PoolError> {
        let chunk = p.chunk_bytes;
        if !chunk.is_power_of_two() || !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&chunk) {
            return Err(PoolError::BadChunkSize(chunk));
        }
        let chunk_bytes = chunk as usize;
        let slot_count = match p.slots {
            0 => (total_bytes / 4096).max(64),
            n => n as usize,
        };
        let message_count = p.messages as usize;
        // Descriptors are sized for the most chunks that could fit, then chunks for what is left.
        let tables = |chunks: usize| {
            let descs = HEADER_BYTES;
            let slots = align_up(descs + chunks * size_of::<ChunkDesc>(), 64);
            let messages = align_up(slots + slot_count * size_of::<ThreadSlot>(), 64);
            let data = align_up(messages + message_count * size_of::<MessageCell>(), 4096);
            (descs, slots, messages, data)
        };
        let needed = tables(1).3 + chunk_bytes;
        if total_bytes < needed {
            return Err(PoolError::TooSmall {
                needed,
                have: total_bytes,
            });
        }
        let mut chunk_count = (total_bytes - tables(0).3) / (chunk_bytes + size_of::<ChunkDesc>());
        while chunk_count > 1 && tables(chunk_count).3 + chunk_count * chunk_bytes > total_bytes {
            chunk_count -= 1;
        }
        let chunk_count = chunk_count.clamp(1, u32::MAX as usize - 1);
        let (descs_offset, slots_offset, messages_offset, data_offset) = tables(chunk_count);
        Ok(Layout {
            total_bytes,
            chunk_bytes,
            chunk_count,
            slot_count,
            message_count,
            descs_offset,
            slots_offset,
            messages_offset,
            data_offset,
        })
    }
}

/// A view of a pool in this address space. `Copy`: it is only a base pointer and the geometry.
#[derive(Clone, Copy, Debug)]
pub struct Pool {
    base: *mut u8,
    layout: Layout,
    /// Fixed at creation; kept here so that a pool whose header is overwritten later cannot
    /// change how this view treats it.
    mode: PoolMode,
    flags: u32,
}

// SAFETY: every field a `Pool` hands out is an atomic or raw memory whose use the protocol
// above orders; the view itself is immutable.
unsafe impl Send for Pool {}
// SAFETY: as above.
unsafe impl Sync for Pool {}

impl Pool {
    /// Lays out and initializes a pool in `len` bytes at `mem`: every chunk free, every slot and
    /// message cell free, tracing off.
    ///
    /// # Safety
    /// `mem` is valid for reads and writes of `len` bytes, aligned to 4096, and nobody else uses
    /// it until this returns.
    pub unsafe fn create(mem: *mut u8, len: usize, params: &PoolParams) -> Result<Pool, PoolError> {
        let layout = Layout::compute(len, params)?;
        // SAFETY: the caller gives us the memory; the tables lie before data_offset <= len.
        unsafe { core::ptr::write_bytes(mem, 0, layout.data_offset) };
        let pool = Pool {
            base: mem,
            layout,
            mode: params.mode,
            flags: params.flags,
        };
        // SAFETY: the header lies at offset 0 of memory we own; it has no references yet.
        let h = unsafe { &mut *(mem as *mut PoolHeader) };
        h.magic = POOL_MAGIC;
        h.version = POOL_VERSION;
        h.header_bytes = HEADER_BYTES as u32;
        h.total_bytes = len as u64;
        h.chunk_bytes = layout.chunk_bytes as u32;
        h.chunk_count = layout.chunk_count as u32;
        h.slot_count = layout.slot_count as u32;
        h.message_count = layout.message_count as u32;
        h.descs_offset = layout.descs_offset as u64;
        h.slots_offset = layout.slots_offset as u64;
        h.messages_offset = layout.messages_offset as u64;
        h.data_offset = layout.data_offset as u64;
        h.mode = params.mode as u32;
        h.flags = params.flags;
        h.next_serial.0.store(1, Relaxed);
        h.next_ticket.0.store(1, Relaxed);
        // Free list: 0 -> 1 -> ... -> n-1, so threads start at the beginning of the pool.
        for i in 0..layout.chunk_count {
            let next = if i + 1 < layout.chunk_count {
                i as u32 + 2
            } else {
                NONE
            };
            pool.desc(i as u32).next_free.store(next, Relaxed);
        }
        h.free_count.store(layout.chunk_count as u64, Relaxed);
        h.free_head.0.store(1, Release);
        Ok(pool)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn base(&self) -> *mut u8 {
        self.base
    }

    pub fn header(&self) -> &PoolHeader {
        // SAFETY: the header is at offset 0 of the pool (checked at create/attach); its
        // mutable fields are atomics.
        unsafe { &*(self.base as *const PoolHeader) }
    }

    /// The mode this view was made with (never re-read from shared memory).
    pub fn mode(&self) -> PoolMode {
        self.mode
    }

    pub fn has_consumer(&self) -> bool {
        self.flags & pool_flags::HAS_CONSUMER != 0
    }

    pub fn chunk_count(&self) -> u32 {
        self.layout.chunk_count as u32
    }

    pub fn slot_count(&self) -> u32 {
        self.layout.slot_count as u32
    }

    pub fn chunk_records(&self) -> usize {
        self.layout.chunk_bytes / 16
    }

    /// Descriptor `i`. Panics if `i` is out of range (callers bound indices from shared memory
    /// themselves, see [`Pool::checked_desc`]).
    pub fn desc(&self, i: u32) -> &ChunkDesc {
        assert!((i as usize) < self.layout.chunk_count);
        // SAFETY: in range; descriptors are atomics.
        unsafe {
            &*(self
                .base
                .add(self.layout.descs_offset + i as usize * size_of::<ChunkDesc>())
                as *const ChunkDesc)
        }
    }

    pub fn checked_desc(&self, i: u32) -> Result<&ChunkDesc, PoolError> {
        if (i as usize) < self.layout.chunk_count {
            Ok(self.desc(i))
        } else {
            Err(PoolError::Corrupt("chunk index out of range"))
        }
    }

    pub fn slot(&self, i: u32) -> &ThreadSlot {
        assert!((i as usize) < self.layout.slot_count);
        // SAFETY: in range; slots are atomics.
        unsafe {
            &*(self
                .base
                .add(self.layout.slots_offset + i as usize * size_of::<ThreadSlot>())
                as *const ThreadSlot)
        }
    }

    fn message(&self, i: usize) -> &MessageCell {
        assert!(i < self.layout.message_count);
        // SAFETY: in range; cells are atomics plus a payload guarded by `state`.
        unsafe {
            &*(self
                .base
                .add(self.layout.messages_offset + i * size_of::<MessageCell>())
                as *const MessageCell)
        }
    }

    /// Where chunk `i`'s records are in this address space.
    pub fn chunk_data(&self, i: u32) -> *mut [u64; 2] {
        assert!((i as usize) < self.layout.chunk_count);
        // SAFETY: in range of the data area.
        let p = unsafe {
            self.base
                .add(self.layout.data_offset + i as usize * self.layout.chunk_bytes)
        };
        p as *mut [u64; 2]
    }

    // ---- producers -------------------------------------------------------------------------

    /// Takes a free chunk off the free list.
    pub fn pop_free(&self) -> Option<u32> {
        let head = &self.header().free_head;
        let mut h = head.load(Acquire);
        loop {
            let index = (h & 0xffff_ffff) as u32;
            if index == NONE || index as usize > self.layout.chunk_count {
                return None;
            }
            let next = self.desc(index - 1).next_free.load(Relaxed);
            let tagged = ((h >> 32).wrapping_add(1) << 32) | u64::from(next);
            match head.compare_exchange_weak(h, tagged, Acquire, Acquire) {
                Ok(_) => {
                    self.header().free_count.fetch_sub(1, Relaxed);
                    return Some(index - 1);
                }
                Err(now) => h = now,
            }
        }
    }

    /// About how many chunks are free (a push and a pop racing may leave it off by a few).
    pub fn free_chunks_hint(&self) -> u64 {
        (self.header().free_count.load(Relaxed) as i64).max(0) as u64
    }

    /// Whether the free list looks non-empty (a cheap hint for threads waiting for a chunk).
    pub fn has_free(&self) -> bool {
        self.header().free_head.load(Relaxed) & 0xffff_ffff != 0
    }

    /// Wait mode: a free chunk, waiting (`wait`, or a spin) while the consumer shows signs of
    /// life. Gives up after [`WAIT_IDLE_LIMIT`] waits without a heartbeat; from then on,
    /// producers do not wait again until the heartbeat moves, so a consumer that is gone costs
    /// one timeout, not one per record.
    pub fn pop_free_waiting(&self, wait: Option<extern "C" fn()>) -> Option<u32> {
        let h = self.header();
        let mut beat = h.consumer_heartbeat.load(Relaxed);
        if h.wait_gave_up.load(Relaxed) == beat.wrapping_add(1) {
            return self.pop_free();
        }
        let mut idle = 0u32;
        loop {
            if let Some(i) = self.pop_free() {
                return Some(i);
            }
            match wait {
                Some(wait) => wait(),
                None => core::hint::spin_loop(),
            }
            let now = h.consumer_heartbeat.load(Relaxed);
            if now != beat {
                (beat, idle) = (now, 0);
            } else {
                idle += 1;
                if idle > WAIT_IDLE_LIMIT {
                    h.wait_gave_up.store(beat.wrapping_add(1), Relaxed);
                    return None;
                }
            }
        }
    }

    /// Claims a free thread slot for a new thread. Returns its index and serial number.
    pub fn claim_slot(&self) -> Option<(u32, u64)> {
        let n = self.slot_count();
        let start = self.header().slot_hint.load(Relaxed) % n;
        for k in 0..n {
            let i = (start + k) % n;
            let slot = self.slot(i);
            if slot.state.load(Relaxed) == slot_state::FREE
                && slot
                    .state
                    .compare_exchange(slot_state::FREE, slot_state::ACTIVE, Acquire, Relaxed)
                    .is_ok()
            {
                self.header().slot_hint.store(i + 1, Relaxed);
                let serial = self.header().next_serial.fetch_add(1, Relaxed);
                return Some((i, serial));
            }
        }
        None
    }

    /// Posts a message. Never waits: if no cell is free, the message is dropped and counted.
    /// Returns its ticket (0 if dropped).
    pub fn post_message(&self, kind: u32, payload: &[u8]) -> u64 {
        let n = self.layout.message_count;
        let len = payload.len().min(MESSAGE_PAYLOAD);
        if n == 0 {
            self.header().messages_dropped.fetch_add(1, Relaxed);
            return 0;
        }
        let ticket = self.header().next_ticket.fetch_add(1, Relaxed);
        for k in 0..n {
            let cell = self.message((ticket as usize + k) % n);
            if cell
                .state
                .compare_exchange(
                    message_state::FREE,
                    message_state::WRITING,
                    Acquire,
                    Relaxed,
                )
                .is_ok()
            {
                // SAFETY: WRITING gives this producer the payload until READY is stored.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        payload.as_ptr(),
                        cell.payload.get() as *mut u8,
                        len,
                    )
                };
                cell.kind.store(kind, Relaxed);
                cell.len.store(len as u32, Relaxed);
                cell.ticket.store(ticket, Relaxed);
                cell.state.store(message_state::READY, Release);
                return ticket;
            }
        }
        self.header().messages_dropped.fetch_add(1, Relaxed);
        0
    }
}

mod consumer;
mod messages;
pub use messages::*;
#[cfg(feature = "std")]
pub mod drain;
#[cfg(feature = "std")]
pub mod read;

#[cfg(all(test, feature = "std"))]
mod tests;
