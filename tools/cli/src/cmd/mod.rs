//! One module per subcommand; each has `Args` (clap) and `run`.

/// `println!` for the summaries commands print once their outputs are in place: a reader that
/// has gone (`vftrace capture ... | head -1`) ends nothing, where `println!` would panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        let _ = $crate::cmd::print_out(&format!("{}\n", format_args!($($arg)*)));
    }};
}

pub mod capture;
pub mod convert;
pub mod demo;
pub mod demo_profile;
pub mod flame;
pub mod info;
pub mod kvm;
pub mod merge;
pub mod profile;
pub mod record;
pub mod replay;
pub mod report;
pub mod sym;

/// Writes `text` to standard output; a reader that has gone (`vftrace merge ... | head`) is
/// not an error.
pub(crate) fn print_out(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// A number as users type addresses and ports: decimal, or hex with 0x.
pub(crate) fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// A number of seconds, fractions allowed (`-d 2.5`).
pub(crate) fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    std::time::Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

/// A size as users type it: bytes, or with K, M, G (binary; an optional trailing B or iB).
pub(crate) fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.chars().last()? {
        'k' | 'K' => (&t[..t.len() - 1], 10),
        'm' | 'M' => (&t[..t.len() - 1], 20),
        'g' | 'G' => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    digits.trim().parse::<usize>().ok()?.checked_mul(1 << shift)
}

/// A duration as uftrace takes it (`-t 10us`): a number with ns, us, ms, s (or m, h); a bare
/// number is nanoseconds. In nanoseconds.
pub(crate) fn parse_duration_ns(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "ns" => 1.0,
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return None,
    };
    let ns = value * scale;
    (ns.is_finite() && ns >= 0.0 && ns < u64::MAX as f64).then_some(ns as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse_as_users_type_them() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64K"), Some(64 << 10));
        assert_eq!(parse_size("128M"), Some(128 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("2MB"), Some(2 << 20));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_duration_ns("10us"), Some(10_000));
        assert_eq!(parse_duration_ns("1.5ms"), Some(1_500_000));
        assert_eq!(parse_duration_ns("200"), Some(200));
        assert_eq!(parse_duration_ns("2s"), Some(2_000_000_000));
        assert_eq!(parse_duration_ns("fast"), None);
        assert_eq!(parse_duration_ns("1 fortnight"), None);
    }
}
