//! `vftrace.markers`: beside a guest trace, the guest's own list of the markers it wrote (from
//! its stream), with the full 64-bit TSC of each.
//!
//! ```text
//! # vftrace guest markers: guest_tsc value phase guest_tsc_after (port 0x6a0)
//! 50000000123456 0x4ebfff1b 1 50000000131022
//! ```
//! With it no unwrapping of the low 32 bits is needed, and each host `kvm_pio` is paired with
//! the guest write of the same value. `guest_tsc_after` (the TSC read right after the write
//! returned) bounds the host's stamp from above; lists without it (three columns) are read with
//! it unknown (0).
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

use crate::error::FormatError;
pub use crate::stream::Marker as GuestMarker;

pub const GUEST_MARKERS_FILE: &str = "vftrace.markers";
/// The file comes from an untrusted guest: refuse anything implausibly large.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// The list and the port its header names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestMarkers {
    pub port: Option<u16>,
    pub markers: Vec<GuestMarker>,
}

/// Reads `dir/vftrace.markers`; `None` if the trace has none.
pub fn read_guest_markers(dir: &Path) -> Result<Option<GuestMarkers>, FormatError> {
    let path = dir.join(GUEST_MARKERS_FILE);
    let bytes = match crate::output::read_capped(&path, MAX_FILE_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FormatError::io(&path, &e)),
    };
    parse_guest_markers(&bytes, &path).map(Some)
}

/// Parses the file text; errors name the line.
pub fn parse_guest_markers(bytes: &[u8], path: &Path) -> Result<GuestMarkers, FormatError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| FormatError::at_offset(path, e.valid_up_to() as u64, "not UTF-8 text"))?;
    let mut out = GuestMarkers::default();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if let Some(comment) = line.strip_prefix('#') {
            if let Some(port) = comment
                .split("(port ")
                .nth(1)
                .and_then(|r| r.strip_suffix(')'))
            {
                out.port = parse_u64(port).and_then(|p| u16::try_from(p).ok());
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let err = |m: &str| FormatError::at_line(path, n, format!("{m}: {line:?}"));
        let (tsc, value, phase, after) = match fields[..] {
            [tsc, value, phase] => (tsc, value, phase, None),
            [tsc, value, phase, after] => (tsc, value, phase, Some(after)),
            _ => return Err(err("expected `guest_tsc value phase [guest_tsc_after]`")),
        };
        let tsc = parse_u64(tsc).ok_or_else(|| err("guest_tsc is not a number"))?;
        let value = parse_u64(value)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| err("value is not a 32-bit number"))?;
        let phase = parse_u64(phase)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| err("phase is not a 32-bit number"))?;
        let tsc_after = match after {
            Some(a) => parse_u64(a).ok_or_else(|| err("guest_tsc_after is not a number"))?,
            None => 0,
        };
        out.markers.push(GuestMarker {
            tsc,
            value,
            phase,
            tsc_after,
        });
    }
    Ok(out)
}

fn parse_u64(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Writes the list as [`parse_guest_markers`] reads it.
pub fn write_guest_markers(
    mut w: impl Write,
    port: Option<u16>,
    markers: &[GuestMarker],
) -> io::Result<()> {
    let mut text =
        String::from("# vftrace guest markers: guest_tsc value phase guest_tsc_after (port ");
    let _ = writeln!(text, "{:#x})", port.unwrap_or(0));
    for m in markers {
        let _ = writeln!(text, "{} {:#x} {} {}", m.tsc, m.value, m.phase, m.tsc_after);
    }
    w.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_capture_tools_output() {
        let text = "# vftrace guest markers: guest_tsc value phase (port 0x6a0)\n\
                    50000000123456 0x4ebfff1b 1\n\n50000000223456 0x4ec18570 2\n";
        let m = parse_guest_markers(text.as_bytes(), Path::new("d/vftrace.markers")).unwrap();
        assert_eq!(m.port, Some(0x6a0));
        assert_eq!(m.markers.len(), 2);
        assert_eq!(
            m.markers[0],
            GuestMarker {
                tsc: 50000000123456,
                value: 0x4ebfff1b,
                phase: 1,
                tsc_after: 0
            }
        );
        let m = parse_guest_markers(b"10 0xa 1 25\n", Path::new("m")).unwrap();
        assert_eq!(m.markers[0].tsc_after, 25);
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_guest_markers(b"# x\n1 2 3\n1 zz 3\n", Path::new("d/vftrace.markers"))
            .unwrap_err();
        assert!(
            err.to_string().starts_with("d/vftrace.markers:3: value"),
            "{err}"
        );
        let err = parse_guest_markers(b"1 2\n", Path::new("m")).unwrap_err();
        assert_eq!(err.line, Some(1));
        let err = parse_guest_markers(b"1 0x100000000 2\n", Path::new("m")).unwrap_err();
        assert!(err.to_string().contains("32-bit"), "{err}");
    }

    #[test]
    fn written_lists_read_back() {
        let markers = [GuestMarker {
            tsc: 0x1_2345_6789,
            value: 0x2345_6789,
            phase: 3,
            tsc_after: 0x1_2345_9999,
        }];
        let mut out = Vec::new();
        write_guest_markers(&mut out, Some(0x6a0), &markers).unwrap();
        let back = parse_guest_markers(&out, Path::new("m")).unwrap();
        assert_eq!(
            back,
            GuestMarkers {
                port: Some(0x6a0),
                markers: markers.to_vec()
            }
        );
    }
}
