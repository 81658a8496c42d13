//! `vftrace demo`: build (if needed) and boot the example unikernel under KVM (or several at
//! once) while recording the host's KVM and scheduler events of QEMU, drain each guest's trace
//! from its memory while it runs (`live`), and merge them all into one timeline. Prints what
//! was traced, how many VM exits were seen (and that the trace hand-over caused none during the
//! workload), how well guest and host clocks line up (marker residuals and windows) and how
//! long the guest was not running guest code.
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
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

/// How often the demo's drain passes over a guest's pool.
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
    run.cmdline = live_cmdline(&args.cmdline);
    run.timeout = Duration::from_secs(args.timeout);
    let sessions: Vec<GuestSession> = (0..args.guests).map(|_| GuestSession::new(&run)).collect();
    let statuses = StatusFiles::new(&args.output, args.guests);
    let argv = boot_command(&sessions, &statuses);
    // The guests' clock, before they boot: their records are converted as they are drained.
    let host_tsc_hz = host_tsc_hz_now()?;
    let lives = sessions
        .iter()
        .zip(&guest_dirs)
        .map(|(session, dir)| {
            LiveCapture::new(&LiveOptions {
                ram: session.ram_path(),
                console: session.console_path(),
                output: dir,
                elf: Some(&elf),
                tsc_hz: Some(host_tsc_hz),
                host_tsc_hz,
            })
            .with_context(|| format!("cannot capture into {}", dir.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!(
        "vftrace demo: booting {} {} under KVM (timeout {} s), draining the trace while it runs...",
        match args.guests {
            1 => "one guest,".to_string(),
            n => format!("{n} guests at once,"),
        },
        elf.display(),
        args.timeout
    );
    let booted = AtomicBool::new(true);
    let (ran, drained) = std::thread::scope(|s| {
        let drainers: Vec<_> = lives
            .into_iter()
            .map(|live| {
                let booted = &booted;
                s.spawn(move || {
                    drain_while(live, DRAIN_INTERVAL, || booted.load(Ordering::Acquire))
                })
            })
            .collect();
        let ran = boot(&args, &argv, &kvm_file, &run);
        booted.store(false, Ordering::Release);
        let drained: Vec<_> = drainers
            .into_iter()
            .map(|d| d.join().expect("the drain does not panic"))
            .collect();
        (ran, drained)
    });
    let (status, wall, kvm_tsc_hz) = ran?;
    let guest_statuses: Vec<_> = (0..args.guests)
        .map(|i| statuses.status(i, status))
        .collect();
    statuses.remove();
    let mut reports = Vec::new();
    for (((session, dir), drained), status) in sessions
        .iter()
        .zip(&guest_dirs)
        .zip(drained)
        .zip(guest_statuses)
    {
        let outcome = session.collect(status, wall)?;
        print!("{}", outcome.serial);
        let ended_well = outcome.status == Some(SUCCESS_STATUS);
        let report = match drained {
            Ok(r) => r,
            Err(e) if ended_well => return Err(e).context("the live capture failed"),
            Err(e) => bail!(
                "the guest {}; see its output above (no trace: {e})",
                outcome.describe()
            ),
        };
        super::capture::write_probe_names(&elf, dir)?;
        super::capture::print_live_summary(&report, &dir.display().to_string());
        println!(
            "guest: boot to exit {:.1} ms (QEMU wall time), its trace drained while it ran",
            outcome.wall.as_secs_f64() * 1e3
        );
        if !ended_well {
            bail!(
                "the guest {}; see its output above; what it traced up to there is in {}",
                outcome.describe(),
                dir.display()
            );
        }
        if let Some(cut) = &report.cut {
            bail!("the guest overwrote its trace pool: {cut}");
        }
        reports.push(report);
    }
    drop(sessions);
    if args.no_kvm {
        for dir in &guest_dirs {
            println!("look at it: uftrace replay -d {}", dir.display());
        }
        return Ok(());
    }

    let tsc_hz = kvm_tsc_hz.unwrap_or(host_tsc_hz);
    print_exits(&kvm_file, &reports[0].markers, reports.len())?;
    let opts = MergeOptions {
        guests: guest_dirs.clone(),
        kvm: Some(kvm_file.clone()),
        tsc_hz: Some(tsc_hz),
        ..MergeOptions::default()
    };
    let merged = merge_into(&timeline, &opts)?;
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

/// The guest's command line with `live` added, unless it asks for live already (`wait`).
fn live_cmdline(cmdline: &str) -> String {
    if cmdline
        .split_ascii_whitespace()
        .any(|w| w == "live" || w == "wait")
    {
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
    let summary = vftrace_kvm::record(&opts)
        .context("recording host KVM events failed (run as root with tracefs, or pass --no-kvm)")?;
    eprintln!(
        "vftrace demo: {} host events of QEMU's threads recorded to {}",
        summary.events,
        kvm_file.display()
    );
    Ok((summary.command_status, summary.elapsed, summary.tsc_hz))
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

/// Merges into the timeline file (written aside, renamed when whole) and prints the report.
pub(crate) fn merge_into(timeline: &Path, opts: &MergeOptions) -> anyhow::Result<MergeReport> {
    let mut output = vftrace_convert::TimelineOutput::create(timeline, None, &[])?;
    let merged = merge(opts, &mut *output.sink)?;
    output.commit()?;
    print!("{merged}");
    Ok(merged)
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

/// VM exits by port I/O and MMIO (the exits PVM traces) of this guest, and which of them the
/// trace hand-over caused: during the workload (between its first and last marker) the only
/// port writes should be the markers themselves, and at the end those of writing and
/// announcing the end-of-run stream (between the StreamStart marker and the next one).
fn print_exits(kvm_file: &Path, markers: &[Marker], guests: usize) -> anyhow::Result<()> {
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
    let is_probe = |x: &(Option<u16>, Option<u64>)| x.0 == Some(vftrace_format::probes::PROBE_PORT);
    let at = |phase: u32| {
        let m = markers.iter().find(|m| m.phase == phase)?;
        exits
            .iter()
            .position(|x| is_marker(x) && x.1 == Some(m.value as u64))
    };
    let mmio = exits.iter().filter(|x| x.0.is_none()).count();
    print!(
        "host: {} kvm_pio and {mmio} kvm_mmio exits of {}",
        exits.len() - mmio,
        if guests == 1 {
            "this guest"
        } else {
            "the guests"
        }
    );
    if guests > 1 {
        // The guests' exits interleave: which ones the first guest's phases hold is not told.
        println!();
        return Ok(());
    }
    if let (Some(start), Some(end)) = (at(WORKLOAD_START), at(WORKLOAD_END)) {
        let during = &exits[start + 1..end.max(start + 1)];
        let markers = during.iter().filter(|x| is_marker(x)).count();
        let probes = during.iter().filter(|x| is_probe(x)).count();
        print!(
            "; during its workload {} besides its {markers} markers and {probes} probes (the trace hand-over)",
            during.len() - markers - probes
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
