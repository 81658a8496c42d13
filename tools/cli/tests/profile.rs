//! `vftrace profile` end to end: the example unikernel under KVM, built once with
//! instrumentation and once without (frame pointers only), sampled through QEMU's gdb stub.
//! The judges: the guest's own output (unchanged by sampling), its own function trace as
//! uftrace 0.13 reports it (sampling and tracing must agree on each workload function's share),
//! and for bad input, a port with nothing behind it, a VM that exits, a fake stub speaking
//! garbage and an ELF of another build.
//! In CI (CI=true) missing /dev/kvm, QEMU or uftrace is a failure; elsewhere the tests skip loudly.
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use vftrace_guest::qemu::SUCCESS_STATUS;
use vftrace_guest::{capture, run_guest, CaptureOptions, GuestOutcome, GuestRun, GuestSession};

/// The long phase and the functions whose shares are compared within it.
const ROOT: &str = "guest::workload::spin";
const SPIN_FUNCTIONS: [&str; 4] = [
    "guest::workload::spin_alpha",
    "guest::workload::spin_beta",
    "guest::workload::spin_gamma",
    "guest::workload::spin_delta",
];
/// Stacks the spin phase must show, outermost first.
const ALPHA_STACK: [&str; 4] = [
    "guest_main",
    ROOT,
    "guest::workload::spin_round",
    "guest::workload::spin_alpha",
];
const GAMMA_STACK: [&str; 5] = [
    "guest_main",
    ROOT,
    "guest::workload::spin_round",
    "guest::workload::spin_beta",
    "guest::workload::spin_gamma",
];
/// How far the share of samples may be from the trace's share, in percentage points: with
/// about a thousand samples in the phase the sampling error of a 40% share is 1.5 points.
const SHARE_TOLERANCE_POINTS: f64 = 5.0;

fn vftrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vftrace"))
}

/// /dev/kvm, QEMU and uftrace are there; in CI a missing one fails the test.
fn kvm_available() -> bool {
    vftrace_testsupport::require_kvm_guest(&[], "the profile tests sample a guest under KVM")
}

fn guest(instrumented: bool) -> &'static Path {
    vftrace_testsupport::unikernel(instrumented)
}

fn scratch(name: &str) -> PathBuf {
    vftrace_testsupport::scratch(&format!("profile-{name}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn guest_run(elf: &Path, cmdline: &str, work: &Path) -> GuestRun {
    std::fs::create_dir_all(work).unwrap();
    let mut run = GuestRun::new(elf);
    run.cmdline = cmdline.to_string();
    run.work_dir = work.to_path_buf();
    run.timeout = Duration::from_secs(60);
    run
}

/// QEMU's command for `session`, with its gdb stub on `port`.
fn qemu_with_gdb(session: &GuestSession, port: u16) -> Vec<String> {
    let mut argv: Vec<String> = session
        .command()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    argv.extend(["-gdb".into(), format!("tcp:127.0.0.1:{port}")]);
    argv
}

/// Lines of the guest's serial output with its timings (TSC tick counts) masked.
fn comparable(serial: &str) -> String {
    serial
        .lines()
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let masked: Vec<&str> = words
                .iter()
                .enumerate()
                .map(|(i, w)| match (words.get(i + 1), words.get(i + 2)) {
                    (Some(&"TSC"), Some(&"ticks")) | (Some(&"TSC"), Some(&"ticks,")) => "N",
                    _ => w,
                })
                .collect();
            masked.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `vftrace profile --elf ELF ... -- QEMU` on the guest `kernel`; returns vftrace's
/// output, the guest's outcome and the profile directory.
fn profile_guest(
    kernel: &Path,
    elf: &Path,
    cmdline: &str,
    name: &str,
    extra: &[&str],
    ram: bool,
) -> (Output, GuestOutcome, PathBuf) {
    let work = scratch(name);
    let out = work.join("profile");
    let session = GuestSession::new(&guest_run(kernel, cmdline, &work));
    let port = free_port();
    let mut cmd = vftrace();
    cmd.args(["profile", "--gdb", &format!("127.0.0.1:{port}"), "-o"])
        .arg(&out)
        .arg("--elf")
        .arg(elf)
        .args(extra);
    if ram {
        cmd.arg("--ram").arg(session.ram_path());
    }
    let started = Instant::now();
    let output = cmd
        .arg("--")
        .args(qemu_with_gdb(&session, port))
        .output()
        .unwrap();
    // `vftrace profile` passes the command's exit status on: QEMU's, whose 1 is the guest's
    // success.
    let status =
        std::os::unix::process::ExitStatusExt::from_raw(output.status.code().unwrap_or(255) << 8);
    let outcome = session.collect(Some(status), started.elapsed()).unwrap();
    (output, outcome, out)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs the guest once alone and once profiled with its own ELF; both must succeed and print
/// the same. Returns vftrace's output (also printed), the profiled run and the profile.
fn profile_unchanged(
    elf: &Path,
    cmdline: &str,
    name: &str,
    extra: &[&str],
    ram: bool,
) -> (String, GuestOutcome, PathBuf) {
    let alone = run_guest(&guest_run(elf, cmdline, &scratch(&format!("{name}-alone")))).unwrap();
    assert_eq!(alone.status, Some(SUCCESS_STATUS), "{}", alone.serial);
    let (output, outcome, dir) = profile_guest(elf, elf, cmdline, name, extra, ram);
    let log = text(&output);
    assert_eq!(
        outcome.status,
        Some(SUCCESS_STATUS),
        "{log}\n{}",
        outcome.serial
    );
    assert_eq!(
        comparable(&outcome.serial),
        comparable(&alone.serial),
        "sampling changed what the guest printed; vftrace profile said:\n{log}"
    );
    println!("{log}");
    (log, outcome, dir)
}

/// stacks.folded as (frames, count).
fn folded(dir: &Path) -> Vec<(Vec<String>, u64)> {
    std::fs::read_to_string(dir.join("stacks.folded"))
        .unwrap()
        .lines()
        .map(|l| {
            let (stack, n) = l.rsplit_once(' ').unwrap();
            (
                stack.split(';').map(str::to_string).collect(),
                n.parse().unwrap(),
            )
        })
        .collect()
}

/// Share of the samples with `function` on their stack among those with `ROOT` on it.
fn sample_share(stacks: &[(Vec<String>, u64)], function: &str) -> f64 {
    let within: Vec<&(Vec<String>, u64)> = stacks
        .iter()
        .filter(|(s, _)| s.iter().any(|f| f == ROOT))
        .collect();
    let all: u64 = within.iter().map(|(_, n)| n).sum();
    let with: u64 = within
        .iter()
        .filter(|(s, _)| s.iter().any(|f| f == function))
        .map(|(_, n)| n)
        .sum();
    with as f64 / all as f64
}

/// Total (inclusive) time per function from `uftrace report`, in seconds.
fn uftrace_totals(dir: &Path) -> HashMap<String, f64> {
    let report = vftrace_testsupport::uftrace(dir, &["report", "-f", "total"]);
    report
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let value: f64 = w.next()?.parse().ok()?;
            let scale = match w.next()? {
                "s" => 1.0,
                "ms" => 1e-3,
                "us" => 1e-6,
                "ns" => 1e-9,
                _ => return None,
            };
            Some((w.collect::<Vec<_>>().join(" "), value * scale))
        })
        .collect()
}

#[test]
fn instrumented_guest_stacks_agree_with_its_own_trace() {
    if !kvm_available() {
        return;
    }
    let elf = guest(true);
    let cmdline = "fib=18 sort=10 helpers=100 spin=5000";
    let (log, outcome, dir) = profile_unchanged(elf, cmdline, "instr", &["-F", "997"], true);

    // Stacks name the workload, nested as the code calls it, through vftrace's trampoline.
    let stacks = folded(&dir);
    assert!(
        stacks
            .iter()
            .any(|(s, _)| s.len() >= 5 && s[..5] == GAMMA_STACK),
        "no stack {GAMMA_STACK:?} in {stacks:?}"
    );
    // The trampoline may be the leaf (a sample while it runs) or the caller of the backend's
    // exit path it calls (a sample inside on_exit), never the caller of the program's code.
    assert!(
        !stacks.iter().any(|(s, _)| s
            .iter()
            .position(|f| f == "vftrace_return_trampoline")
            .is_some_and(|t| s[t + 1..]
                .iter()
                .any(|f| !f.starts_with("vftrace_backend::")))),
        "a traced frame's return address was left as the trampoline: {stacks:?}"
    );

    // The same run's trace, judged by uftrace.
    let trace = dir.parent().unwrap().join("guest.uftrace");
    let report = capture(
        outcome.stream.as_deref().expect("the guest sent its trace"),
        &trace,
        &CaptureOptions {
            elf: Some(elf),
            tsc_hz: vftrace_kvm::clock::calibrate_tsc_hz(Duration::from_millis(100)),
            stream_file: None,
        },
    )
    .unwrap();
    assert!(report.error.is_none(), "{:?}", report.error);
    let totals = uftrace_totals(&trace);
    let root = totals[ROOT];
    let in_root: u64 = stacks
        .iter()
        .filter(|(s, _)| s.iter().any(|f| f == ROOT))
        .map(|(_, n)| n)
        .sum();
    assert!(in_root >= 400, "only {in_root} samples in {ROOT}: {log}");
    for f in SPIN_FUNCTIONS {
        let traced = 100.0 * totals[f] / root;
        let sampled = 100.0 * sample_share(&stacks, f);
        println!("{f}: {sampled:.1}% of samples, {traced:.1}% of traced time");
        assert!(
            (sampled - traced).abs() <= SHARE_TOLERANCE_POINTS,
            "{f}: {sampled:.1}% of {in_root} samples but {traced:.1}% of the traced time in {ROOT}"
        );
    }

    // The other outputs: a flame graph titled with the image, the vmregs table at CPL 3.
    let svg = std::fs::read_to_string(dir.join("flamegraph.svg")).unwrap();
    assert!(
        svg.contains("Guest stacks of guest") && svg.contains("spin_gamma"),
        "flame graph"
    );
    let table = std::fs::read_to_string(dir.join("vcpus.txt")).unwrap();
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with("0 "))
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(
        row.split_whitespace().nth(2),
        Some("3"),
        "the workload runs at CPL 3: {table}"
    );
    assert!(log.contains("pause per sample: min"), "{log}");

    // vftrace merge shows the samples as a track beside the guest's functions.
    let timeline = dir.parent().unwrap().join("timeline.json");
    let merged = vftrace()
        .args(["merge", "--guest"])
        .arg(&trace)
        .arg("--profile")
        .arg(&dir)
        .arg("-o")
        .arg(&timeline)
        .output()
        .unwrap();
    assert!(merged.status.success(), "{}", text(&merged));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&timeline).unwrap()).unwrap();
    let events = json["traceEvents"].as_array().unwrap();
    let profile_pid = vftrace_merge::profile_samples::PROFILE_PID;
    let samples: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["pid"] == profile_pid && e["ph"] == "i")
        .collect();
    assert!(
        samples.len() as u64 >= in_root,
        "{} sample instants",
        samples.len()
    );
    assert!(samples
        .iter()
        .any(|e| e["name"] == "guest::workload::spin_gamma"));
    // Samples lie inside the traced spin phase on the same time scale.
    let spin = events
        .iter()
        .find(|e| e["name"] == ROOT && e["ph"] == "X")
        .expect("the spin phase is on the guest's track");
    let (start, end) = (
        spin["ts"].as_f64().unwrap(),
        spin["ts"].as_f64().unwrap() + spin["dur"].as_f64().unwrap(),
    );
    let inside = samples
        .iter()
        .filter(|e| {
            e["name"]
                .as_str()
                .unwrap()
                .starts_with("guest::workload::spin_")
        })
        .filter(|e| (start..=end).contains(&e["ts"].as_f64().unwrap()))
        .count();
    assert!(
        inside as u64 >= in_root * 9 / 10,
        "{inside} of {in_root} spin samples inside the traced phase"
    );
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

#[test]
fn uninstrumented_guest_is_walked_by_frame_pointers_through_the_stub() {
    if !kvm_available() {
        return;
    }
    let elf = guest(false);
    let cmdline = "fib=24 sort=14 helpers=100 spin=1500";
    // Stacks read through the stub (no --ram): the slow path, at a lower rate.
    let (_, _, dir) = profile_unchanged(elf, cmdline, "plain", &["-F", "300"], false);
    let stacks = folded(&dir);
    for chain in [&ALPHA_STACK[..], &GAMMA_STACK[..]] {
        assert!(
            stacks
                .iter()
                .any(|(s, _)| s.len() == chain.len() && s == chain),
            "no stack {chain:?} in {stacks:?}"
        );
    }
    assert!(
        stacks
            .iter()
            .all(|(s, _)| !s.iter().any(|f| f.contains("mcount"))),
        "an uninstrumented guest has no mcount"
    );
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

/// The uninstrumented guest profiled with the instrumented build's ELF.
#[test]
fn an_elf_of_another_build_is_refused() {
    if !kvm_available() {
        return;
    }
    let (kernel, other) = (guest(false), guest(true));
    let started = Instant::now();
    let (output, outcome, dir) = profile_guest(
        kernel,
        other,
        "fib=10 sort=4 helpers=10 spin=3000",
        "mismatch",
        &[],
        true,
    );
    let log = text(&output);
    assert!(!output.status.success(), "{log}");
    assert!(
        log.contains("is not what the guest runs") && log.contains(&other.display().to_string()),
        "{log}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    // The command is ended, not left behind: no QEMU of this run remains.
    let work = dir.parent().unwrap();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&work.display().to_string()) && c.contains("qemu"))
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
    assert!(!outcome.timed_out, "{log}");
    let _ = std::fs::remove_dir_all(work);
}

#[test]
fn a_vm_that_exits_midway_leaves_the_profile_so_far() {
    if !kvm_available() {
        return;
    }
    let elf = guest(false);
    let work = scratch("exit");
    let session = GuestSession::new(&guest_run(elf, "fib=10 sort=4 helpers=10 spin=2000", &work));
    let port = free_port();
    let argv = qemu_with_gdb(&session, port);
    let mut qemu = Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let out = work.join("profile");
    let started = Instant::now();
    // The VM started on its own: wait for its port.
    let addr = format!("127.0.0.1:{port}");
    while TcpStream::connect(&addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "QEMU did not open its gdb port"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = qemu.try_wait();
    let output = vftrace()
        .args(["profile", "--gdb", &addr, "-d", "60", "--ram"])
        .arg(session.ram_path())
        .arg("--elf")
        .arg(elf)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let log = text(&output);
    let _ = qemu.wait();
    assert!(output.status.success(), "{log}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the profile did not end with the VM: {log}"
    );
    assert!(
        log.contains("before the duration asked for; the profile so far is written"),
        "{log}"
    );
    let stacks = folded(&out);
    assert!(stacks.iter().map(|(_, n)| n).sum::<u64>() > 50, "{log}");
    assert!(out.join("flamegraph.svg").exists() && out.join("vftrace.samples").exists());
    let _ = std::fs::remove_dir_all(&work);
}

/// A port nobody listens on: a clear error at once.
#[test]
fn nothing_listening_is_a_clear_error() {
    let out = scratch("refused");
    let started = Instant::now();
    let output = vftrace()
        .args([
            "profile",
            "--gdb",
            &format!("127.0.0.1:{}", free_port()),
            "-d",
            "1",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let log = text(&output);
    assert!(!output.status.success());
    assert!(
        log.contains("cannot connect to the gdb stub") && log.contains("-gdb tcp:"),
        "{log}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A fake stub: answers the handshake as QEMU does (no target description, one thread), then
/// does `misbehave` with the socket at the first sample.
fn fake_stub(misbehave: fn(&mut TcpStream)) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let reply = |s: &mut TcpStream, data: &str| {
            let sum = data.bytes().fold(0u8, |a, b| a.wrapping_add(b));
            s.write_all(format!("+${data}#{sum:02x}").as_bytes())
                .unwrap();
        };
        // Registers of gdb's plain amd64 layout: rip 0x100000, rsp = rbp = 0x7000, cs 0x23.
        let mut regs = [0u8; 164];
        regs[6 * 8..6 * 8 + 8].copy_from_slice(&0x7000u64.to_le_bytes());
        regs[7 * 8..7 * 8 + 8].copy_from_slice(&0x7000u64.to_le_bytes());
        regs[16 * 8..16 * 8 + 8].copy_from_slice(&0x100000u64.to_le_bytes());
        regs[140] = 0x23;
        let regs: String = regs.iter().map(|b| format!("{b:02x}")).collect();
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            if s.read(&mut byte).unwrap_or(0) == 0 {
                return;
            }
            match byte[0] {
                0x03 => return misbehave(&mut s),
                b'$' => buf.clear(),
                b'#' => {
                    let mut sum = [0u8; 2];
                    let _ = s.read_exact(&mut sum);
                    let packet = String::from_utf8_lossy(&buf).into_owned();
                    match packet.as_str() {
                        p if p.starts_with("qSupported") => reply(&mut s, "PacketSize=1000"),
                        "?" => reply(&mut s, "S05"),
                        "qfThreadInfo" => reply(&mut s, "m01"),
                        "qsThreadInfo" => reply(&mut s, "l"),
                        "g" => reply(&mut s, &regs),
                        p if p.starts_with("Hg") => reply(&mut s, "OK"),
                        "c" => {}
                        p if p.starts_with('m') => reply(&mut s, "E14"),
                        _ => reply(&mut s, ""),
                    }
                }
                b => buf.push(b),
            }
        }
    });
    (addr, handle)
}

fn profile_fake(addr: &str, name: &str) -> (String, bool, Duration, PathBuf) {
    let out = scratch(name);
    let started = Instant::now();
    let output = vftrace()
        .args([
            "profile",
            "--gdb",
            addr,
            "-d",
            "10",
            "--timeout",
            "0.5",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    (
        text(&output),
        output.status.success(),
        started.elapsed(),
        out,
    )
}

#[test]
fn garbage_from_the_stub_is_a_clear_error_and_the_profile_so_far_is_written() {
    let (addr, stub) = fake_stub(|s| {
        let _ = s.write_all(b"+$T0#zz this is not the gdb protocol");
        std::thread::sleep(Duration::from_millis(500));
    });
    let (log, ok, took, out) = profile_fake(&addr, "garbage");
    stub.join().unwrap();
    assert!(!ok, "{log}");
    assert!(
        log.contains("not the gdb remote protocol") && log.contains("not two hex digits"),
        "{log}"
    );
    assert!(log.contains("the profile so far is in"), "{log}");
    assert!(
        out.join("vftrace.samples").exists() && out.join("stacks.folded").exists(),
        "{log}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Garbage right away: no handshake.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stub = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n");
        std::thread::sleep(Duration::from_millis(500));
    });
    let (log, ok, _, _) = profile_fake(&addr, "garbage-early");
    stub.join().unwrap();
    assert!(
        !ok && log.contains("byte 0x53 ('S') where a packet ('$') was expected"),
        "{log}"
    );
}

#[test]
fn a_stub_that_stops_answering_times_out() {
    let (addr, stub) = fake_stub(|_| std::thread::sleep(Duration::from_secs(3)));
    let (log, ok, took, _) = profile_fake(&addr, "silent");
    assert!(
        !ok && log.contains("no answer from the gdb stub") && log.contains("stop reply"),
        "{log}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    stub.join().unwrap();
}

#[test]
fn demo_profile_compares_sampling_with_tracing() {
    if !kvm_available() {
        return;
    }
    let _ = guest(true);
    // With the host's KVM events where tracefs can be used (root); CI must have it.
    let kvm = vftrace_testsupport::tracefs_usable();
    if !kvm {
        vftrace_testsupport::missing("root + tracefs", "demo-profile records host KVM events");
    }
    let out = scratch("demo");
    let mut cmd = vftrace();
    cmd.args([
        "demo-profile",
        "--cmdline",
        "fib=10 sort=6 helpers=10 spin=1500",
        "-o",
    ])
    .arg(&out);
    if !kvm {
        cmd.arg("--no-kvm");
    }
    let run = cmd.output().unwrap();
    let log = text(&run);
    assert!(run.status.success(), "{log}");
    assert!(
        log.contains("sampling vs tracing") && log.contains("guest::workload::spin_gamma"),
        "{log}"
    );
    assert!(log.contains("pause per sample: min"), "{log}");
    assert!(log.contains("samples on 1 vCPU track(s)"), "{log}");
    if kvm {
        // Guest functions, samples and host KVM events on one timeline, aligned by markers.
        assert!(
            log.contains("KVM:       ") && log.contains("paired with a kvm_pio"),
            "{log}"
        );
    }
    assert!(out.join("timeline.json").exists() && out.join("profile/flamegraph.svg").exists());
    let _ = std::fs::remove_dir_all(&out);
}

/// Hermit under uhyve: another VMM's stub (run-length encoded replies, no-ack mode, `vCont`, no
/// register description, no CR3), stacks read through it, and a position-independent image that
/// uhyve loads at a new address every run. The image is built by examples/hermit/build.sh
/// (minutes the first time; the Hermit tests build the same).
#[test]
fn hermit_under_uhyve_is_sampled_through_its_stub() {
    if !kvm_available()
        || !vftrace_testsupport::require("rustup", "the Hermit build installs its toolchains")
    {
        return;
    }
    let hermit = vftrace_testsupport::workspace().join("examples/hermit");
    vftrace_testsupport::run(
        Command::new(hermit.join("build.sh"))
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS"),
    );
    let app = std::fs::canonicalize(hermit.join("target/vftrace-hermit-demo")).unwrap();
    let out = scratch("hermit");
    let port = free_port().to_string();
    let output = vftrace()
        .args([
            "profile",
            "--gdb",
            &format!("127.0.0.1:{port}"),
            "-F",
            "50",
            "--timeout",
            "10",
        ])
        .arg("--elf")
        .arg(&app)
        .arg("-o")
        .arg(&out)
        .args([
            "--",
            "timeout",
            "300",
            "uhyve",
            "--gdb-port",
            &port,
            "--cpu-count",
            "1",
        ])
        .args(["--memory-size", "256MiB"])
        .arg(&app)
        .output()
        .unwrap();
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    assert!(
        log.contains("fib(20) = 6765"),
        "the demo ran to its end: {log}"
    );
    assert!(log.contains("is loaded at bias"), "{log}");
    let stacks = folded(&out);
    // The application's recursion under the kernel's first task, walked to the bottom.
    assert!(
        stacks.iter().any(|(s, _)| {
            s.first().is_some_and(|f| f.starts_with("hermit::"))
                && s.iter().any(|f| f == "vftrace_hermit_demo::main")
                && s.iter()
                    .filter(|f| *f == "vftrace_hermit_demo::fib")
                    .count()
                    >= 3
        }),
        "no stack from the kernel through main into fib's recursion: {stacks:?}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
