//! End to end with RustyHermit: an instrumented Hermit application and the instrumented Hermit
//! kernel, linked with vftrace, boot under uhyve on KVM while `vftrace kvm` records the host's KVM
//! events (examples/hermit/trace.sh). uftrace 0.13 must read the guest's trace with names (from
//! the .sym file `vftrace sym` wrote on the host), nest application, std and kernel functions as
//! the code calls them, and count the demo's calls exactly; the merged timeline must hold guest
//! functions and host KVM events.
//!
//! The script installs its pinned toolchains and uhyve and builds the kernel on the first run
//! (a few minutes); later runs are incremental. In CI (CI=true) missing /dev/kvm, root, uftrace,
//! rustup or cargo is a failure; elsewhere the tests are skipped with a loud message.
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use vftrace_testsupport::{missing, require, run, scratch, uftrace, workspace};

/// vCPUs of the guest: two, so that the second core's idle task and interrupts (wakeup IPIs)
/// run traced kernel code too; the interrupt-safe backend must leave interrupt frames alone.
const CPUS: &str = "2";
/// Worker threads of the demo.
const WORKERS: u64 = 2;
/// The demo's work (examples/hermit/app/src/main.rs).
const MAIN_FIB_N: u32 = 20;
const WORKER_FIB_N: u32 = 16;

fn available() -> bool {
    if !Path::new("/dev/kvm").exists() {
        missing("/dev/kvm", "the Hermit guest runs under uhyve on KVM");
        return false;
    }
    let uid = Command::new("id").arg("-u").output().map(|o| o.stdout);
    if uid.ok().as_deref().map(<[u8]>::trim_ascii) != Some(b"0".as_slice()) {
        missing(
            "root",
            "vftrace kvm records host KVM events through tracefs",
        );
        return false;
    }
    require("uftrace", "uftrace 0.13 judges the guest's trace")
        && require("rustup", "the Hermit build installs its pinned toolchains")
        && require("cargo", "the Hermit build")
}

/// The output folder of one traced run shared by every test here (the run takes a minute or
/// more); a failure is kept as text so that each test reports it instead of running it again.
fn traced_run() -> &'static Path {
    static RUN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = RUN.get_or_init(|| {
        let out = scratch("hermit");
        let script = workspace().join("examples/hermit/trace.sh");
        std::panic::catch_unwind(|| {
            run(Command::new(&script)
                .arg(&out)
                .env("VFTRACE", env!("CARGO_BIN_EXE_vftrace"))
                .env("HERMIT_CPUS", CPUS)
                .env("HERMIT_THREADS", WORKERS.to_string()));
        })
        .map(|()| out)
        .map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "examples/hermit/trace.sh failed".into())
        })
    });
    match result {
        Ok(out) => out,
        Err(message) => panic!("{message}"),
    }
}

fn guest_trace() -> PathBuf {
    traced_run().join("guest/trace")
}

/// 2 * F(n + 1) - 1 calls of a naive recursive fib(n).
fn fib_calls(n: u32) -> u64 {
    let (mut previous, mut current) = (0u64, 1u64);
    for _ in 0..n {
        (previous, current) = (current, previous + current);
    }
    2 * current - 1
}

#[test]
fn hermit_app_runs_to_completion_under_kvm() {
    if !available() {
        return;
    }
    let out = traced_run();
    let console = std::fs::read_to_string(out.join("uhyve.log")).unwrap();
    for expected in [
        "wrote and verified /root/out/report.txt",
        "vftrace: wrote /root/out/trace",
    ] {
        assert!(console.contains(expected), "no {expected:?} in:\n{console}");
    }
    // Nothing was lost or left out (the summary would say so).
    let summary = console
        .lines()
        .find(|l| l.contains("vftrace: wrote"))
        .unwrap();
    assert!(
        !summary.contains("lost") && !summary.contains("not recorded"),
        "{summary}"
    );
    // The guest wrote its report onto the host through uhyve's file mapping.
    let report = std::fs::read_to_string(out.join("guest/report.txt")).unwrap();
    assert!(report.contains("fib(20) = 6765"), "{report}");
    // uftrace reads every part of the directory.
    let info = uftrace(&guest_trace(), &["info"]);
    assert!(info.contains("vftrace-hermit-demo"), "{info}");
    assert!(info.contains("Hermit"), "{info}");
}

#[test]
fn uftrace_report_counts_the_demo_exactly() {
    if !available() {
        return;
    }
    let report = uftrace(&guest_trace(), &["report", "-f", "call"]);
    // "       CALLS  FUNCTION": the name is everything after the count.
    let calls: HashMap<&str, u64> = report
        .lines()
        .filter_map(|line| {
            let (count, name) = line.trim_start().split_once("  ")?;
            Some((name.trim(), count.parse().ok()?))
        })
        .collect();
    let expected = [
        (
            "vftrace_hermit_demo::fib",
            fib_calls(MAIN_FIB_N) + WORKERS * fib_calls(WORKER_FIB_N),
        ),
        ("vftrace_hermit_demo::outer", 1),
        ("vftrace_hermit_demo::middle", 10),
        ("vftrace_hermit_demo::inner", 100),
        ("vftrace_hermit_demo::run_workers", 1),
        // std and the kernel: one thread creation per worker.
        ("<std::sys::thread::hermit::Thread>::new", WORKERS),
        ("sys_spawn2", WORKERS),
    ];
    for (function, count) in expected {
        assert_eq!(
            calls.get(function),
            Some(&count),
            "calls of {function} in uftrace report:\n{report}"
        );
    }
}

#[test]
fn uftrace_replay_nests_application_std_and_kernel() {
    if !available() {
        return;
    }
    let trace = guest_trace();
    // The chain through which a worker thread is created, outermost first.
    let chain = [
        "vftrace_hermit_demo::run_workers",
        "<std::sys::thread::hermit::Thread>::new",
        "sys_spawn2",
        // Hermit's system calls run their body on the task's kernel stack through this.
        "hermit::hermit::arch::x86_64::kernel::switch::kernel_function5",
        "hermit::syscalls::tasks::sys_spawn2::__sys_spawn2",
    ];
    let replay = uftrace(&trace, &["replay", "-f", "tid"]);
    assert!(
        !replay.contains("0x"),
        "unnamed (hex) functions in the replay:\n{}",
        replay
            .lines()
            .filter(|l| l.contains("0x"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Walk the replay with a stack of open calls per task. Lines are " [   TID] |   name() {":
    // two spaces of indentation a level after "| ".
    let mut stacks: HashMap<&str, Vec<String>> = HashMap::new();
    let mut found = 0;
    for line in replay.lines() {
        let Some((tid, call)) = line.split_once("] | ") else {
            continue;
        };
        let depth = (call.len() - call.trim_start().len()) / 2;
        let text = call.trim();
        if text.starts_with('}') || text.is_empty() {
            continue;
        }
        let Some(name) = text.strip_suffix("() {").or(text.strip_suffix("();")) else {
            continue;
        };
        let stack = stacks.entry(tid).or_default();
        stack.truncate(depth);
        stack.push(name.to_string());
        if name == chain[chain.len() - 1] {
            let mut ancestors = stack.iter().map(String::as_str);
            // Every element of the chain, in order, among this call's ancestors.
            let nested = chain.iter().all(|want| ancestors.any(|a| a == *want));
            // From std on, direct calls (nothing between them in std and the kernel).
            let direct = stack[stack.len() - (chain.len() - 1)..] == chain[1..];
            assert!(nested && direct, "{name} is called through {stack:#?}");
            found += 1;
        }
    }
    assert_eq!(
        found,
        WORKERS,
        "calls of {} in the replay",
        chain[chain.len() - 1]
    );
}

#[test]
fn merged_timeline_has_guest_functions_and_host_kvm_events() {
    if !available() {
        return;
    }
    let merged: Value =
        serde_json::from_slice(&std::fs::read(traced_run().join("merged.json")).unwrap())
            .expect("merged.json is JSON");
    let events = merged["traceEvents"]
        .as_array()
        .or(merged.as_array())
        .expect("a Chrome trace: traceEvents or an array");
    let of_phase = |ph: &'static str| events.iter().filter(move |e| e["ph"] == ph);
    // The guest's calls (host spans such as "vCPU not running" have categories of their own).
    let slices: Vec<&Value> = of_phase("X")
        .filter(|e| e["cat"] == "guest" && e["name"] != "guest run")
        .collect();
    let fib = slices
        .iter()
        .filter(|e| e["name"] == "vftrace_hermit_demo::fib")
        .count() as u64;
    assert_eq!(
        fib,
        fib_calls(MAIN_FIB_N) + WORKERS * fib_calls(WORKER_FIB_N),
        "fib slices in the merged timeline"
    );
    assert!(
        slices.iter().any(|e| e["name"] == "sys_spawn2"),
        "no kernel function among the guest slices"
    );
    let instants: Vec<&Value> = of_phase("i").collect();
    assert!(
        instants.iter().any(|e| e["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("tsc offset"))),
        "no kvm_write_tsc_offset among the host events"
    );
    assert!(instants.len() > 10, "{} host KVM events", instants.len());
    // Aligned: the guest's calls lie within the host's capture of the VM's life.
    let span = |events: &[&Value]| {
        let times = events.iter().filter_map(|e| e["ts"].as_f64());
        let (lo, hi) = times.fold((f64::MAX, f64::MIN), |(l, h), t| (l.min(t), h.max(t)));
        (lo, hi)
    };
    let (guest, host) = (span(&slices), span(&instants));
    assert!(
        host.0 <= guest.0 && guest.1 <= host.1,
        "guest calls {guest:?} (us) outside the host events {host:?}"
    );
}
