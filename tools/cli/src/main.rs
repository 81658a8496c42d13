//! `vftrace`: the host-side tools. One file per command under `cmd/`.
use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(
    name = "vftrace",
    version,
    about = "Virtualization-aware function tracing: host tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Record host KVM events from tracefs (x86-tsc clock) while a command runs, for a time, or until Ctrl-C.
    Kvm(cmd::kvm::Args),
    /// Convert a uftrace directory to Chrome trace JSON or Perfetto protobuf, streaming.
    Convert(cmd::convert::Args),
    /// Per-function calls, total, self, avg/min/max time of a trace (as `uftrace report`).
    Report(cmd::report::Args),
    /// The call tree of a trace with durations (as `uftrace replay`).
    Replay(cmd::replay::Args),
    /// What a trace recorded: program, threads, records, lost records, clock, time span.
    Info(cmd::info::Args),
    /// A flame graph (SVG) of a trace's inclusive time, or of a file of folded stacks.
    Flame(cmd::flame::Args),
    /// Put a guest trace, host KVM events and host program traces on one timeline.
    Merge(cmd::merge::Args),
    /// Write a uftrace .sym file for an ELF file, relocated to a load address.
    Sym(cmd::sym::Args),
    /// Turn a guest's vftrace byte stream into a uftrace directory.
    Capture(cmd::capture::Args),
    /// Boot the example unikernel under KVM, trace it and the host, and show the merged result.
    Demo(cmd::demo::Args),
    /// Run an unmodified instrumented program and record its trace (the whole process family).
    Record(cmd::record::Args),
    /// Sample a running guest's vCPU stacks through its VMM's gdb stub: folded stacks, flame graph.
    Profile(cmd::profile::Args),
    /// Profile the example unikernel from the host while it traces itself; compare and merge both.
    DemoProfile(cmd::demo_profile::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // Its exit status is the traced program's.
        Command::Record(a) => return cmd::record::run(a),
        Command::Kvm(a) => cmd::kvm::run(a),
        Command::Convert(a) => cmd::convert::run(a),
        Command::Report(a) => cmd::report::run(a),
        Command::Replay(a) => cmd::replay::run(a),
        Command::Info(a) => cmd::info::run(a),
        Command::Flame(a) => cmd::flame::run(a),
        Command::Merge(a) => cmd::merge::run(a),
        Command::Sym(a) => cmd::sym::run(a),
        Command::Capture(a) => cmd::capture::run(a),
        Command::Demo(a) => cmd::demo::run(a),
        Command::Profile(a) => cmd::profile::run(a),
        Command::DemoProfile(a) => cmd::demo_profile::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vftrace: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
