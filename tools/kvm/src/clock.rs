//! The host TSC, CLOCK_MONOTONIC, and pairs of the two.

use crate::ClockSync;

/// The host's time stamp counter (`rdtsc`), the same value the `x86-tsc` trace clock records.
#[cfg(target_arch = "x86_64")]
pub fn tsc_now() -> u64 {
    // SAFETY: rdtsc has no memory effects and is available on every x86_64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Without a TSC there is nothing to pair; fall back to the monotonic clock so callers still
/// get a rising counter.
#[cfg(not(target_arch = "x86_64"))]
pub fn tsc_now() -> u64 {
    monotonic_ns()
}

/// CLOCK_MONOTONIC in nanoseconds, the clock uftrace uses by default.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) cannot fail on Linux");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A clock pair and how uncertain it is: the TSC ticks between the two rdtsc reads that
/// bracket the clock_gettime call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeasuredSync {
    pub sync: ClockSync,
    pub width_ticks: u64,
}

/// Takes `samples` bracketed readings and keeps the tightest one (the one least disturbed by
/// interrupts or preemption), with its TSC at the middle of the bracket.
pub fn measure_sync(samples: usize) -> MeasuredSync {
    let mut best: Option<MeasuredSync> = None;
    for _ in 0..samples.max(1) {
        let before = tsc_now();
        let mono_ns = monotonic_ns();
        let after = tsc_now();
        let width_ticks = after.wrapping_sub(before);
        if best.is_none_or(|b| width_ticks < b.width_ticks) {
            best = Some(MeasuredSync {
                sync: ClockSync {
                    tsc: before + width_ticks / 2,
                    mono_ns,
                },
                width_ticks,
            });
        }
    }
    best.expect("at least one sample is taken")
}

/// Shortest span between two pairs from which a frequency is trusted: with pairs good to
/// about 50 ns, 100 ms gives better than 1 ppm.
pub const MIN_CALIBRATION_NS: u64 = 100_000_000;

/// TSC ticks per second between two clock pairs, or None when they are too close together
/// (less than [`MIN_CALIBRATION_NS`]) or out of order.
pub fn tsc_hz_between(first: ClockSync, last: ClockSync) -> Option<f64> {
    let ns = last.mono_ns.checked_sub(first.mono_ns)?;
    let ticks = last.tsc.checked_sub(first.tsc)?;
    if ns < MIN_CALIBRATION_NS || ticks == 0 {
        return None;
    }
    Some(ticks as f64 * 1e9 / ns as f64)
}

/// Counts TSC ticks against CLOCK_MONOTONIC for `span` (at least [`MIN_CALIBRATION_NS`]),
/// for when no recording supplies clock pairs.
pub fn calibrate_tsc_hz(span: std::time::Duration) -> Option<f64> {
    let first = measure_sync(64).sync;
    std::thread::sleep(span.max(std::time::Duration::from_nanos(MIN_CALIBRATION_NS)));
    let last = measure_sync(64).sync;
    tsc_hz_between(first, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequency_from_pairs_is_plausible() {
        let first = measure_sync(32).sync;
        std::thread::sleep(std::time::Duration::from_millis(110));
        let last = measure_sync(32).sync;
        let hz = tsc_hz_between(first, last).expect("110 ms apart");
        // Any x86_64 TSC of the last 20 years runs between 500 MHz and 10 GHz.
        assert!((5e8..1e10).contains(&hz), "{hz}");
        assert!(tsc_hz_between(last, first).is_none());
        assert!(tsc_hz_between(first, first).is_none());
    }
}
