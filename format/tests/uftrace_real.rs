//! Reads directories recorded by the real uftrace 0.13 and checks that our parsers agree with
//! uftrace's own view of them (call counts per function, info/task round trips).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{require_tool, require_uftrace, uftrace, TempDir};
use vftrace_format::dir::TraceDir;
use vftrace_format::info::{self, Info};
use vftrace_format::maps::{parse_maps, write_maps};
use vftrace_format::record::RecordType;
use vftrace_format::sym::parse_symbols;
use vftrace_format::task::{parse_tasks, write_tasks};

const PROGRAM: &str = r#"
#include <pthread.h>
#include <stdio.h>
int leaf(int x) { return x * 2; }
int mid(int x) { int s = 0; for (int i = 0; i < 3; i++) s += leaf(x + i); return s; }
void *worker(void *arg) { long s = 0; for (int i = 0; i < 5; i++) s += leaf(i); return (void *)s; }
int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    int s = 0;
    for (int i = 0; i < 4; i++) s += mid(i);
    pthread_join(t, NULL);
    printf("%d\n", s);
    return 0;
}
"#;

/// Compiles PROGRAM with -pg and records it with uftrace into `tmp/trace`.
fn record(tmp: &Path) -> std::path::PathBuf {
    let src = tmp.join("prog.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let exe = tmp.join("prog");
    vftrace_testsupport::gcc(&src, &exe, &["-pg", "-O0", "-pthread"]);
    let dir = tmp.join("trace");
    vftrace_testsupport::uftrace_record(&exe, &dir, &[]);
    dir
}

fn judges_present() -> bool {
    require_uftrace() && require_tool("gcc", &["--version"])
}

#[test]
fn call_counts_match_uftrace_report() {
    if !judges_present() {
        return;
    }
    let tmp = TempDir::new("real");
    let dir = record(tmp.path());
    let trace = TraceDir::open(&dir).unwrap();
    assert!(trace.info.has_feature(info::TASK_SESSION));
    assert_eq!(trace.tids().len(), 2, "main thread and worker");
    let sym = trace.symbolizer().unwrap();

    let mut ours: BTreeMap<String, u64> = BTreeMap::new();
    for tid in trace.tids() {
        assert!(trace.task(tid).is_some(), "tid {tid} has a TASK line");
        let mut last = 0;
        for r in trace.records(tid).unwrap() {
            let r = r.unwrap();
            assert!(r.time >= last, "time goes backwards in {tid}.dat");
            last = r.time;
            if r.kind == RecordType::Entry {
                *ours
                    .entry(sym.name_or_hex(r.addr).into_owned())
                    .or_default() += 1;
            }
        }
    }
    let report = uftrace(&dir, &["report", "--no-pager"]);
    let mut theirs: BTreeMap<String, u64> = BTreeMap::new();
    for line in report.lines().skip(2) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // `linux:schedule` rows come from perf-cpuN.dat sched events, not from TID.dat records.
        if cols.len() >= 6 && !cols[5].starts_with("linux:") {
            theirs.insert(cols[5..].join(" "), cols[4].parse().unwrap());
        }
    }
    assert_eq!(theirs.get("leaf"), Some(&17), "{report}");
    assert_eq!(theirs.get("mid"), Some(&4));
    assert_eq!(
        ours, theirs,
        "our symbolized entry counts differ from uftrace report:\n{report}"
    );
}

#[test]
fn metadata_files_round_trip() {
    if !judges_present() {
        return;
    }
    let tmp = TempDir::new("real-rt");
    let dir = record(tmp.path());

    // info: parsing and writing back gives uftrace's bytes exactly.
    let bytes = std::fs::read(dir.join("info")).unwrap();
    let parsed = Info::parse(&bytes, &dir.join("info")).unwrap();
    assert!(parsed.exename.ends_with("/prog"));
    assert_eq!(parsed.tids.len(), 2);
    assert_eq!(parsed.build_id.len(), 40);
    assert_eq!(
        parsed.to_bytes().unwrap(),
        bytes,
        "info does not round-trip byte for byte"
    );

    // task.txt: byte for byte too.
    let bytes = std::fs::read(dir.join("task.txt")).unwrap();
    let tasks = parse_tasks(&bytes, &dir.join("task.txt")).unwrap();
    let mut back = Vec::new();
    write_tasks(&mut back, &tasks).unwrap();
    assert_eq!(
        String::from_utf8(back).unwrap(),
        String::from_utf8(bytes).unwrap()
    );

    // Maps and symbol files parse; maps survive a write/parse cycle.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        let bytes = std::fs::read(&p).unwrap();
        if name.ends_with(".map") {
            let maps = parse_maps(&bytes, &p).unwrap();
            let mut out = Vec::new();
            write_maps(&mut out, &maps).unwrap();
            assert_eq!(parse_maps(&out, &p).unwrap(), maps);
        } else if name.ends_with(".sym") {
            let f = parse_symbols(&bytes, &p).unwrap();
            assert!(f.path_name.is_some(), "{name} has a path header");
        }
    }
}
