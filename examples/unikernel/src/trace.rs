//! Tracing from inside the guest: the vftrace backend records every instrumented call of this
//! crate into a pool in guest memory, and the host gets it in one of two ways:
//!
//! - at the end (default): the trace is encoded as vftrace's byte stream into guest memory,
//!   and its address and length are announced on the debug console port;
//! - live (`live` on the command line): the host drains the pool while the guest runs. The
//!   guest announces the pool once (`vftrace-pool addr=0x... len=N`), after posting its
//!   stream header into it; full chunks are handed over with release stores and come back
//!   empty, with no VM exit. The trace is then not bounded by the pool, and whatever the guest
//!   published is the host's even if it crashes. The stream at the end carries only the header
//!   and the markers.
//!
//! Why memory and not the port itself: under PVM, KVM emulates a `rep outsb` one byte per exit
//! (about 70 us each, so 14 KB/s). The host runs QEMU with its RAM in a shared file
//! (`memory-backend-file,share=on`) and reads the guest's memory from there: no VM exit per
//! byte at all, only the few of the announcement lines.

use core::fmt::Write as _;
use unikernel_platform::port::outsb;
use vftrace::stream::{Header, Marker, StreamSummary, TscHzSource, WriteError};
use vftrace::WhenFull;

/// QEMU `-device isa-debugcon,iobase=0x402,chardev=...`: every byte written goes to the chardev
/// (a file on the host). `rep outsb` costs one VM exit per page-sized batch, not per byte.
pub const TRACE_PORT: u16 = 0x402;

/// Memory for all trace buffers.
const POOL_SIZE: usize = 8 * 1024 * 1024;
/// Memory the encoded stream is written to.
const STREAM_SIZE: usize = 8 * 1024 * 1024;
/// Records per stream frame.
const CHUNK_RECORDS: usize = 16 * 1024;

#[repr(C, align(4096))]
struct Pool<const N: usize>([u8; N]);
static mut POOL: Pool<POOL_SIZE> = Pool([0; POOL_SIZE]);
static mut CHUNK: [[u8; 16]; CHUNK_RECORDS] = [[0; 16]; CHUNK_RECORDS];
static mut STREAM: Pool<STREAM_SIZE> = Pool([0; STREAM_SIZE]);

/// The one CPU is the one thread: tid 1 (also the "pid" of the guest trace).
pub const GUEST_TID: u64 = 1;

extern "C" fn thread_id() -> u64 {
    GUEST_TID
}

/// How the trace reaches the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// All of it at the end, as a stream (bounded by the pool).
    Stream,
    /// Drained by the host while the guest runs; when the pool is full, records are dropped
    /// or the guest waits.
    Live(WhenFull),
}

/// Hands the pool to the backend. Call once.
pub fn init(transport: Transport) -> Result<(), vftrace::InitError> {
    let pool_ptr = &raw mut POOL;
    // SAFETY: called once; from here on only the backend touches POOL.
    let pool: &'static mut [u8] = unsafe { &mut (*pool_ptr).0 };
    match transport {
        Transport::Stream => vftrace::init_with_buffer(pool, vftrace::Mode::StopWhenFull, thread_id),
        Transport::Live(when_full) => {
            let wait = unikernel_platform::port::spin_briefly;
            vftrace::init_drained(pool, when_full, thread_id, Some(wait)).map(|_| ())
        }
    }
}

/// Live: tells the host what runs (a pool message, no VM exit) and where the pool is (one line
/// on [`TRACE_PORT`], the only VM exits of the hand-over). Returns the pool's address.
pub fn announce_pool(header: &Header<'_>) -> Option<u64> {
    let pool = vftrace::active_pool()?;
    if !vftrace::stream::post_header(header) {
        return None;
    }
    let address = pool.base() as u64;
    let mut line = LineBuf::new();
    let _ = writeln!(line, "vftrace-pool addr={address:#x} len={}", pool.layout().total_bytes);
    outsb(TRACE_PORT, line.as_bytes());
    Some(address)
}

/// The guest thread's counters in the pool: records dropped, calls not recorded. None once the
/// pool's header no longer checks out (`scribble`).
pub fn losses() -> Option<(u64, u64)> {
    use core::sync::atomic::Ordering::Relaxed;
    let pool = vftrace::active_pool()?;
    let slot = pool.slot(0);
    Some((slot.lost.load(Relaxed), slot.unrecorded.load(Relaxed)))
}

/// Overwrites the pool's control words, as a buggy or hostile kernel might: the header's chunk
/// count, the free list head, every chunk's sequence number. Tracing goes on (the backend keeps
/// its own copy of the geometry; no chunk is free any more, so records are dropped); the host
/// must cut the trace where it noticed, and nothing worse.
pub fn scribble() {
    use vftrace_format::pool::{ChunkDesc, PoolHeader};
    let Some(pool) = vftrace::active_pool() else {
        return;
    };
    let base = pool.base();
    // SAFETY: the guest's own pool memory; plain stores to words the host only reads, and to
    // the free list head and sequence numbers, which the backend tolerates (see above).
    unsafe {
        let chunk_count = base.add(core::mem::offset_of!(PoolHeader, chunk_count)) as *mut u32;
        chunk_count.write_volatile(0x5ca1_ab1e);
        let free_head = base.add(core::mem::offset_of!(PoolHeader, free_head)) as *mut u64;
        free_head.write_volatile(0xdead_beef_dead_beef);
        for i in 0..pool.chunk_count() {
            let desc = pool.desc(i) as *const ChunkDesc as *mut u8;
            let seq = desc.add(core::mem::offset_of!(ChunkDesc, seq)) as *mut u64;
            seq.write_volatile(0x0bad_0bad_0bad_0bad);
        }
    }
}

/// The TSC frequency from CPUID, if the (virtual) CPU reports it.
pub fn tsc_hz() -> (u64, TscHzSource) {
    // cpuid is safe on x86_64 (always available, no memory effects).
    let cpuid = core::arch::x86_64::__cpuid;
    let max_leaf = cpuid(0).eax;
    if max_leaf >= 0x15 {
        let l = cpuid(0x15);
        if l.eax != 0 && l.ebx != 0 && l.ecx != 0 {
            return (
                l.ecx as u64 * l.ebx as u64 / l.eax as u64,
                TscHzSource::Cpuid15,
            );
        }
    }
    let max_hypervisor_leaf = cpuid(0x4000_0000).eax;
    if (0x4000_0010..0x5000_0000).contains(&max_hypervisor_leaf) {
        let khz = cpuid(0x4000_0010).eax;
        if khz != 0 {
            return (khz as u64 * 1000, TscHzSource::Hypervisor);
        }
    }
    if max_leaf >= 0x16 {
        let mhz = cpuid(0x16).eax & 0xffff;
        if mhz != 0 {
            return (mhz as u64 * 1_000_000, TscHzSource::Cpuid16);
        }
    }
    (0, TscHzSource::Unknown)
}

/// Where the stream went.
pub struct Sent {
    pub summary: StreamSummary,
    pub address: u64,
    pub len: usize,
}

/// Encodes the trace into guest memory and announces it on [`TRACE_PORT`] as one line,
/// `vftrace-stream addr=0x... len=...`. A stream that does not fit is cut at the buffer's end
/// (the host reports the cut and keeps the frames before it).
pub fn send(
    header: &Header<'_>,
    marker_port: u16,
    markers: &[Marker],
    end_tsc: u64,
) -> Result<Sent, WriteError> {
    let (chunk_ptr, stream_ptr) = (&raw mut CHUNK, &raw mut STREAM);
    // SAFETY: tracing is off and this is the only user of CHUNK and STREAM.
    let (chunk, stream) = unsafe { (&mut *chunk_ptr, &mut (*stream_ptr).0) };
    let mut len = 0;
    let mut append = |bytes: &[u8]| {
        let n = bytes.len().min(stream.len() - len);
        stream[len..len + n].copy_from_slice(&bytes[..n]);
        len += n;
    };
    let summary =
        vftrace::stream::write_trace(&mut append, header, marker_port, markers, chunk, end_tsc)?;
    let address = stream.as_ptr() as u64;
    let mut line = LineBuf::new();
    let _ = writeln!(line, "vftrace-stream addr={address:#x} len={len}");
    outsb(TRACE_PORT, line.as_bytes());
    Ok(Sent {
        summary,
        address,
        len,
    })
}

/// A small formatting buffer (no allocator in the guest).
struct LineBuf {
    buf: [u8; 96],
    len: usize,
}

impl LineBuf {
    fn new() -> LineBuf {
        LineBuf {
            buf: [0; 96],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl core::fmt::Write for LineBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}
