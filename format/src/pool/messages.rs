//! The pool's messages: rare events a producer posts for its consumer (a process starts,
//! forks, loads a library; a kernel says what it runs), encoded little-endian and decoded as
//! untrusted bytes.
use super::MESSAGE_PAYLOAD;

/// Message kinds ([`super::Pool::post_message`]).
pub mod message_kind {
    /// A process started tracing (at start or after exec): [`SessionMessage`].
    pub const SESSION: u32 = 1;
    /// A process forked: [`ForkMessage`].
    pub const FORK: u32 = 2;
    /// A library was loaded at run time: [`DlopenMessage`].
    pub const DLOPEN: u32 = 3;
    /// A kernel said what it runs: one `Header` frame of the guest byte stream
    /// (`crate::stream`), checksummed, its command line cut to fit.
    pub const STREAM_HEADER: u32 = 4;
}

/// Little-endian field encoding of messages, checked on decode (payloads are untrusted).
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn u32(&mut self) -> Option<u32> {
        let b = self.buf.get(self.at..self.at + 4)?;
        self.at += 4;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.buf.get(self.at..self.at + 8)?;
        self.at += 8;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.buf.get(self.at..self.at + n)?;
        self.at += n;
        Some(b)
    }
    fn rest(&mut self) -> &'a [u8] {
        let b = &self.buf[self.at.min(self.buf.len())..];
        self.at = self.buf.len();
        b
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, b: &[u8]) {
        let n = b.len().min(self.buf.len() - self.at);
        self.buf[self.at..self.at + n].copy_from_slice(&b[..n]);
        self.at += n;
    }
}

/// A process began a session: at its start, or after `exec` (same pid, new image).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionMessage<'a> {
    pub pid: u32,
    pub ppid: u32,
    pub tsc: u64,
    /// uftrace session id: 16 hex digits.
    pub sid: [u8; 16],
    /// The executable's path (cut to what fits).
    pub exe: &'a [u8],
}

impl<'a> SessionMessage<'a> {
    pub fn encode(&self, out: &mut [u8; MESSAGE_PAYLOAD]) -> usize {
        let mut w = Writer { buf: out, at: 0 };
        w.put(&self.pid.to_le_bytes());
        w.put(&self.ppid.to_le_bytes());
        w.put(&self.tsc.to_le_bytes());
        w.put(&self.sid);
        w.put(self.exe);
        w.at
    }

    pub fn decode(b: &'a [u8]) -> Option<Self> {
        let mut c = Cursor { buf: b, at: 0 };
        let pid = c.u32()?;
        let ppid = c.u32()?;
        let tsc = c.u64()?;
        let sid = c.bytes(16)?.try_into().ok()?;
        Some(SessionMessage {
            pid,
            ppid,
            tsc,
            sid,
            exe: c.rest(),
        })
    }
}

/// A process forked a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForkMessage {
    pub pid: u32,
    pub ppid: u32,
    pub tid: u64,
    pub tsc: u64,
}

impl ForkMessage {
    pub fn encode(&self, out: &mut [u8; MESSAGE_PAYLOAD]) -> usize {
        let mut w = Writer { buf: out, at: 0 };
        w.put(&self.pid.to_le_bytes());
        w.put(&self.ppid.to_le_bytes());
        w.put(&self.tid.to_le_bytes());
        w.put(&self.tsc.to_le_bytes());
        w.at
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut c = Cursor { buf: b, at: 0 };
        Some(ForkMessage {
            pid: c.u32()?,
            ppid: c.u32()?,
            tid: c.u64()?,
            tsc: c.u64()?,
        })
    }
}

/// A library was loaded at run time (`dlopen`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DlopenMessage<'a> {
    pub pid: u32,
    pub tid: u64,
    pub tsc: u64,
    /// Its load bias (`dlpi_addr`).
    pub base: u64,
    pub path: &'a [u8],
}

impl<'a> DlopenMessage<'a> {
    pub fn encode(&self, out: &mut [u8; MESSAGE_PAYLOAD]) -> usize {
        let mut w = Writer { buf: out, at: 0 };
        w.put(&self.pid.to_le_bytes());
        w.put(&0u32.to_le_bytes());
        w.put(&self.tid.to_le_bytes());
        w.put(&self.tsc.to_le_bytes());
        w.put(&self.base.to_le_bytes());
        w.put(self.path);
        w.at
    }

    pub fn decode(b: &'a [u8]) -> Option<Self> {
        let mut c = Cursor { buf: b, at: 0 };
        let pid = c.u32()?;
        c.u32()?;
        Some(DlopenMessage {
            pid,
            tid: c.u64()?,
            tsc: c.u64()?,
            base: c.u64()?,
            path: c.rest(),
        })
    }
}

/// A kernel's stream header ([`crate::stream::Header`]) as a pool message: the `Header` frame
/// of the guest byte stream, checksummed, so that a host reads it with the stream's own
/// decoder. The image name is cut to 64 bytes and the command line to what fits.
pub struct HeaderMessage;

impl HeaderMessage {
    /// Bytes of the frame besides the name and the command line: framing, 47 bytes of fixed
    /// fields (the name's length among them) and the command line's length.
    const FIXED: usize =
        crate::stream::FRAME_HEADER_SIZE + crate::stream::FRAME_TRAILER_SIZE + 47 + 2;

    /// Encodes `h` into `out`; returns the length (0 if it could not be encoded).
    pub fn encode(h: &crate::stream::Header<'_>, out: &mut [u8; MESSAGE_PAYLOAD]) -> usize {
        let name = &h.image_name[..h.image_name.len().min(64)];
        let room = MESSAGE_PAYLOAD - Self::FIXED - name.len();
        let cut = crate::stream::Header {
            image_name: name,
            cmdline: &h.cmdline[..h.cmdline.len().min(room)],
            ..*h
        };
        let mut w = Writer { buf: out, at: 0 };
        let mut writer = crate::stream::StreamWriter::new(|bytes: &[u8]| w.put(bytes));
        match writer.header(&cut) {
            Ok(()) => w.at,
            Err(_) => 0,
        }
    }

    /// The header in a message's payload, checked as a stream frame (checksum included).
    #[cfg(feature = "std")]
    pub fn decode(
        payload: &[u8],
    ) -> Result<crate::stream::OwnedHeader, crate::stream::StreamError> {
        use crate::stream::{Payload, StreamErrorKind, StreamReader};
        match StreamReader::new(payload).next() {
            Some(Ok(frame)) => match frame.payload {
                Payload::Header(h) => Ok(h),
                _ => Err(crate::stream::StreamError {
                    offset: 0,
                    kind: StreamErrorKind::Malformed("a header message holds another frame"),
                }),
            },
            Some(Err(e)) => Err(e),
            None => Err(crate::stream::StreamError {
                offset: 0,
                kind: StreamErrorKind::Malformed("an empty header message"),
            }),
        }
    }
}
