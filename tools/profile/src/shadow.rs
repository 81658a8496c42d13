//! The real return addresses of an instrumented guest, from vftrace's shadow stack.
//!
//! vftrace's `mcount` replaces the return address of every traced call with its return
//! trampoline and keeps the original, with the address of the stack slot it was in, on a
//! per-thread shadow stack. A frame-pointer walk of a traced guest therefore finds the
//! trampoline in every traced frame's return slot; the shadow stack says where each really
//! returns to. The thread's state is found from the vCPU's thread pointer (FS.base), like the
//! tracer itself finds it: a thread-local word points to it.
//!
//! The layout read here is `vftrace_format::abi::shadow_layout`, which the backend checks at
//! compile time against its own state. What is read is guest data: the pointer and the depth
//! are bounded, or nothing is taken from it.
use crate::memory::GuestMemory;
use vftrace_format::abi::shadow_layout as layout;

/// Frames on the backend's shadow stack.
pub const SHADOW_STACK_DEPTH: u64 = layout::MAX_DEPTH as u64;
const DEPTH_OFFSET: u64 = layout::DEPTH_OFFSET as u64;
const FRAMES_OFFSET: u64 = layout::FRAMES_OFFSET as u64;
const FRAME_BYTES: u64 = layout::FRAME_BYTES as u64;
/// Bytes of the thread-local word.
pub const TLS_WORD_BYTES: u64 = 8;

/// Where the tracer is in an image (runtime addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracerLayout {
    /// `vftrace_return_trampoline`.
    pub trampoline: u64,
    /// The thread-local word's address minus the thread pointer (negative: variant II).
    pub word_from_tp: i64,
}

/// One vCPU's shadow stack, read when the walk first meets the trampoline.
pub struct ShadowStack {
    layout: TracerLayout,
    thread_pointer: Option<u64>,
    /// (return address, slot), deepest last; None until read, Some(empty) if unreadable.
    frames: Option<Vec<(u64, u64)>>,
}

impl ShadowStack {
    pub fn new(layout: TracerLayout, thread_pointer: Option<u64>) -> ShadowStack {
        ShadowStack {
            layout,
            thread_pointer,
            frames: None,
        }
    }

    pub fn trampoline(&self) -> u64 {
        self.layout.trampoline
    }

    /// The return address the tracer saved for the return slot at `slot`.
    pub fn original_return(&mut self, mem: &mut dyn GuestMemory, slot: u64) -> Option<u64> {
        if self.frames.is_none() {
            self.frames = Some(self.read(mem).unwrap_or_default());
        }
        let frames = self.frames.as_ref()?;
        frames.iter().find(|(_, s)| *s == slot).map(|(ret, _)| *ret)
    }

    fn read(&self, mem: &mut dyn GuestMemory) -> Option<Vec<(u64, u64)>> {
        let tp = self.thread_pointer.filter(|&tp| tp != 0)?;
        let word = tp.checked_add_signed(self.layout.word_from_tp)?;
        let mut state = [0u8; 8];
        mem.read(word, &mut state).ok()?;
        // 0: the thread never recorded; 1: it could not be traced.
        let block = u64::from_le_bytes(state);
        if block <= 1 {
            return None;
        }
        let mut depth = [0u8; 4];
        mem.read(block + DEPTH_OFFSET, &mut depth).ok()?;
        let depth = u64::from(u32::from_le_bytes(depth));
        if depth > SHADOW_STACK_DEPTH {
            return None;
        }
        // One frame past the depth too: mcount writes the frame, then the trampoline into
        // the slot, then the depth; a stop in between finds the slot hooked already.
        let count = (depth + 1).min(SHADOW_STACK_DEPTH);
        let mut bytes = vec![0u8; (count * FRAME_BYTES) as usize];
        mem.read(block + FRAMES_OFFSET, &mut bytes).ok()?;
        let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let frame = FRAME_BYTES as usize;
        // Slots need not decrease: frames of a suspended coroutine's stack sit among the others.
        Some(
            (0..count as usize)
                .map(|f| {
                    (
                        word(f * frame + layout::FRAME_RET),
                        word(f * frame + layout::FRAME_SLOT),
                    )
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{Fault, FaultReason};

    struct Flat {
        base: u64,
        bytes: Vec<u8>,
    }

    impl GuestMemory for Flat {
        fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
            let off = addr.checked_sub(self.base).map(|o| o as usize);
            match off.and_then(|o| self.bytes.get(o..o + buf.len())) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    Ok(())
                }
                None => Err(Fault {
                    addr,
                    reason: FaultReason::NotMapped,
                }),
            }
        }
    }

    /// A guest memory with the thread-local word at 0x10000 (the thread pointer is 0x10008)
    /// pointing to a state at 0x11000.
    fn block(depth: u32, frames: &[(u64, u64)]) -> Flat {
        let state = 0x1000usize;
        let mut bytes =
            vec![0u8; state + (FRAMES_OFFSET + SHADOW_STACK_DEPTH * FRAME_BYTES) as usize];
        bytes[..8].copy_from_slice(&(0x10000u64 + state as u64).to_le_bytes());
        let d = state + DEPTH_OFFSET as usize;
        bytes[d..d + 4].copy_from_slice(&depth.to_le_bytes());
        for (i, (ret, slot)) in frames.iter().enumerate() {
            let at = state + FRAMES_OFFSET as usize + i * FRAME_BYTES as usize;
            bytes[at..at + 8].copy_from_slice(&ret.to_le_bytes());
            bytes[at + 8..at + 16].copy_from_slice(&slot.to_le_bytes());
        }
        Flat {
            base: 0x10000,
            bytes,
        }
    }

    fn layout() -> TracerLayout {
        TracerLayout {
            trampoline: 0x1028d0,
            word_from_tp: -(TLS_WORD_BYTES as i64),
        }
    }

    #[test]
    fn returns_are_found_by_slot_including_one_being_pushed() {
        let tp = 0x10000 + TLS_WORD_BYTES;
        let mut mem = block(
            2,
            &[(0x100100, 0x7ff0), (0x100200, 0x7f00), (0x100300, 0x7e00)],
        );
        let mut s = ShadowStack::new(layout(), Some(tp));
        assert_eq!(s.original_return(&mut mem, 0x7f00), Some(0x100200));
        assert_eq!(s.original_return(&mut mem, 0x7e00), Some(0x100300));
        assert_eq!(s.original_return(&mut mem, 0x7000), None);
    }

    #[test]
    fn hostile_blocks_give_nothing() {
        let tp = 0x10000 + TLS_WORD_BYTES;
        let mut mem = block(5000, &[(1, 0x7ff0)]);
        assert_eq!(
            ShadowStack::new(layout(), Some(tp)).original_return(&mut mem, 0x7ff0),
            None
        );
        // A thread that never registered.
        let mut mem = block(2, &[(1, 0x7000), (2, 0x7ff0)]);
        mem.bytes[..8].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(
            ShadowStack::new(layout(), Some(tp)).original_return(&mut mem, 0x7000),
            None
        );
        // No thread pointer, or one that points nowhere.
        assert_eq!(
            ShadowStack::new(layout(), None).original_return(&mut mem, 0x7000),
            None
        );
        assert_eq!(
            ShadowStack::new(layout(), Some(5)).original_return(&mut mem, 0x7000),
            None
        );
    }
}
