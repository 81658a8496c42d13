//! `vftrace report`, `replay`, `info` and `flame` as a user runs them: uftrace's output on a
//! trace of the Rust example, colour only when asked (or on a terminal), clear errors and a
//! non-zero exit on damaged data, never an output over an input.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vftrace_testsupport::*;

fn vftrace(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vftrace"))
        .args(args)
        .arg(dir)
        .output()
        .unwrap()
}

fn traced(name: &str) -> Option<PathBuf> {
    if !require("uftrace", "uftrace 0.13 judges the views") {
        return None;
    }
    let dir = scratch(name);
    run(Command::new(instrumented_rust_example())
        .args(["demo", "-o"])
        .arg(&dir));
    Some(dir)
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "vftrace failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn views_print_what_uftrace_prints() {
    let Some(dir) = traced("cli-views") else {
        return;
    };
    for (ours, theirs) in [
        (vec!["report"], vec!["report"]),
        (vec!["report", "--threads"], vec!["report", "--task"]),
        (vec!["replay", "-D", "3"], vec!["replay", "-D", "3"]),
    ] {
        let text = stdout_of(&vftrace(&ours, &dir));
        assert_eq!(text, uftrace(&dir, &theirs), "vftrace {ours:?}");
        assert!(!text.contains('\x1b'), "colour on a pipe");
    }
    let coloured = stdout_of(&vftrace(&["replay", "--color", "always"], &dir));
    assert!(coloured.contains("\x1b[90m /* vftrace_example_rust::demo */\x1b[0m"));
    assert!(
        coloured.contains("\x1b[32mms\x1b[0m"),
        "sleep_10ms takes ms"
    );

    let info = stdout_of(&vftrace(&["info"], &dir));
    let theirs = uftrace(&dir, &["info"]);
    assert!(
        info.starts_with(theirs.trim_end()),
        "vftrace info must begin with uftrace's sections:\n{info}\n--- uftrace\n{theirs}"
    );
    assert!(info.contains("# records             : "), "{info}");

    let svg = dir.with_extension("svg");
    let _ = std::fs::remove_file(&svg);
    let out = Command::new(env!("CARGO_BIN_EXE_vftrace"))
        .arg("flame")
        .arg(&dir)
        .arg("-o")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<?xml") && text.trim_end().ends_with("</svg>"));
    assert!(text.contains("vftrace_example_rust::sleep_10ms"));
}

#[test]
fn damaged_data_is_an_error_naming_file_and_offset() {
    let Some(dir) = traced("cli-views-damaged") else {
        return;
    };
    let tid = &tids(&dir)[0];
    let dat = dir.join(format!("{tid}.dat"));
    let mut bytes = std::fs::read(&dat).unwrap();
    bytes.truncate(bytes.len() - 5);
    std::fs::write(&dat, &bytes).unwrap();
    let at = bytes.len() / 16 * 16;
    for cmd in ["report", "replay", "info", "flame"] {
        let out = vftrace(&[cmd], &dir);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "vftrace {cmd} accepted a truncated file"
        );
        assert!(
            err.contains(&format!("{}: offset {at}: truncated record", dat.display())),
            "vftrace {cmd}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn flame_never_writes_over_its_input() {
    let Some(dir) = traced("cli-views-overwrite") else {
        return;
    };
    let info = std::fs::read(dir.join("info")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vftrace"))
        .arg("flame")
        .arg(&dir)
        .arg("-o")
        .arg(dir.join("info"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("would overwrite the input"));
    assert_eq!(std::fs::read(dir.join("info")).unwrap(), info);
}

/// Peak RSS in KiB of `vftrace ARGS DIR` (stdout discarded), measured by GNU time.
fn peak_rss_kb(args: &[&str], dir: &Path) -> u64 {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(env!("CARGO_BIN_EXE_vftrace"))
        .args(args)
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "vftrace {args:?}: {err}");
    err.lines().last().unwrap().trim().parse().unwrap()
}

#[test]
fn views_stream_in_bounded_memory() {
    use vftrace_format::dir::TraceDirWriter;
    use vftrace_format::info::Info;
    use vftrace_format::maps::MapEntry;
    use vftrace_format::record::{Record, RecordType};
    if !require(
        "/usr/bin/time",
        "GNU time measures peak memory (Debian package time)",
    ) {
        return;
    }
    // 3M records (48 MB of .dat; 72 MB as a Vec of decoded records): calls two deep.
    let dir = scratch("cli-views-memory");
    let mut w = TraceDirWriter::create(&dir).unwrap();
    let calls = 750_000u64;
    let mut t = 1_000u64;
    let mut batch = Vec::with_capacity(4096);
    for i in 0..calls {
        for (kind, depth, addr) in [
            (RecordType::Entry, 0, 0x1000),
            (RecordType::Entry, 1, 0x2000 + (i % 64) * 16),
            (RecordType::Exit, 1, 0x2000 + (i % 64) * 16),
            (RecordType::Exit, 0, 0x1000),
        ] {
            t += 10;
            batch.push(Record::new(t, kind, depth, addr));
        }
        if batch.len() >= 4096 {
            w.write_records(7, batch.drain(..)).unwrap();
        }
    }
    w.write_records(7, batch.drain(..)).unwrap();
    let maps = [MapEntry::stack(0x7ffd_0000_0000, 0x7ffd_0002_1000)];
    w.finish_process(Info::new("/bin/synthetic", "synthetic"), 7, &maps)
        .unwrap();
    for args in [
        &["report"][..],
        &["replay"],
        &["replay", "-t", "15ns"],
        &["info"],
        &["flame", "--folded"],
    ] {
        let kb = peak_rss_kb(args, &dir);
        assert!(
            kb < 32 << 10,
            "vftrace {args:?} peaked at {kb} KiB on 48 MB of records: it must stream"
        );
    }
}
