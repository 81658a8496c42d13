//! `vftrace demo-profile`: the sampling profiler on the example unikernel. The guest (built
//! with instrumentation, so it also traces itself) boots under KVM with QEMU's gdb stub and its
//! RAM in a file and runs a long workload (`spin=N`); `vftrace profile`'s library samples its
//! stacks from the host meanwhile. Then its own trace is captured, each workload function's
//! share of samples is printed beside its share of traced time (sampling and tracing check
//! each other), and trace, samples and the host's KVM events (recorded meanwhile, unless
//! `--no-kvm`) are merged into one timeline.
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use vftrace_guest::{GuestRun, GuestSession};
use vftrace_kvm::process::{received_signal, ChildGuard, SignalGuard};
use vftrace_kvm::{RecordOptions, RecordSummary};
use vftrace_merge::MergeOptions;
use vftrace_profile::aggregate::inclusive_share;
use vftrace_profile::compare::{trace_inclusive_ns, trace_share};
use vftrace_profile::output::SAMPLES_FILE;
use vftrace_profile::{ImageSpec, ProfileOptions, Profiler, RunEnd, WalkLimits};

/// The long phase's functions, compared within `spin`.
const ROOT: &str = "guest::workload::spin";
const COMPARED: [&str; 5] = [
    "guest::workload::spin_round",
    "guest::workload::spin_alpha",
    "guest::workload::spin_beta",
    "guest::workload::spin_gamma",
    "guest::workload::spin_delta",
];

#[derive(clap::Args)]
pub struct Args {
    /// Output directory: profile/ (folded stacks, flame graph...), guest.uftrace/, timeline.json.
    #[arg(short, long, default_value = "vftrace-demo-profile")]
    pub output: PathBuf,
    /// The guest ELF (default: examples/unikernel, built when missing).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Guest command line; spin=N runs the long phase (about 0.3 ms per round).
    #[arg(long, default_value = "fib=24 sort=14 helpers=2000 spin=4000")]
    pub cmdline: String,
    /// Samples per second.
    #[arg(short = 'F', long = "frequency", default_value_t = 997.0)]
    pub hz: f64,
    /// Read stacks through the gdb stub instead of the RAM file (slower stops).
    #[arg(long)]
    pub no_ram: bool,
    /// Do not record host KVM events (no root or tracefs needed; the timeline has no host events).
    #[arg(long)]
    pub no_kvm: bool,
    /// Seconds before QEMU is stopped.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let elf = match &args.kernel {
        Some(k) => k.clone(),
        None => super::demo::guest_elf()?,
    };
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let profile_dir = args.output.join("profile");
    let guest_dir = args.output.join("guest.uftrace");
    let timeline = args.output.join("timeline.json");

    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot find a free TCP port for QEMU's gdb stub")?
        .port();
    let gdb = format!("127.0.0.1:{port}");
    let mut run = GuestRun::new(&elf);
    run.cmdline = args.cmdline.clone();
    run.timeout = Duration::from_secs(args.timeout);
    let session = GuestSession::new(&run);
    let mut argv: Vec<String> = session
        .command()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    argv.extend(["-gdb".to_string(), format!("tcp:{gdb}")]);
    eprintln!(
        "vftrace demo-profile: booting {} under KVM with its gdb stub at {gdb}, sampling at {} Hz{}...",
        elf.display(),
        args.hz,
        if args.no_ram { "" } else { ", stacks from its RAM file" }
    );

    let _signals = SignalGuard::install();
    let started = Instant::now();
    let kvm_file = args.output.join("host.kvm");
    let mut vm = if args.no_kvm {
        Vm::Plain(ChildGuard::spawn(&argv)?)
    } else {
        let opts = RecordOptions {
            output: kvm_file.clone(),
            duration: Some(run.timeout + Duration::from_secs(5)),
            command: argv,
            progress: false,
            ..RecordOptions::default()
        };
        Vm::Recorded(std::thread::spawn(move || vftrace_kvm::record(&opts)))
    };
    let opts = ProfileOptions {
        gdb: gdb.clone(),
        images: vec![ImageSpec {
            path: elf.clone(),
            load_address: None,
        }],
        hz: args.hz,
        ram: (!args.no_ram).then(|| session.ram_path().to_path_buf()),
        output_dir: profile_dir.clone(),
        limits: WalkLimits::default(),
        stub_timeout: Duration::from_secs(2),
    };
    let mut wait = || {
        received_signal().is_none() && started.elapsed() < Duration::from_secs(10) && vm.running()
    };
    let attached = Profiler::attach(opts, &mut wait);
    let mut profiler = match attached {
        Ok(p) => p,
        Err(e) => {
            // The VM is let go by attach; end it and say why if it is what failed.
            vm.finish()?;
            return Err(e.into());
        }
    };
    super::profile::print_attached(&profiler);
    let end = profiler.run(&mut |_| received_signal().is_none() && vm.running());
    let stacks = profiler.profile.stacks.clone();
    let summary = profiler.finish("The example unikernel, sampled from the host");
    let (status, host_tsc_hz) = vm.finish()?;
    let outcome = session.collect(status, started.elapsed())?;
    drop(session);
    print!("{}", outcome.serial);
    let summary = summary?;
    super::profile::print_summary(&summary);
    if let RunEnd::Failed(e) = end {
        return Err(e).context("sampling failed; the profile so far is written");
    }
    let tsc_hz = match host_tsc_hz {
        Some(hz) => hz,
        None => super::demo::host_tsc_hz_now()?,
    };
    super::demo::capture_guest(&outcome, &elf, &guest_dir, tsc_hz)?;

    let totals = trace_inclusive_ns(&guest_dir)?;
    let in_root = stacks
        .iter()
        .filter(|(s, _)| s.split(';').any(|f| f == ROOT))
        .map(|(_, n)| n)
        .sum::<u64>();
    if in_root == 0 {
        println!("no sample fell into {ROOT} (give spin=N on the command line for the long phase)");
    } else {
        println!("sampling vs tracing: inclusive share within {ROOT} ({in_root} samples in it)");
        println!("  {:<32} {:>8} {:>8}", "function", "samples", "trace");
        for f in COMPARED {
            let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0));
            println!(
                "  {f:<32} {:>8} {:>8}",
                pct(inclusive_share(&stacks, f, ROOT)),
                pct(trace_share(&totals, f, ROOT))
            );
        }
    }

    // The recording holds this VM's threads only (`vftrace kvm` records its command's).
    let opts = MergeOptions {
        guests: vec![guest_dir.clone()],
        kvm: (!args.no_kvm).then_some(kvm_file),
        profile: Some(profile_dir.join(SAMPLES_FILE)),
        tsc_hz: Some(tsc_hz),
        ..MergeOptions::default()
    };
    let merged = super::demo::merge_into(&timeline, &opts)?;
    println!(
        "flame graph: {}; timeline (guest functions, samples, host KVM events): {}",
        profile_dir.join("flamegraph.svg").display(),
        timeline.display()
    );
    super::demo::all_inputs_read(&merged)
}

/// The VM: QEMU alone, or QEMU run by a thread recording the host's KVM events meanwhile.
enum Vm {
    Plain(ChildGuard),
    Recorded(JoinHandle<anyhow::Result<RecordSummary>>),
}

impl Vm {
    fn running(&mut self) -> bool {
        match self {
            Vm::Plain(child) => !child.exited().unwrap_or(true),
            Vm::Recorded(recorder) => !recorder.is_finished(),
        }
    }

    /// Ends the VM if it still runs; its exit status and, if recorded, the TSC frequency the
    /// recording measured.
    fn finish(self) -> anyhow::Result<(Option<ExitStatus>, Option<f64>)> {
        match self {
            Vm::Plain(mut child) => Ok((child.finish(libc::SIGTERM)?, None)),
            Vm::Recorded(recorder) => {
                let summary = recorder
                    .join()
                    .map_err(|_| anyhow::anyhow!("the KVM event recorder panicked"))?
                    .context("recording host KVM events failed (run as root with tracefs, or pass --no-kvm)")?;
                eprintln!(
                    "vftrace demo-profile: {} host KVM events recorded",
                    summary.events
                );
                Ok((summary.command_status, summary.tsc_hz))
            }
        }
    }
}
