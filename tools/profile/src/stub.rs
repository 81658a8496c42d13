//! A gdb stub session in all-stop mode: the handshake (features, no-ack mode when offered,
//! the target description, the vCPU threads), stopping the VM and reading every vCPU's
//! registers in one round trip, guest memory reads, resuming and detaching.
//!
//! QEMU stops the VM when a client connects, stops it again on the interrupt byte (0x03) with
//! one stop reply, and processes packets that follow the interrupt in the same write once the
//! VM is stopped: `0x03 Hg<t> g Hg<t'> g ...` is one round trip for all registers. The protocol
//! itself promises no such thing (a client is to wait for the stop reply; uhyve's stub answers
//! packets sent right after the interrupt before it stops), so other stubs get two round trips.
use std::time::Duration;

use crate::regs::{
    number_registers, parse_feature_doc, Decoded, FeatureDoc, RegisterLayout, Registers,
};
use crate::rsp::{decode_hex, excerpt, RspClient, RspError};

/// Largest target description accepted (all documents together); QEMU's is 10 KiB.
const MAX_DESCRIPTION_BYTES: usize = 1 << 20;
const MAX_DESCRIPTION_DOCS: usize = 32;
/// More vCPUs than this is not a VM this tool can sample at any rate.
const MAX_THREADS: usize = 1024;

/// Why the stub session failed.
#[derive(Debug, thiserror::Error)]
pub enum StubError {
    #[error(transparent)]
    Protocol(#[from] RspError),
    #[error("the gdb stub at {peer} answered `{command}` with {reply}")]
    Refused {
        peer: String,
        command: String,
        reply: String,
    },
    #[error("the gdb stub at {peer}: {message}")]
    Unexpected { peer: String, message: String },
}

/// How the VM stopped, from a stop reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReply {
    /// `S`/`T`: stopped with a signal (2 = our interrupt).
    Stopped { signal: u8 },
    /// `W` (exit code) or `X` (signal): the VM is gone.
    Exited { status: String },
}

/// One vCPU's stop: its registers, or why they could not be read.
pub type VcpuRegisters = Result<Registers, String>;

/// A stub session. The VM is stopped after [`Stub::attach`] until [`Stub::resume`].
pub struct Stub {
    client: RspClient,
    layout: RegisterLayout,
    threads: Vec<String>,
    /// Most data bytes one `m` reply can carry.
    max_read: usize,
    /// How to let the VM run: `vCont;c` where the stub has it (uhyve's resolves a plain `c` to
    /// a thread it does not have), else `c`.
    resume: &'static [u8],
    /// Register reads may follow the interrupt in the same write (QEMU).
    pipelined_stop: bool,
    stopped: bool,
}

impl Stub {
    /// Connects and does the handshake. Leaves the VM stopped (connecting stops it).
    pub fn attach(addr: &str, timeout: Duration) -> Result<Stub, StubError> {
        let mut client = RspClient::connect(addr, timeout)?;
        let context = "waiting for the reply to qSupported (the handshake)";
        let mut features = client.request(b"qSupported:xmlRegisters=i386", context)?;
        // QEMU stops a running VM when a client connects and says so at once: a stop reply
        // may come before the answer.
        if is_stop_reply(&features) {
            features = client.read_packet(context)?;
        }
        let features = String::from_utf8_lossy(&features).into_owned();
        let offered = |name: &str| features.split(';').any(|f| f == format!("{name}+"));
        if offered("QStartNoAckMode") {
            let reply = client.request(
                b"QStartNoAckMode",
                "waiting for the reply to QStartNoAckMode",
            )?;
            if reply == b"OK" {
                client.set_no_ack();
            }
        }
        let packet_size = features
            .split(';')
            .find_map(|f| f.strip_prefix("PacketSize="))
            .and_then(|v| usize::from_str_radix(v, 16).ok())
            .unwrap_or(400);
        // An `m` reply is two hex digits per byte plus framing.
        let max_read = (packet_size.saturating_sub(16) / 2).clamp(64, 4096);
        let status = client.request(b"?", "waiting for the reply to `?` (the VM's state)")?;
        let vcont = client.request(b"vCont?", "waiting for the reply to vCont?")?;
        let resume: &[u8] =
            if vcont.starts_with(b"vCont") && vcont.split(|&b| b == b';').any(|a| a == b"c") {
                b"vCont;c"
            } else {
                b"c"
            };
        // A QEMU-only query tells QEMU's stub apart.
        let sstep = client.request(
            b"qqemu.sstepbits",
            "waiting for the reply to qqemu.sstepbits",
        )?;
        let pipelined_stop = sstep.starts_with(b"ENABLE=");
        let mut stub = Stub {
            resume,
            pipelined_stop,
            layout: RegisterLayout::fallback(),
            client,
            threads: Vec::new(),
            max_read,
            stopped: true,
        };
        if let StopReply::Exited { status } = stub.parse_stop(&status)? {
            return Err(stub.unexpected(format!("the VM has already exited ({status})")));
        }
        if offered("qXfer:features:read") {
            stub.layout = stub.read_layout()?;
        }
        stub.threads = stub.read_threads()?;
        Ok(stub)
    }

    pub fn peer(&self) -> &str {
        self.client.peer()
    }

    pub fn layout(&self) -> &RegisterLayout {
        &self.layout
    }

    /// The vCPUs, as the stub names its threads.
    pub fn threads(&self) -> &[String] {
        &self.threads
    }

    /// Most bytes one `m` request reads.
    pub fn max_read(&self) -> usize {
        self.max_read
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Reads `target.xml` and what it includes.
    fn read_layout(&mut self) -> Result<RegisterLayout, StubError> {
        let mut docs: Vec<FeatureDoc> = Vec::new();
        let mut pending = vec!["target.xml".to_string()];
        let mut total = 0usize;
        while let Some(name) = pending.pop() {
            if docs.len() >= MAX_DESCRIPTION_DOCS {
                return Err(self.unexpected(format!(
                    "its target description has more than {MAX_DESCRIPTION_DOCS} documents"
                )));
            }
            let text = self.read_xfer("features", &name, &mut total)?;
            let doc = parse_feature_doc(&name, &text).map_err(|e| {
                self.unexpected(format!("its target description is malformed: {e}"))
            })?;
            if let Some(arch) = &doc.architecture {
                if arch != "i386:x86-64" {
                    return Err(self.unexpected(format!(
                        "it describes a {arch} target; only x86_64 (i386:x86-64) guests can be sampled"
                    )));
                }
            }
            // Includes are read depth-first in document order, as gdb numbers them.
            pending.extend(doc.includes.iter().rev().cloned());
            docs.push(doc);
        }
        let registers = number_registers(&docs);
        if registers.is_empty() {
            // Only feature names (uhyve's stub): gdb then uses its own amd64 layout.
            return Ok(RegisterLayout::fallback());
        }
        RegisterLayout::from_registers(
            &registers,
            format!("the target description of {}", self.peer()),
        )
        .map_err(|e| self.unexpected(e))
    }

    /// One `qXfer:OBJECT:read:ANNEX` object, in pieces.
    fn read_xfer(
        &mut self,
        object: &str,
        annex: &str,
        total: &mut usize,
    ) -> Result<String, StubError> {
        let mut data = Vec::new();
        loop {
            let command = format!(
                "qXfer:{object}:read:{annex}:{:x},{:x}",
                data.len(),
                self.max_read
            );
            let reply = self.client.request(
                command.as_bytes(),
                &format!("waiting for the reply to {command}"),
            )?;
            let (more, chunk) = match reply.split_first() {
                Some((b'm', rest)) => (true, rest),
                Some((b'l', rest)) => (false, rest),
                _ => return Err(self.refused(&command, &reply)),
            };
            *total += chunk.len();
            if *total > MAX_DESCRIPTION_BYTES {
                return Err(self.unexpected(format!(
                    "its target description is larger than {MAX_DESCRIPTION_BYTES} bytes"
                )));
            }
            data.extend_from_slice(chunk);
            if !more || chunk.is_empty() {
                break;
            }
        }
        String::from_utf8(data)
            .map_err(|_| self.unexpected(format!("{annex} of its target description is not UTF-8")))
    }

    /// The thread ids (`qfThreadInfo`, `qsThreadInfo`...): one per vCPU.
    fn read_threads(&mut self) -> Result<Vec<String>, StubError> {
        let mut threads = Vec::new();
        let mut command: &[u8] = b"qfThreadInfo";
        loop {
            let reply = self
                .client
                .request(command, "waiting for the list of threads (vCPUs)")?;
            match reply.split_first() {
                Some((b'l', _)) => break,
                Some((b'm', list)) => {
                    for id in list.split(|&b| b == b',') {
                        let valid = !id.is_empty()
                            && id.len() <= 32
                            && id
                                .iter()
                                .all(|b| b.is_ascii_hexdigit() || b".p-".contains(b));
                        if !valid {
                            return Err(self.unexpected(format!(
                                "its thread list has an invalid thread id {}",
                                excerpt(id)
                            )));
                        }
                        threads.push(String::from_utf8_lossy(id).into_owned());
                    }
                    if threads.len() > MAX_THREADS {
                        return Err(
                            self.unexpected(format!("it lists more than {MAX_THREADS} threads"))
                        );
                    }
                }
                _ if threads.is_empty() => {
                    // A stub without thread support has one implicit thread.
                    return Ok(Vec::new());
                }
                _ => return Err(self.refused(&String::from_utf8_lossy(command), &reply)),
            }
            command = b"qsThreadInfo";
        }
        Ok(threads)
    }

    /// Stops the VM (unless it is stopped) and reads every vCPU's registers, in one round trip.
    pub fn stop_and_read_registers(&mut self) -> Result<Stopped, StubError> {
        if !self.stopped {
            self.client.queue_interrupt();
            if self.pipelined_stop {
                self.queue_register_reads();
            }
            self.client.flush()?;
            let reply = self.read_stop_reply()?;
            self.stopped = true;
            if let StopReply::Exited { status } = reply {
                return Ok(Stopped::Exited(status));
            }
            if self.pipelined_stop {
                return self.read_register_replies().map(Stopped::Registers);
            }
        }
        self.queue_register_reads();
        self.client.flush()?;
        self.read_register_replies().map(Stopped::Registers)
    }

    fn queue_register_reads(&mut self) {
        // Every read names its vCPU, even the only one: uhyve's stub does not pick one itself.
        if self.threads.is_empty() {
            self.client.queue(b"g");
        }
        for t in &self.threads {
            self.client.queue(format!("Hg{t}").as_bytes());
            self.client.queue(b"g");
        }
    }

    fn read_register_replies(&mut self) -> Result<Vec<VcpuRegisters>, StubError> {
        let mut out = Vec::with_capacity(self.threads.len().max(1));
        for i in 0..self.threads.len().max(1) {
            if let Some(t) = self.threads.get(i) {
                let reply = self
                    .client
                    .read_packet(&format!("waiting for the reply to Hg{t}"))?;
                if reply != b"OK" {
                    return Err(self.refused(&format!("Hg{t}"), &reply));
                }
            }
            let reply = self.client.read_packet("waiting for the registers (`g`)")?;
            if reply.first() == Some(&b'E') && reply.len() == 3 {
                out.push(Err(format!(
                    "the stub could not read its registers ({})",
                    String::from_utf8_lossy(&reply)
                )));
                continue;
            }
            // A reply the description does not fit: the stub is at fault, not the vCPU.
            match self.layout.decode(&reply).map_err(|e| self.unexpected(e))? {
                Decoded::Registers(r) => out.push(Ok(r)),
                Decoded::Unavailable => {
                    out.push(Err("the stub marks rip, rsp or rbp unavailable".into()))
                }
            }
        }
        Ok(out)
    }

    /// Reads the stop reply, skipping console output (`O` packets).
    fn read_stop_reply(&mut self) -> Result<StopReply, StubError> {
        loop {
            let reply = self
                .client
                .read_packet("waiting for the VM to stop (the stop reply)")?;
            if reply.first() == Some(&b'O') && reply != b"OK" {
                continue;
            }
            return self.parse_stop(&reply);
        }
    }

    fn parse_stop(&self, reply: &[u8]) -> Result<StopReply, StubError> {
        let code = reply.get(1..3).and_then(decode_hex).map(|v| v[0]);
        match (reply.first(), code) {
            (Some(b'S' | b'T'), Some(signal)) => Ok(StopReply::Stopped { signal }),
            (Some(b'W'), Some(c)) => Ok(StopReply::Exited {
                status: format!("exit code {c}"),
            }),
            (Some(b'X'), Some(s)) => Ok(StopReply::Exited {
                status: format!("killed by signal {s}"),
            }),
            _ => Err(self.unexpected(format!(
                "it sent {} where a stop reply (S, T, W or X) was expected",
                excerpt(reply)
            ))),
        }
    }

    /// Lets the VM run again. No reply: the next stop reply answers it.
    pub fn resume(&mut self) -> Result<(), StubError> {
        if self.stopped {
            self.client.queue(self.resume);
            self.client.flush()?;
            self.stopped = false;
        }
        Ok(())
    }

    /// Stops the VM if it runs, then detaches: the stub lets the VM run on without us.
    pub fn detach(&mut self) -> Result<(), StubError> {
        if !self.stopped {
            self.client.queue_interrupt();
            self.client.flush()?;
            let reply = self.read_stop_reply()?;
            self.stopped = true;
            if let StopReply::Exited { .. } = reply {
                return Ok(());
            }
        }
        let reply = self
            .client
            .request(b"D", "waiting for the reply to D (detach)")?;
        if reply != b"OK" {
            return Err(self.refused("D", &reply));
        }
        Ok(())
    }

    /// Asks the stub to detach (which lets the VM run) without waiting for an answer: after a
    /// timeout the session is out of step, and a slow stub must not keep the VM stopped.
    pub fn abandon(&mut self) {
        self.client.queue(b"D");
        let _ = self.client.flush();
    }

    /// Guest-virtual memory of vCPU `thread` (an index into [`Stub::threads`]), through the
    /// stub (`Hg` + `m`, one round trip per `max_read` bytes). The VM must be stopped.
    pub fn read_memory(
        &mut self,
        thread: usize,
        addr: u64,
        buf: &mut [u8],
    ) -> Result<(), MemoryReadError> {
        let mut done = 0;
        let thread_id = self.threads.get(thread).cloned();
        while done < buf.len() {
            let len = (buf.len() - done).min(self.max_read);
            let at = addr.wrapping_add(done as u64);
            if let Some(t) = &thread_id {
                self.client.queue(format!("Hg{t}").as_bytes());
            }
            let command = format!("m{at:x},{len:x}");
            self.client.queue(command.as_bytes());
            self.client
                .flush()
                .map_err(|e| MemoryReadError::Stub(e.into()))?;
            if thread_id.is_some() {
                let reply = self
                    .client
                    .read_packet("waiting for the reply to Hg")
                    .map_err(|e| MemoryReadError::Stub(e.into()))?;
                if reply != b"OK" {
                    return Err(MemoryReadError::Stub(self.refused("Hg", &reply)));
                }
            }
            let reply = self
                .client
                .read_packet(&format!("waiting for the reply to {command}"))
                .map_err(|e| MemoryReadError::Stub(e.into()))?;
            if reply.first() == Some(&b'E') {
                return Err(MemoryReadError::Unreadable { addr: at });
            }
            let bytes = decode_hex(&reply).ok_or_else(|| {
                MemoryReadError::Stub(self.unexpected(format!(
                    "its reply to {command} is not hex: {}",
                    excerpt(&reply)
                )))
            })?;
            // A stub may return fewer bytes than asked (the rest is unreadable), never more.
            if bytes.is_empty() || bytes.len() > len {
                return Err(if bytes.is_empty() {
                    MemoryReadError::Unreadable { addr: at }
                } else {
                    MemoryReadError::Stub(
                        self.unexpected(format!(
                            "it answered {command} with {} bytes",
                            bytes.len()
                        )),
                    )
                });
            }
            buf[done..done + bytes.len()].copy_from_slice(&bytes);
            done += bytes.len();
        }
        Ok(())
    }

    fn refused(&self, command: &str, reply: &[u8]) -> StubError {
        StubError::Refused {
            peer: self.peer().to_string(),
            command: command.to_string(),
            reply: if reply.is_empty() {
                "an empty reply (not supported)".into()
            } else {
                excerpt(reply)
            },
        }
    }

    fn unexpected(&self, message: String) -> StubError {
        StubError::Unexpected {
            peer: self.peer().to_string(),
            message,
        }
    }
}

/// `S` or `T` and a two-digit signal: the shape of a stop reply.
fn is_stop_reply(packet: &[u8]) -> bool {
    matches!(packet, [b'S' | b'T', a, b, ..] if a.is_ascii_hexdigit() && b.is_ascii_hexdigit())
}

/// What a stop found.
#[derive(Debug)]
pub enum Stopped {
    /// One entry per vCPU, in [`Stub::threads`] order.
    Registers(Vec<VcpuRegisters>),
    /// The VM exited before it could be stopped.
    Exited(String),
}

/// A guest memory read through the stub that failed.
#[derive(Debug)]
pub enum MemoryReadError {
    /// The stub could not read guest memory there (not mapped).
    Unreadable { addr: u64 },
    /// The session itself failed.
    Stub(StubError),
}
