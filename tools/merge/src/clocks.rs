//! The host side of the timeline: TSC frequency and the host TSC -> output nanoseconds map.
use std::fmt;
use std::process::Command;

use vftrace_kvm::ClockSync;

/// Where the TSC frequency came from, best first.
#[derive(Clone, Debug, PartialEq)]
pub enum TscHzSource {
    /// `--tsc-hz`.
    Given,
    /// Measured by the KVM capture while it recorded.
    Capture,
    /// Fitted from the capture's (TSC, CLOCK_MONOTONIC) pairs.
    ClockPairs,
    /// The guest trace's `vftrace.clock` (guest and host TSC run at one rate).
    GuestClock,
    /// This machine's kernel log (`tsc: Detected ... MHz`): right only if the capture was
    /// taken here.
    KernelLog(String),
    /// Measured here against CLOCK_MONOTONIC: right only if the capture was taken here.
    Calibrated,
}

impl fmt::Display for TscHzSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TscHzSource::Given => f.write_str("given with --tsc-hz"),
            TscHzSource::Capture => f.write_str("measured by the capture"),
            TscHzSource::ClockPairs => f.write_str("fitted from the capture's clock pairs"),
            TscHzSource::GuestClock => f.write_str("from the guest's vftrace.clock"),
            TscHzSource::KernelLog(line) => write!(f, "from this machine's kernel log ({line})"),
            TscHzSource::Calibrated => f.write_str("calibrated on this machine"),
        }
    }
}

/// What [`detect_tsc_hz`] may use, in order of preference.
#[derive(Clone, Debug, Default)]
pub struct TscHzHints<'a> {
    pub given: Option<f64>,
    pub capture: Option<f64>,
    pub syncs: &'a [ClockSync],
    pub guest_clock: Option<f64>,
    /// Allow looking at this machine (kernel log, calibration) when nothing else knows.
    pub allow_local: bool,
}

/// The TSC frequency: given > capture > clock pairs > guest clock > kernel log > calibration.
pub fn detect_tsc_hz(hints: &TscHzHints) -> Option<(f64, TscHzSource)> {
    let plausible = |hz: f64| hz.is_finite() && (1e6..1e11).contains(&hz);
    if let Some(hz) = hints.given.filter(|h| plausible(*h)) {
        return Some((hz, TscHzSource::Given));
    }
    if let Some(hz) = hints.capture.filter(|h| plausible(*h)) {
        return Some((hz, TscHzSource::Capture));
    }
    if let Some(hz) = fit_syncs(hints.syncs)
        .map(|(_, slope)| 1e9 / slope)
        .filter(|h| plausible(*h))
    {
        return Some((hz, TscHzSource::ClockPairs));
    }
    if let Some(hz) = hints.guest_clock.filter(|h| plausible(*h)) {
        return Some((hz, TscHzSource::GuestClock));
    }
    if !hints.allow_local {
        return None;
    }
    if let Some((hz, line)) = kernel_log_tsc_hz() {
        return Some((hz, TscHzSource::KernelLog(line)));
    }
    calibrate_tsc_hz().map(|hz| (hz, TscHzSource::Calibrated))
}

/// Least-squares fit `mono_ns = a + slope * (tsc - syncs[0].tsc)` of pairs spanning at least
/// 100 ms (closer pairs do not give a trustworthy slope). Returns (a, slope).
fn fit_syncs(syncs: &[ClockSync]) -> Option<(f64, f64)> {
    let first = syncs.first()?;
    let span = syncs.iter().map(|s| s.mono_ns).max()? - syncs.iter().map(|s| s.mono_ns).min()?;
    if syncs.len() < 2 || span < vftrace_kvm::clock::MIN_CALIBRATION_NS {
        return None;
    }
    let n = syncs.len() as f64;
    let xs: Vec<f64> = syncs
        .iter()
        .map(|s| s.tsc as f64 - first.tsc as f64)
        .collect();
    let ys: Vec<f64> = syncs
        .iter()
        .map(|s| s.mono_ns as f64 - first.mono_ns as f64)
        .collect();
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    (slope > 0.0).then_some((first.mono_ns as f64 + my - slope * mx, slope))
}

/// `tsc: Refined TSC clocksource calibration: X MHz` (preferred) or `tsc: Detected X MHz`.
fn kernel_log_tsc_hz() -> Option<(f64, String)> {
    let out = Command::new("dmesg")
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    parse_kernel_log_tsc_hz(&String::from_utf8_lossy(&out.stdout))
}

fn parse_kernel_log_tsc_hz(log: &str) -> Option<(f64, String)> {
    let mhz_in = |line: &str, key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest[..rest.find("MHz")?].trim().parse().ok()
    };
    let mut detected = None;
    let mut refined = None;
    for line in log.lines() {
        if let Some(mhz) = mhz_in(line, "tsc: Refined TSC clocksource calibration:") {
            refined = Some((mhz * 1e6, line.trim().to_string()));
        } else if let Some(mhz) = mhz_in(line, "tsc: Detected") {
            detected = Some((mhz * 1e6, line.trim().to_string()));
        }
    }
    refined.or(detected)
}

/// Counts TSC ticks against CLOCK_MONOTONIC for about 200 ms.
fn calibrate_tsc_hz() -> Option<f64> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    vftrace_kvm::clock::calibrate_tsc_hz(std::time::Duration::from_millis(200))
}

/// Host TSC -> the output's nanoseconds. With clock pairs the output is on the
/// CLOCK_MONOTONIC scale (so unpatched uftrace traces drop in unchanged); without, it is the
/// TSC divided by its frequency.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HostClock {
    tsc_ref: u64,
    ns_at_ref: f64,
    ns_per_tick: f64,
    /// True when the output scale is CLOCK_MONOTONIC.
    pub monotonic: bool,
}

impl HostClock {
    /// From clock pairs: a least-squares fit if they span 100 ms or more, else the pairs'
    /// mean position with slope 1e9 / `tsc_hz`. Without pairs: TSC / `tsc_hz`.
    pub fn new(syncs: &[ClockSync], tsc_hz: f64, hz_given: bool) -> HostClock {
        let ns_per_tick = 1e9 / tsc_hz;
        match (syncs.first(), fit_syncs(syncs)) {
            (Some(first), Some((a, slope))) if !hz_given => HostClock {
                tsc_ref: first.tsc,
                ns_at_ref: a,
                ns_per_tick: slope,
                monotonic: true,
            },
            (Some(first), _) => {
                // The given frequency fixes the slope; place the line through the pairs' mean.
                let n = syncs.len() as f64;
                let mean_dx = syncs
                    .iter()
                    .map(|s| s.tsc as f64 - first.tsc as f64)
                    .sum::<f64>()
                    / n;
                let mean_y = syncs
                    .iter()
                    .map(|s| s.mono_ns as f64 - first.mono_ns as f64)
                    .sum::<f64>()
                    / n;
                let ns_at_ref = first.mono_ns as f64 + mean_y - mean_dx * ns_per_tick;
                HostClock {
                    tsc_ref: first.tsc,
                    ns_at_ref,
                    ns_per_tick,
                    monotonic: true,
                }
            }
            (None, _) => HostClock {
                tsc_ref: 0,
                ns_at_ref: 0.0,
                ns_per_tick,
                monotonic: false,
            },
        }
    }

    /// Output nanoseconds of host TSC `tsc` (0 if it falls before the scale's origin).
    pub fn tsc_to_ns(&self, tsc: u64) -> u64 {
        let dx = tsc as i128 - self.tsc_ref as i128;
        let ns = self.ns_at_ref + dx as f64 * self.ns_per_tick;
        ns.round().max(0.0) as u64
    }

    /// Host TSC at CLOCK_MONOTONIC (output) nanoseconds `ns`.
    pub fn ns_to_tsc(&self, ns: u64) -> u64 {
        let dx = (ns as f64 - self.ns_at_ref) / self.ns_per_tick;
        (self.tsc_ref as f64 + dx).round().max(0.0) as u64
    }

    /// Nanoseconds per host TSC tick.
    pub fn ns_per_tick(&self) -> f64 {
        self.ns_per_tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_log_lines() {
        let log = "[    0.000059] tsc: Detected 2596.098 MHz processor\n[    0.000000] other\n";
        assert_eq!(parse_kernel_log_tsc_hz(log).unwrap().0, 2596.098e6);
        assert_eq!(
            parse_kernel_log_tsc_hz("[0.0] tsc: Detected lots of MHz\n"),
            None
        );
        let log = "[    0.000000] tsc: Detected 2596.130 MHz\n[    1.1] tsc: Refined TSC clocksource calibration: 2596.103 MHz\n";
        let (hz, line) = parse_kernel_log_tsc_hz(log).unwrap();
        assert_eq!(hz, 2596.103e6);
        assert!(line.contains("Refined"));
        let (hz, _) = parse_kernel_log_tsc_hz("[0.0] tsc: Detected 2596.130 MHz\n").unwrap();
        assert_eq!(hz, 2596.13e6);
    }

    #[test]
    fn detection_order() {
        let syncs = [
            ClockSync {
                tsc: 1_000,
                mono_ns: 10_000,
            },
            ClockSync {
                tsc: 2_000_001_000,
                mono_ns: 1_000_010_000,
            },
        ];
        let hints = TscHzHints {
            syncs: &syncs,
            guest_clock: Some(3e9),
            ..Default::default()
        };
        assert_eq!(detect_tsc_hz(&hints), Some((2e9, TscHzSource::ClockPairs)));
        let hints = TscHzHints {
            capture: Some(2.5e9),
            ..hints
        };
        assert_eq!(detect_tsc_hz(&hints), Some((2.5e9, TscHzSource::Capture)));
        let hints = TscHzHints {
            given: Some(1.5e9),
            ..hints
        };
        assert_eq!(detect_tsc_hz(&hints), Some((1.5e9, TscHzSource::Given)));
        let hints = TscHzHints {
            guest_clock: Some(3e9),
            ..Default::default()
        };
        assert_eq!(detect_tsc_hz(&hints), Some((3e9, TscHzSource::GuestClock)));
        assert_eq!(detect_tsc_hz(&TscHzHints::default()), None);
    }

    #[test]
    fn host_clock_from_pairs_is_monotonic_scale() {
        // 2.5 GHz, mono = 5 s at tsc 1e12.
        let pair = |tsc: u64| ClockSync {
            tsc,
            mono_ns: 5_000_000_000 + ((tsc - 1_000_000_000_000) as f64 / 2.5) as u64,
        };
        let syncs = [
            pair(1_000_000_000_000),
            pair(1_000_500_000_000),
            pair(1_002_500_000_000),
        ];
        let c = HostClock::new(&syncs, 2.5e9, false);
        assert!(c.monotonic);
        assert_eq!(c.tsc_to_ns(1_000_000_000_000), 5_000_000_000);
        assert_eq!(c.tsc_to_ns(1_002_500_000_000 + 2_500), 6_000_001_000);
        assert_eq!(c.ns_to_tsc(6_000_001_000), 1_002_500_002_500);
        // Without pairs: TSC / hz.
        let c = HostClock::new(&[], 2.5e9, false);
        assert!(!c.monotonic);
        assert_eq!(c.tsc_to_ns(5_000_000_000), 2_000_000_000);
    }

    #[test]
    fn given_frequency_keeps_its_slope_through_close_pairs() {
        let syncs = [ClockSync {
            tsc: 10_000,
            mono_ns: 777,
        }];
        let c = HostClock::new(&syncs, 1e9, true);
        assert_eq!(c.tsc_to_ns(10_000), 777);
        assert_eq!(c.tsc_to_ns(11_000), 1_777);
    }
}
