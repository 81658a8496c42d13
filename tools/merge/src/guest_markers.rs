//! `vftrace.markers`: the guest's own list of the markers it wrote (written by `vftrace
//! capture` from the guest's stream), with the full 64-bit TSC of each.
//!
//! ```text
//! # vftrace guest markers: guest_tsc value phase (port 0x6a0)
//! 50000000123456 0x4ebfff1b 1
//! ```
//! With it no unwrapping of the low 32 bits is needed, and each host `kvm_pio` is paired with
//! the guest write of the same value.
use std::path::Path;

use vftrace_format::error::FormatError;

use crate::align::Marker;

pub const GUEST_MARKERS_FILE: &str = "vftrace.markers";
/// The file comes from an untrusted guest: refuse anything implausibly large.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// One marker as the guest recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestMarker {
    pub tsc: u64,
    /// What was written to the port (the low 32 bits of `tsc`).
    pub value: u32,
    /// Guest-defined meaning (the example unikernel's run phases).
    pub phase: u32,
}

/// The list and the port its header names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestMarkers {
    pub port: Option<u16>,
    pub markers: Vec<GuestMarker>,
}

/// Reads `dir/vftrace.markers`; `None` if the trace has none.
pub fn read_guest_markers(dir: &Path) -> Result<Option<GuestMarkers>, FormatError> {
    let path = dir.join(GUEST_MARKERS_FILE);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FormatError::io(&path, &e)),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(FormatError::whole_file(
            &path,
            format!("{} bytes: too large for a marker list", meta.len()),
        ));
    }
    let bytes = std::fs::read(&path).map_err(|e| FormatError::io(&path, &e))?;
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
        let [tsc, value, phase] = fields[..] else {
            return Err(err("expected `guest_tsc value phase`"));
        };
        let tsc = parse_u64(tsc).ok_or_else(|| err("guest_tsc is not a number"))?;
        let value = parse_u64(value)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| err("value is not a 32-bit number"))?;
        let phase = parse_u64(phase)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| err("phase is not a 32-bit number"))?;
        out.markers.push(GuestMarker { tsc, value, phase });
    }
    Ok(out)
}

fn parse_u64(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Completes `markers` (in any order) with the guest's full TSCs: in time order on both
/// sides, each pio takes the next unused guest marker with its value. Returns the phase of
/// each marker (None when unmatched) and how many were matched.
pub fn attach(markers: &mut [Marker], guest: &[GuestMarker]) -> (Vec<Option<u32>>, usize) {
    let mut guest: Vec<GuestMarker> = guest.to_vec();
    guest.sort_by_key(|g| g.tsc);
    let mut order: Vec<usize> = (0..markers.len()).collect();
    order.sort_by_key(|&i| markers[i].pio_host_tsc);
    let mut phases = vec![None; markers.len()];
    let mut cursor = 0;
    let mut matched = 0;
    for i in order {
        let m = &mut markers[i];
        let found = guest[cursor..]
            .iter()
            .position(|g| g.value == m.guest_tsc_low && g.tsc as u32 == g.value);
        if let Some(k) = found {
            let g = guest[cursor + k];
            m.guest_tsc_high = Some((g.tsc >> 32) as u32);
            phases[i] = Some(g.phase);
            cursor += k + 1;
            matched += 1;
        }
    }
    (phases, matched)
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
                phase: 1
            }
        );
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
    fn attach_pairs_in_order_and_skips_unseen() {
        let g = |tsc: u64, phase| GuestMarker {
            tsc,
            value: tsc as u32,
            phase,
        };
        // The same low bits twice (2^32 cycles apart), and one the host never saw.
        let guest = [g(5 << 32 | 7, 1), g(6 << 32 | 7, 2), g(6 << 32 | 9, 3)];
        let pio = |host: u64, low: u32| Marker {
            pio_host_tsc: host,
            host_thread: 1,
            guest_tsc_low: low,
            guest_tsc_high: None,
        };
        let mut markers = [pio(200, 9), pio(100, 7), pio(150, 7), pio(300, 0x55)];
        let (phases, matched) = attach(&mut markers, &guest);
        assert_eq!(matched, 3);
        assert_eq!(phases, [Some(3), Some(1), Some(2), None]);
        assert_eq!(markers[1].guest_tsc_high, Some(5));
        assert_eq!(markers[2].guest_tsc_high, Some(6));
        assert_eq!(markers[3].guest_tsc_high, None);
    }
}
