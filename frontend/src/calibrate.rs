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

#[cfg(not(target_os = "hermit"))]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A Hermit guest has no CLOCK_MONOTONIC shared with the host; its own monotonic clock (the
/// kernel's, derived from the TSC) serves to measure the TSC frequency.
#[cfg(target_os = "hermit")]
pub fn monotonic_ns() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Where trace time 0 is and what the TSC is: the host's, with times on its CLOCK_MONOTONIC.
#[cfg(not(target_os = "hermit"))]
fn time_origin(start: ClockPair) -> (u64, ClockSource) {
    (start.mono_ns, ClockSource::Host)
}

/// A guest's TSC (merging with host events needs to know that); as for every guest trace,
/// 0 ns is the first TSC sample (`vftrace_format::clock`).
#[cfg(target_os = "hermit")]
fn time_origin(_start: ClockPair) -> (u64, ClockSource) {
    (0, ClockSource::Guest)
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
    let (ns_base, source) = time_origin(start);
    ClockMap::new(tsc_hz, start.tsc, ns_base, source)
}
