//! Relating the TSC to CLOCK_MONOTONIC, so that traces carry real nanoseconds on the same
//! scale uftrace uses by default.
use crate::backend::rdtsc;
use std::time::Duration;
use vftrace_format::clock::{ClockMap, ClockSource};

/// A TSC reading and the CLOCK_MONOTONIC time taken at the same moment.
#[derive(Clone, Copy, Debug)]
pub struct ClockPair {
    pub tsc: u64,
    pub mono_ns: u64,
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The tightest of a few (monotonic, tsc, monotonic) brackets: its TSC is paired with the
/// middle of the bracket, so the pairing error is at most half its width (tens of ns).
pub fn sample() -> ClockPair {
    let mut best = (u64::MAX, ClockPair { tsc: 0, mono_ns: 0 });
    for _ in 0..16 {
        let before = monotonic_ns();
        let tsc = rdtsc();
        let after = monotonic_ns();
        let width = after - before;
        if width < best.0 {
            best = (
                width,
                ClockPair {
                    tsc,
                    mono_ns: before + width / 2,
                },
            );
        }
    }
    best.1
}

/// Shortest baseline for measuring the frequency: with ~50 ns of pairing error at each end,
/// 20 ms gives a few ppm.
const MIN_BASELINE: Duration = Duration::from_millis(20);

/// Measures the TSC frequency between `start` and now (waiting out a short run so the
/// baseline is long enough) and returns the TSC-to-ns mapping anchored at `start`.
pub fn clock_map_since(start: ClockPair) -> ClockMap {
    let mut end = sample();
    let elapsed = Duration::from_nanos(end.mono_ns.saturating_sub(start.mono_ns));
    if elapsed < MIN_BASELINE {
        std::thread::sleep(MIN_BASELINE - elapsed);
        end = sample();
    }
    let tsc_hz = (end.tsc - start.tsc) as f64 * 1e9 / (end.mono_ns - start.mono_ns) as f64;
    ClockMap::new(tsc_hz, start.tsc, start.mono_ns, ClockSource::Host)
}
