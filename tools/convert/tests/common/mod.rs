//! Shared by the integration tests: real tools (gcc, uftrace, node + Perfetto's traceconv),
//! recordings made on the spot, and a strict reader of Chrome JSON slices.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use vftrace_testsupport::missing;

pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Compiles `tests/data/<name>.c` with `gcc -pg` and records it with `uftrace record` in a
/// fresh temporary directory. `None` (after [`missing`]) if gcc or uftrace are not installed.
pub fn record_c_program(name: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    for tool in ["gcc", "uftrace"] {
        if !have(tool) {
            missing(tool, "apt-get install gcc uftrace");
            return None;
        }
    }
    let work = tempfile::tempdir().unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("{name}.c"));
    let exe = work.path().join(name);
    vftrace_testsupport::gcc(&source, &exe, &["-O0", "-pg", "-pthread"]);
    let data = work.path().join("uftrace.data");
    vftrace_testsupport::uftrace_record(&exe, &data, &[]);
    Some((work, data))
}

/// Runs a command, panicking with its output if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    String::from_utf8(vftrace_testsupport::run(cmd).stdout).unwrap()
}

/// One completed function call.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub name: String,
    /// Nesting level on its thread, 0 at the root.
    pub depth: usize,
    pub begin_ns: f64,
    pub duration_ns: f64,
}

/// Parses Chrome trace JSON strictly (serde_json) and returns the calls of each tid in the
/// order they end (deeper first among equal ends), plus the instant events. Slices may be "B"/"E"
/// pairs or "X" events (written when they end) or both; checks that B/E balance on every
/// (pid, tid) track, that slices nest, and that ends and instants go forward in time.
pub fn chrome_calls(json: &[u8]) -> (BTreeMap<u64, Vec<Call>>, Vec<serde_json::Value>) {
    let doc: serde_json::Value = serde_json::from_slice(json).expect("output is not valid JSON");
    let events = doc["traceEvents"].as_array().expect("no traceEvents array");
    let mut open: BTreeMap<(u64, u64), Vec<(String, f64)>> = BTreeMap::new();
    let mut last_ts: BTreeMap<(u64, u64), f64> = BTreeMap::new();
    // (name, begin ns, end ns) of each track.
    type Slices = Vec<(String, f64, f64)>;
    let mut slices: BTreeMap<(u64, u64), Slices> = BTreeMap::new();
    let mut instants = Vec::new();
    // Microseconds with three decimals: back to integer nanoseconds.
    let ns = |v: &serde_json::Value| (v.as_f64().unwrap() * 1000.0).round();
    for e in events {
        let track = (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
        let phase = e["ph"].as_str().unwrap();
        if phase == "M" {
            continue;
        }
        let ts = ns(&e["ts"]);
        let stack = open.entry(track).or_default();
        // A "B" may be written late (for a slice that began with its parent); everything else
        // is written at its time.
        let time = match phase {
            "B" => None,
            "X" => Some(ts + ns(&e["dur"])),
            _ => Some(ts),
        };
        if let Some(time) = time {
            let last = last_ts.entry(track).or_insert(f64::MIN);
            assert!(
                time >= *last,
                "time goes backwards on track {track:?} at {e}"
            );
            *last = time;
        }
        let name = || e["name"].as_str().unwrap().to_string();
        match phase {
            "B" => stack.push((name(), ts)),
            "E" => {
                let (name, begin) = stack
                    .pop()
                    .unwrap_or_else(|| panic!("E without B on {track:?}: {e}"));
                slices.entry(track).or_default().push((name, begin, ts));
            }
            "X" => {
                let dur = ns(&e["dur"]);
                assert!(dur >= 0.0, "negative duration: {e}");
                slices
                    .entry(track)
                    .or_default()
                    .push((name(), ts, ts + dur));
            }
            "i" => instants.push(e.clone()),
            other => panic!("unexpected phase {other} in {e}"),
        }
    }
    for (track, stack) in &open {
        assert!(
            stack.is_empty(),
            "slices left open on track {track:?}: {stack:?}"
        );
    }
    let mut calls: BTreeMap<u64, Vec<Call>> = BTreeMap::new();
    for (track, mut slices) in slices {
        // Outermost first among equal begins; the sort is stable, so identical slices keep the
        // file's order.
        slices.sort_by(|a, b| a.1.total_cmp(&b.1).then(b.2.total_cmp(&a.2)));
        let mut enclosing: Vec<f64> = Vec::new();
        let mut nested = Vec::new();
        for (name, begin, end) in slices {
            while enclosing
                .last()
                .is_some_and(|&outer_end| outer_end <= begin && outer_end < end)
            {
                enclosing.pop();
            }
            if let Some(&outer_end) = enclosing.last() {
                assert!(
                    end <= outer_end,
                    "{name} [{begin}, {end}] on {track:?} overlaps the end of its parent ({outer_end})"
                );
            }
            nested.push(Call {
                name,
                depth: enclosing.len(),
                begin_ns: begin,
                duration_ns: end - begin,
            });
            enclosing.push(end);
        }
        nested.sort_by(|a, b| {
            (a.begin_ns + a.duration_ns)
                .total_cmp(&(b.begin_ns + b.duration_ns))
                .then(b.depth.cmp(&a.depth))
        });
        calls.entry(track.1).or_default().extend(nested);
    }
    (calls, instants)
}

/// Parses `uftrace replay -f duration,tid` output into the calls of each tid in the order they
/// end. Durations keep the precision replay prints (ns below 1 ms, then µs, ...): the returned
/// tolerance says how much.
pub fn replay_calls(text: &str) -> BTreeMap<u64, Vec<(Call, f64)>> {
    let mut open: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut calls: BTreeMap<u64, Vec<(Call, f64)>> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, func) = line
            .split_once(" | ")
            .unwrap_or_else(|| panic!("unexpected replay line {line:?}"));
        let (duration, tid) = head.split_once('[').unwrap();
        let tid: u64 = tid.trim_end_matches(']').trim().parse().unwrap();
        let duration = duration.trim();
        let (duration_ns, tolerance) = if duration.is_empty() {
            (None, 0.0)
        } else {
            let (value, unit) = duration.split_once(' ').unwrap();
            let scale = match unit {
                "ns" => 1.0,
                "us" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                _ => panic!("unknown unit in {line:?}"),
            };
            // Three decimals are printed: the last digit is worth scale / 1000.
            (
                Some(value.parse::<f64>().unwrap() * scale),
                scale / 1000.0 + 1.0,
            )
        };
        let depth = (func.len() - func.trim_start().len()) / 2;
        let func = func.trim();
        if func.starts_with("/*") {
            continue; // an event (sched-in/out, ...) from perf data, not from the .dat records
        }
        let stack = open.entry(tid).or_default();
        let mut done = |name: String, depth: usize| {
            let call = Call {
                name,
                depth,
                begin_ns: 0.0,
                duration_ns: duration_ns.expect("a completed call without duration"),
            };
            calls.entry(tid).or_default().push((call, tolerance));
        };
        if let Some(name) = func.strip_suffix("();") {
            done(name.to_string(), depth);
        } else if let Some(name) = func.strip_suffix("() {") {
            stack.push(name.to_string());
        } else if let Some(rest) = func.strip_prefix("} /* ") {
            let name = stack.pop().expect("replay closes a call it never opened");
            assert_eq!(rest.trim_end_matches(" */"), name);
            done(name, depth);
        } else {
            panic!("unexpected replay function column {func:?}");
        }
    }
    calls
}
