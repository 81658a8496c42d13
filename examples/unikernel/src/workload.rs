//! The traced workload: deterministic, so the number of calls of every function is known in
//! closed form (the end-to-end tests check them in uftrace's output).
//!
//! - `fib(n)` is called `2 * F(n + 1) - 1` times.
//! - `merge_sort` on `2^k` elements: `merge_sort` `2^(k+1) - 1` times, `merge` `2^k - 1` times.
//! - `helpers(r)`: `helper_outer` r times, `helper_middle` 2r times, `helper_leaf` 6r times;
//!   it writes a probe every 256 rounds (a port write, not a call).
//! - `spin(r)`: `spin_round` r times, each calling `spin_alpha`, `spin_beta` (which calls
//!   `spin_gamma`) and `spin_delta` once. Unlike the others, every call runs for tens of
//!   microseconds, so that tracing costs nothing noticeable and a sampling profiler's share of
//!   samples per function can be compared with the trace's inclusive times.
//!
//! Every function is `#[inline(never)]` and results pass through `black_box`, so the optimiser
//! keeps the call tree: no tail calls, no recursion turned into loops.

use core::hint::black_box;

/// The workload's sizes, from the kernel command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub fib_n: u32,
    pub sort_log2: u32,
    pub helper_rounds: u32,
    /// Rounds of the long-running `spin` phase (0: none).
    pub spin_rounds: u32,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            fib_n: 22,
            sort_log2: 12,
            helper_rounds: 1000,
            spin_rounds: 0,
        }
    }
}

#[inline(never)]
pub fn fib(n: u32) -> u64 {
    if n < 2 {
        n as u64
    } else {
        black_box(fib(n - 1)) + black_box(fib(n - 2))
    }
}

/// Sorts `data` using `scratch` (same length).
#[inline(never)]
pub fn merge_sort(data: &mut [u32], scratch: &mut [u32]) {
    let len = data.len();
    if len <= 1 {
        return;
    }
    let mid = len / 2;
    {
        let (lo, hi) = data.split_at_mut(mid);
        let (slo, shi) = scratch.split_at_mut(mid);
        merge_sort(lo, slo);
        merge_sort(hi, shi);
    }
    merge(data, mid, scratch);
    black_box(data);
}

#[inline(never)]
fn merge(data: &mut [u32], mid: usize, scratch: &mut [u32]) {
    let (mut i, mut j, mut k) = (0, mid, 0);
    while i < mid && j < data.len() {
        if data[i] <= data[j] {
            scratch[k] = data[i];
            i += 1;
        } else {
            scratch[k] = data[j];
            j += 1;
        }
        k += 1;
    }
    scratch[k..k + mid - i].copy_from_slice(&data[i..mid]);
    k += mid - i;
    let rest = data.len() - j;
    scratch[k..k + rest].copy_from_slice(&data[j..]);
    data.copy_from_slice(&scratch[..data.len()]);
}

/// A deterministic pseudo-random sequence (a 32-bit LCG), so the sort's input is the same on
/// every run.
pub fn fill_pseudo_random(data: &mut [u32]) {
    let mut state: u32 = 0x1234_5678;
    for x in data.iter_mut() {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *x = state >> 8;
    }
}

#[inline(never)]
pub fn helper_leaf(x: u64) -> u64 {
    x.rotate_left(7) ^ 0x9e37_79b9_7f4a_7c15
}

#[inline(never)]
pub fn helper_middle(x: u64) -> u64 {
    let mut acc = x;
    for _ in 0..3 {
        acc = black_box(helper_leaf(acc));
    }
    acc
}

#[inline(never)]
pub fn helper_outer(x: u64) -> u64 {
    black_box(helper_middle(x)) ^ black_box(helper_middle(x + 1))
}

#[inline(never)]
pub fn helpers(rounds: u32) -> u64 {
    let mut acc = 0;
    for i in 0..rounds {
        if i % 256 == 0 {
            // Inlined port write: no call, so the call counts above hold.
            vftrace::probe(crate::markers::probe_ids::HELPERS_ROUND, i);
        }
        acc ^= black_box(helper_outer(i as u64));
    }
    acc
}

/// Iterations of one spin unit: about 25 us of native work.
const SPIN_UNIT: u32 = 25_000;

/// `units` units of arithmetic the optimiser cannot remove. Inlined, so the time counts as the
/// caller's own.
#[inline(always)]
fn burn(mut acc: u64, units: u32) -> u64 {
    for i in 0..units * SPIN_UNIT {
        acc = black_box(acc.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i as u64));
    }
    acc
}

#[inline(never)]
pub fn spin_alpha(x: u64) -> u64 {
    burn(x, 2)
}

#[inline(never)]
pub fn spin_gamma(x: u64) -> u64 {
    burn(x, 3)
}

#[inline(never)]
pub fn spin_beta(x: u64) -> u64 {
    let own = burn(x, 1);
    black_box(spin_gamma(own))
}

#[inline(never)]
pub fn spin_delta(x: u64) -> u64 {
    burn(x, 1)
}

#[inline(never)]
pub fn spin_round(x: u64) -> u64 {
    black_box(spin_alpha(x)) ^ black_box(spin_beta(x)) ^ black_box(spin_delta(x))
}

#[inline(never)]
pub fn spin(rounds: u32) -> u64 {
    let mut acc = 0;
    for i in 0..rounds {
        acc ^= black_box(spin_round(i as u64));
    }
    acc
}
