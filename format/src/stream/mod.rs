//! The guest byte stream: how a kernel without a file system hands its trace to the host.
//!
//! The stream is a sequence of self-checking frames:
//!
//! ```text
//! offset  size  field
//! 0       4     magic "VFTS"
//! 4       2     stream format version (u16 LE, currently 2; version 1 is still read)
//! 6       2     frame type (u16 LE, see FrameType)
//! 8       4     payload length (u32 LE, at most MAX_PAYLOAD)
//! 12      len   payload
//! 12+len  4     CRC-32 (IEEE, as zlib) of bytes 0 .. 12+len
//! ```
//!
//! A run writes one `Header` frame, any number of `Records` frames (per-thread chunks, records
//! oldest first with raw TSC times), one `ThreadStats` frame per thread, at most one `Markers`
//! frame (TSC of every marker port write) and an `End` frame with totals. All integers are
//! little-endian.
//!
//! Version 2 changed one thing: a marker in the `Markers` frame is 24 bytes, the TSC read just
//! after the port write following the 16 of version 1 (TSC before, value, phase). Frames of
//! version 1 are read with that TSC unknown (0).
//!
//! The encoder ([`StreamWriter`]) is `no_std` and allocation-free: it hands byte slices to a
//! sink (`FnMut(&[u8])`), passing record chunks through without copying them, so that a kernel
//! can send each slice with one string I/O instruction. The decoder ([`StreamReader`], with
//! `std`) treats its input as hostile: every length is bounded before anything is allocated,
//! each frame's CRC is checked, and an error names the byte offset where the stream went wrong.
//! Frames decoded before the damage stay usable.

/// First bytes of every frame.
pub const MAGIC: [u8; 4] = *b"VFTS";
/// The stream format this code writes (and the newest it reads).
pub const VERSION: u16 = 2;
/// The oldest stream format it reads.
pub const OLDEST_VERSION: u16 = 1;
/// Bytes before the payload.
pub const FRAME_HEADER_SIZE: usize = 12;
/// Bytes after the payload (the CRC).
pub const FRAME_TRAILER_SIZE: usize = 4;
/// Largest payload of one frame (1 MiB): bounds what a reader allocates per frame.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Largest number of records in one `Records` frame.
pub const MAX_RECORDS_PER_FRAME: usize =
    (MAX_PAYLOAD - RECORDS_PREFIX) / crate::record::RECORD_SIZE;
/// Longest image name and command line a header may carry.
pub const MAX_NAME: usize = 256;
pub const MAX_CMDLINE: usize = 1024;
/// Most markers one `Markers` frame may carry.
pub const MAX_MARKERS: usize = 1024;
/// Most distinct threads a stream may carry: bounds what a reader keeps per thread.
pub const MAX_THREADS: usize = 4096;

/// Bytes of a `Records` payload before its records: tid, first index, count.
pub const RECORDS_PREFIX: usize = 8 + 8 + 4;
const THREAD_STATS_SIZE: usize = 5 * 8;
/// A marker in a version 1 frame: TSC, value, phase.
#[cfg_attr(not(feature = "std"), allow(dead_code))]
const MARKER_SIZE_V1: usize = 16;
/// Version 2 adds the TSC after the write.
const MARKER_SIZE: usize = 24;
const END_SIZE: usize = 8 + 8 + 4 + 8 + 8;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum FrameType {
    Header = 1,
    Records = 2,
    ThreadStats = 3,
    Markers = 4,
    End = 5,
}

impl FrameType {
    pub const fn from_u16(value: u16) -> Option<FrameType> {
        Some(match value {
            1 => FrameType::Header,
            2 => FrameType::Records,
            3 => FrameType::ThreadStats,
            4 => FrameType::Markers,
            5 => FrameType::End,
            _ => return None,
        })
    }
}

/// Where the guest's TSC frequency came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TscHzSource {
    Unknown = 0,
    /// CPUID leaf 0x15 (TSC / crystal ratio times crystal frequency).
    Cpuid15 = 1,
    /// CPUID leaf 0x16 (processor base frequency; close to the TSC on most Intel parts).
    Cpuid16 = 2,
    /// The hypervisor's timing leaf (CPUID 0x40000010).
    Hypervisor = 3,
    /// Measured against another clock.
    Measured = 4,
}

impl TscHzSource {
    pub const fn from_u8(value: u8) -> TscHzSource {
        match value {
            1 => TscHzSource::Cpuid15,
            2 => TscHzSource::Cpuid16,
            3 => TscHzSource::Hypervisor,
            4 => TscHzSource::Measured,
            _ => TscHzSource::Unknown,
        }
    }
}

/// The first frame: what ran and the TSC that frames the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// TSC when the guest started (the time base of the trace).
    pub start_tsc: u64,
    /// TSC ticks per second as the guest knows it, 0 when it does not.
    pub tsc_hz: u64,
    pub tsc_hz_source: TscHzSource,
    /// Where the traced image is loaded (for symbol lookup).
    pub load_address: u64,
    /// End of the loaded image.
    pub load_end: u64,
    pub pid: u32,
    pub session_id: u64,
    /// The image's name, shown to humans only (never used as a path). At most [`MAX_NAME`] bytes.
    pub image_name: &'a [u8],
    /// The guest's command line. At most [`MAX_CMDLINE`] bytes.
    pub cmdline: &'a [u8],
}

pub use crate::stats::ThreadStats;

/// The port a guest writes its markers to unless told otherwise; the merge tool looks there.
pub const DEFAULT_MARKER_PORT: u16 = 0x6a0;

/// One marker port write, as the guest took it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marker {
    /// Full TSC read just before the `out`.
    pub tsc: u64,
    /// The value written to the port (the low 32 bits of `tsc`).
    pub value: u32,
    /// What the marker stands for (guest-defined).
    pub phase: u32,
    /// Full TSC read just after the `out` returned, 0 when not known (a version 1 stream).
    /// The host's stamp of the write must lie between `tsc` and this.
    pub tsc_after: u64,
}

/// The last frame: totals that let the reader tell a complete stream from a cut one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct End {
    pub end_tsc: u64,
    /// Records in all `Records` frames.
    pub total_records: u64,
    pub threads: u32,
    /// Frames before this one.
    pub frames: u64,
    /// Bytes before this frame.
    pub bytes: u64,
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`): `crc32fast`, which is `no_std` here.
pub use crc32fast::Hasher as Crc32;

/// Why the writer refused a frame (nothing was written for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// More records, markers or name bytes than one frame may carry.
    TooLarge,
}

/// Writes frames to a byte sink. `no_std`, no allocation; counts what it wrote for the `End`
/// frame.
pub struct StreamWriter<S: FnMut(&[u8])> {
    sink: S,
    frames: u64,
    bytes: u64,
    records: u64,
}

impl<S: FnMut(&[u8])> StreamWriter<S> {
    pub fn new(sink: S) -> Self {
        StreamWriter {
            sink,
            frames: 0,
            bytes: 0,
            records: 0,
        }
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes one frame whose payload is the concatenation of `parts`.
    fn frame(&mut self, kind: FrameType, parts: &[&[u8]]) -> Result<(), WriteError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > MAX_PAYLOAD {
            return Err(WriteError::TooLarge);
        }
        let mut head = [0u8; FRAME_HEADER_SIZE];
        head[..4].copy_from_slice(&MAGIC);
        head[4..6].copy_from_slice(&VERSION.to_le_bytes());
        head[6..8].copy_from_slice(&(kind as u16).to_le_bytes());
        head[8..12].copy_from_slice(&(len as u32).to_le_bytes());
        let mut crc = Crc32::new();
        crc.update(&head);
        (self.sink)(&head);
        for part in parts {
            crc.update(part);
            (self.sink)(part);
        }
        (self.sink)(&crc.finalize().to_le_bytes());
        self.frames += 1;
        self.bytes += (FRAME_HEADER_SIZE + len + FRAME_TRAILER_SIZE) as u64;
        Ok(())
    }

    pub fn header(&mut self, h: &Header<'_>) -> Result<(), WriteError> {
        if h.image_name.len() > MAX_NAME || h.cmdline.len() > MAX_CMDLINE {
            return Err(WriteError::TooLarge);
        }
        let mut fixed = [0u8; 8 + 8 + 1 + 8 + 8 + 4 + 8 + 2];
        let mut at = 0;
        put(&mut fixed, &mut at, &h.start_tsc.to_le_bytes());
        put(&mut fixed, &mut at, &h.tsc_hz.to_le_bytes());
        put(&mut fixed, &mut at, &[h.tsc_hz_source as u8]);
        put(&mut fixed, &mut at, &h.load_address.to_le_bytes());
        put(&mut fixed, &mut at, &h.load_end.to_le_bytes());
        put(&mut fixed, &mut at, &h.pid.to_le_bytes());
        put(&mut fixed, &mut at, &h.session_id.to_le_bytes());
        put(
            &mut fixed,
            &mut at,
            &(h.image_name.len() as u16).to_le_bytes(),
        );
        let cmdline_len = (h.cmdline.len() as u16).to_le_bytes();
        self.frame(
            FrameType::Header,
            &[&fixed, h.image_name, &cmdline_len, h.cmdline],
        )
    }

    /// One chunk of a thread's records, oldest first; `first_index` is the index of the chunk's
    /// first record among all records the thread sends.
    pub fn records(
        &mut self,
        tid: u64,
        first_index: u64,
        records: &[[u8; 16]],
    ) -> Result<(), WriteError> {
        if records.len() > MAX_RECORDS_PER_FRAME {
            return Err(WriteError::TooLarge);
        }
        let mut prefix = [0u8; RECORDS_PREFIX];
        let mut at = 0;
        put(&mut prefix, &mut at, &tid.to_le_bytes());
        put(&mut prefix, &mut at, &first_index.to_le_bytes());
        put(&mut prefix, &mut at, &(records.len() as u32).to_le_bytes());
        self.frame(FrameType::Records, &[&prefix, records.as_flattened()])?;
        self.records += records.len() as u64;
        Ok(())
    }

    pub fn thread_stats(&mut self, s: &ThreadStats) -> Result<(), WriteError> {
        let mut b = [0u8; THREAD_STATS_SIZE];
        let mut at = 0;
        for v in [s.tid, s.records, s.lost, s.overwritten, s.unhooked] {
            put(&mut b, &mut at, &v.to_le_bytes());
        }
        self.frame(FrameType::ThreadStats, &[&b])
    }

    /// The markers written to `port` during the run.
    pub fn markers(&mut self, port: u16, markers: &[Marker]) -> Result<(), WriteError> {
        if markers.len() > MAX_MARKERS {
            return Err(WriteError::TooLarge);
        }
        let mut prefix = [0u8; 8];
        prefix[..2].copy_from_slice(&port.to_le_bytes());
        prefix[4..].copy_from_slice(&(markers.len() as u32).to_le_bytes());
        let mut encoded = [[0u8; MARKER_SIZE]; MAX_MARKERS];
        for (slot, m) in encoded.iter_mut().zip(markers) {
            slot[..8].copy_from_slice(&m.tsc.to_le_bytes());
            slot[8..12].copy_from_slice(&m.value.to_le_bytes());
            slot[12..16].copy_from_slice(&m.phase.to_le_bytes());
            slot[16..].copy_from_slice(&m.tsc_after.to_le_bytes());
        }
        self.frame(
            FrameType::Markers,
            &[&prefix, encoded[..markers.len()].as_flattened()],
        )
    }

    /// The last frame; `threads` is the number of threads whose records were sent.
    pub fn end(&mut self, end_tsc: u64, threads: u32) -> Result<(), WriteError> {
        let mut b = [0u8; END_SIZE];
        let mut at = 0;
        put(&mut b, &mut at, &end_tsc.to_le_bytes());
        put(&mut b, &mut at, &self.records.to_le_bytes());
        put(&mut b, &mut at, &threads.to_le_bytes());
        put(&mut b, &mut at, &self.frames.to_le_bytes());
        put(&mut b, &mut at, &self.bytes.to_le_bytes());
        self.frame(FrameType::End, &[&b])
    }
}

fn put(buf: &mut [u8], at: &mut usize, bytes: &[u8]) {
    buf[*at..*at + bytes.len()].copy_from_slice(bytes);
    *at += bytes.len();
}

#[cfg(feature = "std")]
pub use reader::*;

#[cfg(feature = "std")]
mod reader;
