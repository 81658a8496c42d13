//! One module per subcommand; each has `Args` (clap) and `run`.
pub mod capture;
pub mod convert;
pub mod demo;
pub mod demo_profile;
pub mod kvm;
pub mod merge;
pub mod profile;
pub mod sym;

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
