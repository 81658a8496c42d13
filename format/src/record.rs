//! The 16-byte records of a uftrace `TID.dat` file.
//!
//! Layout (little-endian): `u64 time`, then one `u64` packing
//! `type:2 | more:1 | magic:3 | depth:10 | addr:48`, low bits first.

/// Size of one record in bytes.
pub const RECORD_SIZE: usize = 16;
/// The 3-bit magic every record carries (0b101).
pub const RECORD_MAGIC: u64 = 0b101;
/// Largest depth the 10-bit field can hold.
pub const MAX_DEPTH: u16 = (1 << 10) - 1;
/// Mask of the 48-bit address field.
pub const ADDR_MASK: u64 = (1 << 48) - 1;

/// What a record says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordType {
    Entry = 0,
    Exit = 1,
    /// `addr` holds the number of records that were lost.
    Lost = 2,
    /// `addr` holds an event id.
    Event = 3,
}

impl RecordType {
    /// The type stored in the low 2 bits of `bits`.
    pub const fn from_bits(bits: u64) -> Self {
        match bits & 3 {
            0 => RecordType::Entry,
            1 => RecordType::Exit,
            2 => RecordType::Lost,
            _ => RecordType::Event,
        }
    }
}

/// One decoded record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub time: u64,
    pub kind: RecordType,
    /// `more` bit: an argument or return-value payload follows the record.
    pub more: bool,
    pub depth: u16,
    pub addr: u64,
}

/// Packs the second word of a record. `const` so the backend can build it cheaply.
#[inline(always)]
pub const fn pack_word(kind: RecordType, depth: u16, addr: u64) -> u64 {
    (kind as u64)
        | (RECORD_MAGIC << 3)
        | (((depth & MAX_DEPTH) as u64) << 6)
        | ((addr & ADDR_MASK) << 16)
}

/// Why 16 bytes are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The magic bits are not 0b101: the data is not a uftrace record (or is misaligned).
    BadMagic(u8),
}

impl core::fmt::Display for RecordError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RecordError::BadMagic(m) => write!(f, "bad record magic {m:#05b} (expected 0b101)"),
        }
    }
}

impl Record {
    pub const fn new(time: u64, kind: RecordType, depth: u16, addr: u64) -> Self {
        Record {
            time,
            kind,
            more: false,
            depth: depth & MAX_DEPTH,
            addr: addr & ADDR_MASK,
        }
    }

    /// A LOST record announcing `count` records that could not be kept.
    pub const fn lost(time: u64, depth: u16, count: u64) -> Self {
        Record::new(time, RecordType::Lost, depth, count)
    }

    pub const fn word(&self) -> u64 {
        pack_word(self.kind, self.depth, self.addr) | ((self.more as u64) << 2)
    }

    pub const fn to_bytes(&self) -> [u8; RECORD_SIZE] {
        let t = self.time.to_le_bytes();
        let w = self.word().to_le_bytes();
        let mut out = [0u8; RECORD_SIZE];
        let mut i = 0;
        while i < 8 {
            out[i] = t[i];
            out[i + 8] = w[i];
            i += 1;
        }
        out
    }

    /// Decodes the two words of a record.
    pub const fn from_words(time: u64, word: u64) -> Result<Self, RecordError> {
        let magic = ((word >> 3) & 7) as u8;
        if magic as u64 != RECORD_MAGIC {
            return Err(RecordError::BadMagic(magic));
        }
        Ok(Record {
            time,
            kind: RecordType::from_bits(word),
            more: (word >> 2) & 1 == 1,
            depth: ((word >> 6) & MAX_DEPTH as u64) as u16,
            addr: word >> 16,
        })
    }

    pub fn from_bytes(b: &[u8; RECORD_SIZE]) -> Result<Self, RecordError> {
        let mut t = [0u8; 8];
        let mut w = [0u8; 8];
        t.copy_from_slice(&b[..8]);
        w.copy_from_slice(&b[8..]);
        Record::from_words(u64::from_le_bytes(t), u64::from_le_bytes(w))
    }
}

/// Makes one thread's records safe for uftrace when its oldest records are gone (a ring buffer
/// overwrote them): an exit whose entry is missing would make uftrace invent a call of unknown
/// length, so it is dropped, and depths are recounted from the calls that remain, so that no
/// parent is missing either. On a complete trace it changes nothing: there every exit has its
/// entry and the recount equals the recorded depth.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadRepair {
    open: u64,
    dropped_exits: u64,
}

impl ThreadRepair {
    /// Fixes `record`'s depth; false if the record must be dropped.
    pub fn accept(&mut self, record: &mut Record) -> bool {
        match record.kind {
            RecordType::Entry => {
                record.depth = self.open.min(MAX_DEPTH as u64) as u16;
                self.open += 1;
            }
            RecordType::Exit if self.open == 0 => {
                self.dropped_exits += 1;
                return false;
            }
            RecordType::Exit => {
                self.open -= 1;
                record.depth = self.open.min(MAX_DEPTH as u64) as u16;
            }
            RecordType::Lost | RecordType::Event => {}
        }
        true
    }

    /// Exits dropped so far because their entries were missing.
    pub fn dropped_exits(&self) -> u64 {
        self.dropped_exits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_drops_orphan_exits_and_recounts_depths() {
        use RecordType::*;
        // The tail of a ring buffer: two exits of lost calls, then a complete call at depth 3.
        let input = [
            (Exit, 3),
            (Exit, 2),
            (Entry, 2),
            (Entry, 3),
            (Exit, 3),
            (Exit, 2),
            (Exit, 1),
        ];
        let mut repair = ThreadRepair::default();
        let kept: Vec<(RecordType, u16)> = input
            .iter()
            .filter_map(|&(kind, depth)| {
                let mut r = Record::new(0, kind, depth, 0x1000);
                repair.accept(&mut r).then_some((r.kind, r.depth))
            })
            .collect();
        assert_eq!(kept, [(Entry, 0), (Entry, 1), (Exit, 1), (Exit, 0)]);
        assert_eq!(repair.dropped_exits(), 3);
    }

    #[test]
    fn repair_leaves_a_complete_trace_alone() {
        use RecordType::*;
        let input = [
            (Entry, 0),
            (Entry, 1),
            (Exit, 1),
            (Entry, 1),
            (Exit, 1),
            (Exit, 0),
        ];
        let mut repair = ThreadRepair::default();
        for (kind, depth) in input {
            let mut r = Record::new(0, kind, depth, 0x1000);
            assert!(repair.accept(&mut r));
            assert_eq!(r.depth, depth);
        }
    }

    #[test]
    fn round_trip_all_types() {
        for kind in [
            RecordType::Entry,
            RecordType::Exit,
            RecordType::Lost,
            RecordType::Event,
        ] {
            let r = Record::new(0x1234_5678_9abc, kind, 1023, 0x7fff_dead_beef);
            let back = Record::from_bytes(&r.to_bytes()).unwrap();
            assert_eq!(r, back);
        }
    }

    #[test]
    fn known_encoding() {
        // An entry at depth 2 of address 0x401000: type 0, magic 0b101 at bit 3, depth at bit 6.
        let r = Record::new(7, RecordType::Entry, 2, 0x401000);
        assert_eq!(r.word(), (0b101 << 3) | (2 << 6) | (0x401000 << 16));
    }

    #[test]
    fn bad_magic_is_an_error() {
        let mut b = Record::new(1, RecordType::Exit, 0, 1).to_bytes();
        b[8] ^= 0b1000;
        assert_eq!(Record::from_bytes(&b), Err(RecordError::BadMagic(0b100)));
    }
}
