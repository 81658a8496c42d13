//! `vftrace kvm`: record host KVM events (logic in the vftrace-kvm crate).
use anyhow::Result;
use std::path::PathBuf;
use std::time::Duration;
use vftrace_kvm::{record, RecordOptions, StopReason, DEFAULT_EVENTS};

use super::parse_seconds;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    vftrace kvm -o host.kvm -- qemu-system-x86_64 -accel kvm ...\n  \
    vftrace kvm -o host.kvm --duration 10\n  \
    vftrace kvm -o host.kvm -p 4242 -d 5   (a running VMM)\n  \
    vftrace kvm -o host.kvm            (until Ctrl-C)\n\n\
    Needs root (tracefs). kvm:kvm_write_tsc_offset is always recorded. With a command or --pid only \
    its threads and descendants are recorded, with the scheduler's view of them (sched_switch, \
    sched_wakeup). The command's exit status becomes vftrace's.")]
pub struct Args {
    /// Capture file to write.
    #[arg(short, long, default_value = "host.kvm")]
    output: PathBuf,
    /// Events to record, comma-separated (`kvm_pio` or `system:name`); default: a useful KVM set.
    #[arg(short, long, value_delimiter = ',')]
    events: Vec<String>,
    /// Ring buffer size per CPU, in KiB.
    #[arg(long, default_value_t = 8192)]
    buffer_kb: u32,
    /// Stop after this many seconds (fractions allowed); also ends the command.
    #[arg(short, long, value_parser = parse_seconds)]
    duration: Option<Duration>,
    /// Record this running process (a VMM), its threads and descendants; repeatable.
    #[arg(short, long = "pid")]
    pids: Vec<u32>,
    /// Do not show the event count while recording.
    #[arg(short, long)]
    quiet: bool,
    /// Command to run while recording.
    #[arg(last = true)]
    command: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    if args.command.is_empty() && args.pids.is_empty() && args.duration.is_none() && !args.quiet {
        eprintln!(
            "vftrace kvm: recording until Ctrl-C (default events: kvm_write_tsc_offset {})",
            DEFAULT_EVENTS.join(" ")
        );
    }
    let summary = record(&RecordOptions {
        events: args.events,
        output: args.output,
        buffer_kb: args.buffer_kb,
        duration: args.duration,
        command: args.command,
        pids: args.pids,
        progress: !args.quiet,
    })?;
    eprintln!(
        "vftrace kvm: wrote {} events to {} in {:.2} s ({} lost; TSC {})",
        summary.events,
        summary.output.display(),
        summary.elapsed.as_secs_f64(),
        summary.lost_events,
        summary
            .tsc_hz
            .map_or("frequency unknown".into(), |hz| format!(
                "{:.3} MHz",
                hz / 1e6
            )),
    );
    if let Some(status) = summary.command_status {
        if !status.success() {
            use std::os::unix::process::ExitStatusExt;
            eprintln!("vftrace kvm: the command failed ({status})");
            // Everything is written and the instance is removed: pass the status on.
            let code = status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            std::process::exit(code);
        }
    } else if let StopReason::Signal(signal) = summary.stop {
        eprintln!("vftrace kvm: stopped by signal {signal}");
    }
    Ok(())
}
