//! `vftrace replay`: the call tree with durations, as `uftrace replay` shows it.
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use vftrace_report::replay::{replay, NamePattern, ReplayOptions};
use vftrace_report::time::parse_duration;
use vftrace_report::{unless_closed_pipe, Color, ViewError};

#[derive(clap::Args)]
pub struct Args {
    /// The trace directory (written by vftrace or `uftrace record`).
    #[arg(default_value = "uftrace.data")]
    pub dir: PathBuf,
    /// Show calls nested at most DEPTH deep (from the root, or from a -F function).
    #[arg(short = 'D', long, value_name = "DEPTH")]
    pub depth: Option<u32>,
    /// Only these functions and what they call (exact name, or a regex; repeatable, or
    /// separated by `;`).
    #[arg(short = 'F', long = "filter", value_name = "FUNC")]
    pub filter: Vec<String>,
    /// Not these functions nor what they call (exact name, or a regex; repeatable, or
    /// separated by `;`).
    #[arg(short = 'N', long = "notrace", value_name = "FUNC")]
    pub notrace: Vec<String>,
    /// Hide calls shorter than TIME (e.g. 500ns, 10us, 1.5ms; no unit means ns).
    #[arg(short = 't', long = "time-filter", value_name = "TIME", value_parser = parse_duration)]
    pub time_filter: Option<u64>,
    /// Only these threads (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub tid: Option<Vec<u32>>,
    /// One thread after another instead of interleaved in time order.
    #[arg(long)]
    pub per_thread: bool,
    /// Colour: auto (on a terminal), always, never.
    #[arg(long, default_value = "auto", value_parser = Color::parse)]
    pub color: Color,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // As uftrace, one option may hold several patterns separated by `;`.
    let patterns = |list: &[String]| -> anyhow::Result<Vec<NamePattern>> {
        Ok(list
            .iter()
            .flat_map(|p| p.split(';'))
            .filter(|p| !p.is_empty())
            .map(NamePattern::new)
            .collect::<Result<_, _>>()?)
    };
    let stdout = std::io::stdout();
    let opts = ReplayOptions {
        depth: args.depth,
        filters: patterns(&args.filter)?,
        notrace: patterns(&args.notrace)?,
        time_filter: args.time_filter.unwrap_or(0),
        tids: args.tid,
        per_thread: args.per_thread,
        color: args.color.enabled(stdout.is_terminal()),
    };
    // The replay writes in blocks of its own.
    let mut out = stdout.lock();
    let result = replay(&args.dir, &opts, &mut out).and_then(|summary| {
        out.flush()
            .map_err(|e| ViewError::output("standard output", e))?;
        Ok(summary)
    });
    let Some(summary) =
        unless_closed_pipe(result).with_context(|| format!("replaying {}", args.dir.display()))?
    else {
        return Ok(());
    };
    for pattern in &summary.unmatched_patterns {
        eprintln!("vftrace: warning: no function of the trace matches {pattern:?} (-F/-N)");
    }
    for tid in &summary.missing_threads {
        eprintln!("vftrace: warning: thread {tid} is listed in info but has no data file; skipped");
    }
    let r = &summary.repairs;
    if r.unmatched_exits + r.closed_by_depth > 0 {
        eprintln!(
            "vftrace: note: repaired unbalanced records: {} exits without entry skipped, {} calls closed at a shallower record",
            r.unmatched_exits, r.closed_by_depth
        );
    }
    Ok(())
}
