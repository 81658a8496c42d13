//! Damaged traces give an error naming the file and the offset or line, from every view, and
//! nothing panics.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use vftrace_report::flame::fold_trace;
use vftrace_report::info::write_info;
use vftrace_report::replay::{replay, ReplayOptions};
use vftrace_report::stats::collect;

/// A copy of the recorded trace in a fresh directory.
fn copy_of_recording(name: &str) -> PathBuf {
    let src = &traces()[2].dir;
    let dst = scratch(name);
    fs::create_dir_all(&dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

/// The errors of every view of `dir`.
fn errors(dir: &Path) -> Vec<String> {
    let mut sink = Vec::new();
    vec![
        collect(dir, None, &mut |_, _| {}).map(|_| ()),
        replay(dir, &ReplayOptions::default(), &mut sink).map(|_| ()),
        write_info(dir, &mut sink, &mut |_, _| {}),
        fold_trace(dir, None, &mut |_, _| {}).map(|_| ()),
    ]
    .into_iter()
    .map(|r| r.expect_err("a damaged trace must be refused").to_string())
    .collect()
}

fn first_dat(dir: &Path) -> PathBuf {
    let tid = tids(dir)[0];
    dir.join(format!("{tid}.dat"))
}

#[test]
fn truncated_data_names_file_and_offset() {
    if !judges() {
        return;
    }
    let dir = copy_of_recording("report-bad-truncated");
    let dat = first_dat(&dir);
    let len = fs::metadata(&dat).unwrap().len();
    let mut bytes = fs::read(&dat).unwrap();
    bytes.extend_from_slice(&[1, 2, 3]);
    fs::write(&dat, bytes).unwrap();
    for err in errors(&dir) {
        assert!(
            err.starts_with(&format!(
                "{}: offset {len}: truncated record",
                dat.display()
            )),
            "{err}"
        );
    }
}

#[test]
fn garbage_records_name_file_and_offset() {
    if !judges() {
        return;
    }
    let dir = copy_of_recording("report-bad-garbage");
    let dat = first_dat(&dir);
    let mut bytes = fs::read(&dat).unwrap();
    bytes[32..48].copy_from_slice(b"garbage garbage!");
    fs::write(&dat, bytes).unwrap();
    for err in errors(&dir) {
        assert!(
            err.starts_with(&format!("{}: offset 32: bad record magic", dat.display())),
            "{err}"
        );
    }
}

#[test]
fn broken_metadata_names_the_file() {
    if !judges() {
        return;
    }
    let dir = copy_of_recording("report-bad-info");
    fs::write(dir.join("info"), b"Ftrace!\0 but then nothing sensible").unwrap();
    for err in errors(&dir) {
        assert!(
            err.starts_with(&format!("{}", dir.join("info").display())),
            "{err}"
        );
    }
    let dir = copy_of_recording("report-bad-task");
    fs::write(dir.join("task.txt"), b"TASK timestamp=x tid=1 pid=1\n").unwrap();
    for err in errors(&dir) {
        assert!(
            err.starts_with(&format!("{}:1: ", dir.join("task.txt").display())),
            "{err}"
        );
    }
    let missing = scratch("report-bad-missing");
    for err in errors(&missing) {
        assert!(err.contains("is this a uftrace trace directory?"), "{err}");
    }
}
