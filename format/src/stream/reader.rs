//! Decoding the guest stream (with `std`): every length is bounded before anything is
//! allocated, each frame's CRC is checked, and errors name the byte offset.
use super::*;
use std::fmt;
use std::io::{self, Read};

/// A decoded frame and the byte offset it started at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub offset: u64,
    pub payload: Payload,
}

/// An owned [`Header`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedHeader {
    pub start_tsc: u64,
    pub tsc_hz: u64,
    pub tsc_hz_source: TscHzSource,
    pub load_address: u64,
    pub load_end: u64,
    pub pid: u32,
    pub session_id: u64,
    pub image_name: Vec<u8>,
    pub cmdline: Vec<u8>,
}

impl OwnedHeader {
    /// The image name for display: printable ASCII only (anything else becomes '?').
    pub fn display_name(&self) -> String {
        sanitize(&self.image_name)
    }

    pub fn display_cmdline(&self) -> String {
        sanitize(&self.cmdline)
    }
}

/// Printable ASCII of untrusted bytes; everything else becomes '?'.
pub fn sanitize(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    Header(OwnedHeader),
    Records {
        tid: u64,
        first_index: u64,
        records: Vec<[u8; 16]>,
    },
    ThreadStats(ThreadStats),
    Markers {
        port: u16,
        markers: Vec<Marker>,
    },
    End(End),
}

/// What is wrong with a stream, and where.
#[derive(Debug)]
pub struct StreamError {
    /// Byte offset of the frame (or the read) that failed.
    pub offset: u64,
    pub kind: StreamErrorKind,
}

#[derive(Debug)]
pub enum StreamErrorKind {
    Io(io::Error),
    /// The stream ends inside a frame (`needed` more bytes were expected).
    Truncated {
        needed: usize,
    },
    BadMagic([u8; 4]),
    UnsupportedVersion(u16),
    UnknownFrameType(u16),
    PayloadTooLarge(u32),
    BadCrc {
        stored: u32,
        computed: u32,
    },
    /// The payload does not match its frame type.
    Malformed(&'static str),
    /// The stream ended cleanly between frames but without an `End` frame.
    MissingEnd,
    /// Data after the `End` frame.
    TrailingData,
    /// A well-formed frame that does not fit the frames before it (a frame missing,
    /// repeated or out of order; totals that do not add up).
    Inconsistent(String),
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "offset {}: ", self.offset)?;
        match &self.kind {
            StreamErrorKind::Io(e) => write!(f, "read error: {e}"),
            StreamErrorKind::Truncated { needed } => {
                write!(
                    f,
                    "the stream is cut short inside a frame ({needed} more bytes expected)"
                )
            }
            StreamErrorKind::BadMagic(m) => write!(
                f,
                "bad frame magic {m:02x?} (expected \"VFTS\"): corrupted stream"
            ),
            StreamErrorKind::UnsupportedVersion(v) => {
                write!(f, "stream format version {v} is not supported (this vftrace reads versions {OLDEST_VERSION} to {VERSION})")
            }
            StreamErrorKind::UnknownFrameType(t) => write!(f, "unknown frame type {t}"),
            StreamErrorKind::PayloadTooLarge(n) => {
                write!(
                    f,
                    "frame payload of {n} bytes is larger than the limit of {MAX_PAYLOAD}"
                )
            }
            StreamErrorKind::BadCrc { stored, computed } => {
                write!(f, "frame checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): corrupted stream")
            }
            StreamErrorKind::Malformed(what) => write!(f, "malformed frame: {what}"),
            StreamErrorKind::MissingEnd => write!(
                f,
                "the stream ends without an end frame (the guest stopped early?)"
            ),
            StreamErrorKind::TrailingData => write!(f, "data after the end frame"),
            StreamErrorKind::Inconsistent(what) => {
                write!(f, "{what}: frames are missing, repeated or out of order")
            }
        }
    }
}

impl std::error::Error for StreamError {}

/// Reads frames from an untrusted byte source. Iterating yields frames until the `End`
/// frame, then `None`; an error is yielded once, after which the iterator stops.
///
/// Besides each frame on its own, the reader checks that the frames fit together, so that
/// a stream missing a frame is never taken for a complete one: the header comes first and
/// once; each thread's `Records` frames continue its record indices without a gap
/// (`first_index`); a thread's `ThreadStats` comes once and counts the records sent for it;
/// the `End` frame's totals (frames, bytes, records, threads) match what came before.
pub struct StreamReader<R: Read> {
    input: R,
    offset: u64,
    done: bool,
    seen_end: bool,
    tally: Tally,
}

/// What the frames so far add up to.
#[derive(Default)]
struct Tally {
    frames: u64,
    records: u64,
    header: bool,
    /// Records sent per thread so far, and whether its stats came.
    threads: std::collections::HashMap<u64, (u64, bool)>,
    stats_frames: u64,
}

impl Tally {
    fn thread(&mut self, tid: u64) -> Result<&mut (u64, bool), StreamErrorKind> {
        if self.threads.len() >= MAX_THREADS && !self.threads.contains_key(&tid) {
            return Err(StreamErrorKind::Malformed(
                "more than 4096 threads in one stream",
            ));
        }
        Ok(self.threads.entry(tid).or_default())
    }

    /// Checks `payload` (at `offset`) against the frames before it and counts it.
    fn add(&mut self, payload: &Payload, offset: u64) -> Result<(), StreamErrorKind> {
        let bad = |m: String| Err(StreamErrorKind::Inconsistent(m));
        match payload {
            Payload::Header(_) if self.header => return bad("a second header frame".into()),
            Payload::Header(_) => self.header = true,
            _ if !self.header => return bad("the stream does not start with a header frame".into()),
            Payload::Records {
                tid,
                first_index,
                records,
            } => {
                let (sent, stats) = self.thread(*tid)?;
                if *stats {
                    return bad(format!("records of thread {tid} after its thread stats"));
                }
                if *first_index != *sent {
                    return bad(format!(
                        "the records frame of thread {tid} starts at its record {first_index}, but {sent} came before"
                    ));
                }
                *sent = sent.saturating_add(records.len() as u64);
                self.records = self.records.saturating_add(records.len() as u64);
            }
            Payload::ThreadStats(s) => {
                let (sent, stats) = self.thread(s.tid)?;
                if *stats {
                    return bad(format!("a second thread stats frame for thread {}", s.tid));
                }
                if s.records != *sent {
                    return bad(format!(
                        "thread {} reports {} records but {sent} were sent",
                        s.tid, s.records
                    ));
                }
                *stats = true;
                self.stats_frames += 1;
            }
            Payload::Markers { .. } => {}
            Payload::End(e) => {
                let expected = (self.frames, offset, self.records, self.stats_frames);
                let found = (e.frames, e.bytes, e.total_records, u64::from(e.threads));
                if expected != found {
                    return bad(format!(
                        "the end frame counts {} frames, {} bytes, {} records and {} threads before it, \
                         but the stream has {} frames, {} bytes, {} records and {} threads",
                        found.0, found.1, found.2, found.3, expected.0, expected.1, expected.2, expected.3
                    ));
                }
            }
        }
        self.frames += 1;
        Ok(())
    }
}

impl<R: Read> StreamReader<R> {
    pub fn new(input: R) -> Self {
        StreamReader {
            input,
            offset: 0,
            done: false,
            seen_end: false,
            tally: Tally::default(),
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads exactly `buf.len()` bytes; Ok(false) on a clean EOF before the first byte.
    fn fill(&mut self, buf: &mut [u8], at_frame_start: bool) -> Result<bool, StreamErrorKind> {
        let mut got = 0;
        while got < buf.len() {
            match self.input.read(&mut buf[got..]) {
                Ok(0) if got == 0 && at_frame_start => return Ok(false),
                Ok(0) => {
                    return Err(StreamErrorKind::Truncated {
                        needed: buf.len() - got,
                    })
                }
                Ok(n) => {
                    got += n;
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StreamErrorKind::Io(e)),
            }
        }
        Ok(true)
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, StreamErrorKind> {
        let mut head = [0u8; FRAME_HEADER_SIZE];
        if !self.fill(&mut head, true)? {
            return if self.seen_end {
                Ok(None)
            } else {
                Err(StreamErrorKind::MissingEnd)
            };
        }
        if self.seen_end {
            return Err(StreamErrorKind::TrailingData);
        }
        let magic: [u8; 4] = head[..4].try_into().unwrap();
        if magic != MAGIC {
            return Err(StreamErrorKind::BadMagic(magic));
        }
        let version = u16::from_le_bytes([head[4], head[5]]);
        let kind = u16::from_le_bytes([head[6], head[7]]);
        let len = u32::from_le_bytes(head[8..12].try_into().unwrap());
        if len as usize > MAX_PAYLOAD {
            return Err(StreamErrorKind::PayloadTooLarge(len));
        }
        let mut body = vec![0u8; len as usize + FRAME_TRAILER_SIZE];
        self.fill(&mut body, false)?;
        let (payload, trailer) = body.split_at(len as usize);
        let stored = u32::from_le_bytes(trailer.try_into().unwrap());
        let mut crc = Crc32::new();
        crc.update(&head);
        crc.update(payload);
        let computed = crc.finalize();
        if stored != computed {
            return Err(StreamErrorKind::BadCrc { stored, computed });
        }
        // The checksum is right, so a wrong version or type is the writer's, not noise.
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(StreamErrorKind::UnsupportedVersion(version));
        }
        let kind = FrameType::from_u16(kind).ok_or(StreamErrorKind::UnknownFrameType(kind))?;
        let payload = decode_payload(kind, version, payload)?;
        let offset = self.offset - (FRAME_HEADER_SIZE + body.len()) as u64;
        self.tally.add(&payload, offset)?;
        if matches!(payload, Payload::End(_)) {
            self.seen_end = true;
        }
        Ok(Some(Frame { offset, payload }))
    }
}

impl<R: Read> Iterator for StreamReader<R> {
    type Item = Result<Frame, StreamError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let start = self.offset;
        match self.next_frame() {
            Ok(Some(frame)) => Some(Ok(frame)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(kind) => {
                self.done = true;
                // A short read is reported where the data ran out; anything else at the
                // start of the frame that is wrong.
                let offset = if matches!(kind, StreamErrorKind::Truncated { .. }) {
                    self.offset
                } else {
                    start
                };
                Some(Err(StreamError { offset, kind }))
            }
        }
    }
}

/// A cursor over a payload that fails instead of reading past its end.
struct Fields<'a> {
    bytes: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], StreamErrorKind> {
        if self.bytes.len() < n {
            return Err(StreamErrorKind::Malformed(what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, StreamErrorKind> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, StreamErrorKind> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, StreamErrorKind> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, StreamErrorKind> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn finish(&self, what: &'static str) -> Result<(), StreamErrorKind> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(StreamErrorKind::Malformed(what))
        }
    }
}

fn decode_payload(kind: FrameType, version: u16, bytes: &[u8]) -> Result<Payload, StreamErrorKind> {
    let mut f = Fields { bytes };
    let payload = match kind {
        FrameType::Header => {
            let start_tsc = f.u64("header too short")?;
            let tsc_hz = f.u64("header too short")?;
            let tsc_hz_source = TscHzSource::from_u8(f.u8("header too short")?);
            let load_address = f.u64("header too short")?;
            let load_end = f.u64("header too short")?;
            let pid = f.u32("header too short")?;
            let session_id = f.u64("header too short")?;
            let name_len = f.u16("header too short")? as usize;
            if name_len > MAX_NAME {
                return Err(StreamErrorKind::Malformed(
                    "image name longer than 256 bytes",
                ));
            }
            let image_name = f.take(name_len, "image name runs past the frame")?.to_vec();
            let cmdline_len = f.u16("header too short")? as usize;
            if cmdline_len > MAX_CMDLINE {
                return Err(StreamErrorKind::Malformed(
                    "command line longer than 1024 bytes",
                ));
            }
            let cmdline = f
                .take(cmdline_len, "command line runs past the frame")?
                .to_vec();
            f.finish("extra bytes after the header fields")?;
            Payload::Header(OwnedHeader {
                start_tsc,
                tsc_hz,
                tsc_hz_source,
                load_address,
                load_end,
                pid,
                session_id,
                image_name,
                cmdline,
            })
        }
        FrameType::Records => {
            let tid = f.u64("records frame too short")?;
            let first_index = f.u64("records frame too short")?;
            let count = f.u32("records frame too short")? as usize;
            if count.checked_mul(16) != Some(f.bytes.len()) {
                return Err(StreamErrorKind::Malformed(
                    "record count does not match the frame length",
                ));
            }
            let records = f
                .bytes
                .chunks_exact(16)
                .map(|c| c.try_into().unwrap())
                .collect();
            Payload::Records {
                tid,
                first_index,
                records,
            }
        }
        FrameType::ThreadStats => {
            let s = ThreadStats {
                tid: f.u64("thread stats too short")?,
                records: f.u64("thread stats too short")?,
                lost: f.u64("thread stats too short")?,
                overwritten: f.u64("thread stats too short")?,
                unhooked: f.u64("thread stats too short")?,
            };
            f.finish("extra bytes after the thread stats")?;
            Payload::ThreadStats(s)
        }
        FrameType::Markers => {
            let port = f.u16("markers frame too short")?;
            f.u16("markers frame too short")?;
            let count = f.u32("markers frame too short")? as usize;
            let size = if version == 1 {
                MARKER_SIZE_V1
            } else {
                MARKER_SIZE
            };
            if count > MAX_MARKERS || count * size != f.bytes.len() {
                return Err(StreamErrorKind::Malformed(
                    "marker count does not match the frame length",
                ));
            }
            let mut markers = Vec::with_capacity(count);
            for _ in 0..count {
                markers.push(Marker {
                    tsc: f.u64("marker")?,
                    value: f.u32("marker")?,
                    phase: f.u32("marker")?,
                    tsc_after: if version == 1 { 0 } else { f.u64("marker")? },
                });
            }
            Payload::Markers { port, markers }
        }
        FrameType::End => {
            let e = End {
                end_tsc: f.u64("end frame too short")?,
                total_records: f.u64("end frame too short")?,
                threads: f.u32("end frame too short")?,
                frames: f.u64("end frame too short")?,
                bytes: f.u64("end frame too short")?,
            };
            f.finish("extra bytes after the end frame fields")?;
            Payload::End(e)
        }
    };
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_stream() -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = StreamWriter::new(|b: &[u8]| out.extend_from_slice(b));
        w.header(&Header {
            start_tsc: 100,
            tsc_hz: 2_596_130_000,
            tsc_hz_source: TscHzSource::Cpuid15,
            load_address: 0x100000,
            load_end: 0x200000,
            pid: 1,
            session_id: 42,
            image_name: b"guest",
            cmdline: b"fib=10",
        })
        .unwrap();
        let recs: Vec<[u8; 16]> = (0..10u64)
            .map(|i| {
                let kind = if i % 2 == 0 {
                    crate::record::RecordType::Entry
                } else {
                    crate::record::RecordType::Exit
                };
                crate::record::Record::new(200 + i, kind, 0, 0x101000).to_bytes()
            })
            .collect();
        w.records(1, 0, &recs[..6]).unwrap();
        w.records(1, 6, &recs[6..]).unwrap();
        w.thread_stats(&ThreadStats {
            tid: 1,
            records: 10,
            ..Default::default()
        })
        .unwrap();
        w.markers(
            0x6a0,
            &[
                Marker {
                    tsc: 150,
                    value: 150,
                    phase: 1,
                    tsc_after: 160,
                },
                Marker {
                    tsc: 250,
                    value: 250,
                    phase: 2,
                    tsc_after: 262,
                },
            ],
        )
        .unwrap();
        w.end(300, 1).unwrap();
        out
    }

    fn decode(bytes: &[u8]) -> (Vec<Frame>, Option<StreamError>) {
        let mut frames = Vec::new();
        for item in StreamReader::new(bytes) {
            match item {
                Ok(f) => frames.push(f),
                Err(e) => return (frames, Some(e)),
            }
        }
        (frames, None)
    }

    #[test]
    fn crc_matches_zlib() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn round_trip() {
        let bytes = sample_stream();
        let (frames, err) = decode(&bytes);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(frames.len(), 6);
        match &frames[0].payload {
            Payload::Header(h) => {
                assert_eq!(h.image_name, b"guest");
                assert_eq!(h.tsc_hz, 2_596_130_000);
            }
            p => panic!("first frame is {p:?}"),
        }
        match &frames[2].payload {
            Payload::Records {
                first_index,
                records,
                ..
            } => {
                assert_eq!(*first_index, 6);
                assert_eq!(records.len(), 4);
            }
            p => panic!("{p:?}"),
        }
        match &frames[5].payload {
            Payload::End(e) => {
                assert_eq!(e.total_records, 10);
                assert_eq!(e.frames, 5);
                assert_eq!(e.bytes, frames[5].offset);
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn every_cut_is_detected_and_earlier_frames_survive() {
        let bytes = sample_stream();
        let (full, _) = decode(&bytes);
        for cut in 0..bytes.len() {
            let (frames, err) = decode(&bytes[..cut]);
            let err = err.unwrap_or_else(|| panic!("cut at {cut} not detected"));
            assert!(err.offset <= cut as u64);
            // Every frame that ends before the cut is recovered.
            let complete = full.iter().filter(|f| f.offset < cut as u64).count();
            assert!(
                frames.len() + 1 >= complete,
                "cut at {cut}: {} frames, {complete} started",
                frames.len()
            );
            assert!(err
                .to_string()
                .starts_with(&format!("offset {}", err.offset)));
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let bytes = sample_stream();
        for i in 0..bytes.len() {
            for bit in [0, 3, 7] {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                let (_, err) = decode(&bad);
                assert!(err.is_some(), "flip of bit {bit} at {i} not detected");
            }
        }
    }

    /// Issue 10, point 6: a stream missing any one frame, or with one repeated, is never
    /// taken for a complete one (End totals, first_index gaps, ThreadStats counts).
    #[test]
    fn every_dropped_or_repeated_frame_is_detected() {
        let bytes = sample_stream();
        let (full, _) = decode(&bytes);
        let bounds: Vec<(usize, usize)> = full
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let end = full.get(i + 1).map_or(bytes.len(), |n| n.offset as usize);
                (f.offset as usize, end)
            })
            .collect();
        for (i, &(start, end)) in bounds.iter().enumerate() {
            let mut dropped = bytes[..start].to_vec();
            dropped.extend_from_slice(&bytes[end..]);
            let (_, err) = decode(&dropped);
            assert!(err.is_some(), "dropping frame {i} not detected");
            let mut repeated = bytes[..end].to_vec();
            repeated.extend_from_slice(&bytes[start..]);
            let (_, err) = decode(&repeated);
            assert!(err.is_some(), "repeating frame {i} not detected");
        }
        let (_, err) = decode(&bytes[bounds[1].0..]);
        assert!(err
            .unwrap()
            .to_string()
            .contains("does not start with a header"));
    }

    #[test]
    fn hostile_length_is_refused_before_allocation() {
        let mut bytes = sample_stream();
        bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let (frames, err) = decode(&bytes);
        assert!(frames.is_empty());
        assert!(matches!(
            err.unwrap().kind,
            StreamErrorKind::PayloadTooLarge(_)
        ));
    }

    #[test]
    fn missing_end_is_an_error() {
        let bytes = sample_stream();
        let (full, _) = decode(&bytes);
        let end_offset = full.last().unwrap().offset as usize;
        let (frames, err) = decode(&bytes[..end_offset]);
        assert_eq!(frames.len(), 5);
        let err = err.unwrap();
        assert!(matches!(err.kind, StreamErrorKind::MissingEnd));
        assert_eq!(err.offset, end_offset as u64);
    }

    /// Markers keep the TSC after their write; a version 1 stream (16-byte markers) is
    /// still read, with that TSC unknown.
    #[test]
    fn markers_of_both_versions_are_read() {
        let (frames, err) = decode(&sample_stream());
        assert!(err.is_none());
        let Payload::Markers { markers, .. } = &frames[4].payload else {
            panic!("{:?}", frames[4].payload)
        };
        assert_eq!((markers[0].tsc, markers[0].tsc_after), (150, 160));
        assert_eq!(markers[1].tsc_after, 262);

        // The same stream as version 1 wrote it: every frame says version 1, markers
        // are 16 bytes, the CRCs and the end frame's byte count follow.
        let mut v1 = Vec::new();
        let mut offset = 0;
        let bytes = sample_stream();
        while offset < bytes.len() {
            let len =
                u32::from_le_bytes(bytes[offset + 8..offset + 12].try_into().unwrap()) as usize;
            let kind = u16::from_le_bytes([bytes[offset + 6], bytes[offset + 7]]);
            let mut payload = bytes[offset + 12..offset + 12 + len].to_vec();
            if kind == FrameType::Markers as u16 {
                let mut short = payload[..8].to_vec();
                for m in payload[8..].chunks(MARKER_SIZE) {
                    short.extend_from_slice(&m[..MARKER_SIZE_V1]);
                }
                payload = short;
            }
            if kind == FrameType::End as u16 {
                payload[28..36].copy_from_slice(&(v1.len() as u64).to_le_bytes());
            }
            let mut head = bytes[offset..offset + 12].to_vec();
            head[4..6].copy_from_slice(&1u16.to_le_bytes());
            head[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
            let mut crc = Crc32::new();
            crc.update(&head);
            crc.update(&payload);
            v1.extend_from_slice(&head);
            v1.extend_from_slice(&payload);
            v1.extend_from_slice(&crc.finalize().to_le_bytes());
            offset += 12 + len + 4;
        }
        let (frames, err) = decode(&v1);
        assert!(err.is_none(), "{err:?}");
        let Payload::Markers { markers, .. } = &frames[4].payload else {
            panic!()
        };
        assert_eq!(
            (markers[1].tsc, markers[1].phase, markers[1].tsc_after),
            (250, 2, 0)
        );
        let mut v3 = sample_stream();
        v3[4] = 3;
        assert!(matches!(
            decode(&v3).1.unwrap().kind,
            StreamErrorKind::BadCrc { .. }
        ));
    }

    #[test]
    fn sanitize_keeps_only_printable_ascii() {
        assert_eq!(sanitize(b"../\x1b[31mevil\n"), "../?[31mevil?");
    }
}
