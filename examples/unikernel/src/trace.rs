//! Tracing from inside the guest: the vftrace backend records every instrumented call of this
//! crate; at the end the trace is encoded as vftrace's byte stream into guest memory, and its
//! address and length are announced on the debug console port.
//!
//! Why memory and not the port itself: under PVM, KVM emulates a `rep outsb` one byte per exit
//! (about 70 us each, so 14 KB/s). The host runs QEMU with its RAM in a shared file
//! (`memory-backend-file`) and reads the stream from there after QEMU exits: no VM exit per
//! byte at all, only the few of the announcement line.

use core::fmt::Write as _;
use unikernel_platform::port::outsb;
use vftrace::stream::{Header, Marker, StreamSummary, TscHzSource, WriteError};

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

/// Hands the pool to the backend. Call once.
pub fn init() -> Result<(), vftrace::InitError> {
    let pool_ptr = &raw mut POOL;
    // SAFETY: called once; from here on only the backend touches POOL.
    let pool: &'static mut [u8] = unsafe { &mut (*pool_ptr).0 };
    vftrace::init_with_buffer(pool, vftrace::Mode::StopWhenFull, thread_id)
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
    let mut line = LineBuf {
        buf: [0; 96],
        len: 0,
    };
    let _ = writeln!(line, "vftrace-stream addr={address:#x} len={len}");
    outsb(TRACE_PORT, &line.buf[..line.len]);
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
