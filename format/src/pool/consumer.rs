//! The consumer's side of the pool: attaching to a pool someone else created, checking its
//! control words on every pass, reading published chunks and handing them back. Everything
//! read here is treated as hostile.
use super::*;

impl Pool {
    /// A view of a pool someone else created, after checking that its header describes exactly
    /// the geometry `len` bytes with its parameters give. The geometry is fixed from here on:
    /// later changes to the header are ignored.
    ///
    /// # Safety
    /// `mem` is valid for reads and writes of `len` bytes for as long as the view is used (other
    /// parties may write it concurrently).
    pub unsafe fn attach(mem: *mut u8, len: usize) -> Result<Pool, PoolError> {
        if len < HEADER_BYTES {
            return Err(PoolError::TooSmall {
                needed: HEADER_BYTES,
                have: len,
            });
        }
        // SAFETY: the header fits in `len`; it is read once, by value, field by field.
        let h = unsafe { &*(mem as *const PoolHeader) };
        // SAFETY: plain reads of a header another party may be writing: copied out volatile.
        let (magic, version, total, chunk, slots, messages, mode, flags) = unsafe {
            (
                core::ptr::read_volatile(&h.magic),
                core::ptr::read_volatile(&h.version),
                core::ptr::read_volatile(&h.total_bytes),
                core::ptr::read_volatile(&h.chunk_bytes),
                core::ptr::read_volatile(&h.slot_count),
                core::ptr::read_volatile(&h.message_count),
                core::ptr::read_volatile(&h.mode),
                core::ptr::read_volatile(&h.flags),
            )
        };
        if magic != POOL_MAGIC {
            return Err(PoolError::BadMagic);
        }
        if version != POOL_VERSION {
            return Err(PoolError::BadVersion(version));
        }
        if total != len as u64 {
            return Err(PoolError::BadGeometry(
                "total size differs from the memory's",
            ));
        }
        let mode = PoolMode::from_u32(mode).ok_or(PoolError::BadGeometry("unknown mode"))?;
        if messages > 4096 || slots > (len / size_of::<ThreadSlot>()) as u32 || slots == 0 {
            return Err(PoolError::BadGeometry("table sizes"));
        }
        let params = PoolParams {
            chunk_bytes: chunk,
            slots,
            messages,
            mode,
            flags,
        };
        let layout = Layout::compute(len, &params)?;
        // SAFETY: as above.
        let stated = unsafe {
            (
                core::ptr::read_volatile(&h.chunk_count) as usize,
                core::ptr::read_volatile(&h.descs_offset) as usize,
                core::ptr::read_volatile(&h.slots_offset) as usize,
                core::ptr::read_volatile(&h.messages_offset) as usize,
                core::ptr::read_volatile(&h.data_offset) as usize,
            )
        };
        let expected = (
            layout.chunk_count,
            layout.descs_offset,
            layout.slots_offset,
            layout.messages_offset,
            layout.data_offset,
        );
        if stated != expected {
            return Err(PoolError::BadGeometry("offsets or chunk count"));
        }
        Ok(Pool {
            base: mem,
            layout,
            mode,
            flags,
        })
    }

    /// Checks what a consumer relies on and only a scribbler changes: the header's identity and
    /// geometry (fixed at creation), the free list head (an index in range) and every chunk's
    /// state (one of [`chunk_state`]). A consumer calls it on every pass; an error says which
    /// word was overwritten, and the pool can no longer be trusted.
    pub fn check_control_words(&self) -> Result<(), PoolError> {
        let h = self.header();
        let l = &self.layout;
        // SAFETY: fields nobody writes after creation, read by value (volatile: another party
        // may be scribbling over them).
        let fixed = unsafe {
            use core::ptr::read_volatile as rv;
            [
                (rv(&h.magic) == POOL_MAGIC, "the header's magic"),
                (rv(&h.version) == POOL_VERSION, "the header's version"),
                (
                    rv(&h.header_bytes) as usize == HEADER_BYTES,
                    "the header's size",
                ),
                (
                    rv(&h.total_bytes) == l.total_bytes as u64,
                    "the header's total size",
                ),
                (
                    rv(&h.chunk_bytes) as usize == l.chunk_bytes,
                    "the header's chunk size",
                ),
                (
                    rv(&h.chunk_count) as usize == l.chunk_count,
                    "the header's chunk count",
                ),
                (
                    rv(&h.slot_count) as usize == l.slot_count,
                    "the header's thread slot count",
                ),
                (
                    rv(&h.message_count) as usize == l.message_count,
                    "the header's message count",
                ),
                (
                    rv(&h.descs_offset) == l.descs_offset as u64,
                    "the header's table offsets",
                ),
                (
                    rv(&h.slots_offset) == l.slots_offset as u64,
                    "the header's table offsets",
                ),
                (
                    rv(&h.messages_offset) == l.messages_offset as u64,
                    "the header's table offsets",
                ),
                (
                    rv(&h.data_offset) == l.data_offset as u64,
                    "the header's table offsets",
                ),
                (rv(&h.mode) == self.mode as u32, "the header's mode"),
                (rv(&h.flags) == self.flags, "the header's flags"),
            ]
        };
        if let Some(&(_, what)) = fixed.iter().find(|(ok, _)| !ok) {
            return Err(PoolError::Corrupt(what));
        }
        if (h.free_head.load(Relaxed) & 0xffff_ffff) as usize > l.chunk_count {
            return Err(PoolError::Corrupt("the free list head"));
        }
        for i in 0..self.chunk_count() {
            let state = self.desc(i).state.load(Relaxed);
            if state > chunk_state::FULL {
                return Err(PoolError::Corrupt("a chunk descriptor's state"));
            }
        }
        Ok(())
    }

    /// The chunks of the thread in slot `slot`, oldest first, following the thread's own chunk
    /// list (intact while nobody drains the pool: in-process and ring mode). Bounded by the
    /// chunk count, so a corrupted list cannot loop.
    pub fn thread_chunks(&self, slot: u32) -> impl Iterator<Item = u32> + '_ {
        let mut next = self.slot(slot).oldest.load(Acquire);
        let mut left = self.layout.chunk_count;
        core::iter::from_fn(move || {
            let i = next.checked_sub(1)?;
            if left == 0 || i as usize >= self.layout.chunk_count {
                return None;
            }
            left -= 1;
            next = self.desc(i).next_in_thread.load(Acquire);
            Some(i)
        })
    }

    /// Puts a drained chunk back on the free list. Bounded: a free list head that never stops
    /// changing is reported as corruption.
    pub fn push_free(&self, i: u32) -> Result<(), PoolError> {
        let desc = self.checked_desc(i)?;
        desc.state.store(chunk_state::FREE, Release);
        let head = &self.header().free_head;
        let mut h = head.load(Relaxed);
        for _ in 0..100_000 {
            desc.next_free.store((h & 0xffff_ffff) as u32, Relaxed);
            let tagged = ((h >> 32).wrapping_add(1) << 32) | u64::from(i + 1);
            match head.compare_exchange_weak(h, tagged, Release, Relaxed) {
                Ok(_) => {
                    self.header().free_count.fetch_add(1, Relaxed);
                    return Ok(());
                }
                Err(now) => h = now,
            }
            core::hint::spin_loop();
        }
        Err(PoolError::Corrupt("free list head changes without end"))
    }

    /// Reads the READY messages, oldest ticket first, into `out` (`(ticket, kind, payload
    /// bytes)` through `f`), and frees their cells. Returns how many were read.
    pub fn take_messages(&self, mut f: impl FnMut(u64, u32, &[u8])) -> usize {
        let n = self.layout.message_count;
        let mut taken = 0;
        // Cells are few (tens): repeatedly take the lowest ticket among the READY ones.
        loop {
            let mut best: Option<(u64, usize)> = None;
            for i in 0..n {
                let cell = self.message(i);
                if cell.state.load(Acquire) == message_state::READY {
                    let t = cell.ticket.load(Relaxed);
                    if best.is_none_or(|(bt, _)| t < bt) {
                        best = Some((t, i));
                    }
                }
            }
            let Some((ticket, i)) = best else {
                return taken;
            };
            let cell = self.message(i);
            let len = (cell.len.load(Relaxed) as usize).min(MESSAGE_PAYLOAD);
            let mut copy = [0u8; MESSAGE_PAYLOAD];
            // SAFETY: READY (Acquire) hands the payload to the consumer until it stores FREE.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    cell.payload.get() as *const u8,
                    copy.as_mut_ptr(),
                    len,
                )
            };
            let kind = cell.kind.load(Relaxed);
            cell.state.store(message_state::FREE, Release);
            f(ticket, kind, &copy[..len]);
            taken += 1;
            if taken > 4 * n {
                return taken;
            }
        }
    }

    /// The records of chunk `i` a reader may copy now, in this address space, checked against
    /// the chunk's bounds: `(first record, count)`. `write` and `end` are producer addresses;
    /// only their difference is used.
    pub fn readable(&self, i: u32) -> Result<(*const [u64; 2], usize), PoolError> {
        let desc = self.checked_desc(i)?;
        let end = desc.end.load(Acquire);
        let write = desc.write.load(Acquire);
        let bytes = self.layout.chunk_bytes as u64;
        let start = end.wrapping_sub(bytes);
        if end < bytes || write < start || write > end || (write - start) % 16 != 0 {
            return Err(PoolError::Corrupt("chunk write cursor outside its chunk"));
        }
        Ok((self.chunk_data(i), ((write - start) / 16) as usize))
    }
}
