//! `vftrace profile`: sample a running guest's vCPU stacks through its VMM's gdb stub (logic in
//! the vftrace-profile crate), for a time, while a command runs, or until Ctrl-C.
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vftrace_kvm::process::{received_signal, ChildGuard, SignalGuard};
use vftrace_profile::{
    ImageSpec, ProfileOptions, ProfileSummary, Profiler, Progress, RunEnd, WalkLimits,
};

use super::parse_seconds;

/// How long a command has to open its gdb port.
const STUB_STARTUP: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    vftrace profile --gdb 127.0.0.1:1234 --elf guest.elf -d 10 -o prof\n  \
    vftrace profile --gdb 127.0.0.1:1234 --ram /dev/shm/vm.ram --elf kernel --elf app@0x400000 \
    -o prof -- qemu-system-x86_64 -gdb tcp:127.0.0.1:1234 ...\n\n\
    Writes DIR/stacks.folded (flamegraph.pl/inferno input), DIR/flamegraph.svg, DIR/vcpus.txt \
    (samples per vCPU, CR3 and CPL) and DIR/vftrace.samples (for `vftrace merge --profile`). \
    With --ram (QEMU: -object memory-backend-file,id=ram,size=...,mem-path=FILE,share=on \
    -machine ...,memory-backend=ram) stacks are read from the RAM file while the VM is stopped, \
    which keeps the pause per sample short. The command's exit status becomes vftrace's.")]
pub struct Args {
    /// The VMM's gdb stub (QEMU: -gdb tcp:HOST:PORT; uhyve: --gdb-port PORT).
    #[arg(long, value_name = "HOST:PORT")]
    gdb: String,
    /// A guest ELF image to name addresses with, at LOAD_ADDRESS if relocated (hex with 0x);
    /// repeatable: a kernel and its programs, a unikernel's kernel and application.
    #[arg(long = "elf", value_name = "IMAGE[@LOAD_ADDRESS]", value_parser = parse_image)]
    images: Vec<ImageSpec>,
    /// Samples per second. 997, not 1000, so as not to run in step with a guest's timer tick.
    #[arg(short = 'F', long = "frequency", value_name = "HZ", default_value_t = 997.0, value_parser = parse_rate)]
    hz: f64,
    /// Stop after this many seconds (fractions allowed); also ends the command.
    #[arg(short, long, value_parser = parse_seconds)]
    duration: Option<Duration>,
    /// The VM's RAM file (QEMU memory-backend-file with share=on): stacks are read from it
    /// through the guest's page tables instead of through the stub.
    #[arg(long, value_name = "FILE")]
    ram: Option<PathBuf>,
    /// Output directory.
    #[arg(short, long, default_value = "vftrace-profile")]
    output: PathBuf,
    /// Deepest stack walked, in frames.
    #[arg(long, default_value_t = 512)]
    max_frames: usize,
    /// Seconds to wait for any answer from the stub before giving up.
    #[arg(long, default_value = "2", value_parser = parse_seconds)]
    timeout: Duration,
    /// Do not show progress.
    #[arg(short, long)]
    quiet: bool,
    /// Command that runs the VM with its gdb stub; profiled until it exits.
    #[arg(last = true)]
    command: Vec<String>,
}

fn parse_image(text: &str) -> Result<ImageSpec, String> {
    ImageSpec::parse(text, super::parse_number)
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(hz) if (0.1..=100_000.0).contains(&hz) => Ok(hz),
        _ => Err(format!(
            "{text:?} is not a sampling rate between 0.1 and 100000 Hz"
        )),
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.max_frames < 2 {
        bail!("--max-frames must be at least 2");
    }
    let _signals = SignalGuard::install();
    let mut child = ChildGuard::spawn(&args.command)?;
    let has_command = !args.command.is_empty();
    let opts = ProfileOptions {
        gdb: args.gdb.clone(),
        images: args.images.clone(),
        hz: args.hz,
        ram: args.ram.clone(),
        output_dir: args.output.clone(),
        limits: WalkLimits {
            max_frames: args.max_frames,
            ..WalkLimits::default()
        },
        stub_timeout: args.timeout,
    };
    let started = Instant::now();
    let mut child_gone = false;
    let mut wait_for_stub = || {
        if !has_command || received_signal().is_some() || started.elapsed() > STUB_STARTUP {
            return false;
        }
        child_gone = child.exited().unwrap_or(true);
        !child_gone
    };
    let attached = Profiler::attach(opts, &mut wait_for_stub);
    let mut profiler = match attached {
        Ok(p) => p,
        Err(e) if child_gone => {
            let status = child.finish(libc::SIGTERM)?;
            bail!(
                "the command exited ({}) before its gdb stub at {} took a connection: {e}",
                status.map_or("status unknown".into(), |s| s.to_string()),
                args.gdb
            );
        }
        Err(e) if has_command && started.elapsed() > STUB_STARTUP => {
            return Err(e).with_context(|| {
                format!(
                    "nothing listened at {} within {} s of starting the command; does it run the VM with -gdb tcp:{}?",
                    args.gdb,
                    STUB_STARTUP.as_secs(),
                    args.gdb
                )
            })
        }
        Err(e) => return Err(e.into()),
    };
    print_attached(&profiler);
    let show_progress = !args.quiet && std::io::stderr().is_terminal();
    if !args.quiet {
        eprintln!(
            "vftrace profile: sampling {} vCPU(s) at {} Hz through {}{} ({})",
            profiler.vcpus(),
            args.hz,
            args.gdb,
            if args.ram.is_some() {
                ", stacks from the RAM file"
            } else {
                ", stacks through the stub"
            },
            match (args.duration, has_command) {
                (Some(d), _) => format!("for {:.1} s", d.as_secs_f64()),
                (None, true) => "until the command exits".into(),
                (None, false) => "until Ctrl-C or the VM exits".into(),
            }
        );
    }
    let mut last_progress = Instant::now();
    let mut keep_going = |p: &Progress| {
        if received_signal().is_some() || args.duration.is_some_and(|d| p.elapsed >= d) {
            return false;
        }
        if has_command && child.exited().unwrap_or(true) {
            return false;
        }
        if show_progress && last_progress.elapsed() > Duration::from_millis(250) {
            last_progress = Instant::now();
            eprint!(
                "\rvftrace profile: {} samples, {:.1} s ",
                p.stops,
                p.elapsed.as_secs_f64()
            );
        }
        true
    };
    let end = profiler.run(&mut keep_going);
    if show_progress {
        eprint!("\r\x1b[K");
    }
    let what = describe_target(&args);
    let summary = profiler.finish(&what);
    let status = child.finish(received_signal().unwrap_or(libc::SIGTERM))?;
    let summary =
        summary.with_context(|| format!("writing the profile to {}", args.output.display()))?;
    print_summary(&summary);
    match end {
        RunEnd::Stopped => {
            if let Some(signal) = received_signal() {
                eprintln!("vftrace profile: stopped by signal {signal}");
            }
        }
        RunEnd::VmExited(how) => {
            let early = args
                .duration
                .is_some_and(|d| summary.elapsed + Duration::from_millis(100) < d);
            eprintln!(
                "vftrace profile: sampling ended after {:.2} s: {how}{}",
                summary.elapsed.as_secs_f64(),
                if early {
                    ", before the duration asked for; the profile so far is written"
                } else {
                    ""
                }
            );
        }
        RunEnd::Failed(e) => {
            return Err(anyhow::Error::new(e)).context(format!(
                "sampling stopped after {} samples; the profile so far is in {}",
                summary.stops,
                args.output.display()
            ));
        }
    }
    if let Some(status) = status {
        if !status.success() {
            use std::os::unix::process::ExitStatusExt;
            eprintln!("vftrace profile: the command failed ({status})");
            std::process::exit(
                status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            );
        }
    }
    Ok(())
}

/// The flame graph's title: the images, or that there were none.
fn describe_target(args: &Args) -> String {
    let names: Vec<String> = args
        .images
        .iter()
        .map(|i| {
            let name = i.path.file_name().map_or_else(
                || i.path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            match i.load_address {
                Some(a) => format!("{name}@{a:#x}"),
                None => name,
            }
        })
        .collect();
    if names.is_empty() {
        format!("Guest stacks through {} (no symbols)", args.gdb)
    } else {
        format!("Guest stacks of {}", names.join(", "))
    }
}

/// What attaching found out and warns of.
pub(crate) fn print_attached(profiler: &Profiler) {
    for n in &profiler.notes {
        eprintln!("vftrace profile: {n}");
    }
    for w in &profiler.warnings {
        eprintln!("vftrace profile: warning: {w}");
    }
}

/// The closing lines on stderr (stdout belongs to the command: the guest's console).
pub(crate) fn print_summary(s: &ProfileSummary) {
    eprintln!(
        "vftrace profile: {} stops of {} vCPU(s) in {:.2} s: {:.1} samples/s (asked {} Hz)",
        s.stops,
        s.vcpus,
        s.elapsed.as_secs_f64(),
        s.achieved_hz,
        s.asked_hz
    );
    if let (Some(p), Some(w)) = (&s.pauses, &s.walks) {
        eprintln!("vftrace profile: pause per sample: {p}");
        eprintln!(
            "vftrace profile: of which walking stacks: median {:.3} ms; attaching paused the VM {:.1} ms",
            w.median.as_secs_f64() * 1e3,
            s.setup_pause.as_secs_f64() * 1e3
        );
    }
    let cut: u64 = s.cuts.iter().map(|(_, n)| n).sum();
    let mut line = format!(
        "vftrace profile: stacks: {} complete, {cut} cut",
        s.complete
    );
    if !s.cuts.is_empty() {
        let reasons: Vec<String> = s.cuts.iter().map(|(r, n)| format!("{r}: {n}")).collect();
        line += &format!(" ({})", reasons.join(", "));
    }
    if s.without_registers > 0 {
        line += &format!(", {} vCPU stops without registers", s.without_registers);
    }
    if s.unresolved_trampolines > 0 {
        line += &format!(
            ", {} traced frames not found on the shadow stack",
            s.unresolved_trampolines
        );
    }
    eprintln!("{line}");
    let names: Vec<String> = s.written.iter().map(|p| p.display().to_string()).collect();
    eprintln!("vftrace profile: wrote {}", names.join(", "));
    if s.stops > 1 && s.achieved_hz < 0.9 * s.asked_hz {
        let median = s.pauses.map_or(0.0, |p| p.median.as_secs_f64() * 1e3);
        eprintln!(
            "vftrace profile: warning: asked for {} Hz but took {:.1} samples/s: a stop costs {median:.3} ms (median) and {} ticks came late; lower -F{}",
            s.asked_hz,
            s.achieved_hz,
            s.late_ticks,
            if s.stub_reads > 0 { " or give --ram (stacks were read through the stub)" } else { "" }
        );
    }
    for w in &s.warnings {
        eprintln!("vftrace profile: warning: {w}");
    }
}
