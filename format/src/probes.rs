//! Host-timestamped guest probes: what the guest writes and how the host reads it.
//!
//! A probe is one 32-bit `out` to [`PROBE_PORT`] of `id << 24 | value` (value: 24 bits). It
//! costs the guest one VM exit and nothing else: no TSC, no buffer. The host sees it as a
//! `kvm:kvm_pio` event stamped with the host's TSC, so probes of several guests fall in one
//! host-time order whatever their clocks. The names of the ids are in the guest image: ELF
//! notes (owner `vftrace`, type [`NOTE_TYPE_PROBE_NAME`]) in the section [`NOTE_SECTION`],
//! one per id, each a [`ProbeNameNote`] (what the frontend's `probe_names!` puts there). The
//! host copies them into `vftrace.probes` beside the guest's trace:
//!
//! ```text
//! # vftrace guest probes: id name
//! 1 request begins
//! ```

/// The port probes are written to: the marker port (0x6a0) + 8, after its high half (+ 4).
pub const PROBE_PORT: u16 = 0x6a8;
/// Largest probe value: the low 24 bits of the port write (the id is the top 8).
pub const MAX_PROBE_VALUE: u32 = (1 << 24) - 1;

/// The 32 bits written for probe `id` with `value` (its low 24 bits).
#[inline(always)]
pub const fn encode(id: u8, value: u32) -> u32 {
    (id as u32) << 24 | (value & MAX_PROBE_VALUE)
}

/// (id, value) of a probe port write.
pub const fn decode(written: u32) -> (u8, u32) {
    ((written >> 24) as u8, written & MAX_PROBE_VALUE)
}

/// Section holding the probe name notes.
pub const NOTE_SECTION: &str = ".note.vftrace";
/// Owner of the notes, NUL-padded to 8 bytes.
pub const NOTE_OWNER: [u8; 8] = *b"vftrace\0";
/// `n_type` of a probe name note.
pub const NOTE_TYPE_PROBE_NAME: u32 = 0x7670_0001;
/// Longest probe name (bytes; longer ones are cut).
pub const MAX_PROBE_NAME: usize = 47;

/// One ELF note naming a probe id: the standard note header (name size, descriptor size,
/// type), the owner, then the descriptor: the id and the name, NUL-padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(4))]
pub struct ProbeNameNote {
    namesz: u32,
    descsz: u32,
    note_type: u32,
    owner: [u8; 8],
    id: u32,
    name: [u8; MAX_PROBE_NAME + 1],
}

/// Bytes of one [`ProbeNameNote`].
pub const NOTE_SIZE: usize = core::mem::size_of::<ProbeNameNote>();
const DESC_SIZE: usize = 4 + MAX_PROBE_NAME + 1;

impl ProbeNameNote {
    /// The note naming `id`; a name longer than [`MAX_PROBE_NAME`] bytes is cut.
    pub const fn new(id: u8, name: &str) -> ProbeNameNote {
        let bytes = name.as_bytes();
        let mut text = [0u8; MAX_PROBE_NAME + 1];
        let mut i = 0;
        while i < bytes.len() && i < MAX_PROBE_NAME {
            text[i] = bytes[i];
            i += 1;
        }
        ProbeNameNote {
            namesz: 8,
            descsz: DESC_SIZE as u32,
            note_type: NOTE_TYPE_PROBE_NAME,
            owner: NOTE_OWNER,
            id: id as u32,
            name: text,
        }
    }

    /// One note per (id, name), for a `static` array in [`NOTE_SECTION`].
    pub const fn table<const N: usize>(names: &[(u8, &str)]) -> [ProbeNameNote; N] {
        let mut out = [ProbeNameNote::new(0, ""); N];
        let mut i = 0;
        while i < N && i < names.len() {
            out[i] = ProbeNameNote::new(names[i].0, names[i].1);
            i += 1;
        }
        out
    }
}

#[cfg(feature = "std")]
pub use names::*;

#[cfg(feature = "std")]
mod names {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;
    use std::path::Path;

    use super::*;
    use crate::error::FormatError;

    pub const PROBES_FILE: &str = "vftrace.probes";
    /// Guest data: a file larger than this is refused.
    const MAX_FILE_BYTES: u64 = 1 << 20;

    /// Probe id -> name.
    pub type ProbeNames = BTreeMap<u8, String>;

    /// The probe names in the bytes of an ELF note section (untrusted: every length is
    /// checked; notes of other owners or types are skipped; names keep printable ASCII only).
    pub fn parse_probe_notes(mut bytes: &[u8]) -> ProbeNames {
        let mut names = ProbeNames::new();
        let word = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let align4 = |n: usize| n.div_ceil(4) * 4;
        while bytes.len() >= 12 {
            let (namesz, descsz, kind) = (
                word(bytes, 0) as usize,
                word(bytes, 4) as usize,
                word(bytes, 8),
            );
            let name_end = 12usize.saturating_add(align4(namesz));
            let end = name_end.saturating_add(align4(descsz));
            if end > bytes.len() {
                break;
            }
            let owner = &bytes[12..12 + namesz];
            let desc = &bytes[name_end..name_end + descsz];
            if owner.strip_suffix(b"\0").unwrap_or(owner) == b"vftrace"
                && kind == NOTE_TYPE_PROBE_NAME
                && desc.len() >= 4
            {
                let id = word(desc, 0);
                let text = &desc[4..];
                let text = &text[..text.iter().position(|&b| b == 0).unwrap_or(text.len())];
                if let Ok(id) = u8::try_from(id) {
                    names.insert(id, crate::stream::sanitize(text));
                }
            }
            bytes = &bytes[end..];
        }
        names
    }

    /// Reads `dir/vftrace.probes`; empty when the trace has none.
    pub fn read_probe_names(dir: &Path) -> Result<ProbeNames, FormatError> {
        let path = dir.join(PROBES_FILE);
        let bytes = match crate::output::read_capped(&path, MAX_FILE_BYTES) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ProbeNames::new()),
            Err(e) => return Err(FormatError::io(&path, &e)),
        };
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| FormatError::at_offset(&path, e.valid_up_to() as u64, "not UTF-8 text"))?;
        let mut names = ProbeNames::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, name) = line.split_once(' ').unwrap_or((line, ""));
            let id = id.parse::<u8>().map_err(|_| {
                FormatError::at_line(&path, i + 1, format!("`{id}` is not a probe id (0..255)"))
            })?;
            names.insert(id, crate::stream::sanitize(name.trim().as_bytes()));
        }
        Ok(names)
    }

    /// Writes `dir/vftrace.probes` (a temporary renamed into place).
    pub fn write_probe_names(dir: &Path, names: &ProbeNames) -> std::io::Result<()> {
        let mut text = String::from("# vftrace guest probes: id name\n");
        for (id, name) in names {
            let _ = writeln!(text, "{id} {name}");
        }
        let file = crate::output::OutputFile::create(&dir.join(PROBES_FILE), &[])?;
        let mut w = file.writer()?;
        std::io::Write::write_all(&mut w, text.as_bytes())?;
        drop(w);
        file.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_keep_24_bits() {
        assert_eq!(decode(encode(7, 0x12_3456)), (7, 0x12_3456));
        assert_eq!(decode(encode(255, u32::MAX)), (255, MAX_PROBE_VALUE));
        assert_eq!(encode(1, 2), 0x0100_0002);
    }

    #[cfg(feature = "std")]
    #[test]
    fn notes_read_back_and_hostile_ones_are_skipped() {
        let table: [ProbeNameNote; 3] = ProbeNameNote::table(&[
            (1, "request begins"),
            (2, "a name much longer than forty-seven bytes is cut at 47"),
            (9, "bad\u{1b}[31m"),
        ]);
        assert_eq!(NOTE_SIZE, 72);
        // SAFETY: ProbeNameNote is plain repr(C) data without padding (72 = 12 + 8 + 52).
        let bytes = unsafe {
            core::slice::from_raw_parts(table.as_ptr().cast::<u8>(), NOTE_SIZE * table.len())
        };
        let names = parse_probe_notes(bytes);
        assert_eq!(names[&1], "request begins");
        assert_eq!(names[&2].len(), MAX_PROBE_NAME);
        assert_eq!(names[&9], "bad?[31m");
        // Cut anywhere: never a panic, and only whole notes are used.
        for cut in 0..bytes.len() {
            assert_eq!(parse_probe_notes(&bytes[..cut]).len(), cut / NOTE_SIZE);
        }
        let mut huge = bytes.to_vec();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_probe_notes(&huge).is_empty());
    }

    #[cfg(feature = "std")]
    #[test]
    fn probe_names_file_round_trips() {
        let dir = std::env::temp_dir().join(format!("vftrace-probes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let names: ProbeNames = [(1, "a b".to_string()), (200, "c".to_string())].into();
        write_probe_names(&dir, &names).unwrap();
        assert_eq!(read_probe_names(&dir).unwrap(), names);
        std::fs::write(dir.join(PROBES_FILE), "# x\n300 too big\n").unwrap();
        let err = read_probe_names(&dir).unwrap_err().to_string();
        assert!(err.contains("vftrace.probes:2"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
