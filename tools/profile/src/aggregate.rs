//! What the samples add up to: counts per folded stack (for the folded file and the flame
//! graph), per (vCPU, CR3, CPL) (the vmregs view), per reason a walk was cut, and the pause
//! each stop cost the guest.
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::unwind::Cut;

/// A (vCPU, CR3, CPL) group of samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    pub vcpu: u32,
    pub cr3: Option<u64>,
    pub cpl: Option<u8>,
}

#[derive(Clone, Debug, Default)]
pub struct Group {
    pub samples: u64,
    /// Samples per leaf function, for the group's most frequent one.
    pub leaves: HashMap<String, u64>,
}

impl Group {
    pub fn top_leaf(&self) -> Option<(&str, u64)> {
        self.leaves
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(n, c)| (n.as_str(), *c))
    }
}

/// The whole profile so far.
#[derive(Clone, Debug, Default)]
pub struct Aggregate {
    /// Folded stack (outermost first, `;`-separated) -> samples.
    pub stacks: HashMap<String, u64>,
    pub groups: BTreeMap<GroupKey, Group>,
    /// vCPU samples whose walk reached the bottom of the stack.
    pub complete: u64,
    pub cuts: BTreeMap<Cut, u64>,
    /// Return slots holding vftrace's trampoline that the shadow stack did not explain.
    pub unresolved_trampolines: u64,
    /// vCPU stops whose registers could not be read (not in the stacks).
    pub without_registers: u64,
    /// Times the VM was stopped.
    pub stops: u64,
    /// Pause of each stop, ns (saturated at u32::MAX, 4.3 s).
    pub pauses_ns: Vec<u32>,
    /// Of each pause, the time spent walking the stacks.
    pub walks_ns: Vec<u32>,
}

impl Aggregate {
    /// vCPU samples in the stacks.
    pub fn samples(&self) -> u64 {
        self.complete + self.cuts.values().sum::<u64>()
    }

    pub fn add_stop(&mut self, pause: Duration, walking: Duration) {
        let ns = |d: Duration| u32::try_from(d.as_nanos()).unwrap_or(u32::MAX);
        self.stops += 1;
        self.pauses_ns.push(ns(pause));
        self.walks_ns.push(ns(walking));
    }

    /// Adds one vCPU's sample: its frames' names, outermost first.
    pub fn add(
        &mut self,
        key: GroupKey,
        folded: String,
        leaf: &str,
        cut: Option<Cut>,
        unresolved: u32,
    ) {
        *self.stacks.entry(folded).or_default() += 1;
        let group = self.groups.entry(key).or_default();
        group.samples += 1;
        match group.leaves.get_mut(leaf) {
            Some(n) => *n += 1,
            None => {
                group.leaves.insert(leaf.to_string(), 1);
            }
        }
        match cut {
            None => self.complete += 1,
            Some(c) => *self.cuts.entry(c).or_default() += 1,
        }
        self.unresolved_trampolines += u64::from(unresolved);
    }
}

/// min / median / max of the pauses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PauseStats {
    pub min: Duration,
    pub median: Duration,
    pub max: Duration,
}

impl PauseStats {
    pub fn of(pauses_ns: &[u32]) -> Option<PauseStats> {
        if pauses_ns.is_empty() {
            return None;
        }
        let mut sorted = pauses_ns.to_vec();
        sorted.sort_unstable();
        let ns = |v: u32| Duration::from_nanos(u64::from(v));
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            ns(sorted[mid])
        } else {
            (ns(sorted[mid - 1]) + ns(sorted[mid])) / 2
        };
        Some(PauseStats {
            min: ns(sorted[0]),
            median,
            max: ns(sorted[sorted.len() - 1]),
        })
    }
}

impl std::fmt::Display for PauseStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "min {:.3} ms, median {:.3} ms, max {:.3} ms",
            ms(self.min),
            ms(self.median),
            ms(self.max)
        )
    }
}

/// The folded file's text: one `stack count` line per stack, sorted (flamegraph.pl and
/// inferno read it).
pub fn folded_lines(stacks: &HashMap<String, u64>) -> Vec<String> {
    let mut lines: Vec<String> = stacks.iter().map(|(s, n)| format!("{s} {n}")).collect();
    lines.sort_unstable();
    lines
}

/// Samples whose stack contains `function`, over samples whose stack contains `within`
/// (the inclusive share of `function` in `within`), from the folded stacks.
pub fn inclusive_share(stacks: &HashMap<String, u64>, function: &str, within: &str) -> Option<f64> {
    let mut inside = 0u64;
    let mut with = 0u64;
    for (stack, n) in stacks {
        let mut frames = stack.split(';');
        if frames.clone().any(|f| f == within) {
            inside += n;
            if frames.any(|f| f == function) {
                with += n;
            }
        }
    }
    (inside > 0).then(|| with as f64 / inside as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_stats_and_shares() {
        let s = PauseStats::of(&[300, 100, 200, 400]).unwrap();
        assert_eq!(
            (s.min.as_nanos(), s.median.as_nanos(), s.max.as_nanos()),
            (100, 250, 400)
        );
        assert!(PauseStats::of(&[]).is_none());
        let mut a = Aggregate::default();
        let key = GroupKey {
            vcpu: 0,
            cr3: Some(0x1000),
            cpl: Some(3),
        };
        a.add(key, "main;run;alpha".into(), "alpha", None, 0);
        a.add(key, "main;run;beta;gamma".into(), "gamma", None, 0);
        a.add(
            key,
            "main;run;beta".into(),
            "beta",
            Some(Cut::NotIncreasing),
            1,
        );
        a.add(key, "main;other".into(), "other", None, 0);
        assert_eq!(a.samples(), 4);
        assert_eq!(a.unresolved_trampolines, 1);
        assert_eq!(inclusive_share(&a.stacks, "beta", "run"), Some(2.0 / 3.0));
        assert_eq!(inclusive_share(&a.stacks, "beta", "nowhere"), None);
        assert_eq!(a.groups[&key].top_leaf(), Some(("alpha", 1)));
        assert_eq!(folded_lines(&a.stacks)[0], "main;other 1");
    }
}
