//! The C example (gcc -pg, linked with libvftrace.a) traced by vftrace, judged by uftrace 0.13.
use std::path::{Path, PathBuf};
use std::process::Command;
use vftrace_format::dir::TraceDir;
use vftrace_format::record::RecordType;
use vftrace_testsupport::*;

fn traced(name: &str, args: &[&str]) -> Option<PathBuf> {
    if !require("uftrace", "uftrace 0.13 judges every trace directory")
        || !require("gcc", "builds the C example")
    {
        return None;
    }
    let dir = scratch(name);
    run(Command::new(c_example()).args(args).arg(&dir));
    Some(dir)
}

#[test]
fn demo_call_tree_matches_snapshot() {
    let Some(dir) = traced("c-demo", &["demo"]) else {
        return;
    };
    let snapshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/demo.replay");
    assert_snapshot(&snapshot, &replay_by_thread(&dir, &[]));
    uftrace(&dir, &["info"]);
    uftrace(&dir, &["graph"]);
    let chrome = uftrace(&dir, &["dump", "--chrome"]);
    serde_json::from_str::<serde_json::Value>(&chrome).expect("dump --chrome is valid JSON");
}

#[test]
fn report_counts_every_call() {
    let Some(dir) = traced("c-counts", &["demo"]) else {
        return;
    };
    let calls = report_calls(&dir);
    assert_eq!(calls["fib"], 15);
    assert_eq!(calls["less"], 10);
    assert_eq!(calls["worker"], 4);
    assert_eq!(calls["leaf"], 12);
    assert_eq!(calls["sleep_10ms"], 1);
}

#[test]
fn threads_are_complete() {
    let Some(dir) = traced("c-threads", &["threads", "4", "50000"]) else {
        return;
    };
    let trace = TraceDir::open(&dir).unwrap();
    assert_eq!(trace.tids().len(), 5);
    let sym = trace.symbolizer().unwrap();
    let mut leaf_per_thread = Vec::new();
    for tid in trace.tids() {
        let mut leaf = 0;
        let mut depth = 0i64;
        for r in trace.records(tid).unwrap() {
            let r = r.unwrap();
            match r.kind {
                RecordType::Entry => {
                    depth += 1;
                    leaf += u64::from(sym.lookup(r.addr) == Some("leaf"));
                }
                RecordType::Exit => depth -= 1,
                other => panic!("unexpected {other:?}"),
            }
            assert!(depth >= 0);
        }
        if leaf > 0 {
            leaf_per_thread.push(leaf);
        }
    }
    assert_eq!(leaf_per_thread, [50_000; 4]);
}
