//! Guest-virtual memory for the stack walk, from one of two sources:
//! - [`RamMemory`]: the VM's RAM file (QEMU's `memory-backend-file,share=on`), translated with
//!   a 4-level page-table walk from the vCPU's CR3 ([`crate::paging`]); no round trip to the
//!   stub at all, so the stack can be read in microseconds while the VM is stopped;
//! - [`StubMemory`]: the stub's `m` packets (one round trip per read that misses its cache).
//!
//! Guest memory is hostile: every address comes from the guest, so a read is bounded, checked
//! and may fail ([`Fault`]); it never panics and never reads outside the RAM file.
use std::collections::HashMap;

use crate::paging::{PageWalk, RamFile, PAGE_SIZE};
use crate::stub::{MemoryReadError, Stub, StubError};

/// Why guest memory could not be read at `addr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub addr: u64,
    pub reason: FaultReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultReason {
    /// Not mapped in the guest's page tables (or the stub could not read it).
    NotMapped,
    /// Not a canonical x86_64 address.
    NonCanonical,
    /// Mapped to guest-physical memory that the RAM file does not hold.
    OutsideRam,
    /// Paging mode this walker does not know (32-bit, PAE without long mode, 5-level).
    UnsupportedPaging,
    /// Reading the RAM file failed.
    Io,
}

impl FaultReason {
    pub fn describe(self) -> &'static str {
        match self {
            FaultReason::NotMapped => "unmapped memory",
            FaultReason::NonCanonical => "a non-canonical address",
            FaultReason::OutsideRam => "memory outside the RAM file",
            FaultReason::UnsupportedPaging => "an unsupported paging mode",
            FaultReason::Io => "a RAM file read error",
        }
    }
}

/// Reads guest-virtual memory of one vCPU, as it is while the VM is stopped.
pub trait GuestMemory {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Fault>;

    fn read_u64(&mut self, addr: u64) -> Result<u64, Fault> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// Guest-physical pages read from the RAM file during one stop: page tables and stack pages
/// are read once per stop, whole, with one `pread` each. Cleared at every stop (the guest
/// changes its memory while it runs).
#[derive(Default)]
pub struct PageCache {
    pages: HashMap<u64, Box<[u8; PAGE_SIZE]>>,
    /// Boxes of cleared pages, reused.
    spare: Vec<Box<[u8; PAGE_SIZE]>>,
    /// Pages read since the last clear.
    pub reads: u64,
}

impl PageCache {
    pub fn clear(&mut self) {
        let pages = std::mem::take(&mut self.pages);
        self.spare.extend(pages.into_values());
        self.reads = 0;
    }

    /// The physical page at `frame` (page-aligned address).
    pub fn page(&mut self, ram: &RamFile, frame: u64) -> Result<&[u8; PAGE_SIZE], FaultReason> {
        if !self.pages.contains_key(&frame) {
            let mut page = self.spare.pop().unwrap_or_else(|| Box::new([0; PAGE_SIZE]));
            ram.read_page(frame, &mut page)?;
            self.reads += 1;
            self.pages.insert(frame, page);
        }
        Ok(&self.pages[&frame])
    }
}

/// One vCPU's virtual memory through the RAM file.
pub struct RamMemory<'a> {
    pub ram: &'a RamFile,
    pub walk: PageWalk,
    pub cache: &'a mut PageCache,
}

impl GuestMemory for RamMemory<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
        let mut done = 0usize;
        while done < buf.len() {
            let va = addr.wrapping_add(done as u64);
            let fault = |reason| Fault { addr: va, reason };
            let pa = self
                .walk
                .translate(self.ram, self.cache, va)
                .map_err(fault)?;
            let in_page = (pa % PAGE_SIZE as u64) as usize;
            let n = (PAGE_SIZE - in_page).min(buf.len() - done);
            let page = self
                .cache
                .page(self.ram, pa - in_page as u64)
                .map_err(fault)?;
            buf[done..done + n].copy_from_slice(&page[in_page..in_page + n]);
            done += n;
        }
        Ok(())
    }
}

/// Most bytes read per `m` request on a cache miss (as much as the stub's packets carry, up to
/// this): a stack walk reads 16 bytes per frame, and a round trip costs far more than the bytes.
const MAX_STUB_CHUNK: usize = 4096;

/// One vCPU's virtual memory through the stub, with a per-stop cache of aligned chunks.
pub struct StubMemory<'a> {
    pub stub: &'a mut Stub,
    pub thread: usize,
    chunk: u64,
    /// Chunks are laid out from here: a stack walk reads upward from rsp, so the first chunk
    /// starting at rsp holds most of it.
    origin: u64,
    chunks: HashMap<u64, Option<Vec<u8>>>,
    /// Set when the session itself failed; the walk then ends and the caller reports it.
    pub error: Option<StubError>,
    /// `m` requests sent.
    pub requests: u64,
}

impl<'a> StubMemory<'a> {
    /// Reads of vCPU `thread`'s memory, in chunks laid out from `origin` (its rsp for a walk).
    pub fn new(stub: &'a mut Stub, thread: usize, origin: u64) -> StubMemory<'a> {
        let chunk = (stub.max_read().min(MAX_STUB_CHUNK) & !63).max(64) as u64;
        StubMemory {
            chunk,
            origin,
            stub,
            thread,
            chunks: HashMap::new(),
            error: None,
            requests: 0,
        }
    }

    fn chunk(&mut self, base: u64) -> Option<&[u8]> {
        if !self.chunks.contains_key(&base) {
            let mut buf = vec![0u8; self.chunk as usize];
            self.requests += 1;
            let got = match self.stub.read_memory(self.thread, base, &mut buf) {
                Ok(()) => Some(buf),
                Err(MemoryReadError::Unreadable { .. }) => None,
                Err(MemoryReadError::Stub(e)) => {
                    self.error.get_or_insert(e);
                    None
                }
            };
            self.chunks.insert(base, got);
        }
        self.chunks[&base].as_deref()
    }
}

impl GuestMemory for StubMemory<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
        if self.error.is_some() {
            return Err(Fault {
                addr,
                reason: FaultReason::NotMapped,
            });
        }
        let mut done = 0usize;
        while done < buf.len() {
            let va = addr.wrapping_add(done as u64);
            let base = va - va.wrapping_sub(self.origin) % self.chunk;
            let off = (va - base) as usize;
            let n = (self.chunk as usize - off).min(buf.len() - done);
            match self.chunk(base) {
                Some(chunk) => buf[done..done + n].copy_from_slice(&chunk[off..off + n]),
                // A chunk that crosses into unmapped memory fails whole: read the part asked
                // for alone before calling it unmapped.
                None => {
                    let mut exact = vec![0u8; n];
                    self.requests += 1;
                    match self.stub.read_memory(self.thread, va, &mut exact) {
                        Ok(()) => buf[done..done + n].copy_from_slice(&exact),
                        Err(MemoryReadError::Unreadable { addr }) => {
                            return Err(Fault {
                                addr,
                                reason: FaultReason::NotMapped,
                            })
                        }
                        Err(MemoryReadError::Stub(e)) => {
                            self.error.get_or_insert(e);
                            return Err(Fault {
                                addr: va,
                                reason: FaultReason::NotMapped,
                            });
                        }
                    }
                }
            }
            done += n;
        }
        Ok(())
    }
}
