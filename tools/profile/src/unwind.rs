//! The frame-pointer walk: from rip, rsp and rbp of a stopped vCPU to the chain of return
//! addresses, through guest memory.
//!
//! Each frame is `[rbp] = caller's rbp, [rbp + 8] = return address`. The walk ends at a zero
//! frame pointer or a zero return address (the bottom of a stack), and is cut, never guessed,
//! when the chain leaves readable memory, stops increasing, is misaligned, runs off the stack
//! or is too deep; the reason is kept and counted.
//!
//! The leaf needs care: at a function's first instruction (before `push rbp`), right after the
//! push (before `mov rbp, rsp`) and at `ret` (after `pop rbp`), rbp is still or again the
//! caller's frame, and the walk would skip the caller. There the return address is at `[rsp]`
//! or `[rsp + 8]`, which [`leaf_return_slot`] tells from the function's start and code bytes.
use crate::memory::{FaultReason, GuestMemory};
use crate::shadow::ShadowStack;

/// Why a walk stopped before the bottom of the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cut {
    /// The next frame is in memory that cannot be read.
    Unreadable(FaultReason),
    /// The next frame pointer is not above the current one.
    NotIncreasing,
    /// The next frame pointer is not 8-byte aligned.
    Misaligned,
    /// The next frame pointer is further from rsp than any stack is deep.
    OffStack,
    /// More frames than the limit.
    TooDeep,
}

impl Cut {
    pub fn describe(self) -> String {
        match self {
            Cut::Unreadable(r) => format!("frame in {}", r.describe()),
            Cut::NotIncreasing => "frame pointer not increasing".into(),
            Cut::Misaligned => "misaligned frame pointer".into(),
            Cut::OffStack => "frame pointer off the stack".into(),
            Cut::TooDeep => "too many frames".into(),
        }
    }
}

/// Bounds of one walk.
#[derive(Clone, Copy, Debug)]
pub struct WalkLimits {
    pub max_frames: usize,
    /// Largest distance of a frame from rsp.
    pub max_stack_bytes: u64,
}

impl Default for WalkLimits {
    fn default() -> Self {
        WalkLimits {
            max_frames: 512,
            max_stack_bytes: 64 << 20,
        }
    }
}

/// A walked stack: `frames[0]` is rip, the rest return addresses, innermost first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Walk {
    pub frames: Vec<u64>,
    /// None: the walk reached the bottom of the stack.
    pub cut: Option<Cut>,
    /// Return addresses that were vftrace's trampoline and the shadow stack did not explain.
    pub unresolved_trampolines: u32,
}

/// Where the leaf's return address is when rbp does not hold the leaf's own frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafReturn {
    /// rbp is the leaf's frame (the usual case): nothing special.
    InFrame,
    /// At the function's entry or at `ret`: `[rsp]`.
    AtRsp,
    /// Right after `push rbp`: `[rsp + 8]`.
    AboveRsp,
}

/// Tells where the leaf's return address is from rip, the start of its function (if known),
/// the function's first bytes and the bytes at rip.
pub fn leaf_return_slot(
    rip: u64,
    function_start: Option<u64>,
    prologue: Option<&[u8]>,
    at_rip: Option<&[u8]>,
) -> LeafReturn {
    const RET: u8 = 0xc3;
    const REP: u8 = 0xf3;
    const PUSH_RBP: u8 = 0x55;
    const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
    if let Some(code) = at_rip {
        if code.first() == Some(&RET) || code.starts_with(&[REP, RET]) {
            return LeafReturn::AtRsp;
        }
    }
    let Some(start) = function_start else {
        return LeafReturn::InFrame;
    };
    let Some(offset) = rip.checked_sub(start) else {
        return LeafReturn::InFrame;
    };
    let prologue = prologue.unwrap_or(&[]);
    let push_at = if prologue.starts_with(&ENDBR64) { 4 } else { 0 };
    if offset <= push_at {
        LeafReturn::AtRsp
    } else if offset == push_at + 1 && prologue.get(push_at as usize) == Some(&PUSH_RBP) {
        LeafReturn::AboveRsp
    } else {
        LeafReturn::InFrame
    }
}

/// Walks the stack of a vCPU stopped at (`rip`, `rsp`, `rbp`).
pub fn walk(
    mem: &mut dyn GuestMemory,
    rip: u64,
    rsp: u64,
    rbp: u64,
    leaf: LeafReturn,
    mut shadow: Option<&mut ShadowStack>,
    limits: WalkLimits,
) -> Walk {
    let mut out = Walk {
        frames: vec![rip],
        ..Walk::default()
    };
    let mut resolve = |mem: &mut dyn GuestMemory, out: &mut Walk, slot: u64, ret: u64| -> u64 {
        match shadow.as_deref_mut() {
            Some(s) if ret == s.trampoline() => match s.original_return(mem, slot) {
                Some(real) => real,
                None => {
                    out.unresolved_trampolines += 1;
                    ret
                }
            },
            _ => ret,
        }
    };
    let leaf_slot = match leaf {
        LeafReturn::InFrame => None,
        LeafReturn::AtRsp => Some(rsp),
        LeafReturn::AboveRsp => rsp.checked_add(8),
    };
    if let Some(slot) = leaf_slot {
        match mem.read_u64(slot) {
            Ok(0) => return out,
            Ok(ret) => {
                let ret = resolve(mem, &mut out, slot, ret);
                out.frames.push(ret);
            }
            Err(f) => {
                out.cut = Some(Cut::Unreadable(f.reason));
                return out;
            }
        }
    }
    let mut fp = rbp;
    let mut previous: Option<u64> = None;
    loop {
        if fp == 0 {
            return out;
        }
        let cut = if out.frames.len() >= limits.max_frames {
            Some(Cut::TooDeep)
        } else if !fp.is_multiple_of(8) {
            Some(Cut::Misaligned)
        } else if previous.is_some_and(|p| fp <= p) {
            Some(Cut::NotIncreasing)
        } else if fp < rsp || fp - rsp > limits.max_stack_bytes {
            Some(Cut::OffStack)
        } else {
            None
        };
        if cut.is_some() {
            out.cut = cut;
            return out;
        }
        let mut frame = [0u8; 16];
        if let Err(f) = mem.read(fp, &mut frame) {
            out.cut = Some(Cut::Unreadable(f.reason));
            return out;
        }
        let next = u64::from_le_bytes(frame[..8].try_into().expect("8 bytes"));
        let ret = u64::from_le_bytes(frame[8..].try_into().expect("8 bytes"));
        if ret == 0 {
            return out;
        }
        let ret = resolve(mem, &mut out, fp + 8, ret);
        out.frames.push(ret);
        previous = Some(fp);
        fp = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Fault;
    use crate::shadow::{TracerLayout, TLS_WORD_BYTES};
    use std::collections::BTreeMap;
    use vftrace_format::abi::shadow_layout as layout;

    /// Sparse memory of 8-byte words; everything else is unmapped.
    #[derive(Default)]
    struct Words(BTreeMap<u64, u64>);

    impl GuestMemory for Words {
        fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
            for (i, byte) in buf.iter_mut().enumerate() {
                let a = addr + i as u64;
                let w = self.0.get(&(a & !7)).ok_or(Fault {
                    addr: a,
                    reason: FaultReason::NotMapped,
                })?;
                *byte = w.to_le_bytes()[(a & 7) as usize];
            }
            Ok(())
        }
    }

    /// A walk from rip 1 with no shadow stack and the default limits.
    fn walk_plain(m: &mut Words, rsp: u64, rbp: u64) -> Walk {
        walk(
            m,
            1,
            rsp,
            rbp,
            LeafReturn::InFrame,
            None,
            WalkLimits::default(),
        )
    }

    /// A stack with frames at 0x7f00 -> 0x7f40 -> 0x7f80 (bottom: return address 0).
    fn stack() -> Words {
        let mut m = Words::default();
        m.0.insert(0x7ef0, 0x100555); // [rsp]: a return address pushed by a call
        m.0.insert(0x7ef8, 0x7f00); // [rsp + 8] after a push rbp: the saved rbp
        m.0.insert(0x7f00, 0x7f40);
        m.0.insert(0x7f08, 0x100111);
        m.0.insert(0x7f40, 0x7f80);
        m.0.insert(0x7f48, 0x100222);
        m.0.insert(0x7f80, 0x1234);
        m.0.insert(0x7f88, 0);
        m
    }

    #[test]
    fn walks_to_the_bottom() {
        let w = walk(
            &mut stack(),
            0x100999,
            0x7ef0,
            0x7f00,
            LeafReturn::InFrame,
            None,
            WalkLimits::default(),
        );
        assert_eq!(w.frames, [0x100999, 0x100111, 0x100222]);
        assert_eq!(w.cut, None);
    }

    #[test]
    fn leaf_in_prologue_or_at_ret_keeps_its_caller() {
        let w = walk(
            &mut stack(),
            0x100999,
            0x7ef0,
            0x7f00,
            LeafReturn::AtRsp,
            None,
            WalkLimits::default(),
        );
        assert_eq!(w.frames, [0x100999, 0x100555, 0x100111, 0x100222]);
        let w = walk(
            &mut stack(),
            0x100999,
            0x7ee8,
            0x7f00,
            LeafReturn::AboveRsp,
            None,
            WalkLimits::default(),
        );
        assert_eq!(w.frames, [0x100999, 0x100555, 0x100111, 0x100222]);
    }

    #[test]
    fn bad_chains_are_cut_not_guessed() {
        let mut m = stack();
        m.0.insert(0x7f40, 0x7f00); // points back down
        let w = walk_plain(&mut m, 0x7ef0, 0x7f00);
        assert_eq!((w.frames.len(), w.cut), (3, Some(Cut::NotIncreasing)));
        let mut m = stack();
        m.0.insert(0x7f40, 0x9000); // unmapped
        let w = walk_plain(&mut m, 0x7ef0, 0x7f00);
        assert_eq!(w.cut, Some(Cut::Unreadable(FaultReason::NotMapped)));
        let mut m = stack();
        m.0.insert(0x7f40, 0x7f83);
        let w = walk_plain(&mut m, 0x7ef0, 0x7f00);
        assert_eq!(w.cut, Some(Cut::Misaligned));
        let w = walk_plain(&mut stack(), 0x7f10, 0x7f00);
        assert_eq!(w.cut, Some(Cut::OffStack), "rbp below rsp");
        let limits = WalkLimits {
            max_frames: 2,
            ..WalkLimits::default()
        };
        let w = walk(
            &mut stack(),
            1,
            0x7ef0,
            0x7f00,
            LeafReturn::InFrame,
            None,
            limits,
        );
        assert_eq!((w.frames.len(), w.cut), (2, Some(Cut::TooDeep)));
        // A loop of frames ends too.
        let mut m = Words::default();
        m.0.insert(0x7f00, 0x7f00);
        m.0.insert(0x7f08, 5);
        let w = walk_plain(&mut m, 0x7ef0, 0x7f00);
        assert_eq!(w.cut, Some(Cut::NotIncreasing));
    }

    #[test]
    fn trampolines_are_replaced_from_the_shadow_stack() {
        let trampoline = 0x1028d0;
        let mut m = stack();
        m.0.insert(0x7f08, trampoline);
        m.0.insert(0x7f48, trampoline);
        // The thread-local word right below tp = 0x20000 points to the state at 0x30000:
        // depth 1, frame (0x100111, 0x7f08), and a frame being pushed after it.
        let state = 0x30000u64;
        m.0.insert(0x20000 - TLS_WORD_BYTES, state);
        m.0.insert(state + layout::DEPTH_OFFSET as u64, 1);
        let frame = |i: u64| state + layout::FRAMES_OFFSET as u64 + i * layout::FRAME_BYTES as u64;
        for i in 0..2 {
            for w in (0..layout::FRAME_BYTES as u64).step_by(8) {
                m.0.insert(frame(i) + w, 0);
            }
        }
        m.0.insert(frame(0) + layout::FRAME_RET as u64, 0x100111);
        m.0.insert(frame(0) + layout::FRAME_SLOT as u64, 0x7f08);
        m.0.insert(frame(1) + layout::FRAME_RET as u64, 0x100999);
        let layout = TracerLayout {
            trampoline,
            word_from_tp: -(TLS_WORD_BYTES as i64),
        };
        let mut shadow = ShadowStack::new(layout, Some(0x20000));
        let w = walk(
            &mut m,
            0x100999,
            0x7ef0,
            0x7f00,
            LeafReturn::InFrame,
            Some(&mut shadow),
            WalkLimits::default(),
        );
        // The second trampoline has no shadow frame: kept as it is, and counted.
        assert_eq!(w.frames, [0x100999, 0x100111, trampoline]);
        assert_eq!(w.unresolved_trampolines, 1);
    }

    #[test]
    fn leaf_return_slots() {
        let push: &[u8] = &[0x55, 0x48, 0x89, 0xe5];
        let endbr: &[u8] = &[0xf3, 0x0f, 0x1e, 0xfa, 0x55];
        /// rip, function start, its first bytes, bytes at rip, expected.
        type Case<'a> = (u64, Option<u64>, Option<&'a [u8]>, &'a [u8], LeafReturn);
        let cases: [Case; 8] = [
            (0x100, Some(0x100), Some(push), push, LeafReturn::AtRsp),
            (
                0x101,
                Some(0x100),
                Some(push),
                &push[1..],
                LeafReturn::AboveRsp,
            ),
            (0x104, Some(0x100), Some(push), &[0x90], LeafReturn::InFrame),
            (0x104, Some(0x100), Some(endbr), &[0x55], LeafReturn::AtRsp),
            (
                0x105,
                Some(0x100),
                Some(endbr),
                &[0x48],
                LeafReturn::AboveRsp,
            ),
            (0x120, Some(0x100), Some(push), &[0xc3], LeafReturn::AtRsp),
            (0x120, None, None, &[0xf3, 0xc3], LeafReturn::AtRsp),
            // Without a frame-pointer push, one byte in is not "after push rbp".
            (
                0x101,
                Some(0x100),
                Some(&[0x53, 0x48]),
                &[0x48],
                LeafReturn::InFrame,
            ),
        ];
        for (rip, start, prologue, at_rip, expected) in cases {
            assert_eq!(
                leaf_return_slot(rip, start, prologue, Some(at_rip)),
                expected,
                "rip {rip:#x}, start {start:?}, bytes {at_rip:02x?}"
            );
        }
    }
}
