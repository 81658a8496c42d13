//! The gdb remote serial protocol (RSP), client side, over TCP: packet framing (`$data#cs`),
//! checksums, escapes and run-length encoding, acks until no-ack mode is on, and a time limit
//! on every read.
//!
//! Several packets can be queued and sent with one write ([`RspClient::flush`]); the stub
//! answers them in order, so a batch costs one round trip. Anything that is not the protocol
//! (a byte outside a packet, a bad checksum, a packet without an end) is an error that says
//! where in the connection it was and what was being waited for: after it the stream cannot be
//! trusted any more.
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The longest packet accepted. QEMU's largest is 4 KiB; a "packet" far longer than this is
/// not the protocol.
const MAX_PACKET: usize = 1 << 20;
/// The largest run-length repeat, and the most bytes a packet may decode to.
const MAX_DECODED: usize = 4 * MAX_PACKET;

/// What went wrong talking to the stub. Every variant names the stub's address.
#[derive(Debug, thiserror::Error)]
pub enum RspError {
    #[error("cannot connect to the gdb stub at {peer}: {source} (is the VM running with a gdb stub there? QEMU: -gdb tcp:HOST:PORT, uhyve: --gdb-port PORT)")]
    Connect { peer: String, source: io::Error },
    #[error("the gdb stub at {peer} closed the connection while {context} (the VM exited or was stopped)")]
    Closed { peer: String, context: String },
    #[error("no answer from the gdb stub at {peer} within {:.1} s while {context}", timeout.as_secs_f64())]
    Timeout {
        peer: String,
        context: String,
        timeout: Duration,
    },
    #[error("the gdb stub at {peer} sent {what} at byte {offset} of the connection, while {context}: that is not the gdb remote protocol (is {peer} a gdb stub?)")]
    Garbage {
        peer: String,
        offset: u64,
        context: String,
        what: String,
    },
    #[error("talking to the gdb stub at {peer}: {source}")]
    Io { peer: String, source: io::Error },
}

/// A connection to a gdb stub.
pub struct RspClient {
    stream: TcpStream,
    peer: String,
    timeout: Duration,
    /// Received bytes not consumed yet: `inbuf[pos..len]`.
    inbuf: Box<[u8]>,
    pos: usize,
    len: usize,
    /// Bytes received before `inbuf[0]`, for offsets in errors.
    consumed: u64,
    /// Packets queued by [`RspClient::queue`], sent by [`RspClient::flush`].
    out: Vec<u8>,
    ack_mode: bool,
}

impl RspClient {
    /// Connects to `addr` (`HOST:PORT`), with `timeout` for the connection and for every read
    /// and write after it.
    pub fn connect(addr: &str, timeout: Duration) -> Result<RspClient, RspError> {
        let peer = addr.to_string();
        let connect_err = |source| RspError::Connect {
            peer: peer.clone(),
            source,
        };
        let addrs: Vec<_> = addr.to_socket_addrs().map_err(connect_err)?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(stream) => return RspClient::from_stream(stream, peer, timeout),
                Err(e) => last = e,
            }
        }
        Err(connect_err(last))
    }

    fn from_stream(
        stream: TcpStream,
        peer: String,
        timeout: Duration,
    ) -> Result<RspClient, RspError> {
        let io_err = |source| RspError::Io {
            peer: peer.clone(),
            source,
        };
        // Every packet is small and answered at once: Nagle's algorithm would only add delay.
        stream.set_nodelay(true).map_err(io_err)?;
        stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
        stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
        Ok(RspClient {
            stream,
            peer,
            timeout,
            inbuf: vec![0; 64 * 1024].into_boxed_slice(),
            pos: 0,
            len: 0,
            consumed: 0,
            out: Vec::with_capacity(4096),
            ack_mode: true,
        })
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Stops acknowledging packets (after the stub said OK to `QStartNoAckMode`).
    pub fn set_no_ack(&mut self) {
        self.ack_mode = false;
    }

    /// Queues `$payload#checksum`, escaping the bytes the protocol reserves.
    pub fn queue(&mut self, payload: &[u8]) {
        self.out.push(b'$');
        let mut sum: u8 = 0;
        for &b in payload {
            if matches!(b, b'$' | b'#' | b'}' | b'*') {
                self.out.push(b'}');
                self.out.push(b ^ 0x20);
                sum = sum.wrapping_add(b'}').wrapping_add(b ^ 0x20);
            } else {
                self.out.push(b);
                sum = sum.wrapping_add(b);
            }
        }
        self.out.push(b'#');
        self.out.extend_from_slice(&hex_byte(sum));
    }

    /// Queues the interrupt byte (0x03, what gdb sends for Ctrl-C): the stub stops the VM and
    /// answers with a stop reply.
    pub fn queue_interrupt(&mut self) {
        self.out.push(0x03);
    }

    /// Sends everything queued with one write.
    pub fn flush(&mut self) -> Result<(), RspError> {
        let result = self.stream.write_all(&self.out);
        self.out.clear();
        result.map_err(|e| self.io_error(e, "sending a request"))
    }

    /// Sends `payload` (and anything queued before it) and reads one reply.
    pub fn request(&mut self, payload: &[u8], context: &str) -> Result<Vec<u8>, RspError> {
        self.queue(payload);
        self.flush()?;
        self.read_packet(context)
    }

    /// Reads the next packet and returns its decoded payload. `context` says what is awaited,
    /// for errors ("waiting for the reply to `g`").
    pub fn read_packet(&mut self, context: &str) -> Result<Vec<u8>, RspError> {
        let deadline = Instant::now() + self.timeout;
        // Acks of our own packets may come first.
        let start = loop {
            let offset = self.offset();
            match self.next_byte(deadline, context)? {
                b'+' => continue,
                b'$' => break offset,
                b'-' => {
                    return Err(self.garbage(
                        offset,
                        context,
                        "a NAK ('-': it got one of our packets damaged)".into(),
                    ))
                }
                other => {
                    return Err(self.garbage(
                        offset,
                        context,
                        format!("{} where a packet ('$') was expected", describe_byte(other)),
                    ))
                }
            }
        };
        let mut raw = Vec::new();
        let mut sum: u8 = 0;
        loop {
            let b = self.next_byte(deadline, context)?;
            if b == b'#' {
                break;
            }
            if b == b'$' {
                return Err(self.garbage(
                    start,
                    context,
                    "a packet that starts again ('$') before its end ('#')".into(),
                ));
            }
            if raw.len() >= MAX_PACKET {
                return Err(self.garbage(
                    start,
                    context,
                    format!("a packet longer than {MAX_PACKET} bytes without its end ('#')"),
                ));
            }
            sum = sum.wrapping_add(b);
            raw.push(b);
        }
        let hi = self.next_byte(deadline, context)?;
        let lo = self.next_byte(deadline, context)?;
        let given = match (hex_digit(hi), hex_digit(lo)) {
            (Some(h), Some(l)) => h << 4 | l,
            _ => {
                return Err(self.garbage(
                    start,
                    context,
                    format!(
                        "a packet whose checksum is not two hex digits ({} {}) after {}",
                        describe_byte(hi),
                        describe_byte(lo),
                        excerpt(&raw)
                    ),
                ))
            }
        };
        if given != sum {
            return Err(self.garbage(
                start,
                context,
                format!(
                    "a packet with a wrong checksum ({given:02x}, its bytes sum to {sum:02x}): {}",
                    excerpt(&raw)
                ),
            ));
        }
        if self.ack_mode {
            // Sent with the next request: a separate write would cost a system call here and
            // a wake-up of the stub, and the stub takes the next packet as an ack anyway.
            self.out.push(b'+');
        }
        decode(&raw).map_err(|what| self.garbage(start, context, what))
    }

    /// Bytes received so far: the offset of the next byte.
    fn offset(&self) -> u64 {
        self.consumed + self.pos as u64
    }

    fn next_byte(&mut self, deadline: Instant, context: &str) -> Result<u8, RspError> {
        if self.pos == self.len {
            self.fill(deadline, context)?;
        }
        let b = self.inbuf[self.pos];
        self.pos += 1;
        Ok(b)
    }

    /// Reads more bytes. The socket's timeout bounds each read; `deadline` bounds the packet,
    /// so a stub that sends a byte now and then cannot keep us waiting forever.
    fn fill(&mut self, deadline: Instant, context: &str) -> Result<(), RspError> {
        self.consumed += self.len as u64;
        self.pos = 0;
        self.len = 0;
        loop {
            if Instant::now() > deadline {
                return Err(self.timeout_error(context));
            }
            match self.stream.read(&mut self.inbuf) {
                Ok(0) => {
                    return Err(RspError::Closed {
                        peer: self.peer.clone(),
                        context: context.to_string(),
                    })
                }
                Ok(n) => {
                    self.len = n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error(e, context)),
            }
        }
    }

    fn timeout_error(&self, context: &str) -> RspError {
        RspError::Timeout {
            peer: self.peer.clone(),
            context: context.to_string(),
            timeout: self.timeout,
        }
    }

    fn io_error(&self, e: io::Error, context: &str) -> RspError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.timeout_error(context),
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => RspError::Closed {
                peer: self.peer.clone(),
                context: context.to_string(),
            },
            _ => RspError::Io {
                peer: self.peer.clone(),
                source: e,
            },
        }
    }

    fn garbage(&self, offset: u64, context: &str, what: String) -> RspError {
        RspError::Garbage {
            peer: self.peer.clone(),
            offset,
            context: context.to_string(),
            what,
        }
    }
}

/// Undoes the escapes (`}` + byte ^ 0x20) and run-length encoding (`*` + count + 29) of a
/// packet's bytes.
fn decode(raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'}' => {
                let Some(&next) = raw.get(i + 1) else {
                    return Err(format!(
                        "a packet ending in an escape ('}}'): {}",
                        excerpt(raw)
                    ));
                };
                out.push(next ^ 0x20);
                i += 2;
            }
            b'*' => {
                let (Some(&last), Some(&count)) = (out.last(), raw.get(i + 1)) else {
                    return Err(format!(
                        "a run-length '*' with nothing to repeat: {}",
                        excerpt(raw)
                    ));
                };
                // gdb encodes n repeats as the character n + 29, n >= 3.
                let repeats = (count as usize).checked_sub(29).filter(|n| *n >= 3);
                let Some(repeats) = repeats else {
                    return Err(format!(
                        "a run-length count {} that gdb never sends: {}",
                        describe_byte(count),
                        excerpt(raw)
                    ));
                };
                if out.len() + repeats > MAX_DECODED {
                    return Err("a packet that decodes to more than 4 MiB".into());
                }
                out.extend(std::iter::repeat_n(last, repeats));
                i += 2;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn hex_byte(b: u8) -> [u8; 2] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    [DIGITS[(b >> 4) as usize], DIGITS[(b & 15) as usize]]
}

/// `hex` as bytes (two digits each), or None if it is not an even number of hex digits.
pub fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks_exact(2)
        .map(|p| Some(hex_digit(p[0])? << 4 | hex_digit(p[1])?))
        .collect()
}

/// `bytes` as lowercase hex.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|&b| hex_byte(b).map(char::from))
        .collect()
}

fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() || b == b' ' {
        format!("byte {b:#04x} ('{}')", b as char)
    } else {
        format!("byte {b:#04x}")
    }
}

/// The start of a packet's bytes, printable, for error messages.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    const SHOWN: usize = 48;
    let shown: String = bytes
        .iter()
        .take(SHOWN)
        .flat_map(|&b| std::ascii::escape_default(b).map(char::from))
        .collect();
    if bytes.len() > SHOWN {
        format!("\"{shown}...\" ({} bytes)", bytes.len())
    } else {
        format!("\"{shown}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A client connected to a thread that sends `script` and then keeps the socket open
    /// until told, returning what it received.
    fn scripted(script: &'static [u8]) -> (RspClient, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(script).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            got
        });
        let client = RspClient::connect(&addr, Duration::from_millis(200)).unwrap();
        (client, server)
    }

    #[test]
    fn packets_are_framed_escaped_and_checksummed() {
        let (mut c, server) = scripted(b"");
        c.queue(b"m1000,4");
        c.queue(b"a$b");
        c.queue_interrupt();
        c.flush().unwrap();
        drop(c);
        let sent = server.join().unwrap();
        assert_eq!(sent, b"$m1000,4#8e$a}\x04b#44\x03");
    }

    #[test]
    fn replies_are_decoded_and_acked() {
        // "0* " is "0" and 3 more (' ' - 29); "}]" is an escaped '}'.
        let (mut c, server) = scripted(b"+$OK#9a+$0* #7a$a}]b#9d");
        assert_eq!(c.read_packet("test").unwrap(), b"OK");
        assert_eq!(c.read_packet("test").unwrap(), b"0000");
        assert_eq!(c.read_packet("test").unwrap(), b"a}b");
        c.flush().unwrap();
        drop(c);
        assert_eq!(server.join().unwrap(), b"+++");
    }

    #[test]
    fn garbage_is_an_error_with_its_offset() {
        let (mut c, _server) = scripted(b"$OK#9ahello");
        c.set_no_ack();
        c.read_packet("first").unwrap();
        let e = c.read_packet("waiting for the reply to `g`").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("byte 0x68 ('h') where a packet ('$') was expected")
                && text.contains("at byte 6")
                && text.contains("reply to `g`"),
            "{text}"
        );
    }

    #[test]
    fn wrong_checksum_is_rejected() {
        let (mut c, _server) = scripted(b"$OK#00");
        let e = c.read_packet("x").unwrap_err().to_string();
        assert!(
            e.contains("wrong checksum (00, its bytes sum to 9a)"),
            "{e}"
        );
        let (mut c, _server) = scripted(b"$OK#zz");
        let e = c.read_packet("x").unwrap_err().to_string();
        assert!(e.contains("not two hex digits"), "{e}");
        let (mut c, _server) = scripted(b"$*!#4b");
        let e = c.read_packet("x").unwrap_err().to_string();
        assert!(e.contains("nothing to repeat"), "{e}");
    }

    #[test]
    fn silence_times_out_and_a_close_is_reported() {
        let (mut c, server) = scripted(b"$O");
        let started = Instant::now();
        let e = c.read_packet("waiting for a stop reply").unwrap_err();
        assert!(matches!(e, RspError::Timeout { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(server);
        let (mut c, server) = scripted(b"");
        server.join().unwrap();
        let e = c.read_packet("waiting").unwrap_err();
        assert!(matches!(e, RspError::Closed { .. }), "{e}");
    }

    #[test]
    fn nothing_listening_is_a_connect_error() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = RspClient::connect(&format!("127.0.0.1:{port}"), Duration::from_millis(500))
            .err()
            .unwrap();
        let text = e.to_string();
        assert!(
            text.contains("cannot connect") && text.contains("-gdb tcp:"),
            "{text}"
        );
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(decode_hex(b"00ff7f").unwrap(), [0, 255, 127]);
        assert_eq!(encode_hex(&[0, 255, 127]), "00ff7f");
        assert!(decode_hex(b"0").is_none());
        assert!(decode_hex(b"zz").is_none());
    }
}
