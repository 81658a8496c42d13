//! `vftrace demo`: build (if needed) and boot the example unikernel under KVM while recording
//! the host's KVM events, drain the guest's trace from its memory while it runs (`live`), and
//! merge both into one timeline. Prints what was traced, how many VM exits were seen (and that
//! the trace hand-over caused none during the workload), and how well guest and host clocks
//! line up (marker residuals).
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vftrace_format::stream::Marker;
use vftrace_guest::qemu::SUCCESS_STATUS;
use vftrace_guest::{
    capture, drain_while, CaptureOptions, CaptureReport, GuestOutcome, GuestRun, GuestSession,
    LiveCapture, LiveOptions,
};
use vftrace_kvm::{KvmEventKind, RecordOptions};
use vftrace_merge::{merge, MergeOptions, MergeReport, DEFAULT_MARKER_PORT};

/// How often the demo's drain passes over the guest's pool.
const DRAIN_INTERVAL: Duration = Duration::from_millis(1);

#[derive(clap::Args)]
pub struct Args {
    /// Output directory: guest.uftrace/ (guest trace), host.kvm (KVM events), timeline.json.
    #[arg(short, long, default_value = "vftrace-demo")]
    pub output: PathBuf,
    /// The guest ELF (default: examples/unikernel, built when missing).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Guest command line: fib=N sort=LOG2 helpers=N rounds=N, wait (the guest waits for the
    /// host when its pool is full instead of dropping), crash, crash=mid and hang show the
    /// failure paths. `live` is added: the trace is drained while the guest runs.
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Seconds before QEMU is stopped.
    #[arg(long, default_value_t = 20)]
    pub timeout: u64,
    /// Do not record host KVM events (no root or tracefs needed; no merged timeline).
    #[arg(long)]
    pub no_kvm: bool,
    /// Timeline file name inside the output directory: *.json or *.pftrace.
    #[arg(long, default_value = "timeline.json")]
    pub timeline: String,
}

/// examples/unikernel of this source tree.
pub fn unikernel_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/unikernel")
}

/// The example guest ELF, built first (cargo makes that a no-op when nothing changed, so a
/// guest is never older than the tracer it links).
pub fn guest_elf() -> anyhow::Result<PathBuf> {
    let dir = unikernel_dir();
    let target = dir.join("target");
    let elf = target.join("x86_64-unknown-none/release/guest");
    if !elf.exists() {
        eprintln!("vftrace demo: building the example unikernel ({}/build.sh), about a minute the first time...", dir.display());
    }
    let status = Command::new(dir.join("build.sh"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .with_context(|| format!("cannot run {}/build.sh", dir.display()))?;
    if !status.success() {
        bail!("building the unikernel failed (see above); it needs: rustup target add x86_64-unknown-none");
    }
    Ok(elf)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let elf = match &args.kernel {
        Some(k) => k.clone(),
        None => guest_elf()?,
    };
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let guest_dir = args.output.join("guest.uftrace");
    let kvm_file = args.output.join("host.kvm");
    let timeline = args.output.join(&args.timeline);

    let mut run = GuestRun::new(&elf);
    run.cmdline = live_cmdline(&args.cmdline);
    run.timeout = Duration::from_secs(args.timeout);
    let session = GuestSession::new(&run);
    let argv = session.command();
    // The guest's clock, before it boots: its records are converted as they are drained.
    let host_tsc_hz = host_tsc_hz_now()?;
    let live = LiveCapture::new(&LiveOptions {
        ram: session.ram_path(),
        console: session.console_path(),
        output: &guest_dir,
        elf: Some(&elf),
        tsc_hz: Some(host_tsc_hz),
        host_tsc_hz,
    })
    .with_context(|| format!("cannot capture into {}", guest_dir.display()))?;
    eprintln!(
        "vftrace demo: booting {} under KVM (timeout {} s), draining its trace while it runs...",
        elf.display(),
        args.timeout
    );
    let booted = AtomicBool::new(true);
    let (ran, drained) = std::thread::scope(|s| {
        let drainer = s.spawn(|| drain_while(live, DRAIN_INTERVAL, || booted.load(Ordering::Acquire)));
        let ran = boot(&args, &argv, &kvm_file, &run);
        booted.store(false, Ordering::Release);
        (ran, drainer.join().expect("the drain does not panic"))
    });
    let (status, wall, kvm_tsc_hz) = ran?;
    let outcome = session.collect(status, wall)?;
    drop(session);
    print!("{}", outcome.serial);
    let ended_well = outcome.status == Some(SUCCESS_STATUS);
    let report = match drained {
        Ok(r) => r,
        Err(e) if ended_well => return Err(e).context("the live capture failed"),
        Err(e) => bail!("the guest {}; see its output above (no trace: {e})", outcome.describe()),
    };
    super::capture::print_live_summary(&report, &guest_dir.display().to_string());
    println!(
        "guest: boot to exit {:.1} ms (QEMU wall time), its trace drained while it ran",
        outcome.wall.as_secs_f64() * 1e3
    );
    if !ended_well {
        bail!(
            "the guest {}; see its output above; what it traced up to there is in {}",
            outcome.describe(),
            guest_dir.display()
        );
    }
    if let Some(cut) = &report.cut {
        bail!("the guest overwrote its trace pool: {cut}");
    }
    if args.no_kvm {
        println!("look at it: uftrace replay -d {}", guest_dir.display());
        return Ok(());
    }
    let tsc_hz = kvm_tsc_hz.unwrap_or(host_tsc_hz);

    let vm_kvm_file = args.output.join("host-this-vm.kvm");
    keep_vm_of_markers(&kvm_file, &vm_kvm_file, &report.markers)?;
    print_exits(&vm_kvm_file, &report.markers)?;
    let opts = MergeOptions {
        guest: Some(guest_dir.clone()),
        kvm: Some(vm_kvm_file.clone()),
        tsc_hz: Some(tsc_hz),
        ..MergeOptions::default()
    };
    let mut output = vftrace_convert::TimelineOutput::create(&timeline, None, &[])?;
    let merged = merge(&opts, &mut *output.sink)?;
    output.commit()?;
    print!("{merged}");
    match &merged.residual_stats {
        Some(r) => println!(
            "marker residuals (host kvm_pio - guest write) over {} markers: min {:.2} us, median {:.2} us, max {:.2} us",
            merged.residuals_ns.len(),
            r.min_ns / 1e3,
            r.median_ns / 1e3,
            r.max_ns / 1e3
        ),
        None => println!("no markers found in the KVM capture"),
    }
    println!(
        "open {} in https://ui.perfetto.dev; guest trace: uftrace replay -d {}",
        timeline.display(),
        guest_dir.display()
    );
    all_inputs_read(&merged)
}

/// The guest's command line with `live` added, unless it asks for live already (`wait`).
fn live_cmdline(cmdline: &str) -> String {
    if cmdline.split_ascii_whitespace().any(|w| w == "live" || w == "wait") {
        cmdline.to_string()
    } else {
        format!("live {cmdline}").trim_end().to_string()
    }
}

/// Runs QEMU (`argv`), recording the host's KVM events into `kvm_file` unless `--no-kvm`:
/// its exit status, wall time and (from the KVM capture) the host's TSC frequency.
fn boot(
    args: &Args,
    argv: &[std::ffi::OsString],
    kvm_file: &Path,
    run: &GuestRun,
) -> anyhow::Result<(Option<ExitStatus>, Duration, Option<f64>)> {
    if args.no_kvm {
        let start = Instant::now();
        let status = Command::new(&argv[0])
            .args(&argv[1..])
            .status()
            .context("cannot start QEMU through timeout(1)")?;
        return Ok((Some(status), start.elapsed(), None));
    }
    let opts = RecordOptions {
        output: kvm_file.to_path_buf(),
        duration: Some(run.timeout + Duration::from_secs(5)),
        command: argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        progress: false,
        ..RecordOptions::default()
    };
    let summary = vftrace_kvm::record(&opts).context(
        "recording host KVM events failed (run as root with tracefs, or pass --no-kvm)",
    )?;
    eprintln!(
        "vftrace demo: {} host KVM events recorded to {}",
        summary.events,
        kvm_file.display()
    );
    Ok((summary.command_status, summary.elapsed, summary.tsc_hz))
}

/// An error if the merge could not read an input to its end.
pub(crate) fn all_inputs_read(merged: &MergeReport) -> anyhow::Result<()> {
    if !merged.data_errors.is_empty() {
        bail!(
            "{} input(s) could not be read to the end: {:?}",
            merged.data_errors.len(),
            merged.data_errors
        );
    }
    Ok(())
}

/// The host's TSC frequency, measured against CLOCK_MONOTONIC for 100 ms.
pub(crate) fn host_tsc_hz_now() -> anyhow::Result<f64> {
    vftrace_kvm::clock::calibrate_tsc_hz(Duration::from_millis(100))
        .context("cannot measure the host TSC frequency against CLOCK_MONOTONIC")
}

/// Captures the trace stream of a guest that ended well into `dir`, names from `elf`, and
/// prints the summary; fails if the guest failed or its stream is damaged.
pub(crate) fn capture_guest(
    outcome: &GuestOutcome,
    elf: &Path,
    dir: &Path,
    tsc_hz: f64,
) -> anyhow::Result<CaptureReport> {
    if outcome.status != Some(SUCCESS_STATUS) {
        bail!("the guest {}; see its output above", outcome.describe());
    }
    let Some(stream) = &outcome.stream else {
        bail!("the guest exited without announcing its trace stream")
    };
    let options = CaptureOptions {
        elf: Some(elf),
        tsc_hz: Some(tsc_hz),
        stream_file: None,
    };
    let report = capture(stream.as_slice(), dir, &options)?;
    super::capture::print_summary(&report, &dir.display().to_string());
    if let Some(e) = &report.error {
        bail!("the guest's trace stream is damaged: {e}");
    }
    Ok(report)
}

/// Writes the events of this guest's vCPU threads only: tracefs records every VM on the host,
/// and another VM writing to the marker port would spoil the alignment. The vCPU threads are
/// those whose `kvm_pio` carried one of the guest's marker values.
pub(crate) fn keep_this_vm(all: &Path, out: &Path, report: &CaptureReport) -> anyhow::Result<()> {
    keep_vm_of_markers(all, out, &report.markers)
}

fn keep_vm_of_markers(all: &Path, out: &Path, markers: &[Marker]) -> anyhow::Result<()> {
    let mut capture = vftrace_kvm::read_capture(all)?;
    let values: std::collections::HashSet<u64> =
        markers.iter().map(|m| m.value as u64).collect();
    let threads: std::collections::HashSet<u32> = capture
        .events
        .iter()
        .filter(|e| {
            matches!(&e.kind, KvmEventKind::Pio { port, val: Some(v), .. }
                if *port == DEFAULT_MARKER_PORT && values.contains(v))
        })
        .map(|e| e.pid)
        .collect();
    if threads.is_empty() {
        bail!(
            "none of the guest's {} markers shows up in {}: were KVM events recorded?",
            values.len(),
            all.display()
        );
    }
    let before = capture.events.len();
    capture.events.retain(|e| threads.contains(&e.pid));
    eprintln!(
        "vftrace demo: kept {} of {} host events (vCPU thread(s) {threads:?} of this guest)",
        capture.events.len(),
        before
    );
    vftrace_kvm::write_capture(out, &capture)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// VM exits by port I/O and MMIO (the exits PVM traces) of this guest, and which of them the
/// trace hand-over caused: during the workload (between its first and last marker) the only
/// port writes should be the markers themselves, and at the end those of writing and
/// announcing the end-of-run stream (between the StreamStart marker and the next one).
fn print_exits(kvm_file: &Path, markers: &[Marker]) -> anyhow::Result<()> {
    /// The unikernel's phases (examples/unikernel/src/markers.rs): FibStart, HelpersEnd,
    /// StreamStart.
    const WORKLOAD_START: u32 = 2;
    const WORKLOAD_END: u32 = 7;
    const STREAM_START: u32 = 8;
    let capture = vftrace_kvm::read_capture(kvm_file)?;
    // (port, value) of each exit; MMIO as port None.
    let exits: Vec<(Option<u16>, Option<u64>)> = capture
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            KvmEventKind::Pio { port, val, .. } => Some((Some(*port), *val)),
            KvmEventKind::Mmio { .. } => Some((None, None)),
            _ => None,
        })
        .collect();
    let is_marker = |x: &(Option<u16>, Option<u64>)| x.0 == Some(DEFAULT_MARKER_PORT);
    let at = |phase: u32| {
        let m = markers.iter().find(|m| m.phase == phase)?;
        exits
            .iter()
            .position(|x| is_marker(x) && x.1 == Some(m.value as u64))
    };
    let mmio = exits.iter().filter(|x| x.0.is_none()).count();
    print!(
        "host: {} kvm_pio and {mmio} kvm_mmio exits of this guest",
        exits.len() - mmio
    );
    if let (Some(start), Some(end)) = (at(WORKLOAD_START), at(WORKLOAD_END)) {
        let during = &exits[start + 1..end.max(start + 1)];
        let markers = during.iter().filter(|x| is_marker(x)).count();
        print!(
            "; during its workload {} besides its {markers} markers (the trace hand-over)",
            during.len() - markers
        );
    }
    if let Some(start) = at(STREAM_START) {
        if let Some(len) = exits[start + 1..].iter().position(is_marker) {
            print!(", {len} while it wrote and announced its end-of-run stream");
        }
    }
    println!();
    Ok(())
}
