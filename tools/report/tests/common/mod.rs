//! What the report tests share: the traces uftrace judges (the Rust and C examples traced by
//! vftrace, a C program recorded by `uftrace record`) and our views as text.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use vftrace_report::replay::{replay, ReplayOptions};
use vftrace_report::report::{parse_fields, parse_sort_keys, write_report, AvgMode, ReportOptions};
use vftrace_report::stats::{collect, TraceStats};
pub use vftrace_testsupport::{require, run, scratch, uftrace};

/// A trace directory and what made it.
pub struct Trace {
    pub name: &'static str,
    pub dir: PathBuf,
}

/// True when uftrace and gcc are there (else the test is skipped, or fails in CI).
pub fn judges() -> bool {
    require("uftrace", "uftrace 0.13 is the judge of every view")
        && require("gcc", "builds the C example and the recorded C program")
}

/// `tests/data/work.c` built with `gcc -pg` and recorded by `uftrace record` into `dir`.
/// Scheduling events are left out: they come from perf data files, which vftrace does not read.
pub fn record_work(dir: &Path) {
    let exe = scratch("report-work-exe");
    std::fs::create_dir_all(&exe).unwrap();
    let bin = exe.join("work");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/work.c");
    vftrace_testsupport::gcc(&source, &bin, &["-O0", "-pg", "-pthread"]);
    vftrace_testsupport::uftrace_record(&bin, dir, &["--no-sched"]);
}

/// The three traces of the tests, made once per test binary.
pub fn traces() -> &'static [Trace] {
    static TRACES: OnceLock<Vec<Trace>> = OnceLock::new();
    TRACES.get_or_init(|| {
        let rust = scratch("report-rust-demo");
        run(
            Command::new(vftrace_testsupport::instrumented_rust_example())
                .args(["demo", "-o"])
                .arg(&rust),
        );
        let c = scratch("report-c-demo");
        run(Command::new(vftrace_testsupport::c_example())
            .arg("demo")
            .arg(&c));
        let recorded = scratch("report-uftrace-record");
        record_work(&recorded);
        vec![
            Trace {
                name: "rust example (vftrace)",
                dir: rust,
            },
            Trace {
                name: "C example (vftrace)",
                dir: c,
            },
            Trace {
                name: "C program (uftrace record)",
                dir: recorded,
            },
        ]
    })
}

pub fn stats(dir: &Path) -> TraceStats {
    collect(dir, None, &mut |_, _| {}).unwrap()
}

/// `vftrace report` with uftrace-style options: (sort keys, fields, average mode).
pub fn our_report(dir: &Path, sort: Option<&str>, fields: Option<&str>, avg: AvgMode) -> String {
    let opts = ReportOptions {
        fields: parse_fields(fields, avg).unwrap(),
        sort: parse_sort_keys(sort, avg).unwrap(),
        color: false,
    };
    let mut out = Vec::new();
    write_report(&mut out, &stats(dir), &opts).unwrap();
    String::from_utf8(out).unwrap()
}

pub fn our_replay(dir: &Path, opts: &ReplayOptions) -> String {
    let mut out = Vec::new();
    replay(dir, opts, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// Asserts two texts are equal, showing the first differing line.
pub fn assert_same(what: &str, ours: &str, theirs: &str) {
    if ours == theirs {
        return;
    }
    let (a, b): (Vec<&str>, Vec<&str>) = (ours.lines().collect(), theirs.lines().collect());
    let i = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    panic!(
        "{what}: vftrace and uftrace differ at line {} (vftrace {} lines, uftrace {}):\n  vftrace: {:?}\n  uftrace: {:?}\n--- vftrace\n{ours}\n--- uftrace\n{theirs}",
        i + 1,
        a.len(),
        b.len(),
        a.get(i),
        b.get(i)
    );
}

/// Removes SGR colour sequences.
pub fn strip_colour(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("\x1b[") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 2..];
        let end = tail.find('m').map_or(tail.len(), |e| e + 1);
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The tids of a trace in the order `info` lists them.
pub fn tids(dir: &Path) -> Vec<u32> {
    vftrace_format::dir::TraceDir::open(dir).unwrap().tids()
}
