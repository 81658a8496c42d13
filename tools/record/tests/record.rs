//! `vftrace record` on unmodified programs, judged by uftrace 0.13: the options (ring, -F, -N,
//! -D, -t, --disable with a signal), how a program ended, a program that links vftrace itself,
//! a long run with bounded memory, and bad input. (Every control-flow case, fork, exec and
//! dlopen run under the recorder in the corpus, corpus/.)
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use vftrace_testsupport::{gcc, report_calls, require, scratch, uftrace, vftrace_cli};

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#define TRACED __attribute__((noinline))
/* Results go here, so that gcc does not drop calls of functions it finds pure. */
volatile long sink;
TRACED long leaf(long x) { return x * 3 + 1; }
TRACED long middle(long x) { return leaf(x) + leaf(x + 1); }
TRACED long outer(long n) { long s = 0; for (long i = 0; i < n; i++) s += middle(i); return s; }
TRACED long hidden(long x) { return leaf(x); }
TRACED void slow(void) { usleep(20000); }
TRACED void spin(long n) { for (long i = 0; i < n; i++) sink += leaf(i); }
TRACED void wait_for(const char *path) { while (access(path, F_OK) != 0) usleep(1000); }
TRACED void touch(const char *path) { FILE *f = fopen(path, "w"); if (f) fclose(f); }
int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "plain";
    if (!strcmp(what, "plain")) { printf("%ld %ld\n", outer(10), hidden(5)); slow(); return 3; }
    if (!strcmp(what, "spin")) { spin(atol(argv[2])); puts("spun"); return 0; }
    if (!strcmp(what, "phases")) {
        for (int i = 0; i < 100; i++) sink += hidden(i);
        touch(argv[2]);
        wait_for(argv[3]);
        for (int i = 0; i < 100; i++) sink += leaf(i);
        puts("phases done");
        return 0;
    }
    if (!strcmp(what, "forever")) { touch(argv[2]); for (;;) sink += outer(100); }
    return 2;
}
"#;

/// The test program, built once: `gcc -pg`, nothing of vftrace linked.
fn program() -> Option<&'static Path> {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if !require("gcc", "the recorded programs are built with gcc -pg")
        || !require("uftrace", "uftrace 0.13 judges the recorded traces")
    {
        return None;
    }
    Some(BIN.get_or_init(|| {
        let dir = scratch("record-program");
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("prog.c");
        std::fs::write(&src, PROGRAM).unwrap();
        let bin = dir.join("prog");
        gcc(&src, &bin, &["-O1", "-pg"]);
        bin
    }))
}

fn record(dir: &Path, options: &[&str], program: &Path, args: &[&str]) -> Output {
    Command::new(vftrace_cli())
        .arg("record")
        .arg("-d")
        .arg(dir)
        .args(options)
        .arg("--")
        .arg(program)
        .args(args)
        .output()
        .expect("cannot run vftrace record")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unmodified_program_is_recorded_with_its_exit_status() {
    let Some(prog) = program() else { return };
    let dir = scratch("record-plain");
    let untraced = Command::new(prog).output().unwrap();
    let out = record(&dir, &[], prog, &[]);
    // What the program printed and returned, unchanged.
    assert_eq!(out.stdout, untraced.stdout);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let calls = report_calls(&dir);
    assert_eq!(calls["outer"], 1);
    assert_eq!(calls["middle"], 10);
    assert_eq!(calls["leaf"], 21);
    assert_eq!(calls["hidden"], 1);
    let info = uftrace(&dir, &["info"]);
    assert!(info.contains("exited with code: 3"), "{info}");
    let replay = uftrace(&dir, &["replay", "-f", "none"]);
    assert!(replay.contains("slow();"), "{replay}");
    // uftrace's duration of slow() is the 20 ms sleep, in real nanoseconds.
    let report = uftrace(&dir, &["report", "-f", "total", "-F", "slow"]);
    assert!(report.contains("ms"), "{report}");
    assert!(
        stderr(&out).contains("vftrace record: 1 process(es), 1 thread(s)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_killed_program_keeps_its_trace_and_says_how_it_ended() {
    let Some(prog) = program() else { return };
    let dir = scratch("record-killed");
    let ready = dir.with_extension("ready");
    let _ = std::fs::remove_file(&ready);
    let child = Command::new(vftrace_cli())
        .arg("record")
        .arg("-d")
        .arg(&dir)
        .arg("--")
        .arg(prog)
        .args(["forever", ready.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !ready.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the program never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    // The program is the recorder's child.
    let pgrep = Command::new("pgrep")
        .args(["-P", &child.id().to_string()])
        .output()
        .unwrap();
    let pid: i32 = String::from_utf8_lossy(&pgrep.stdout)
        .trim()
        .parse()
        .expect("the program's pid");
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(128 + 9), "{}", stderr(&out));
    let calls = report_calls(&dir);
    assert!(calls["outer"] >= 1 && calls["middle"] >= 100, "{calls:?}");
    let info = uftrace(&dir, &["info"]);
    assert!(info.contains("terminated by signal: 9"), "{info}");
}

#[test]
fn ring_mode_keeps_the_newest_records() {
    let Some(prog) = program() else { return };
    let dir = scratch("record-ring");
    // 2M calls of leaf (4M records, 64 MB) through a 1 MiB ring.
    let out = record(
        &dir,
        &["--ring", "--buffer", "1M"],
        prog,
        &["spin", "2000000"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = report_calls(&dir);
    let leaves = calls["leaf"];
    assert!((1000..2_000_000).contains(&leaves), "{calls:?}");
    // The newest calls are there, up to the last; what was overwritten is announced first, and
    // no exit is left whose entry is gone (spin's and main's were overwritten).
    let dump = uftrace(&dir, &["dump"]);
    let first = dump.lines().find(|l| l.contains(": [")).unwrap_or_default();
    assert!(first.contains("[lost ]"), "{first}");
    let replay = uftrace(&dir, &["replay", "-f", "none"]);
    let lines: Vec<&str> = replay.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.last().map(|l| l.trim()), Some("leaf();"));
    assert!(!replay.contains("/* spin */"), "an exit without its entry");
}

#[test]
fn filters_trace_what_they_say() {
    let Some(prog) = program() else { return };
    // -F outer: outer and its callees only.
    let dir = scratch("record-filter");
    let out = record(&dir, &["-F", "^outer$"], prog, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let calls = report_calls(&dir);
    assert_eq!(calls.get("outer"), Some(&1));
    assert_eq!(calls.get("leaf"), Some(&20), "{calls:?}");
    assert_eq!(calls.get("main"), None, "{calls:?}");
    assert_eq!(calls.get("hidden"), None, "{calls:?}");
    // -N hidden: everything but hidden and its callee.
    let dir = scratch("record-notrace");
    record(&dir, &["-N", "^hidden$"], prog, &[]);
    let calls = report_calls(&dir);
    assert_eq!(calls.get("hidden"), None, "{calls:?}");
    assert_eq!(calls.get("leaf"), Some(&20), "{calls:?}");
    assert_eq!(calls.get("main"), Some(&1), "{calls:?}");
    // -D 2: main and what it calls directly.
    let dir = scratch("record-depth");
    record(&dir, &["-D", "2"], prog, &[]);
    let calls = report_calls(&dir);
    assert_eq!(calls.get("outer"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("middle"), None, "{calls:?}");
    assert_eq!(calls.get("leaf"), None, "{calls:?}");
    // -t 5ms: only slow (20 ms) and main (which contains it) are long enough.
    let dir = scratch("record-time");
    record(&dir, &["-t", "5ms"], prog, &[]);
    let calls = report_calls(&dir);
    let mut names: Vec<&str> = calls.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["main", "slow"], "{calls:?}");
}

#[test]
fn tracing_starts_off_and_a_signal_turns_it_on() {
    let Some(prog) = program() else { return };
    let dir = scratch("record-signal");
    let ready = dir.with_extension("ready");
    let go = dir.with_extension("go");
    for f in [&ready, &go] {
        let _ = std::fs::remove_file(f);
    }
    let child = Command::new(vftrace_cli())
        .arg("record")
        .arg("-d")
        .arg(&dir)
        .args(["--disable", "--signal", "SIGUSR1@trace_on", "--"])
        .arg(prog)
        .args(["phases", ready.to_str().unwrap(), go.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !ready.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the program never got ready"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    // The recorder looks at its signals every pass (about every millisecond).
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "phases done\n");
    let calls = report_calls(&dir);
    assert_eq!(calls.get("hidden"), None, "traced while off: {calls:?}");
    assert_eq!(calls.get("leaf"), Some(&100), "{calls:?}");
}

#[test]
fn a_program_that_links_vftrace_joins_the_recorder() {
    let Some(_) = program() else { return };
    let example = vftrace_testsupport::instrumented_rust_example();
    let dir = scratch("record-linked");
    let ignored = scratch("record-linked-own-dump");
    let out = record(
        &dir,
        &[],
        example,
        &["demo", "-o", ignored.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Its own dump wrote nothing: the recorder has the trace.
    assert!(!ignored.exists());
    assert!(
        stderr(&out).contains("recorded by `vftrace record`"),
        "{}",
        stderr(&out)
    );
    let calls = report_calls(&dir);
    assert_eq!(calls["vftrace_example_rust::sleep_10ms"], 1, "{calls:?}");
    assert_eq!(calls["vftrace_example_rust::fib"], 15, "{calls:?}");
}

#[test]
fn a_long_run_streams_gigabytes_with_bounded_memory() {
    let Some(prog) = program() else { return };
    if !require("/usr/bin/time", "peak memory is measured with GNU time") {
        return;
    }
    let dir = scratch("record-long");
    // 64M calls of leaf: 128M records, 2 GiB of trace, through a 64 MiB pool.
    let out = Command::new("/usr/bin/time")
        .args(["-f", "maxrss_kb=%M"])
        .arg(vftrace_cli())
        .args(["record", "--block", "--buffer", "64M", "-d"])
        .arg(&dir)
        .arg("--")
        .arg(prog)
        .args(["spin", "64000000"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let rss: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kb="))
        .and_then(|v| v.trim().parse().ok())
        .expect("GNU time's line");
    let bytes: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".dat"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(bytes >= 2_000_000_000, "{bytes} bytes of records");
    // The recorder maps the pool (64 MiB) and buffers a few MiB per file.
    assert!(rss < 200 * 1024, "the recorder's peak RSS was {rss} KiB");
    // The program's: uftrace info shows what wait4 said.
    let info = uftrace(&dir, &["info"]);
    let program_rss: u64 = info
        .lines()
        .find_map(|l| l.split("max rss").nth(1))
        .and_then(|v| {
            v.trim_start_matches([' ', ':'])
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("uftrace info's max rss line");
    assert!(
        program_rss < 150 * 1024,
        "the program's peak RSS was {program_rss} KiB"
    );
    assert!(!err.contains("lost"), "{err}");
    let calls = report_calls(&dir);
    assert_eq!(calls["leaf"], 64_000_000);
}

#[test]
fn bad_programs_get_clear_messages() {
    let Some(prog) = program() else { return };
    let dir = scratch("record-bad");
    let out = record(&dir, &[], Path::new("/no/such/program"), &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/no/such/program: no such file"),
        "{}",
        stderr(&out)
    );
    let out = record(&dir, &[], Path::new("true"), &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no mcount calls found") && stderr(&out).contains("-pg"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.exists(), "no empty trace passed off as success");
    // An output that is the program itself is refused before anything runs.
    let out = record(prog, &[], prog, &[]);
    assert!(!out.status.success());
    assert!(prog.is_file(), "the program was not touched");
}
