//! `vftrace.clock`: how the nanosecond record times of a trace map back to the TSC.
//!
//! ```text
//! # vftrace clock: ns = ns_base + (tsc - tsc_base) * 1e9 / tsc_hz
//! tsc_hz=2596130000.0
//! tsc_base=123456789
//! ns_base=987654321
//! source=host
//! ```
//! Host traces use CLOCK_MONOTONIC nanoseconds for `ns_base`. A guest has no CLOCK_MONOTONIC:
//! its file says `source=guest` and `ns_base=0` at `tsc_base` = the guest's first TSC.
//!
//! Conversions are exact integer arithmetic on the rational value of `tsc_hz` (an `f64` is
//! `m * 2^e` exactly), so they do not drift however far a time is from the base.

use std::fmt;
use std::io::{self, Write};
use std::path::Path;

use crate::error::{numbered_lines, text_of, FormatError};

/// The file name beside a trace.
pub const CLOCK_FILE: &str = "vftrace.clock";
/// Largest `vftrace.clock` read (it has a handful of lines).
pub const MAX_CLOCK_BYTES: u64 = 64 << 10;

/// Which side's TSC the mapping describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClockSource {
    Host,
    Guest,
}

impl fmt::Display for ClockSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClockSource::Host => "host",
            ClockSource::Guest => "guest",
        })
    }
}

/// `ns = ns_base + (tsc - tsc_base) * 1e9 / tsc_hz`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockMap {
    pub tsc_hz: f64,
    pub tsc_base: u64,
    pub ns_base: u64,
    pub source: ClockSource,
}

/// Bits of binary fraction of `tsc_hz` kept (2^-30 Hz: far below any measurable error).
const MAX_FRACTION_BITS: u32 = 30;

/// `tsc_hz` as `den / 2^shift` with `num = 1e9 << shift`, so ns = ticks * num / den.
#[derive(Clone, Copy)]
struct Ratio {
    num: u128,
    den: u64,
}

impl Ratio {
    fn of(hz: f64) -> Option<Ratio> {
        if !(1.0..1e15).contains(&hz) {
            return None;
        }
        // hz = mantissa * 2^exp exactly.
        let bits = hz.to_bits();
        let exp = ((bits >> 52) & 0x7ff) as i32 - 1075;
        let mut mantissa = (bits & ((1 << 52) - 1)) | (1 << 52);
        let mut shift = (-exp).max(0) as u32;
        let mut scale_up = exp.max(0) as u32; // hz >= 2^53: mantissa << exp
        let tz = mantissa.trailing_zeros().min(shift);
        mantissa >>= tz;
        shift -= tz;
        if shift > MAX_FRACTION_BITS {
            let drop = shift - MAX_FRACTION_BITS;
            mantissa = (mantissa + (1 << (drop - 1))) >> drop;
            shift = MAX_FRACTION_BITS;
        }
        while scale_up > 0 {
            mantissa = mantissa.checked_mul(2)?;
            scale_up -= 1;
        }
        Some(Ratio {
            num: 1_000_000_000u128 << shift,
            den: mantissa,
        })
    }

    /// floor(x * num / den) without overflow for any u64 x.
    #[inline]
    fn ticks_to_ns(self, x: u64) -> u128 {
        let (q, r) = (x / self.den, x % self.den);
        q as u128 * self.num + (r as u128 * self.num) / self.den as u128
    }

    /// floor(x * den / num).
    #[inline]
    fn ns_to_ticks(self, x: u64) -> u128 {
        let x = x as u128;
        let (q, r) = (x / self.num, x % self.num);
        q * self.den as u128 + (r * self.den as u128) / self.num
    }
}

fn saturate(v: u128) -> u64 {
    v.min(u64::MAX as u128) as u64
}

impl ClockMap {
    /// A mapping of `source`'s TSC running at `tsc_hz`, with `tsc_base` meaning `ns_base`.
    pub fn new(tsc_hz: f64, tsc_base: u64, ns_base: u64, source: ClockSource) -> ClockMap {
        ClockMap {
            tsc_hz,
            tsc_base,
            ns_base,
            source,
        }
    }

    /// Checks that `tsc_hz` is usable (finite, at least 1 Hz, below 1 PHz).
    pub fn validate(&self) -> Result<(), String> {
        match Ratio::of(self.tsc_hz) {
            Some(_) => Ok(()),
            None => Err(format!(
                "tsc_hz={} is not a frequency between 1 Hz and 1e15 Hz",
                self.tsc_hz
            )),
        }
    }

    /// Nanoseconds for a TSC value, saturating at 0 and `u64::MAX`. An invalid `tsc_hz`
    /// (see [`ClockMap::validate`]) is treated as 1 GHz rather than panicking.
    pub fn tsc_to_ns(&self, tsc: u64) -> u64 {
        let ratio = Ratio::of(self.tsc_hz).unwrap_or(Ratio { num: 1, den: 1 });
        if tsc >= self.tsc_base {
            saturate(self.ns_base as u128 + ratio.ticks_to_ns(tsc - self.tsc_base))
        } else {
            saturate((self.ns_base as u128).saturating_sub(ratio.ticks_to_ns(self.tsc_base - tsc)))
        }
    }

    /// A converter for many TSC values (every record of a trace): see [`TscToNs`].
    pub fn converter(&self) -> TscToNs {
        let ratio = Ratio::of(self.tsc_hz).unwrap_or(Ratio { num: 1, den: 1 });
        TscToNs {
            map: *self,
            // num < 2^61, so num << 64 fits; the quotient is ns per tick in 64.64 fixed point.
            ns_per_tick: (ratio.num << 64) / ratio.den as u128,
        }
    }

    /// The TSC value for nanoseconds `ns`, saturating at 0 and `u64::MAX`.
    pub fn ns_to_tsc(&self, ns: u64) -> u64 {
        let ratio = Ratio::of(self.tsc_hz).unwrap_or(Ratio { num: 1, den: 1 });
        if ns >= self.ns_base {
            saturate(self.tsc_base as u128 + ratio.ns_to_ticks(ns - self.ns_base))
        } else {
            saturate((self.tsc_base as u128).saturating_sub(ratio.ns_to_ticks(self.ns_base - ns)))
        }
    }

    /// Reads and parses a clock file.
    pub fn read_file(path: &Path) -> Result<ClockMap, FormatError> {
        let bytes = crate::output::read_capped(path, MAX_CLOCK_BYTES)
            .map_err(|e| FormatError::io(path, &e))?;
        ClockMap::parse(&bytes, path)
    }

    /// Writes the file text (`tsc_hz` printed so it reads back bit-exact).
    pub fn write_to(&self, mut w: impl Write) -> io::Result<()> {
        self.validate()
            .map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
        write!(
            w,
            "# vftrace clock: ns = ns_base + (tsc - tsc_base) * 1e9 / tsc_hz\ntsc_hz={:?}\ntsc_base={}\nns_base={}\nsource={}\n",
            self.tsc_hz, self.tsc_base, self.ns_base, self.source
        )
    }

    /// Parses the file text: `#` comments and blank lines are skipped; every key must appear
    /// exactly once; anything else is an error naming the line.
    pub fn parse(bytes: &[u8], file: &Path) -> Result<ClockMap, FormatError> {
        let text = text_of(bytes, file)?;
        let (mut hz, mut tsc_base, mut ns_base, mut source) = (None, None, None, None);
        let mut last_line = 0;
        for (n, line) in numbered_lines(text) {
            last_line = n;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |m: String| FormatError::at_line(file, n, m);
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| err(format!("expected key=value, found {line:?}")))?;
            let (key, value) = (key.trim(), value.trim());
            fn set<T>(slot: &mut Option<T>, v: T, key: &str) -> Result<(), String> {
                if slot.replace(v).is_some() {
                    return Err(format!("{key} is given twice"));
                }
                Ok(())
            }
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| err(format!("{key}={v:?} is not an unsigned integer")))
            };
            match key {
                "tsc_hz" => {
                    let v: f64 = value
                        .parse()
                        .map_err(|_| err(format!("tsc_hz={value:?} is not a number")))?;
                    if Ratio::of(v).is_none() {
                        return Err(err(format!(
                            "tsc_hz={value} is not a frequency between 1 Hz and 1e15 Hz"
                        )));
                    }
                    set(&mut hz, v, key).map_err(err)?
                }
                "tsc_base" => set(&mut tsc_base, num(value)?, key).map_err(err)?,
                "ns_base" => set(&mut ns_base, num(value)?, key).map_err(err)?,
                "source" => {
                    let s = match value {
                        "host" => ClockSource::Host,
                        "guest" => ClockSource::Guest,
                        _ => {
                            return Err(err(format!("source={value:?} is neither host nor guest")))
                        }
                    };
                    set(&mut source, s, key).map_err(err)?
                }
                _ => {
                    return Err(err(format!(
                        "unknown key {key:?} (expected tsc_hz, tsc_base, ns_base, source)"
                    )))
                }
            }
        }
        let missing =
            |k: &str| FormatError::at_line(file, last_line.max(1), format!("missing {k}= line"));
        Ok(ClockMap {
            tsc_hz: hz.ok_or_else(|| missing("tsc_hz"))?,
            tsc_base: tsc_base.ok_or_else(|| missing("tsc_base"))?,
            ns_base: ns_base.ok_or_else(|| missing("ns_base"))?,
            source: source.ok_or_else(|| missing("source"))?,
        })
    }
}

/// [`ClockMap::tsc_to_ns`] with one multiplication per value instead of 128-bit divisions
/// (which a guest without them in hardware, emulated under PVM, pays dearly for). The result
/// is at most 1 ns below the exact one (the fixed-point factor is short of the exact ratio by
/// less than 2^-64 ns per tick) and, like it, never decreases as the TSC grows.
#[derive(Clone, Copy, Debug)]
pub struct TscToNs {
    map: ClockMap,
    ns_per_tick: u128,
}

impl TscToNs {
    #[inline]
    pub fn convert(&self, tsc: u64) -> u64 {
        let Some(ticks) = tsc.checked_sub(self.map.tsc_base) else {
            return self.map.tsc_to_ns(tsc);
        };
        match u128::from(ticks).checked_mul(self.ns_per_tick) {
            Some(fixed) => saturate(u128::from(self.map.ns_base) + (fixed >> 64)),
            None => self.map.tsc_to_ns(tsc),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converter_is_within_one_ns_of_exact_and_monotonic() {
        for hz in [2_596_130_000.0, 2_596_098_021.5, 1e9, 3.3e6, 1.0] {
            let map = ClockMap::new(hz, 1_000_000, 5_000_000_000, ClockSource::Host);
            let fast = map.converter();
            let mut previous = 0;
            let mut tsc = 0u64;
            while tsc < u64::MAX / 3 {
                let (exact, quick) = (map.tsc_to_ns(tsc), fast.convert(tsc));
                assert!(
                    exact - quick <= 1 && quick <= exact,
                    "{hz} Hz, tsc {tsc}: {exact} vs {quick}"
                );
                assert!(quick >= previous);
                previous = quick;
                tsc = tsc * 3 + 7;
            }
        }
    }

    #[test]
    fn exact_integer_frequency() {
        let c = ClockMap::new(2_596_130_000.0, 1000, 5_000, ClockSource::Host);
        assert_eq!(c.tsc_to_ns(1000), 5_000);
        assert_eq!(c.tsc_to_ns(1000 + 2_596_130_000), 1_000_005_000);
        // Ten hours later: exact, no drift.
        let ticks = 2_596_130_000u64 * 36_000;
        assert_eq!(c.tsc_to_ns(1000 + ticks), 5_000 + 36_000 * 1_000_000_000);
        assert_eq!(c.ns_to_tsc(5_000 + 36_000 * 1_000_000_000), 1000 + ticks);
        // Before the base.
        assert_eq!(c.tsc_to_ns(0), 5_000 - 385); // 1000 ticks = 385.18 ns
        assert_eq!(
            c.tsc_to_ns(u64::MAX),
            5_000 + ((u64::MAX - 1000) as u128 * 1_000_000_000 / 2_596_130_000) as u64
        );
    }

    #[test]
    fn fractional_frequency_and_round_trip() {
        let c = ClockMap::new(2_596_130_000.5, 0, 0, ClockSource::Guest);
        // 2 * 2596130000.5 ticks = 2 s exactly.
        assert_eq!(c.tsc_to_ns(5_192_260_001), 2_000_000_000);
        for tsc in [0u64, 1, 12345, 1 << 40, u64::MAX / 3] {
            let back = c.ns_to_tsc(c.tsc_to_ns(tsc));
            assert!(tsc - back <= 3, "{tsc} -> {back}");
        }
        let odd = ClockMap::new(1.0e9 / 3.0, 0, 0, ClockSource::Host);
        assert_eq!(odd.tsc_to_ns(1_000_000_000), 3_000_000_000);
    }

    #[test]
    fn file_round_trip() {
        let c = ClockMap::new(2_596_130_000.0, 123_456_789, 987_654_321, ClockSource::Host);
        let mut buf = Vec::new();
        c.write_to(&mut buf).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(text.contains("tsc_hz=2596130000.0\n"), "{text}");
        assert_eq!(ClockMap::parse(&buf, Path::new("c")).unwrap(), c);
        let g = ClockMap {
            tsc_hz: 1e9 / 7.0,
            source: ClockSource::Guest,
            ..c
        };
        let mut buf = Vec::new();
        g.write_to(&mut buf).unwrap();
        assert_eq!(ClockMap::parse(&buf, Path::new("c")).unwrap(), g);
    }

    #[test]
    fn parse_errors_name_line() {
        let err = ClockMap::parse(b"# c\ntsc_hz=abc\n", Path::new("d/vftrace.clock")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("d/vftrace.clock:2: tsc_hz=\"abc\""),
            "{err}"
        );
        let err =
            ClockMap::parse(b"tsc_hz=1e9\ntsc_base=1\nns_base=2\n", Path::new("c")).unwrap_err();
        assert!(err.message.contains("source"), "{err}");
        let err = ClockMap::parse(b"tsc_hz=0\n", Path::new("c")).unwrap_err();
        assert_eq!(err.line, Some(1));
        assert!(ClockMap::new(f64::NAN, 0, 0, ClockSource::Host)
            .write_to(Vec::new())
            .is_err());
    }
}
