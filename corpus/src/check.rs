//! One program's test: build it, run it untraced, then under every tracing mode it has, and
//! report every difference at once (output, exit status, call trees, `info`, LOST counts).
use crate::compile::{build, corpus_dir, work_dir, Build};
use crate::diff::diff;
use crate::expected::{self, Expected, UftraceVerdict};
use crate::normal::{normal_form, View};
use crate::outcome::{run_to_end, tail, Outcome};
use crate::program::{Ended, Lang, Mode, Program};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use vftrace_testsupport::{require, vftrace_cli};

/// Runs uftrace where the expected file says it is wrong, to check that it still is (and to
/// show how): a verdict that no longer holds fails.
pub const VERDICT_CHECK: &str = "VFTRACE_CORPUS_UFTRACE_VERDICTS";

pub fn check(p: &Program) {
    if !tools_available(p) {
        return;
    }
    raise_open_file_limit();
    let expected = Expected::load(&expected_path(p.name));
    let build = build(p);
    let dir = build.dir.to_str().unwrap();
    let args: Vec<String> = p.args.iter().map(|a| a.replace("{dir}", dir)).collect();
    let untraced = run_to_end(&mut program(&build.plain, &build, &args))
        .unwrap_or_else(|e| panic!("{}: untraced: {e}", p.name));
    assert_eq!(
        untraced.ended,
        p.ends,
        "{}: the untraced program should have {}, but it {}; stderr:\n{}",
        p.name,
        p.ends,
        untraced.ended,
        tail(&untraced.stderr, 20)
    );

    let mut problems = Vec::new();
    for &mode in p.modes {
        let skip = match (mode, &expected.uftrace) {
            (Mode::Uftrace, UftraceVerdict::Wrong(_)) if env_is_1(VERDICT_CHECK) => {
                problems.extend(check_verdict(p, &build, &args, &untraced, &expected));
                continue;
            }
            (Mode::Uftrace, UftraceVerdict::Wrong(why)) => {
                Some(format!("uftrace 0.13 is wrong here: {why}"))
            }
            (Mode::Uftrace, UftraceVerdict::NotApplicable(why)) => Some(why.clone()),
            _ => None,
        };
        if let Some(why) = skip {
            eprintln!("{}: {mode} mode not run: {why}", p.name);
            continue;
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            check_mode(p, mode, &build, &args, &untraced, &expected)
        }));
        match result {
            Ok(found) => problems.extend(found.into_iter().map(|f| format!("[{mode}] {f}"))),
            Err(panic) => problems.push(format!("[{mode}] {}", panic_message(&*panic))),
        }
    }
    assert!(
        problems.is_empty(),
        "{}: {} problem(s)\n\n{}",
        p.name,
        problems.len(),
        problems.join("\n\n")
    );
}

fn env_is_1(name: &str) -> bool {
    std::env::var(name).as_deref() == Ok("1")
}

/// Where uftrace is said to be wrong, it must still differ from the expected trees.
fn check_verdict(
    p: &Program,
    build: &Build,
    args: &[String],
    untraced: &Outcome,
    expected: &Expected,
) -> Option<String> {
    let found = catch_unwind(AssertUnwindSafe(|| {
        check_mode(p, Mode::Uftrace, build, args, untraced, expected)
    }))
    .unwrap_or_else(|panic| vec![panic_message(&*panic)]);
    if found.is_empty() {
        return Some(format!(
            "[uftrace] uftrace agrees with {}: its `uftrace: wrong` verdict is out of date",
            expected.path.display()
        ));
    }
    eprintln!(
        "{}: uftrace is still wrong, as the expected file says:\n{}",
        p.name,
        found.join("\n\n")
    );
    None
}

fn expected_path(name: &str) -> PathBuf {
    corpus_dir().join("expected").join(format!("{name}.tree"))
}

fn tools_available(p: &Program) -> bool {
    let compiler = match p.lang {
        Lang::C => ("gcc", "compiles the C programs"),
        Lang::Cxx => ("g++", "compiles the C++ programs"),
        Lang::Rust => ("rustc", "compiles the Rust programs"),
    };
    let mut ok = require("uftrace", "uftrace 0.13 judges every trace directory")
        && require("gcc", "compiles the in-process shim and C libraries")
        && require(compiler.0, compiler.1);
    if !p.sibling_calls.is_empty() {
        ok = ok && require("objdump", "proves that the sibling calls are jumps");
    }
    ok
}

/// uftrace opens every task's file at once: 10,000 threads need more than 1024 descriptors.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid struct; raising the soft limit to the hard one.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The program run directly, in its build directory, with an environment that makes its
/// output deterministic.
fn program(binary: &Path, build: &Build, args: &[String]) -> Command {
    let mut cmd = Command::new(binary);
    cmd.args(args);
    deterministic(&mut cmd, build);
    cmd
}

fn deterministic(cmd: &mut Command, build: &Build) {
    cmd.current_dir(&build.dir)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env_remove("VFTRACE_CORPUS_DIR")
        .env("LC_ALL", "C");
}

fn check_mode(
    p: &Program,
    mode: Mode,
    build: &Build,
    args: &[String],
    untraced: &Outcome,
    expected: &Expected,
) -> Vec<String> {
    let trace = work_dir(p.name).join(format!("trace.{mode}"));
    let _ = std::fs::remove_dir_all(&trace);
    let mut cmd = match mode {
        Mode::InProcess => {
            let mut cmd = program(&build.inprocess, build, args);
            cmd.env("VFTRACE_CORPUS_DIR", &trace);
            cmd
        }
        Mode::Uftrace => {
            let mut cmd = Command::new("uftrace");
            cmd.args(["record", "--no-event", "-d"])
                .arg(&trace)
                .arg(&build.plain)
                .args(args);
            deterministic(&mut cmd, build);
            cmd
        }
        Mode::Record => {
            let mut cmd = Command::new(vftrace_cli());
            cmd.args(["record", "-d"])
                .arg(&trace)
                .args(p.record_options)
                .arg("--")
                .arg(&build.plain)
                .args(args);
            deterministic(&mut cmd, build);
            cmd
        }
    };
    let traced = match run_to_end(&mut cmd) {
        Ok(o) => o,
        Err(e) => return vec![e],
    };
    let stderr = || format!("stderr:\n{}", tail(&traced.stderr, 30));
    let mut problems = Vec::new();

    if traced.stdout != untraced.stdout {
        problems.push(format!(
            "the output differs from the untraced run (- untraced, + traced):\n{}",
            diff(
                &String::from_utf8_lossy(&untraced.stdout),
                &String::from_utf8_lossy(&traced.stdout)
            )
        ));
    }
    // uftrace's own exit status is not the program's: its `info` says how the program ended.
    match mode {
        Mode::InProcess if traced.ended != untraced.ended => problems.push(format!(
            "the program {} (untraced it {}); {}",
            traced.ended,
            untraced.ended,
            stderr()
        )),
        Mode::Record if traced.ended != Ended::Exited(untraced.ended.shell_code()) => problems
            .push(format!(
                "`vftrace record` {}, but the program untraced {} (expected exit code {}); {}",
                traced.ended,
                untraced.ended,
                untraced.ended.shell_code(),
                stderr()
            )),
        _ => {}
    }

    // The in-process shim dumps from a destructor, which a program that dies never runs.
    if mode == Mode::InProcess && p.no_destructors {
        return problems;
    }
    if !trace.join("info").exists() {
        problems.push(format!(
            "no trace directory at {}; {}",
            trace.display(),
            stderr()
        ));
        return problems;
    }
    match check_info(mode, &trace, untraced.ended) {
        Ok(found) => problems.extend(found),
        Err(e) => {
            problems.push(e);
            return problems;
        }
    }

    let mut replay = vec!["replay", "-f", "tid"];
    if mode == Mode::Uftrace {
        replay.push("--no-libcall");
    }
    replay.extend(expected.replay_args.iter().map(String::as_str));
    let text = match uftrace_text(&trace, &replay) {
        Ok(text) => text,
        Err(e) => {
            problems.push(e);
            return problems;
        }
    };
    let view = View {
        hide: expected.hide.clone(),
        task_per_call: expected.task_per_call.is_some(),
    };
    let mut actual = normal_form(&text, &view);
    let mut wanted = expected.trees.clone();
    if expected.lost_not_compared.is_some() {
        actual = expected::without_lost(&actual);
        wanted = expected::without_lost(&wanted);
    }
    if actual != wanted {
        problems.push(format!(
            "the call trees differ from {} (- expected, + traced; trace in {}, `uftrace {}`):\n{}",
            expected.path.display(),
            trace.display(),
            replay.join(" "),
            diff(&wanted, &actual)
        ));
    }

    if mode == Mode::InProcess {
        problems.extend(check_summary(&traced.stderr, expected));
    }
    problems
}

/// `uftrace info`: a real elapsed time, and no false exit status (in record mode and under
/// uftrace it must be there and right; the in-process dump may not know it, but must not lie).
fn check_info(mode: Mode, trace: &Path, ended: Ended) -> Result<Vec<String>, String> {
    let info = uftrace_text(trace, &["info"])?;
    let field = |name: &str| {
        info.lines().find_map(|l| {
            let (key, value) = l.strip_prefix('#')?.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_string())
        })
    };
    let mut problems = Vec::new();
    match field("elapsed time") {
        Some(v)
            if v.split_whitespace()
                .next()
                .and_then(|s| s.parse::<f64>().ok())
                .is_some_and(|s| s > 0.0) => {}
        other => problems.push(format!(
            "`uftrace info` gives no real elapsed time: {other:?}"
        )),
    }
    // uftrace adds the signal's name: "terminated by signal: 6 (Aborted)".
    let status = field("exit status");
    let right = status
        .as_deref()
        .is_some_and(|s| s.split(" (").next() == Some(ended.to_string().as_str()));
    if !right && (status.is_some() || mode != Mode::InProcess) {
        problems.push(format!(
            "`uftrace info` says the program {:?}; it {ended}",
            status.unwrap_or_else(|| "(no exit status)".into())
        ));
    }
    Ok(problems)
}

/// `uftrace ARGS -d DIR`: what it printed, or why it failed. A broken trace directory can make
/// uftrace print garbage: that is a difference to show, not a reason to stop.
fn uftrace_text(trace: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("uftrace")
        .args(args)
        .arg("-d")
        .arg(trace)
        .arg("--no-pager")
        .output()
        .map_err(|e| format!("cannot run uftrace: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "`uftrace {} -d {}` failed ({}):\n{}{}",
            args.join(" "),
            trace.display(),
            out.status,
            tail(&stdout, 20),
            tail(&String::from_utf8_lossy(&out.stderr), 20)
        ))
    }
}

/// The dump's summary line names the calls that were not recorded (half the LOST records:
/// each such call is missing its entry and its exit).
fn check_summary(stderr: &str, expected: &Expected) -> Vec<String> {
    let Some(summary) = stderr.lines().find(|l| l.starts_with("vftrace: wrote")) else {
        return vec![format!(
            "no `vftrace: wrote` summary on stderr:\n{}",
            tail(stderr, 30)
        )];
    };
    let lost = expected.lost_total() / 2;
    if lost == 0 || expected.lost_not_compared.is_some() {
        return Vec::new();
    }
    let named = summary
        .split(|c: char| !c.is_ascii_digit())
        .any(|n| n == lost.to_string());
    if named {
        Vec::new()
    } else {
        vec![format!(
            "the dump summary does not report the {lost} calls not recorded: {summary:?}"
        )]
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}
