//! Memory maps: `/proc/PID/maps` text, which uftrace keeps per session as `sid-SID.map`.
//!
//! uftrace 0.13 (`read_session_map`) reads each line with
//! `sscanf("%lx-%lx %s %*x %*x:%*x %*d %s %s")`: lines without a path are skipped, a path stops
//! at the first blank, consecutive lines with the same path are merged into one module that
//! starts at the first line's start, and an optional `build-id:HEX` may follow the path.
//! The `[stack]` line is required: its address sets the kernel boundary, and without it every
//! address is taken for a kernel address.

use std::fmt;
use std::io::{self, Write};
use std::path::Path;

use crate::error::{numbered_lines, text_of, FormatError};
use crate::record::ADDR_MASK;

/// One mapping line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    /// `r-xp` style.
    pub perms: String,
    pub offset: u64,
    /// `MAJ:MIN` in hex, e.g. `08:01`.
    pub dev: String,
    pub inode: u64,
    /// Empty for anonymous mappings; `[stack]`, `[heap]`... for special ones.
    pub path: String,
}

/// Where [`guest_map`] puts the synthetic `[stack]` line: below 2^47, so uftrace guesses the
/// x86_64 kernel boundary (0xffff800000000000), which no 48-bit record address reaches.
pub const SYNTHETIC_STACK: (u64, u64) = (0x7fff_fffd_e000, 0x7fff_ffff_f000);

impl MapEntry {
    /// A mapping of `path` with `r-xp` permissions, offset 0, device `00:00`, inode 0.
    pub fn new(start: u64, end: u64, path: impl Into<String>) -> MapEntry {
        MapEntry {
            start,
            end,
            perms: "r-xp".into(),
            offset: 0,
            dev: "00:00".into(),
            inode: 0,
            path: path.into(),
        }
    }

    /// The `[stack]` line uftrace needs (see the module docs).
    pub fn stack(start: u64, end: u64) -> MapEntry {
        MapEntry {
            perms: "rw-p".into(),
            ..MapEntry::new(start, end, "[stack]")
        }
    }

    /// A file-backed mapping (not anonymous, not `[special]`).
    pub fn is_file(&self) -> bool {
        !self.path.is_empty() && !self.path.starts_with('[')
    }

    /// Parses one maps line (without its newline). A trailing ` build-id:HEX` (written by
    /// uftrace) is dropped; a ` (deleted)` suffix is kept as part of the path, as in /proc.
    pub fn parse_line(line: &str) -> Result<MapEntry, String> {
        let mut rest = line.trim_start();
        let mut field = |what: &str| -> Result<&str, String> {
            let t = rest.trim_start();
            let end = t.find([' ', '\t']).unwrap_or(t.len());
            let (f, r) = t.split_at(end);
            if f.is_empty() {
                return Err(format!("missing {what} field"));
            }
            rest = r;
            Ok(f)
        };
        let range = field("address range")?;
        let perms = field("permissions")?.to_string();
        let offset = field("offset")?;
        let dev = field("device")?.to_string();
        let inode = field("inode")?;
        let (start, end) = range
            .split_once('-')
            .ok_or_else(|| format!("address range {range:?} is not START-END"))?;
        let hex = |t: &str, what: &str| {
            u64::from_str_radix(t, 16).map_err(|_| format!("{what} {t:?} is not a hex number"))
        };
        let (start, end) = (hex(start, "start address")?, hex(end, "end address")?);
        if end < start {
            return Err(format!("end address {end:x} is below start {start:x}"));
        }
        let offset = hex(offset, "offset")?;
        let (maj, min) = dev
            .split_once(':')
            .ok_or_else(|| format!("device {dev:?} is not MAJ:MIN"))?;
        hex(maj, "device major")?;
        hex(min, "device minor")?;
        let inode = inode
            .parse()
            .map_err(|_| format!("inode {inode:?} is not a number"))?;
        let mut path = rest.trim();
        if let Some((p, id)) = path.rsplit_once(' ') {
            if id.starts_with("build-id:") {
                path = p.trim_end();
            }
        }
        Ok(MapEntry {
            start,
            end,
            perms,
            offset,
            dev,
            inode,
            path: path.to_string(),
        })
    }
}

impl fmt::Display for MapEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = format!(
            "{:08x}-{:08x} {} {:08x} {} {}",
            self.start, self.end, self.perms, self.offset, self.dev, self.inode
        );
        if self.path.is_empty() {
            write!(f, "{head}")
        } else {
            // /proc pads the path to column 73; uftrace does not care, but people reading it do.
            write!(f, "{head:<72} {}", self.path)
        }
    }
}

/// Checks what uftrace needs to read `entries` as intended: well-formed fields, paths without
/// blanks (uftrace's `%s` would cut them), and a `[stack]` line.
pub fn validate(entries: &[MapEntry]) -> Result<(), String> {
    for e in entries {
        if e.end < e.start {
            return Err(format!("mapping {e} ends before it starts"));
        }
        if e.perms.len() != 4 || e.perms.contains(char::is_whitespace) {
            return Err(format!(
                "permissions {:?} are not 4 characters like r-xp",
                e.perms
            ));
        }
        let dev_ok = e.dev.split_once(':').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_hexdigit())
        });
        if !dev_ok {
            return Err(format!("device {:?} is not MAJ:MIN in hex", e.dev));
        }
        if e.path.contains(char::is_whitespace) || e.path.contains('\0') {
            return Err(format!(
                "path {:?} contains a blank, which uftrace cuts at",
                e.path
            ));
        }
    }
    if !entries.iter().any(|e| e.path.starts_with("[stack")) {
        return Err(
            "no [stack] line: uftrace would take every address for a kernel address".into(),
        );
    }
    Ok(())
}

/// Writes `entries` as maps text after [`validate`] accepts them.
pub fn write_maps(mut w: impl Write, entries: &[MapEntry]) -> io::Result<()> {
    validate(entries).map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
    let mut text = String::new();
    for e in entries {
        use std::fmt::Write as _;
        let _ = writeln!(text, "{e}");
    }
    w.write_all(text.as_bytes())
}

/// Parses maps text (`/proc/PID/maps` or `sid-SID.map`). Blank lines are skipped; any other
/// line that is not a mapping is an error naming its line.
pub fn parse_maps(bytes: &[u8], file: &Path) -> Result<Vec<MapEntry>, FormatError> {
    let text = text_of(bytes, file)?;
    let mut out = Vec::new();
    for (n, line) in numbered_lines(text) {
        if line.trim().is_empty() {
            continue;
        }
        out.push(MapEntry::parse_line(line).map_err(|m| FormatError::at_line(file, n, m))?);
    }
    Ok(out)
}

/// The current process's mappings (from /proc/self/maps), keeping only lines uftrace can read:
/// paths with blanks (such as `... (deleted)`) are dropped.
pub fn current_process_map() -> io::Result<Vec<MapEntry>> {
    let path = Path::new("/proc/self/maps");
    let bytes = std::fs::read(path)?;
    let entries = parse_maps(&bytes, path)?;
    Ok(entries
        .into_iter()
        .filter(|e| !e.path.contains(char::is_whitespace))
        .collect())
}

/// Writes the current process's map (see [`current_process_map`]).
pub fn write_current_process_map(w: impl Write) -> io::Result<()> {
    write_maps(w, &current_process_map()?)
}

/// A synthetic map for a guest image loaded at `start..end` and named `path` (the name the
/// image's `.sym` file is looked up by), plus the required `[stack]` line. Addresses are cut to
/// the 48 bits a record can hold, so a higher-half image still matches its records.
pub fn guest_map(start: u64, end: u64, path: &str) -> Vec<MapEntry> {
    let (start, end) = (start & ADDR_MASK, end & ADDR_MASK);
    let mut map = vec![MapEntry::new(start, end.max(start), path)];
    let (s, e) = SYNTHETIC_STACK;
    map.push(MapEntry::stack(s, e));
    map
}

/// Writes [`guest_map`]`(start, end, path)`.
pub fn write_guest_map(w: impl Write, start: u64, end: u64, path: &str) -> io::Result<()> {
    write_maps(w, &guest_map(start, end, path))
}

/// uftrace's `guess_kernel_base` for a `[stack]` mapping starting at `stack_start`.
pub fn guess_kernel_base(stack_start: u64) -> u64 {
    match stack_start {
        a if a < 0x4000_0000 => 0x4000_0000,
        a if a < 0x8000_0000 => 0x8000_0000,
        a if a < 0xB000_0000 => 0xB000_0000,
        a if a < 0xC000_0000 => 0xC000_0000,
        a if a < 0x80_0000_0000 => 0xFFFF_FF80_0000_0000,
        a if a < 0x400_0000_0000 => 0xFFFF_FC00_0000_0000,
        a if a < 0x8000_0000_0000 => 0xFFFF_8000_0000_0000,
        _ => 0xFFFF_0000_0000_0000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_and_uftrace_lines() {
        let text = "55b79c749000-55b79c74e000 r-xp 00000000 00:00 0                          /tmp/t build-id:38e3e9\n\
                    7fff5ec02000-7fff5ec23000 rw-p 00000000 00:00 0                          [stack]\n\
                    7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n\
                    7f0000001000-7f0000002000 r--p 00001000 08:01 1234 /tmp/a b (deleted)\n";
        let m = parse_maps(text.as_bytes(), Path::new("m")).unwrap();
        assert_eq!(
            m[0],
            MapEntry::new(0x55b79c749000, 0x55b79c74e000, "/tmp/t")
        );
        assert_eq!(m[1].path, "[stack]");
        assert_eq!(m[2].path, "");
        assert_eq!(m[3].path, "/tmp/a b (deleted)");
        assert_eq!(
            (m[3].offset, m[3].dev.as_str(), m[3].inode),
            (0x1000, "08:01", 1234)
        );
    }

    #[test]
    fn round_trip_guest_and_self() {
        let g = guest_map(
            0xffff_ffff_8100_0000,
            0xffff_ffff_8200_0000,
            "/guest/kernel.elf",
        );
        assert_eq!(g[0].start, 0xffff_8100_0000);
        let mut buf = Vec::new();
        write_maps(&mut buf, &g).unwrap();
        assert_eq!(parse_maps(&buf, Path::new("m")).unwrap(), g);
        let me = current_process_map().unwrap();
        let mut buf = Vec::new();
        write_maps(&mut buf, &me).unwrap();
        assert_eq!(parse_maps(&buf, Path::new("m")).unwrap(), me);
    }

    #[test]
    fn errors() {
        let err = parse_maps(b"[stack]\n", Path::new("d/sid-x.map")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("d/sid-x.map:1: missing permissions"),
            "{err}"
        );
        let err = parse_maps(
            b"1000-2000 r-xp 0 00:00 0 /a\n1000-zz r-xp 0 00:00 0 /a\n",
            Path::new("m"),
        )
        .unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(write_maps(Vec::new(), &[MapEntry::new(1, 2, "/a")])
            .unwrap_err()
            .to_string()
            .contains("[stack]"));
    }

    #[test]
    fn kernel_base() {
        assert_eq!(guess_kernel_base(SYNTHETIC_STACK.0), 0xFFFF_8000_0000_0000);
    }
}
