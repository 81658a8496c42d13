//! `vftrace record`: trace an unmodified instrumented program (logic in the vftrace-record
//! crate). Its exit status is the program's, as `time` does.
use super::{parse_duration_ns, parse_size};
use clap::Parser;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use vftrace_format::pool::PoolMode;
use vftrace_record::{Options, SignalAction};

#[derive(Parser)]
pub struct Args {
    /// The trace directory (as uftrace's: `uftrace replay` reads it without -d).
    #[arg(short = 'd', long = "data", default_value = "uftrace.data")]
    data: PathBuf,
    /// Size of the trace pool in shared memory (e.g. 64M, 1G): memory stays bounded by it; the
    /// trace does not.
    #[arg(long, default_value = "128M", value_parser = size)]
    buffer: usize,
    /// Flight recorder: keep only the newest --buffer of records, written at the end (or on a
    /// `--signal SIG@finish`).
    #[arg(long)]
    ring: bool,
    /// When the pool is full, make the program wait for the recorder instead of losing records.
    #[arg(long, conflicts_with = "ring")]
    block: bool,
    /// Trace only calls up to this depth.
    #[arg(short = 'D', long)]
    depth: Option<u32>,
    /// Drop calls shorter than this (e.g. 10us, 1.5ms, 200ns).
    #[arg(short = 't', long = "time-filter", value_parser = duration)]
    time_filter: Option<u64>,
    /// Trace only functions matching this regular expression, and what they call (repeatable).
    #[arg(short = 'F', long = "filter")]
    filter: Vec<String>,
    /// Never trace functions matching this regular expression, nor what they call (repeatable).
    #[arg(short = 'N', long = "notrace")]
    notrace: Vec<String>,
    /// Start with tracing off (turn it on with --signal SIG@trace_on).
    #[arg(long)]
    disable: bool,
    /// SIG@ACTION: when the recorder gets signal SIG (e.g. SIGUSR1), do ACTION: trace_on,
    /// trace_off or finish (write the trace now; the program goes on untraced). Repeatable.
    #[arg(long = "signal", value_parser = signal_action)]
    signals: Vec<(i32, SignalAction)>,
    /// Bytes per chunk of the pool (records are handed over a chunk at a time). Small enough
    /// that a program ending thousands of short threads faster than the recorder gets the CPU
    /// has chunks for all of them (each thread holds one until it is drained), large enough
    /// that the hand-over costs nothing per record.
    #[arg(long, default_value = "16K", value_parser = size, hide = true)]
    chunk: usize,
    /// No progress line and no closing summary.
    #[arg(short, long)]
    quiet: bool,
    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<OsString>,
}

fn size(text: &str) -> Result<usize, String> {
    parse_size(text).ok_or_else(|| format!("{text:?} is not a size (e.g. 64M, 512K, 1G)"))
}

fn duration(text: &str) -> Result<u64, String> {
    parse_duration_ns(text).ok_or_else(|| format!("{text:?} is not a duration (e.g. 10us, 1.5ms)"))
}

fn signal_action(text: &str) -> Result<(i32, SignalAction), String> {
    let (sig, action) = text
        .split_once('@')
        .ok_or_else(|| format!("{text:?}: expected SIG@ACTION, e.g. SIGUSR1@trace_on"))?;
    let name = sig.trim_start_matches("SIG");
    let number = match name {
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "HUP" => libc::SIGHUP,
        "ALRM" => libc::SIGALRM,
        "CONT" => libc::SIGCONT,
        n => n
            .parse()
            .ok()
            .filter(|&n| (1..32).contains(&n) && ![libc::SIGKILL, libc::SIGSTOP].contains(&n))
            .ok_or_else(|| format!("{sig:?} is not a signal the recorder can catch"))?,
    };
    let action = match action {
        "trace_on" => SignalAction::TraceOn,
        "trace_off" => SignalAction::TraceOff,
        "finish" => SignalAction::Finish,
        a => {
            return Err(format!(
                "{a:?}: the actions are trace_on, trace_off and finish"
            ))
        }
    };
    Ok((number, action))
}

pub fn run(args: Args) -> ExitCode {
    let (program, rest) = args.command.split_first().expect("clap requires one");
    let opts = Options {
        program: program.to_string_lossy().into_owned(),
        args: rest.to_vec(),
        data: args.data.clone(),
        buffer: args.buffer,
        chunk_bytes: args.chunk.next_power_of_two().clamp(4096, 16 << 20) as u32,
        mode: if args.ring {
            PoolMode::Ring
        } else if args.block {
            PoolMode::Wait
        } else {
            PoolMode::StopWhenFull
        },
        max_depth: args.depth.unwrap_or(0),
        time_filter_ns: args.time_filter.unwrap_or(0),
        filters: args.filter,
        notrace: args.notrace,
        start_disabled: args.disable,
        signals: args.signals,
        quiet: args.quiet,
    };
    match vftrace_record::record(&opts) {
        Ok(outcome) => {
            if !args.quiet {
                eprintln!("{}", outcome.summary.describe(&args.data));
                if let Some(e) = outcome.ended.filter(|e| e.code() != 0) {
                    eprintln!("  the program {}", e.describe());
                }
            }
            ExitCode::from(outcome.ended.map_or(1, |e| e.code()).clamp(0, 255) as u8)
        }
        Err(e) => {
            eprintln!("vftrace record: {e:#}");
            ExitCode::FAILURE
        }
    }
}
