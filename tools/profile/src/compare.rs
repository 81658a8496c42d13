//! Sampling and tracing checking each other: a function's inclusive time as a share of a root
//! function's, from a trace directory (entry/exit records), to set beside the share of samples
//! whose stack holds it ([`crate::aggregate::inclusive_share`]).
use std::collections::HashMap;
use std::path::Path;

use vftrace_format::dir::TraceDir;
use vftrace_format::error::FormatError;
use vftrace_format::record::{Record, RecordType};

/// Inclusive nanoseconds per function name over all threads of the trace at `dir`. A recursive
/// function counts its outermost calls only, as a sample counts it once per stack.
pub fn trace_inclusive_ns(dir: &Path) -> Result<HashMap<String, u64>, FormatError> {
    let trace = TraceDir::open(dir)?;
    let symbolizer = trace.symbolizer()?;
    let mut totals: HashMap<String, u64> = HashMap::new();
    for tid in trace.tids() {
        let mut reader = trace.records(tid)?;
        // (function address, entry time), outermost first; index = depth.
        let mut stack: Vec<(u64, u64)> = Vec::new();
        let mut batch: Vec<Record> = Vec::new();
        loop {
            batch.clear();
            if reader.read_batch(&mut batch)? == 0 {
                break;
            }
            for r in &batch {
                let depth = r.depth as usize;
                match r.kind {
                    RecordType::Entry => {
                        stack.truncate(depth);
                        stack.push((r.addr, r.time));
                    }
                    RecordType::Exit => {
                        if let Some(&(addr, entered)) = stack.get(depth) {
                            let outermost = !stack[..depth].iter().any(|(a, _)| *a == addr);
                            if addr == r.addr && outermost {
                                let name = symbolizer.name_or_hex(addr).into_owned();
                                *totals.entry(name).or_default() += r.time.saturating_sub(entered);
                            }
                        }
                        stack.truncate(depth);
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(totals)
}

/// `function`'s inclusive time over `within`'s, from [`trace_inclusive_ns`]'s totals.
pub fn trace_share(totals: &HashMap<String, u64>, function: &str, within: &str) -> Option<f64> {
    let root = *totals.get(within)?;
    (root > 0).then(|| totals.get(function).copied().unwrap_or(0) as f64 / root as f64)
}
