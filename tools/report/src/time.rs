//! Durations as uftrace prints them, and as users type them (`-t 10us`).

/// SGR sequences: plain colours only, so `less -R` shows them.
pub(crate) mod sgr {
    pub const RESET: &str = "\x1b[0m";
    pub const RED: &str = "\x1b[31m";
    pub const GREEN: &str = "\x1b[32m";
    pub const YELLOW: &str = "\x1b[33m";
    pub const BLUE: &str = "\x1b[34m";
    pub const GRAY: &str = "\x1b[90m";
}

/// Units of [`write_duration`], each 1000 (then 60, 24) times the one before.
const UNITS: [&str; 5] = ["us", "ms", " s", " m", " h"];
const LIMITS: [u64; 6] = [1000, 1000, 1000, 60, 24, u32::MAX as u64];

/// The unit index and (value, thousandths) uftrace shows for `ns`.
#[inline]
fn split_unit(ns: u64) -> (usize, u64, u64) {
    // Most calls take less than a millisecond.
    if ns < 1_000_000 {
        return (0, ns / 1000, ns % 1000);
    }
    let mut delta = ns;
    let mut small = 0;
    let mut idx = 0;
    while idx < UNITS.len() {
        small = delta % LIMITS[idx];
        delta /= LIMITS[idx];
        if delta < LIMITS[idx + 1] {
            break;
        }
        idx += 1;
    }
    let idx = idx.min(UNITS.len() - 1);
    if delta > 999 {
        return (idx, 999, 999);
    }
    (idx, delta, small)
}

fn push_unit(out: &mut Vec<u8>, idx: usize, color: bool) {
    let paint = match idx {
        1 => Some(sgr::GREEN),
        2 => Some(sgr::YELLOW),
        3 | 4 => Some(sgr::RED),
        _ => None,
    };
    match paint.filter(|_| color) {
        Some(c) => {
            out.extend_from_slice(c.as_bytes());
            out.extend_from_slice(UNITS[idx].as_bytes());
            out.extend_from_slice(sgr::RESET.as_bytes());
        }
        None => out.extend_from_slice(UNITS[idx].as_bytes()),
    }
}

/// Appends `value` in decimal, right-aligned in `width` characters (no allocation: this is
/// on every line of a replay).
#[inline]
pub(crate) fn push_padded(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    let len = digits.len() - i;
    out.extend(std::iter::repeat_n(b' ', width.saturating_sub(len)));
    out.extend_from_slice(&digits[i..]);
}

#[inline]
fn push_thousandths(out: &mut Vec<u8>, small: u64) {
    out.extend_from_slice(&[
        b'.',
        b'0' + (small / 100) as u8,
        b'0' + (small / 10 % 10) as u8,
        b'0' + (small % 10) as u8,
    ]);
}

/// `000` to `999`, and the same with leading blanks (`  0` to `999`).
const DIGITS3: [[u8; 3]; 1000] = digits3(b'0');
const BLANK_DIGITS3: [[u8; 3]; 1000] = digits3(b' ');

const fn digits3(lead: u8) -> [[u8; 3]; 1000] {
    let mut t = [[0u8; 3]; 1000];
    let mut i = 0;
    while i < 1000 {
        let (h, d, o) = ((i / 100) as u8, (i / 10 % 10) as u8, (i % 10) as u8);
        t[i] = [
            if i >= 100 { b'0' + h } else { lead },
            if i >= 10 { b'0' + d } else { lead },
            b'0' + o,
        ];
        i += 1;
    }
    t
}

/// `ns` below a millisecond, the duration of most calls, as [`write_duration`] prints it
/// without colour: ten bytes made from two table lookups.
#[inline]
pub(crate) fn plain_microseconds(ns: u64) -> Option<[u8; 10]> {
    if ns == 0 || ns >= 1_000_000 {
        return None;
    }
    let (us, small) = ((ns / 1000) as usize, (ns % 1000) as usize);
    let [a, b, c] = BLANK_DIGITS3[us];
    let [d, e, f] = DIGITS3[small];
    Some([a, b, c, b'.', d, e, f, b' ', b'u', b's'])
}

/// A duration in 10 characters, as uftrace's `print_time_unit`: `  1.234 us`, ` 12.000 ms`;
/// zero is blank. Units are coloured (ms green, s yellow, m and h red) when `color`.
pub fn write_duration(out: &mut Vec<u8>, ns: u64, color: bool) {
    if ns == 0 {
        out.extend_from_slice(b"          ");
        return;
    }
    if let Some(text) = plain_microseconds(ns) {
        out.extend_from_slice(&text);
        return;
    }
    let (idx, value, small) = split_unit(ns);
    push_padded(out, value, 3);
    push_thousandths(out, small);
    out.push(b' ');
    push_unit(out, idx, color);
}

/// A change of duration in 11 characters, as uftrace's `print_diff_time_unit`: `+1.234 us`,
/// `-12.000 ms`, `0 us` when equal. Growth is red and shrinking blue when `color`.
pub fn write_duration_change(out: &mut Vec<u8>, base: u64, pair: u64, color: bool) {
    if base == pair {
        out.extend_from_slice(b"       0 us");
        return;
    }
    let grew = pair > base;
    let (idx, value, small) = split_unit(pair.abs_diff(base));
    let indent = if value >= 100 {
        0
    } else if value >= 10 {
        1
    } else {
        2
    };
    out.extend(std::iter::repeat_n(b' ', indent));
    if color {
        out.extend_from_slice(if grew { sgr::RED } else { sgr::BLUE }.as_bytes());
    }
    out.push(if grew { b'+' } else { b'-' });
    push_padded(out, value, 0);
    push_thousandths(out, small);
    if color {
        out.extend_from_slice(sgr::RESET.as_bytes());
    }
    out.push(b' ');
    push_unit(out, idx, color);
}

/// A change of a count in 9 characters, as uftrace's `print_diff_count`: `+3`, `-1`, `+0`.
pub fn write_count_change(out: &mut Vec<u8>, base: u64, pair: u64, color: bool) {
    let text = if pair >= base {
        format!("+{}", pair - base)
    } else {
        format!("-{}", base - pair)
    };
    let paint = if pair == base {
        None
    } else if pair > base {
        Some(sgr::RED)
    } else {
        Some(sgr::BLUE)
    };
    out.extend(std::iter::repeat_n(b' ', 9usize.saturating_sub(text.len())));
    match paint.filter(|_| color) {
        Some(c) => {
            out.extend_from_slice(c.as_bytes());
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(sgr::RESET.as_bytes());
        }
        None => out.extend_from_slice(text.as_bytes()),
    }
}

/// Parses a duration as uftrace's `-t` takes it: `NUMBER[.FRACTION][UNIT]`, unit `ns` (the
/// default), `us`, `ms`, `s` or `m`.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("{text:?} is not a duration (examples: 500ns, 10us, 1.5ms, 2s; no unit means ns)")
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "ns" | "nsec" => 1,
        "us" | "usec" => 1_000,
        "ms" | "msec" => 1_000_000,
        "s" | "sec" => 1_000_000_000,
        "m" | "min" => 60_000_000_000,
        _ => return Err(bad()),
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    let int: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let mut value = int.checked_mul(scale).ok_or_else(bad)?;
    // The fraction, digit by digit: exact, and digits below a nanosecond are dropped.
    let mut place = scale;
    for d in frac.bytes() {
        if !d.is_ascii_digit() {
            return Err(bad());
        }
        place /= 10;
        value = value
            .checked_add(u64::from(d - b'0') * place)
            .ok_or_else(bad)?;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(ns: u64) -> String {
        let mut v = Vec::new();
        write_duration(&mut v, ns, false);
        String::from_utf8(v).unwrap()
    }

    fn change(a: u64, b: u64) -> String {
        let mut v = Vec::new();
        write_duration_change(&mut v, a, b, false);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn durations_look_like_uftraces() {
        assert_eq!(dur(0), "          ");
        assert_eq!(dur(40), "  0.040 us");
        assert_eq!(dur(2_352_000), "  2.352 ms");
        assert_eq!(dur(184_054), "184.054 us");
        assert_eq!(dur(12_776_067_000), " 12.776  s");
        assert_eq!(dur(90_000_000_000), "  1.030  m");
        assert_eq!(change(5, 5), "       0 us");
        assert_eq!(change(2_921_000, 0), "  -2.921 ms");
        assert_eq!(change(0, 233_126), "+233.126 us");
        let mut v = Vec::new();
        write_count_change(&mut v, 0, 7, false);
        write_count_change(&mut v, 1, 1, false);
        assert_eq!(String::from_utf8(v).unwrap(), "       +7       +0");
    }

    #[test]
    fn colour_is_plain_sgr() {
        let mut v = Vec::new();
        write_duration(&mut v, 2_000_000, true);
        assert_eq!(String::from_utf8(v).unwrap(), "  2.000 \x1b[32mms\x1b[0m");
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("10us"), Ok(10_000));
        assert_eq!(parse_duration("1.5ms"), Ok(1_500_000));
        assert_eq!(parse_duration("250"), Ok(250));
        assert_eq!(parse_duration("0.3us"), Ok(300));
        assert_eq!(parse_duration("2s"), Ok(2_000_000_000));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("1.2.3us").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
    }
}
