//! Real recordings: tracefs with the x86-tsc clock while QEMU runs a tiny guest under KVM.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vftrace_kvm::tracefs::Tracefs;
use vftrace_kvm::{
    parse_capture, read_capture, record, write_capture, Capture, KvmEventKind, RecordOptions,
    StopReason,
};

/// Tests in this process that make instances run one at a time, so "no instance of this
/// process is left" can be checked.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn options(output: PathBuf, command: Vec<String>) -> RecordOptions {
    RecordOptions {
        output,
        command,
        buffer_kb: 1024,
        progress: false,
        ..RecordOptions::default()
    }
}

/// Values written to `port` by process `pid` (other KVM users on the host may be recorded too).
fn pio_values(capture: &Capture, pid: u32, port: u16) -> Vec<u64> {
    capture
        .events
        .iter()
        .filter(|e| e.pid == pid)
        .filter_map(|e| match e.kind {
            KvmEventKind::Pio {
                write: true,
                port: p,
                val: Some(v),
                ..
            } if p == port => Some(v),
            _ => None,
        })
        .collect()
}

/// The QEMU thread that wrote to [`MARKER_PORT`] (`value`, or anything when None).
fn guest_pid(capture: &Capture, value: Option<u32>) -> u32 {
    capture
        .events
        .iter()
        .find(|e| match e.kind {
            KvmEventKind::Pio { port, val, .. } => {
                port == MARKER_PORT && (value.is_none() || val == value.map(u64::from))
            }
            _ => false,
        })
        .unwrap_or_else(|| panic!("no marker write in {} events", capture.events.len()))
        .pid
}

fn tsc_offset_events(capture: &Capture, pid: u32) -> usize {
    capture
        .events
        .iter()
        .filter(|e| e.pid == pid && matches!(e.kind, KvmEventKind::WriteTscOffset { .. }))
        .count()
}

#[test]
fn records_a_qemu_guest() {
    if !recording_possible("records_a_qemu_guest") {
        return;
    }
    let _serial = serial();
    let dir = scratch_dir("guest");
    let bios = dir.join("bios.bin");
    let marker = 0x4ebf_ff1b;
    write_guest_bios(&bios, marker);
    let output = dir.join("host.kvm");
    let before = vftrace_kvm::tsc_now();
    let summary = record(&options(output.clone(), qemu_command(&bios))).expect("recording");
    let after = vftrace_kvm::tsc_now();

    assert_eq!(summary.stop, StopReason::CommandExited);
    assert_eq!(
        summary.command_status.and_then(|s| s.code()),
        Some(QEMU_EXIT_STATUS),
        "QEMU's status comes back"
    );
    assert!(
        !summary.instance.exists(),
        "instance {} left behind",
        summary.instance.display()
    );
    assert!(summary
        .enabled_events
        .contains(&"kvm:kvm_write_tsc_offset".to_string()));

    let capture = read_capture(&output).unwrap();
    assert_eq!(capture.source, "vftrace");
    assert_eq!(capture.events.len() as u64, summary.events);
    let pid = guest_pid(&capture, Some(marker));
    // QEMU's vCPU thread both creates the vCPU (TSC offset) and runs it (port writes).
    assert!(
        tsc_offset_events(&capture, pid) >= 1,
        "no kvm_write_tsc_offset of {pid}"
    );
    assert_eq!(
        pio_values(&capture, pid, MARKER_PORT),
        [marker as u64],
        "the guest's marker"
    );
    assert_eq!(
        pio_values(&capture, pid, 0xf4),
        [EXIT_VALUE as u64],
        "the guest's exit write"
    );
    let qemu = capture
        .events
        .iter()
        .find(|e| e.pid == pid && matches!(e.kind, KvmEventKind::Pio { .. }))
        .unwrap();
    assert!(qemu.comm.starts_with("qemu-system"), "{}", qemu.comm);

    // Timestamps are the host TSC: inside the recording and between the clock pairs.
    assert_eq!(capture.syncs.len(), 2);
    let (first, last) = (capture.syncs[0], capture.syncs[1]);
    for e in &capture.events {
        assert!(
            before <= e.tsc && e.tsc <= after,
            "event TSC {} outside [{before}, {after}]",
            e.tsc
        );
        assert!(first.tsc <= e.tsc && e.tsc <= last.tsc);
    }
    assert!(last.mono_ns > first.mono_ns);
    let hz = capture.tsc_hz.expect("a frequency");
    assert!((5e8..1e10).contains(&hz), "{hz}");
    assert!(
        (summary.tsc_hz.unwrap() - hz).abs() <= 0.05,
        "the file keeps the frequency to 0.1 Hz"
    );
    let mono = capture.tsc_to_monotonic_ns(qemu.tsc).unwrap();
    assert!(mono >= first.mono_ns as f64 && mono <= last.mono_ns as f64);

    // Round trip through the writer.
    let copy = dir.join("copy.kvm");
    write_capture(&copy, &capture).unwrap();
    let again = read_capture(&copy).unwrap();
    assert_eq!(again.events, capture.events);
    assert_eq!(again.syncs, capture.syncs);
    assert_eq!(again.lost_events, capture.lost_events);
    assert!((again.tsc_hz.unwrap() - hz).abs() < 0.1);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Issue 12: with a command, only its process tree is recorded, and the scheduler's view of
/// it comes along: every `sched_switch` has a VMM thread leaving or taking the CPU, every
/// `sched_wakeup` wakes one or is done by one, every other event is a VMM thread's. A busy
/// process beside it, on the same CPUs, never shows up on its own.
#[test]
fn records_the_schedulers_view_of_the_vmm_threads_only() {
    if !recording_possible("sched_view") {
        return;
    }
    let _serial = serial();
    let dir = scratch_dir("sched");
    let bios = dir.join("busy.bin");
    write_busy_guest_bios(&bios, 3000);
    // Competes for the CPUs while the guest runs (both CPUs: the guest is preempted).
    let noise: Vec<std::process::Child> = (0..2)
        .map(|_| {
            Command::new("sh")
                .args(["-c", "i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done"])
                .spawn()
                .unwrap()
        })
        .collect();
    let noise_pids: Vec<u32> = noise.iter().map(|c| c.id()).collect();
    let summary = record(&options(dir.join("host.kvm"), qemu_command(&bios))).unwrap();
    for mut n in noise {
        let _ = n.kill();
        let _ = n.wait();
    }
    assert_eq!(
        summary.command_status.and_then(|s| s.code()),
        Some(QEMU_EXIT_STATUS)
    );
    for e in vftrace_kvm::SCHED_EVENTS {
        assert!(summary.enabled_events.contains(&e.to_string()), "{e}");
    }
    let capture = read_capture(&summary.output).unwrap();
    let qemu_thread = guest_pid(&capture, None);
    let qemu = *capture
        .tgids
        .get(&qemu_thread)
        .expect("the vCPU thread's process is recorded");
    assert_ne!(
        qemu, qemu_thread,
        "the vCPU thread is not QEMU's main thread"
    );
    // The command's tree: QEMU's threads and the timeout(1) around it.
    let timeout: Vec<u32> = capture
        .events
        .iter()
        .filter(|e| e.comm == "timeout")
        .map(|e| e.pid)
        .collect();
    let vmm = |tid: u32| capture.tgids.get(&tid) == Some(&qemu) || timeout.contains(&tid);
    let (mut switches, mut wakeups, mut fpu) = (0, 0, 0);
    for e in &capture.events {
        match &e.kind {
            KvmEventKind::SchedSwitch {
                prev_pid, next_pid, ..
            } => {
                assert_eq!(*prev_pid, e.pid, "the task leaving the CPU is current");
                assert!(vmm(*prev_pid) || vmm(*next_pid), "{e:?}");
                switches += 1;
            }
            KvmEventKind::SchedWakeup { pid, .. } => {
                assert!(vmm(*pid) || vmm(e.pid), "{e:?}");
                wakeups += 1;
            }
            kind => {
                assert!(vmm(e.pid), "an event of another process: {e:?}");
                assert!(!noise_pids.contains(&e.pid));
                fpu += matches!(kind, KvmEventKind::Fpu { .. }) as usize;
            }
        }
    }
    assert!(switches > 0, "no sched_switch of QEMU's threads");
    assert!(
        capture.events.iter().any(|e| matches!(&e.kind,
            KvmEventKind::SchedSwitch { prev_pid, .. } if *prev_pid == qemu_thread)),
        "the vCPU thread never left its CPU"
    );
    assert!(fpu >= 2, "kvm_fpu brackets KVM_RUN: {fpu}");
    eprintln!(
        "sched_view: {switches} sched_switch, {wakeups} sched_wakeup, {fpu} kvm_fpu of {} events; QEMU {qemu}, vCPU thread {qemu_thread}",
        capture.events.len()
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn lost_events_are_counted() {
    if !recording_possible("lost_events") {
        return;
    }
    let _serial = serial();
    let dir = scratch_dir("lost");
    let bios = dir.join("busy.bin");
    let writes = 30_000;
    write_busy_guest_bios(&bios, writes);
    let mut opts = options(dir.join("host.kvm"), qemu_command(&bios));
    // One page per CPU holds about a hundred events: far less than the guest makes between
    // two reads, so the kernel drops events.
    opts.buffer_kb = 4;
    opts.events = vec!["kvm_pio".into()];
    let summary = record(&opts).unwrap();
    assert_eq!(
        summary.command_status.and_then(|s| s.code()),
        Some(QEMU_EXIT_STATUS)
    );
    let capture = read_capture(&opts.output).unwrap();
    assert_eq!(capture.lost_events, summary.lost_events);
    let marker_writes = pio_values(&capture, guest_pid(&capture, None), MARKER_PORT);
    eprintln!(
        "lost_events: {} of {writes} port writes recorded, {} lost",
        marker_writes.len(),
        capture.lost_events
    );
    assert!(
        capture.lost_events > 0,
        "a 4 KiB buffer kept up with {writes} exits"
    );
    // Every write is either recorded or counted as lost (other KVM users on the host can
    // only add to the lost count).
    assert!(marker_writes.len() as u64 + capture.lost_events >= writes as u64);
    // What was recorded is in order: the guest counts down.
    assert!(
        marker_writes.windows(2).all(|w| w[0] > w[1]),
        "events out of order"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn failing_command_still_leaves_a_capture_and_no_instance() {
    if !recording_possible("failing_command") {
        return;
    }
    let _serial = serial();
    let dir = scratch_dir("failing");
    let output = dir.join("host.kvm");
    let command = ["sh", "-c", "exit 3"].map(String::from).to_vec();
    let summary = record(&options(output.clone(), command)).expect("recording");
    assert_eq!(summary.command_status.and_then(|s| s.code()), Some(3));
    assert!(!summary.instance.exists());
    let capture = read_capture(&output).unwrap();
    assert_eq!(capture.syncs.len(), 2);
    assert!(std::fs::read_to_string(&output)
        .unwrap()
        .contains("\nstatus exit 3\n"));

    // A command that cannot start is an error, and cleans up too.
    let missing = vec!["/nonexistent/vftrace-test-command".to_string()];
    let error = record(&options(dir.join("never.kvm"), missing)).unwrap_err();
    assert!(format!("{error:#}").contains("cannot run"), "{error:#}");
    assert!(
        !dir.join("never.kvm").exists(),
        "a capture that never started is not left behind"
    );
    assert!(
        instances_of(std::process::id()).is_empty(),
        "{:?}",
        instances_of(std::process::id())
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn duration_ends_recording_and_command() {
    if !recording_possible("duration") {
        return;
    }
    let _serial = serial();
    let dir = scratch_dir("duration");
    let output = dir.join("host.kvm");
    let mut opts = options(output.clone(), ["sleep", "60"].map(String::from).to_vec());
    opts.duration = Some(Duration::from_millis(300));
    let started = Instant::now();
    let summary = record(&opts).expect("recording");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(summary.stop, StopReason::DurationElapsed);
    assert_eq!(
        summary
            .command_status
            .and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)),
        Some(libc::SIGTERM)
    );
    assert!(!summary.instance.exists());
    read_capture(&output).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn missing_events_are_skipped_with_a_note() {
    if !recording_possible("missing_events") {
        return;
    }
    let _serial = serial();
    let dir = scratch_dir("missing");
    let mut opts = options(dir.join("host.kvm"), Vec::new());
    opts.events = vec!["kvm_pio".into(), "kvm_no_such_event".into()];
    opts.duration = Some(Duration::from_millis(50));
    let summary = record(&opts).unwrap();
    assert_eq!(summary.missing_events, ["kvm:kvm_no_such_event"]);
    assert_eq!(
        summary.enabled_events,
        ["kvm:kvm_write_tsc_offset", "kvm:kvm_pio"]
    );
    // Short recordings still get a frequency: the end pair waits for a 100 ms span.
    assert!(summary.tsc_hz.is_some());

    opts.events = vec!["../../etc".into()];
    assert!(record(&opts).is_err());
    assert!(instances_of(std::process::id()).is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn instance_is_removed_when_a_panic_unwinds() {
    if !recording_possible("instance_panic") {
        return;
    }
    let _serial = serial();
    let tracefs = Tracefs::locate_or_mount().unwrap();
    let instance = tracefs.create_instance().unwrap();
    let path = instance.path().to_path_buf();
    instance.enable_event("kvm_pio").unwrap();
    assert!(path.is_dir());
    let result = std::panic::catch_unwind(move || {
        let _held = instance;
        panic!("test panic while an instance exists");
    });
    assert!(result.is_err());
    assert!(!path.exists(), "{} survived the panic", path.display());
}

/// Runs `record` in a separate process (this test binary, re-executed with
/// `VFTRACE_KVM_RECORDER_OUTPUT` set) so a signal can be sent to the recorder alone.
fn spawn_recorder(output: &Path, command: &[String]) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "recorder_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("VFTRACE_KVM_RECORDER_OUTPUT", output)
        .env("VFTRACE_KVM_RECORDER_COMMAND", command.join("\x1f"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Not a test of its own: the body of the recorder process of [`spawn_recorder`]; does
/// nothing when run by the test harness normally.
#[test]
fn recorder_process() {
    let Some(output) = std::env::var_os("VFTRACE_KVM_RECORDER_OUTPUT") else {
        return;
    };
    let command = std::env::var("VFTRACE_KVM_RECORDER_COMMAND").unwrap();
    let command: Vec<String> = command
        .split('\x1f')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let summary = record(&options(output.into(), command)).expect("recording");
    assert!(
        matches!(summary.stop, StopReason::Signal(_)),
        "{:?}",
        summary.stop
    );
}

/// Waits for the recorder to have made its instance (it then records).
fn wait_for_instance(recorder: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(name) = instances_of(recorder).pop() {
            return name;
        }
        assert!(Instant::now() < deadline, "the recorder made no instance");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_with_timeout(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the recorder did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill has no memory effects; pid is our unreaped child.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
}

#[test]
fn sigint_stops_the_recorder_which_cleans_up() {
    if !recording_possible("sigint") {
        return;
    }
    let _serial = serial();
    let dir = scratch_dir("sigint");
    let output = dir.join("host.kvm");
    let mut recorder = spawn_recorder(&output, &[]);
    let name = wait_for_instance(recorder.id());
    // Give tracing a moment to be switched on, then run a guest to be recorded.
    std::thread::sleep(Duration::from_millis(200));
    let bios = dir.join("bios.bin");
    let marker = 0x5151_1234;
    write_guest_bios(&bios, marker);
    let qemu = qemu_command(&bios);
    let status = Command::new(&qemu[0]).args(&qemu[1..]).status().unwrap();
    assert_eq!(status.code(), Some(QEMU_EXIT_STATUS));

    signal(recorder.id(), libc::SIGINT);
    let status = wait_with_timeout(&mut recorder, Duration::from_secs(20));
    assert!(status.success(), "recorder: {status}");
    let tracefs = Tracefs::locate_or_mount().unwrap();
    assert!(
        !tracefs.root().join("instances").join(&name).exists(),
        "{name} left behind"
    );
    let capture = read_capture(&output).unwrap();
    let pid = guest_pid(&capture, Some(marker));
    assert_eq!(pio_values(&capture, pid, MARKER_PORT), [marker as u64]);
    assert!(tsc_offset_events(&capture, pid) >= 1);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: the comm may contain spaces, so split after the ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(parent) {
            children.push(pid);
        }
    }
    children
}

#[test]
fn sigterm_stops_the_recorder_and_its_command() {
    if !recording_possible("sigterm") {
        return;
    }
    let _serial = serial();
    let dir = scratch_dir("sigterm");
    let output = dir.join("host.kvm");
    let mut recorder = spawn_recorder(&output, &["sleep".into(), "600".into()]);
    let name = wait_for_instance(recorder.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    let sleeper = loop {
        if let Some(pid) = children_of(recorder.id()).pop() {
            break pid;
        }
        assert!(Instant::now() < deadline, "the recorder started no command");
        std::thread::sleep(Duration::from_millis(10));
    };
    signal(recorder.id(), libc::SIGTERM);
    let status = wait_with_timeout(&mut recorder, Duration::from_secs(20));
    assert!(status.success(), "recorder: {status}");
    assert!(
        !Path::new(&format!("/proc/{sleeper}")).exists(),
        "the command ({sleeper}) is still running"
    );
    let tracefs = Tracefs::locate_or_mount().unwrap();
    assert!(
        !tracefs.root().join("instances").join(&name).exists(),
        "{name} left behind"
    );
    let text = std::fs::read_to_string(&output).unwrap();
    assert!(
        text.contains(&format!("\nstatus signal {}\n", libc::SIGTERM)),
        "{text}"
    );
    parse_capture(text.as_bytes(), &output).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
