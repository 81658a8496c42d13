//! End to end: the example unikernel boots under KVM, its trace is captured and uftrace 0.13
//! replays it with the exact call counts; damaged streams are rejected with their offset.
//! In CI (CI=true) missing /dev/kvm, QEMU or uftrace is a failure; elsewhere the test skips loudly.
use std::path::{Path, PathBuf};
use std::process::Command;

fn vftrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vftrace"))
}

fn available() -> bool {
    require(&[])
}

/// True when /dev/kvm, QEMU, uftrace and `extra` are there. In CI (CI=true) a missing one fails
/// the test; elsewhere the test is skipped with a loud message.
fn require(extra: &[(&'static str, bool)]) -> bool {
    vftrace_testsupport::require_kvm_guest(extra, "the unikernel tests boot a guest under KVM")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vftrace-uk-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn guest_call_tree_matches_snapshot() {
    if !available() {
        return;
    }
    let out = scratch("tree");
    let run = vftrace()
        .args([
            "demo",
            "--no-kvm",
            "--cmdline",
            "fib=3 sort=2 helpers=2",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let replay =
        vftrace_testsupport::uftrace(&out.join("guest.uftrace"), &["replay", "-f", "none"]);
    let snapshot =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/unikernel-small.replay");
    vftrace_testsupport::assert_snapshot(&snapshot, &replay);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn guest_trace_replays_with_exact_call_counts() {
    if !available() {
        return;
    }
    let out = scratch("demo");
    let run = vftrace()
        .args(["demo", "--cmdline", "fib=12 sort=6 helpers=10", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let out = out.join("guest.uftrace");
    let report = Command::new("uftrace")
        .args(["report", "-d"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&report.stdout);
    let calls = |f: &str| -> u64 {
        text.lines()
            .find(|l| l.trim_end().ends_with(&format!("guest::workload::{f}")))
            .and_then(|l| {
                l.split_whitespace()
                    .rev()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
            })
            .unwrap_or_else(|| panic!("{f} not in uftrace report:\n{text}"))
    };
    // fib(12): 2 * F(13) - 1 calls; merge sort of 2^6: 2^7 - 1 and 2^6 - 1; helpers(10).
    assert_eq!(calls("fib"), 2 * 233 - 1);
    assert_eq!(calls("merge_sort"), 127);
    assert_eq!(calls("merge"), 63);
    assert_eq!(calls("helpers"), 1);
    assert_eq!(calls("helper_outer"), 10);
    assert_eq!(calls("helper_middle"), 20);
    assert_eq!(calls("helper_leaf"), 60);
    let replay = Command::new("uftrace")
        .args(["replay", "-d"])
        .arg(&out)
        .output()
        .unwrap();
    let replay = String::from_utf8_lossy(&replay.stdout);
    assert!(
        replay.contains("guest::workload::helper_outer() {"),
        "{replay}"
    );
    assert!(
        replay.contains(" us [     1] |"),
        "durations missing:\n{replay}"
    );
    let _ = std::fs::remove_dir_all(out.parent().unwrap());
}

use vftrace_testsupport::tracefs_usable;

/// `vftrace demo ARGS -o OUT`, which must succeed; its standard output.
fn run_demo(out: &Path, args: &[&str]) -> String {
    let run = vftrace()
        .arg("demo")
        .args(args)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

/// Numbers after "min", "median", "max" in the demo's residual line, in microseconds.
fn residuals_us(stdout: &str) -> (f64, f64, f64, usize) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("marker residuals"))
        .unwrap_or_else(|| panic!("no residual line in:\n{stdout}"));
    let after = |key: &str| -> f64 {
        let rest = &line[line
            .find(key)
            .unwrap_or_else(|| panic!("{key} missing: {line}"))
            + key.len()..];
        rest.split_whitespace()
            .next()
            .unwrap()
            .trim_end_matches(',')
            .parse()
            .unwrap()
    };
    let count = line
        .split(" over ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    (after(" min "), after(" median "), after(" max "), count)
}

#[test]
fn guest_markers_precede_host_pio_within_50us() {
    if !require(&[("root + tracefs", tracefs_usable())]) {
        return;
    }
    let out = scratch("merge");
    let stdout = run_demo(&out, &["--cmdline", "fib=15 sort=8 helpers=100"]);
    let (min, median, max, count) = residuals_us(&stdout);
    println!(
        "marker residuals over {count} markers: min {min} us, median {median} us, max {max} us"
    );
    // Every marker the guest wrote is seen (8 in its stream + the one after streaming).
    let guest_markers = std::fs::read_to_string(out.join("guest.uftrace/vftrace.markers")).unwrap();
    let listed = guest_markers
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    assert_eq!(count, listed + 1, "{stdout}");
    assert!(
        min >= 0.0,
        "a guest marker lies after its kvm_pio: {stdout}"
    );
    assert!(
        max <= 50.0,
        "a marker's kvm_pio is more than 50 us after the guest's write: {stdout}"
    );
    assert!(out.join("timeline.json").metadata().unwrap().len() > 0);
    let _ = std::fs::remove_dir_all(&out);
}

/// QEMU processes and tracefs instances that a demo with process id `pid` started.
fn leftovers(pid: u32) -> Vec<String> {
    let mut found = Vec::new();
    let tag = format!("vftrace-guest-{pid}-");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(&tag) {
                found.push(format!("process {}", entry.file_name().to_string_lossy()));
            }
        }
    }
    for dir in [
        std::env::temp_dir(),
        PathBuf::from("/sys/kernel/tracing/instances"),
    ] {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&tag) || name.starts_with(&format!("vftrace-kvm-{pid}-")) {
                found.push(entry.path().display().to_string());
            }
        }
    }
    found
}

fn failing_demo(cmdline: &str, kvm: bool, timeout: &str) -> (String, u32) {
    let out = scratch(&cmdline.replace(' ', "_"));
    let mut cmd = vftrace();
    cmd.args(["demo", "--timeout", timeout, "--cmdline", cmdline, "-o"])
        .arg(&out);
    if !kvm {
        cmd.arg("--no-kvm");
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let run = child.wait_with_output().unwrap();
    assert!(!run.status.success(), "a failing guest must fail the demo");
    let _ = std::fs::remove_dir_all(&out);
    (
        format!(
            "{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        ),
        pid,
    )
}

#[test]
fn crashing_guest_is_reported_and_nothing_is_left() {
    if !available() {
        return;
    }
    let (text, pid) = failing_demo("fib=5 sort=2 helpers=1 crash", false, "20");
    assert!(text.contains("took a CPU exception"), "{text}");
    assert!(
        text.contains("CPU exception 6"),
        "the guest's own report is shown: {text}"
    );
    assert_eq!(leftovers(pid), Vec::<String>::new());
}

#[test]
fn hanging_guest_is_stopped_by_the_timeout_and_nothing_is_left() {
    let kvm = tracefs_usable();
    if !require(&[("root + tracefs", kvm)]) {
        return;
    }
    let start = std::time::Instant::now();
    let (text, pid) = failing_demo("fib=5 sort=2 helpers=1 hang", kvm, "2");
    assert!(text.contains("did not finish before the timeout"), "{text}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(60),
        "the timeout did not stop the guest in time"
    );
    assert_eq!(leftovers(pid), Vec::<String>::new());
}

#[test]
fn damaged_stream_is_rejected_and_earlier_frames_recovered() {
    // A real stream from the encoder, cut in its last frame.
    let mut bytes = Vec::new();
    {
        use vftrace_format::stream::*;
        let mut w = StreamWriter::new(|b: &[u8]| bytes.extend_from_slice(b));
        w.header(&Header {
            start_tsc: 1000,
            tsc_hz: 1_000_000_000,
            tsc_hz_source: TscHzSource::Measured,
            load_address: 0x100000,
            load_end: 0x200000,
            pid: 1,
            session_id: 7,
            image_name: b"guest",
            cmdline: b"",
        })
        .unwrap();
        let rec = |t, k| vftrace_format::record::Record::new(t, k, 0, 0x100100).to_bytes();
        use vftrace_format::record::RecordType::*;
        w.records(1, 0, &[rec(1100, Entry), rec(1200, Exit)])
            .unwrap();
        w.records(1, 2, &[rec(1300, Entry), rec(1400, Exit)])
            .unwrap();
        w.end(2000, 1).unwrap();
    }
    let dir = scratch("cut");
    std::fs::create_dir_all(&dir).unwrap();
    let cut = dir.join("cut.bin");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let out = dir.join("trace");
    let run = vftrace()
        .arg("capture")
        .arg(&cut)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(err.contains("offset") && err.contains("cut short"), "{err}");
    let data = std::fs::read(out.join("1.dat")).unwrap();
    assert_eq!(
        data.len(),
        4 * 16,
        "both record frames before the cut are kept"
    );
    let mut flipped = bytes.clone();
    flipped[40] ^= 0x10;
    std::fs::write(&cut, &flipped).unwrap();
    let run = vftrace()
        .arg("capture")
        .arg(&cut)
        .arg("-o")
        .arg(dir.join("t2"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("checksum"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The merged timeline's events (Chrome JSON).
fn timeline_events(path: &Path) -> Vec<serde_json::Value> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    doc["traceEvents"].as_array().unwrap().clone()
}

/// Issue 12: two example unikernels run at the same time under one capture; each is a
/// process of its own (its QEMU's pid, named after its image, a "vCPU 0" track on the thread
/// that ran it), and their probes, stamped by the host, lie in one host-time order: the
/// order of their `kvm_pio` in the capture.
#[test]
fn two_guests_at_once_each_in_its_own_process_with_probes_in_host_time_order() {
    if !require(&[("root + tracefs", tracefs_usable())]) {
        return;
    }
    let out = scratch("two");
    let stdout = run_demo(
        &out,
        &["--guests", "2", "--cmdline", "fib=12 sort=6 helpers=600"],
    );
    println!("{stdout}");
    let events = timeline_events(&out.join("timeline.json"));
    let named = |kind: &str, name: &str| -> Vec<(u64, u64)> {
        events
            .iter()
            .filter(|e| e["ph"] == "M" && e["name"] == kind && e["args"]["name"] == name)
            .map(|e| (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap()))
            .collect()
    };
    let guests: Vec<u64> = named("process_name", "guest").iter().map(|p| p.0).collect();
    assert_eq!(guests.len(), 2, "two guest processes");
    assert_ne!(guests[0], guests[1]);
    let vcpus = named("thread_name", "vCPU 0");
    for pid in &guests {
        let (_, tid) = vcpus
            .iter()
            .find(|(p, _)| p == pid)
            .expect("a vCPU 0 track");
        assert_ne!(
            u64::from(*tid as u32),
            *pid,
            "the vCPU track is QEMU's vCPU thread"
        );
    }
    // The capture's probe writes, in host time order, as (process, value).
    let capture = vftrace_kvm::read_capture(&out.join("host.kvm")).unwrap();
    let mut writes: Vec<(u64, u64, u64)> = capture
        .events
        .iter()
        .filter_map(|e| match e.kind {
            vftrace_kvm::KvmEventKind::Pio {
                port: vftrace_format::probes::PROBE_PORT,
                val: Some(v),
                ..
            } => Some((
                e.tsc,
                u64::from(capture.tgids[&e.pid]),
                u64::from(vftrace_format::probes::decode(v as u32).1),
            )),
            _ => None,
        })
        .collect();
    writes.sort();
    let mut probes: Vec<(f64, u64, u64, String)> = events
        .iter()
        .filter(|e| e["ph"] == "i" && e["cat"] == "probe")
        .map(|e| {
            (
                e["ts"].as_f64().unwrap(),
                e["pid"].as_u64().unwrap(),
                e["args"]["value"].as_u64().unwrap(),
                e["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    probes.sort_by(|a, b| a.0.total_cmp(&b.0));
    // fib's result, the sort check, and helpers at rounds 0, 256, 512: five per guest.
    assert_eq!(probes.len(), 10, "{probes:?}");
    let ours: Vec<(u64, u64)> = probes.iter().map(|p| (p.1, p.2)).collect();
    let theirs: Vec<(u64, u64)> = writes.iter().map(|w| (w.1, w.2)).collect();
    assert_eq!(ours, theirs, "probes in the capture's host-time order");
    for pid in &guests {
        let names: Vec<&str> = probes
            .iter()
            .filter(|p| p.1 == *pid)
            .map(|p| p.3.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "probe: fib result",
                "probe: sort checked",
                "probe: helpers round",
                "probe: helpers round",
                "probe: helpers round"
            ],
            "names from the guest image's table"
        );
    }
    // Each guest's markers: flows from its writes to its host events, stamps in the window.
    assert_eq!(events.iter().filter(|e| e["ph"] == "s").count(), 18);
    assert!(
        !stdout.contains("host stamp outside the window: 1")
            && stdout.contains("host stamp outside the window: 0 of 8"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
