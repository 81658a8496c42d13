//! `vftrace capture`: a guest's vftrace byte stream -> a uftrace directory; with `--live`, the
//! trace drained from a running guest's memory while the command that runs it goes on.
use std::fs::File;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vftrace_guest::{capture, CaptureOptions, CaptureReport, LiveCapture, LiveOptions, LiveReport};
use vftrace_kvm::process::{received_signal, ChildGuard, SignalGuard};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    vftrace capture trace.bin --elf guest -o guest.uftrace\n  \
    vftrace capture --live --ram /dev/shm/vm.ram --console /tmp/vm.console --elf guest -o guest.uftrace -- \\\n    \
    timeout 60 qemu-system-x86_64 -accel kvm -machine microvm,memory-backend=ram \\\n    \
    -object memory-backend-file,id=ram,size=64M,mem-path=/dev/shm/vm.ram,share=on -m 64 \\\n    \
    -chardev file,id=con,path=/tmp/vm.console -device isa-debugcon,iobase=0x402,chardev=con \\\n    \
    -kernel guest -append live ...\n\n\
    With --live the guest announces its trace pool on its debug console (`vftrace-pool addr=... \
    len=...`, written by a kernel that called vftrace::init_drained); the pool is drained from \
    the RAM file while the command runs, with no VM exit, and full chunks are handed back to the \
    guest, so the trace is not bounded by the guest's buffer. When the guest exits, crashes or \
    is killed, everything it published is in the directory. The command's exit status becomes \
    vftrace's.")]
pub struct Args {
    /// The stream the guest wrote (a file, or `-` for standard input); not with --live.
    #[arg(required_unless_present = "live", conflicts_with = "live")]
    pub stream: Option<PathBuf>,
    /// Output uftrace directory.
    #[arg(short, long, default_value = "uftrace.data")]
    pub output: PathBuf,
    /// The guest's ELF image, for function names.
    #[arg(long)]
    pub elf: Option<PathBuf>,
    /// TSC frequency, e.g. 2596130000, 2596.13MHz or 2.6GHz, when the guest did not report
    /// one (or to override it). With --live the host's is measured when neither says.
    #[arg(long, value_parser = super::merge::parse_hz)]
    pub tsc_hz: Option<f64>,
    /// Drain the trace from the guest's memory while the command after `--` runs it.
    #[arg(long, requires_all = ["ram", "console"])]
    pub live: bool,
    /// With --live: the guest's RAM file (QEMU -object memory-backend-file,...,share=on).
    #[arg(long, value_name = "FILE", requires = "live")]
    pub ram: Option<PathBuf>,
    /// With --live: the file the guest's debug console writes (QEMU -chardev file,path=FILE
    /// behind -device isa-debugcon). An old one is removed before the command starts.
    #[arg(long, value_name = "FILE", requires = "live")]
    pub console: Option<PathBuf>,
    /// With --live: the pause between passes over the pool (ns, us, ms, s). Longer pauses cost
    /// the host less; a guest that does not wait loses records when its pool fills meanwhile.
    #[arg(long, value_name = "DURATION", default_value = "1ms", value_parser = parse_interval)]
    pub drain_interval: Duration,
    /// With --live: no progress line.
    #[arg(short, long)]
    pub quiet: bool,
    /// With --live: the command that runs the guest; drained until it exits.
    #[arg(last = true)]
    pub command: Vec<String>,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    match super::parse_duration_ns(text) {
        Some(ns) if ns <= 10_000_000_000 => Ok(Duration::from_nanos(ns)),
        _ => Err(format!(
            "{text:?} is not a pause between 0 and 10s (e.g. 1ms, 250us)"
        )),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.live {
        return run_live(&args);
    }
    let stream = args
        .stream
        .clone()
        .expect("clap requires it without --live");
    let from_stdin = stream.as_os_str() == "-";
    let opts = CaptureOptions {
        elf: args.elf.as_deref(),
        tsc_hz: args.tsc_hz,
        stream_file: (!from_stdin).then_some(stream.as_path()),
    };
    let report = if from_stdin {
        capture(std::io::stdin().lock(), &args.output, &opts)
    } else {
        let file =
            File::open(&stream).with_context(|| format!("cannot open {}", stream.display()))?;
        capture(file, &args.output, &opts)
    }
    .with_context(|| format!("{}: capture failed", stream.display()))?;
    if let Some(elf) = &args.elf {
        write_probe_names(elf, &args.output)?;
    }
    print_summary(&report, &args.output.display().to_string());
    if let Some(e) = &report.error {
        bail!(
            "{}: {e}; the {} frames before it were written to {} (a complete trace up to there)",
            stream.display(),
            report.frames,
            args.output.display()
        );
    }
    Ok(())
}

fn run_live(args: &Args) -> anyhow::Result<()> {
    if args.command.is_empty() {
        bail!("--live needs the command that runs the guest, after `--`");
    }
    let (ram, console) = (
        args.ram.as_deref().expect("clap"),
        args.console.as_deref().expect("clap"),
    );
    let _signals = SignalGuard::install();
    let host_tsc_hz = match args.tsc_hz {
        Some(hz) => hz,
        None => super::demo::host_tsc_hz_now()?,
    };
    let opts = LiveOptions {
        ram,
        console,
        output: &args.output,
        elf: args.elf.as_deref(),
        tsc_hz: args.tsc_hz,
        host_tsc_hz,
    };
    let mut live = LiveCapture::new(&opts)
        .with_context(|| format!("cannot capture into {}", args.output.display()))?;
    let mut child = ChildGuard::spawn(&args.command)?;
    let mut progress = LiveProgress::new(!args.quiet);
    while !child.exited()? && received_signal().is_none() {
        live.step().context("draining the guest's trace pool")?;
        progress.show(&live);
        std::thread::sleep(args.drain_interval);
    }
    progress.clear();
    let status = child.finish(received_signal().unwrap_or(libc::SIGTERM))?;
    let report = live
        .finish()
        .with_context(|| format!("{}: live capture failed", args.output.display()))?;
    if let Some(elf) = &args.elf {
        write_probe_names(elf, &args.output)?;
    }
    print_live_summary(&report, &args.output.display().to_string());
    if let Some(cut) = &report.cut {
        bail!(
            "the guest overwrote its trace pool: {cut}; the trace up to there is in {}",
            args.output.display()
        );
    }
    if let Some(status) = status.filter(|s| !s.success()) {
        use std::os::unix::process::ExitStatusExt;
        eprintln!(
            "vftrace capture: the command ended with {status}; what the guest traced is in {}",
            args.output.display()
        );
        std::process::exit(
            status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        );
    }
    Ok(())
}

/// `vftrace capture: 81.3 MiB drained (0.9 s)` on a terminal's stderr, a few times a second.
struct LiveProgress {
    shown: bool,
    enabled: bool,
    started: Instant,
    last: Instant,
}

impl LiveProgress {
    fn new(wanted: bool) -> LiveProgress {
        LiveProgress {
            shown: false,
            enabled: wanted && std::io::stderr().is_terminal(),
            started: Instant::now(),
            last: Instant::now(),
        }
    }

    fn show(&mut self, live: &LiveCapture) {
        if !self.enabled || self.last.elapsed() < Duration::from_millis(250) {
            return;
        }
        self.last = Instant::now();
        let what = if live.attached() {
            format!(
                "{} drained",
                vftrace_format::output::human_bytes(live.drained_bytes())
            )
        } else {
            "waiting for the guest to announce its trace pool".into()
        };
        eprint!(
            "\rvftrace capture: {what} ({:.1} s)\x1b[K",
            self.started.elapsed().as_secs_f64()
        );
        self.shown = true;
    }

    fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[K");
        }
    }
}

/// The guest's name as its header gives it (empty without one).
fn guest_name(header: Option<&vftrace_format::stream::OwnedHeader>) -> String {
    header.map(|h| h.display_name()).unwrap_or_default()
}

/// One paragraph about a capture, shared with `vftrace demo`.
pub fn print_summary(report: &CaptureReport, output: &str) {
    let name = guest_name(report.header.as_ref());
    outln!(
        "captured guest \"{name}\": {} records in {} thread(s), {} lost, {} frames, {} symbols, TSC {:.0} Hz -> {output}",
        report.records,
        report.tids.len(),
        report.lost(),
        report.frames,
        report.symbols,
        report.tsc_hz
    );
}

/// Copies the probe names the guest image declares (`vftrace::probe_names!`) beside its
/// captured trace (`vftrace.probes`), where `vftrace merge` finds them.
pub fn write_probe_names(elf: &Path, dir: &Path) -> anyhow::Result<()> {
    let names = vftrace_symbols::probe_names(elf)?;
    if !names.is_empty() {
        vftrace_format::probes::write_probe_names(dir, &names).with_context(|| {
            format!(
                "cannot write {}",
                dir.join(vftrace_format::probes::PROBES_FILE).display()
            )
        })?;
    }
    Ok(())
}

/// [`print_summary`] for a live capture, with what the drain did; warnings on stderr.
pub fn print_live_summary(report: &LiveReport, output: &str) {
    let name = guest_name(report.header.as_ref());
    outln!(
        "captured guest \"{name}\" live: {} records in {} thread(s), {} lost, {} calls not recorded, {} markers, {} symbols, TSC {:.0} Hz -> {output}",
        report.records,
        report.tids.len(),
        report.lost,
        report.unrecorded,
        report.markers.len(),
        report.symbols,
        report.tsc_hz
    );
    outln!(
        "drained {} chunks ({}) from the guest's pool while it ran: {:.0} MB/s of drain work ({:.3} s of {:.3} s)",
        report.chunks,
        vftrace_format::output::human_bytes(report.bytes),
        report.drain_rate_mb_s(),
        report.busy.as_secs_f64(),
        report.elapsed.as_secs_f64()
    );
    for w in &report.warnings {
        eprintln!("vftrace capture: warning: {w}");
    }
}
