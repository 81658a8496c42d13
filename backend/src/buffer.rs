//! Per-thread event buffers carved lock-free from one pool the frontend hands over.
//!
//! The pool is cut into chunks. A thread takes chunks with one `fetch_add` on the pool cursor
//! each (thousands of events per atomic operation); between chunks it only writes its own
//! memory. In ring mode a thread that finds the pool empty reuses its own oldest chunk, so it
//! keeps its newest events; in stop-when-full mode it counts what it drops.
//!
//! Readers (the frontend's dump) see a thread's records through the chunk list and the
//! published write pointer. A chunk's sequence number changes when it is reused, so a reader
//! racing a reuse notices and drops that chunk instead of reporting torn records.
use core::mem::{align_of, size_of};
use core::ptr::{self, null_mut};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

/// What to do when a thread's buffer is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Mode {
    /// Keep the oldest events; count the rest as lost.
    StopWhenFull = 0,
    /// Keep the newest events, overwriting the oldest chunk of the same thread.
    Ring = 1,
}

impl Mode {
    pub fn from_u32(v: u32) -> Option<Mode> {
        match v {
            0 => Some(Mode::StopWhenFull),
            1 => Some(Mode::Ring),
            _ => None,
        }
    }
}

pub use vftrace_format::stats::ThreadStats;

type Slot = [u64; 2];

#[repr(C)]
struct Chunk {
    next: AtomicPtr<Chunk>,
    /// Bumped each time the chunk is reused (ring mode).
    seq: AtomicU64,
}

const CHUNK_HEADER: usize = size_of::<Chunk>();
const _: () = assert!(CHUNK_HEADER.is_multiple_of(16));

struct Pool {
    claimed: AtomicBool,
    /// Non-zero once the pool is set up (published last, with Release).
    base: AtomicUsize,
    len: AtomicUsize,
    cursor: AtomicUsize,
    chunk_bytes: AtomicUsize,
    mode: AtomicU32,
    thread_id: AtomicUsize,
    threads: AtomicPtr<ThreadBuf>,
    thread_count: AtomicUsize,
}

static POOL: Pool = Pool {
    claimed: AtomicBool::new(false),
    base: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    cursor: AtomicUsize::new(0),
    chunk_bytes: AtomicUsize::new(0),
    mode: AtomicU32::new(0),
    thread_id: AtomicUsize::new(0),
    threads: AtomicPtr::new(null_mut()),
    thread_count: AtomicUsize::new(0),
};

const ALIGN: usize = 64;
/// Smallest useful chunk: 255 records.
const MIN_CHUNK: usize = 4096;
const MAX_CHUNK: usize = 256 * 1024;

/// # Safety
/// See `vftrace_backend_init`.
pub unsafe fn init(
    pool: *mut u8,
    len: usize,
    mode: Mode,
    thread_id: Option<extern "C" fn() -> u64>,
) -> i32 {
    let start = (pool as usize).next_multiple_of(ALIGN);
    let len = len.saturating_sub(start - pool as usize) & !(ALIGN - 1);
    if pool.is_null() || len < MIN_CHUNK + size_of::<ThreadBuf>() {
        return crate::INIT_ERR_TOO_SMALL;
    }
    // Two racing inits: exactly one sets the pool up.
    if POOL.claimed.swap(true, AcqRel) {
        return crate::INIT_ERR_ALREADY;
    }
    // About 64 chunks per pool, so that many threads can share it and ring mode has several
    // chunks per thread to rotate through.
    let chunk = (len / 64).clamp(MIN_CHUNK, MAX_CHUNK) & !(ALIGN - 1);
    POOL.len.store(len, Relaxed);
    POOL.chunk_bytes.store(chunk, Relaxed);
    POOL.mode.store(mode as u32, Relaxed);
    POOL.thread_id
        .store(thread_id.map_or(0, |f| f as usize), Relaxed);
    POOL.base.store(start, Release);
    crate::INIT_OK
}

pub fn initialized() -> bool {
    POOL.base.load(Acquire) != 0
}

fn pool_remaining() -> usize {
    POOL.len
        .load(Relaxed)
        .saturating_sub(POOL.cursor.load(Relaxed))
}

/// Takes `size` bytes (a multiple of ALIGN) from the pool.
fn carve(size: usize) -> Option<*mut u8> {
    let len = POOL.len.load(Relaxed);
    // Checking first keeps an exhausted pool from being hammered by fetch_add.
    if POOL.cursor.load(Relaxed) + size > len {
        return None;
    }
    let off = POOL.cursor.fetch_add(size, Relaxed);
    if off + size > len {
        return None;
    }
    Some((POOL.base.load(Relaxed) + off) as *mut u8)
}

/// One thread's buffer state. Lives in the pool, so it outlives the thread for the dump.
#[repr(C, align(64))]
pub struct ThreadBuf {
    /// Next record slot; published (Release) after each record so readers see whole records.
    write: AtomicPtr<Slot>,
    end: *mut Slot,
    last_time: u64,
    current: AtomicPtr<Chunk>,
    oldest: AtomicPtr<Chunk>,
    chunks: usize,
    // Counters are written only by the owner (load + store, no read-modify-write).
    lost: AtomicU64,
    overwritten: AtomicU64,
    unhooked: AtomicU64,
    tid: u64,
    next_thread: *mut ThreadBuf,
}

const _: () =
    assert!(size_of::<ThreadBuf>().is_multiple_of(ALIGN) && align_of::<ThreadBuf>() == ALIGN);

/// Creates the calling thread's buffer and links it into the thread list.
pub fn register_thread() -> Option<*mut ThreadBuf> {
    if !initialized() {
        return None;
    }
    let tb = carve(size_of::<ThreadBuf>())? as *mut ThreadBuf;
    let tid = match POOL.thread_id.load(Relaxed) {
        0 => 0,
        // SAFETY: stored from an `extern "C" fn() -> u64` in init.
        f => unsafe { core::mem::transmute::<usize, extern "C" fn() -> u64>(f)() },
    };
    // SAFETY: `tb` is fresh, aligned pool memory of the right size, owned by this thread.
    unsafe {
        tb.write(ThreadBuf {
            write: AtomicPtr::new(null_mut()),
            end: null_mut(),
            last_time: 0,
            current: AtomicPtr::new(null_mut()),
            oldest: AtomicPtr::new(null_mut()),
            chunks: 0,
            lost: AtomicU64::new(0),
            overwritten: AtomicU64::new(0),
            unhooked: AtomicU64::new(0),
            tid,
            next_thread: null_mut(),
        });
        // Without a first chunk the thread still counts what it loses.
        (*tb).take_new_chunk();
    }
    let mut head = POOL.threads.load(Relaxed);
    loop {
        // SAFETY: not yet published, still exclusively ours.
        unsafe { (*tb).next_thread = head };
        match POOL
            .threads
            .compare_exchange_weak(head, tb, Release, Relaxed)
        {
            Ok(_) => break,
            Err(h) => head = h,
        }
    }
    POOL.thread_count.fetch_add(1, Relaxed);
    Some(tb)
}

pub fn thread_count() -> usize {
    POOL.thread_count.load(Acquire)
}

/// Thread `index` in the list (newest registration first).
pub fn thread(index: usize) -> Option<&'static ThreadBuf> {
    let mut t = POOL.threads.load(Acquire);
    for _ in 0..index {
        if t.is_null() {
            return None;
        }
        // SAFETY: published buffers are initialised (Release on publish, Acquire here) and
        // never freed.
        t = unsafe { (*t).next_thread };
    }
    // SAFETY: as above.
    unsafe { t.as_ref() }
}

fn records_in(chunk: *mut Chunk) -> *mut Slot {
    (chunk as usize + CHUNK_HEADER) as *mut Slot
}

fn chunk_capacity() -> usize {
    (POOL.chunk_bytes.load(Relaxed) - CHUNK_HEADER) / size_of::<Slot>()
}

impl ThreadBuf {
    /// Per-thread monotonic time: `rdtsc` may be reordered or differ slightly between cores.
    #[inline(always)]
    pub fn clamp_time(&mut self, t: u64) -> u64 {
        let t = if t < self.last_time {
            self.last_time
        } else {
            t
        };
        self.last_time = t;
        t
    }

    /// Appends one record if the current chunk has room, without calling anything (the hot
    /// path stays a leaf function). Returns false if it has not.
    #[inline(always)]
    pub fn try_push(&mut self, time: u64, word: u64) -> bool {
        let w = self.write.load(Relaxed);
        if w == self.end {
            return false;
        }
        // SAFETY: `w` is inside the current chunk (w < end), which this thread owns.
        unsafe {
            w.write([time, word]);
            self.write.store(w.add(1), Release);
        }
        true
    }

    /// Appends one record, taking a new chunk if needed. Returns false if it had to be dropped.
    #[inline(always)]
    pub fn push(&mut self, time: u64, word: u64) -> bool {
        let mut w = self.write.load(Relaxed);
        if w == self.end {
            if !self.make_room() {
                return false;
            }
            w = self.write.load(Relaxed);
        }
        // SAFETY: `w` is inside the current chunk (w < end), which this thread owns.
        unsafe {
            w.write([time, word]);
            self.write.store(w.add(1), Release);
        }
        true
    }

    pub fn count_unhooked(&mut self) {
        bump(&self.unhooked, 1);
    }

    #[cold]
    #[inline(never)]
    fn make_room(&mut self) -> bool {
        let ring = POOL.mode.load(Relaxed) == Mode::Ring as u32;
        // Ring mode keeps the last quarter of the pool for threads that start late: a thread
        // that already rotates through two chunks reuses its own instead.
        let reserve_for_new_threads =
            ring && self.chunks >= 2 && pool_remaining() < POOL.len.load(Relaxed) / 4;
        // SAFETY: called by the owning thread only.
        if !reserve_for_new_threads && unsafe { self.take_new_chunk() } {
            return true;
        }
        if ring && self.chunks > 0 {
            self.reuse_oldest_chunk();
            return true;
        }
        bump(&self.lost, 1);
        false
    }

    /// # Safety
    /// Owner thread only.
    unsafe fn take_new_chunk(&mut self) -> bool {
        let Some(mem) = carve(POOL.chunk_bytes.load(Relaxed)) else {
            return false;
        };
        let chunk = mem as *mut Chunk;
        // SAFETY: fresh pool memory, aligned, owned by this thread until linked.
        unsafe {
            chunk.write(Chunk {
                next: AtomicPtr::new(null_mut()),
                seq: AtomicU64::new(0),
            })
        };
        let current = self.current.load(Relaxed);
        if current.is_null() {
            self.oldest.store(chunk, Release);
        } else {
            // SAFETY: `current` is one of this thread's chunks.
            unsafe { (*current).next.store(chunk, Release) };
        }
        self.start_writing(chunk);
        self.chunks += 1;
        true
    }

    fn reuse_oldest_chunk(&mut self) {
        let oldest = self.oldest.load(Relaxed);
        // SAFETY: this thread's chunks; only it relinks them.
        unsafe {
            (*oldest)
                .seq
                .store((*oldest).seq.load(Relaxed) + 1, Release);
            if self.chunks > 1 {
                let second = (*oldest).next.load(Relaxed);
                (*oldest).next.store(null_mut(), Release);
                self.oldest.store(second, Release);
                (*self.current.load(Relaxed)).next.store(oldest, Release);
            }
        }
        bump(&self.overwritten, chunk_capacity() as u64);
        self.start_writing(oldest);
    }

    fn start_writing(&mut self, chunk: *mut Chunk) {
        let start = records_in(chunk);
        // Publish the new current chunk before its (empty) write pointer.
        self.current.store(chunk, Release);
        // SAFETY: stays within the chunk.
        self.end = unsafe { start.add(chunk_capacity()) };
        self.write.store(start, Release);
    }

    pub fn stats(&self) -> ThreadStats {
        ThreadStats {
            tid: self.tid,
            records: self.held(),
            lost: self.lost.load(Relaxed),
            overwritten: self.overwritten.load(Relaxed),
            unhooked: self.unhooked.load(Relaxed),
        }
    }

    /// Records held now, oldest chunk to current.
    fn held(&self) -> u64 {
        let mut n = 0;
        self.for_each_chunk(|_, len| {
            n += len as u64;
            true
        });
        n
    }

    /// Calls `f(records, count)` for each chunk, oldest first; stops when `f` returns false.
    fn for_each_chunk(&self, mut f: impl FnMut(*const Slot, usize) -> bool) {
        let current = self.current.load(Acquire);
        let write = self.write.load(Acquire);
        let mut chunk = self.oldest.load(Acquire);
        let cap = chunk_capacity();
        let mut guard = self.chunks.max(1) + 1;
        while !chunk.is_null() && guard > 0 {
            guard -= 1;
            let start = records_in(chunk);
            let len = if chunk == current {
                (write as usize).saturating_sub(start as usize) / size_of::<Slot>()
            } else {
                cap
            };
            if !f(start, len.min(cap)) || chunk == current {
                break;
            }
            // SAFETY: chunks are never freed; `next` is published with Release.
            chunk = unsafe { (*chunk).next.load(Acquire) };
        }
    }

    /// Copies records oldest first, skipping `first`. Returns the number copied.
    pub fn read(&self, first: u64, out: &mut [[u8; 16]]) -> usize {
        let mut skip = first;
        let mut copied = 0;
        self.for_each_chunk(|start, len| {
            if skip >= len as u64 {
                skip -= len as u64;
                return true;
            }
            let from = skip as usize;
            skip = 0;
            let n = (len - from).min(out.len() - copied);
            // SAFETY: records_in(chunk) + len lies inside the chunk; seq is the header field.
            let chunk = (start as usize - CHUNK_HEADER) as *const Chunk;
            let seq = unsafe { (*chunk).seq.load(Acquire) };
            for i in 0..n {
                // SAFETY: i + from < len, inside the chunk.
                let [t, w] = unsafe { ptr::read_volatile(start.add(from + i)) };
                out[copied + i][..8].copy_from_slice(&t.to_le_bytes());
                out[copied + i][8..].copy_from_slice(&w.to_le_bytes());
            }
            // A reuse during the copy means the chunk now holds other records: drop them.
            // SAFETY: as above.
            if unsafe { (*chunk).seq.load(Acquire) } != seq {
                return false;
            }
            copied += n;
            copied < out.len()
        });
        copied
    }
}

/// Owner-only counter increment: a load and a store, no locked instruction.
#[inline(always)]
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Relaxed) + by, Relaxed);
}
