//! `vftrace demo`: build (if needed) and boot the example unikernel under KVM (or several at
//! once) while recording the host's KVM and scheduler events of QEMU, capture the trace each
//! guest streams out, and merge them all into one timeline. Prints what was traced, how many
//! VM exits were seen, how well guest and host clocks line up (marker residuals and windows)
//! and how long the guest was not running guest code.
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vftrace_guest::qemu::SUCCESS_STATUS;
use vftrace_guest::{capture, CaptureOptions, CaptureReport, GuestOutcome, GuestRun, GuestSession};
use vftrace_kvm::{KvmEventKind, RecordOptions};
use vftrace_merge::{merge, MergeOptions, MergeReport, DEFAULT_MARKER_PORT};

#[derive(clap::Args)]
pub struct Args {
    /// Output directory: guest.uftrace/ (guest trace), host.kvm (KVM events), timeline.json.
    #[arg(short, long, default_value = "vftrace-demo")]
    pub output: PathBuf,
    /// The guest ELF (default: examples/unikernel, built when missing).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Guest command line: fib=N sort=LOG2 helpers=N (crash and hang show the failure paths).
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
    /// Boot this many guests at once (guest1.uftrace, guest2.uftrace...), one capture, one
    /// timeline.
    #[arg(long, default_value_t = 1)]
    pub guests: usize,
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
    if args.guests == 0 {
        bail!("--guests must be at least 1");
    }
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let kvm_file = args.output.join("host.kvm");
    let timeline = args.output.join(&args.timeline);
    let guest_dirs: Vec<PathBuf> = (0..args.guests)
        .map(|i| match args.guests {
            1 => args.output.join("guest.uftrace"),
            _ => args.output.join(format!("guest{}.uftrace", i + 1)),
        })
        .collect();

    let mut run = GuestRun::new(&elf);
    run.cmdline = args.cmdline.clone();
    run.timeout = Duration::from_secs(args.timeout);
    let sessions: Vec<GuestSession> = (0..args.guests).map(|_| GuestSession::new(&run)).collect();
    let statuses = StatusFiles::new(&args.output, args.guests);
    let argv = boot_command(&sessions, &statuses);
    eprintln!(
        "vftrace demo: booting {} {} under KVM (timeout {} s)...",
        match args.guests {
            1 => "one guest,".to_string(),
            n => format!("{n} guests at once,"),
        },
        elf.display(),
        args.timeout
    );
    let (status, wall, host_tsc_hz) = if args.no_kvm {
        let start = Instant::now();
        let status = Command::new(&argv[0])
            .args(&argv[1..])
            .status()
            .context("cannot start QEMU through timeout(1)")?;
        (Some(status), start.elapsed(), None)
    } else {
        let opts = RecordOptions {
            output: kvm_file.clone(),
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
            "vftrace demo: {} host events of QEMU's threads recorded to {}",
            summary.events,
            kvm_file.display()
        );
        (summary.command_status, summary.elapsed, summary.tsc_hz)
    };
    let tsc_hz = match host_tsc_hz {
        Some(hz) => hz,
        None => host_tsc_hz_now()?,
    };
    let mut reports = Vec::new();
    for (i, (session, dir)) in sessions.iter().zip(&guest_dirs).enumerate() {
        let status = statuses.status(i, status);
        let outcome = session.collect(status, wall)?;
        print!("{}", outcome.serial);
        let started = Instant::now();
        let report = capture_guest(&outcome, &elf, dir, tsc_hz)?;
        println!(
            "guest: boot to exit {:.1} ms (QEMU wall time), trace stream {} bytes, captured in {:.1} ms",
            outcome.wall.as_secs_f64() * 1e3,
            outcome.stream.as_ref().map_or(0, Vec::len),
            started.elapsed().as_secs_f64() * 1e3
        );
        reports.push(report);
    }
    drop(sessions);
    statuses.remove();
    if args.no_kvm {
        for dir in &guest_dirs {
            println!("look at it: uftrace replay -d {}", dir.display());
        }
        return Ok(());
    }

    print_exits(&kvm_file, &reports)?;
    let opts = MergeOptions {
        guests: guest_dirs.clone(),
        kvm: Some(kvm_file.clone()),
        tsc_hz: Some(tsc_hz),
        ..MergeOptions::default()
    };
    let mut output = vftrace_convert::TimelineOutput::create(&timeline, None, &[])?;
    let merged = merge(&opts, &mut *output.sink)?;
    output.commit()?;
    print!("{merged}");
    for g in &merged.guests {
        match &g.residual_stats {
            Some(r) => println!(
                "marker residuals (host kvm_pio - guest write) over {} markers: min {:.2} us, median {:.2} us, max {:.2} us",
                g.residuals_ns.len(),
                r.min_ns / 1e3,
                r.median_ns / 1e3,
                r.max_ns / 1e3
            ),
            None => println!("no markers found in the KVM capture"),
        }
        if let Some(w) = &g.window_stats {
            println!(
                "marker windows (guest TSC before -> after the write) over {} markers: min {:.2} us, median {:.2} us, max {:.2} us; host stamps outside: {}",
                g.windows,
                w.min_ns / 1e3,
                w.median_ns / 1e3,
                w.max_ns / 1e3,
                g.window_violations
            );
        }
        if g.host_time.known {
            println!(
                "guest time not running guest code: {:.3} ms of {:.3} ms ({} periods)",
                g.host_time.not_running_ns as f64 / 1e6,
                g.host_time.run_ns as f64 / 1e6,
                g.host_time.periods
            );
        }
    }
    println!(
        "open {} in https://ui.perfetto.dev; guest trace: uftrace replay -d {}",
        timeline.display(),
        guest_dirs[0].display()
    );
    all_inputs_read(&merged)
}

/// The command that boots the guests: one QEMU (under timeout(1)) as it is, or several at
/// once through sh, each writing its exit status to a file.
fn boot_command(sessions: &[GuestSession], statuses: &StatusFiles) -> Vec<OsString> {
    if sessions.len() == 1 {
        return sessions[0].command();
    }
    let quote = |a: &OsString| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''"));
    let jobs: Vec<String> = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let cmd: Vec<String> = s.command().iter().map(quote).collect();
            format!(
                "({} >/dev/null; echo $? > {}) &",
                cmd.join(" "),
                quote(&statuses.path(i).into_os_string())
            )
        })
        .collect();
    ["sh", "-c"]
        .iter()
        .map(OsString::from)
        .chain([OsString::from(format!("{} wait", jobs.join(" ")))])
        .collect()
}

/// Where the guests booted together leave their QEMU exit statuses.
struct StatusFiles {
    dir: PathBuf,
    count: usize,
}

impl StatusFiles {
    fn new(output: &Path, count: usize) -> StatusFiles {
        StatusFiles {
            dir: output.to_path_buf(),
            count,
        }
    }

    fn path(&self, i: usize) -> PathBuf {
        self.dir.join(format!(".guest{}.status", i + 1))
    }

    /// Guest `i`'s status: the command's when it is the only one, else its file's.
    fn status(&self, i: usize, command: Option<ExitStatus>) -> Option<ExitStatus> {
        if self.count == 1 {
            return command;
        }
        let code: i32 = std::fs::read_to_string(self.path(i))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Some(ExitStatus::from_raw(code << 8))
    }

    fn remove(&self) {
        for i in 0..self.count {
            let _ = std::fs::remove_file(self.path(i));
        }
    }
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
    super::capture::write_probe_names(elf, dir)?;
    super::capture::print_summary(&report, &dir.display().to_string());
    if let Some(e) = &report.error {
        bail!("the guest's trace stream is damaged: {e}");
    }
    Ok(report)
}

/// VM exits by port I/O (the only exits PVM traces), and those the trace streaming caused:
/// between the guest's StreamStart marker and the marker after it (StreamEnd).
fn print_exits(kvm_file: &Path, reports: &[CaptureReport]) -> anyhow::Result<()> {
    const STREAM_START: u32 = 8;
    let capture = vftrace_kvm::read_capture(kvm_file)?;
    let Some(report) = reports.first() else {
        return Ok(());
    };
    let pio: Vec<(u64, u16, Option<u64>)> = capture
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            KvmEventKind::Pio { port, val, .. } => Some((e.tsc, *port, *val)),
            _ => None,
        })
        .collect();
    print!(
        "host: {} kvm_pio exits of {}",
        pio.len(),
        if reports.len() == 1 {
            "this guest"
        } else {
            "the guests"
        }
    );
    let start = report
        .markers
        .iter()
        .find(|m| m.phase == STREAM_START)
        .and_then(|m| {
            pio.iter().position(|(_, port, val)| {
                *port == DEFAULT_MARKER_PORT && *val == Some(m.value as u64)
            })
        });
    if let Some(start) = start {
        if let Some(len) = pio[start + 1..]
            .iter()
            .position(|(_, port, _)| *port == DEFAULT_MARKER_PORT)
        {
            print!(", {len} of them while the guest wrote and announced its trace");
        }
    }
    println!();
    Ok(())
}
