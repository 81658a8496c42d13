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
    assert!(coloured.contains("\x1b[32mms\x1b[0m"), "sleep_10ms takes ms");

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
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
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
        assert!(!out.status.success(), "vftrace {cmd} accepted a truncated file");
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
