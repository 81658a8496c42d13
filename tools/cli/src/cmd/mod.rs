//! One module per subcommand; each has `Args` (clap) and `run`.
pub mod capture;
pub mod convert;
pub mod demo;
pub mod flame;
pub mod info;
pub mod kvm;
pub mod merge;
pub mod replay;
pub mod report;
pub mod sym;

/// A number as users type addresses and ports: decimal, or hex with 0x.
pub(crate) fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}
