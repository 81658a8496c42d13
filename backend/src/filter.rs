//! What to trace: the options users know from uftrace, decided per call in the slow path.
//!
//! - `-D N`: calls deeper than N recorded levels are not traced.
//! - `-t DUR`: calls shorter than DUR are dropped. Their entry is kept back (in the frame) until
//!   the call ends or one of its callees turns out long enough; a parent is never shorter than
//!   its child, so a kept call's ancestors are all kept, with their real entry times.
//! - `-F RE` (trace only these functions and what they call) and `-N RE` (never these and what
//!   they call): the frontend resolves the expressions against the symbol tables into sorted
//!   address ranges; the backend looks up the function of every call in them.
//!
//! With any of them set, every event takes the slow path; without, the fast path never looks
//! here.

pub use vftrace_format::abi::{action, Config, FilterRange};

/// The per-call decisions over the options.
pub(crate) trait ConfigExt {
    fn any(&self) -> bool;
    fn has_only(&self) -> bool;
    fn action_for(&self, addr: u64) -> u32;
}

impl ConfigExt for Config {
    /// Whether any option needs the slow path for every event.
    fn any(&self) -> bool {
        self.max_depth != 0 || self.time_threshold != 0 || self.filter_count != 0
    }

    /// Whether some range says "trace only": then calls outside such ranges are not traced
    /// unless they are called from one.
    fn has_only(&self) -> bool {
        ranges(self).iter().any(|r| r.action == action::ONLY)
    }

    /// The action for the function containing `addr` (0 if none).
    fn action_for(&self, addr: u64) -> u32 {
        let ranges = ranges(self);
        let i = ranges.partition_point(|r| r.start <= addr);
        match i.checked_sub(1).map(|i| ranges[i]) {
            Some(r) if addr < r.end => r.action,
            _ => 0,
        }
    }
}

fn ranges(c: &Config) -> &[FilterRange] {
    if c.filters.is_null() {
        return &[];
    }
    // SAFETY: the frontend's contract: `filter_count` ranges stay valid for the program.
    unsafe { core::slice::from_raw_parts(c.filters, c.filter_count) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_the_containing_range() {
        let table = [
            FilterRange {
                start: 0x100,
                end: 0x180,
                action: action::ONLY,
                _pad: 0,
            },
            FilterRange {
                start: 0x200,
                end: 0x210,
                action: action::NEVER,
                _pad: 0,
            },
        ];
        let c = Config {
            filters: table.as_ptr(),
            filter_count: table.len(),
            ..Config::NONE
        };
        assert_eq!(c.action_for(0xff), 0);
        assert_eq!(c.action_for(0x100), action::ONLY);
        assert_eq!(c.action_for(0x17f), action::ONLY);
        assert_eq!(c.action_for(0x180), 0);
        assert_eq!(c.action_for(0x20f), action::NEVER);
        assert_eq!(c.action_for(0x1000), 0);
        assert!(c.has_only() && c.any());
        assert!(!Config::NONE.any());
    }
}
