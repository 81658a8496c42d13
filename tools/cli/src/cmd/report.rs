//! `vftrace report`: per-function calls, total, self, average, min and max time (uftrace's
//! `report`), per thread with `--threads`, or the changes against another trace with `--diff`.
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use vftrace_convert::TerminalProgress;
use vftrace_report::report::{
    parse_fields, parse_sort_keys, write_diff, write_report, write_thread_report, AvgMode,
    ReportOptions,
};
use vftrace_report::stats::{collect, TraceStats};
use vftrace_report::{unless_closed_pipe, Color};

#[derive(clap::Args)]
pub struct Args {
    /// The trace directory (written by vftrace or `uftrace record`).
    #[arg(default_value = "uftrace.data")]
    pub dir: PathBuf,
    /// Sort by these keys: total, total_avg, total_min, total_max, self, self_avg, self_min,
    /// self_max, call, size, func (default: total).
    #[arg(short, long, value_name = "KEYS")]
    pub sort: Option<String>,
    /// Columns: total, total-avg, total-min, total-max, self, self-avg, self-min, self-max,
    /// call, size (`+KEYS` adds to the defaults, `all`, `none`).
    #[arg(short = 'f', long = "output-fields", value_name = "FIELDS")]
    pub fields: Option<String>,
    /// Show average, min and max of the total time.
    #[arg(long, conflicts_with = "avg_self")]
    pub avg_total: bool,
    /// Show average, min and max of the self time.
    #[arg(long)]
    pub avg_self: bool,
    /// One line per thread instead of per function (uftrace's --task).
    #[arg(long, visible_alias = "task", conflicts_with = "diff")]
    pub threads: bool,
    /// Show the change of every number from DIR to this trace.
    #[arg(long, value_name = "DIR2")]
    pub diff: Option<PathBuf>,
    /// Only these threads (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub tid: Option<Vec<u32>>,
    /// Colour: auto (on a terminal), always, never.
    #[arg(long, default_value = "auto", value_parser = Color::parse)]
    pub color: Color,
}

fn read(dir: &std::path::Path, tids: Option<&[u32]>) -> anyhow::Result<TraceStats> {
    let mut progress = TerminalProgress::new(format!("reading {}", dir.display()));
    let stats = collect(dir, tids, &mut |done, total| progress.update(done, total));
    progress.finish();
    let stats = stats.with_context(|| format!("reading the trace {}", dir.display()))?;
    for tid in &stats.missing_threads {
        eprintln!("vftrace: warning: thread {tid} is listed in info but has no data file; skipped");
    }
    let r = &stats.repairs;
    if r.lost_records > 0 {
        eprintln!(
            "vftrace: warning: {}: {} records were lost while recording; the numbers miss them",
            dir.display(),
            r.lost_records
        );
    }
    Ok(stats)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let avg = match (args.avg_total, args.avg_self) {
        (true, _) => AvgMode::Total,
        (_, true) => AvgMode::SelfTime,
        _ => AvgMode::None,
    };
    let stdout = std::io::stdout();
    let opts = ReportOptions {
        fields: parse_fields(args.fields.as_deref(), avg)?,
        sort: parse_sort_keys(args.sort.as_deref(), avg)?,
        color: args.color.enabled(stdout.is_terminal()),
    };
    let stats = read(&args.dir, args.tid.as_deref())?;
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = if args.threads {
        write_thread_report(&mut out, &stats, opts.color)
    } else if let Some(other) = &args.diff {
        let pair = read(other, args.tid.as_deref())?;
        write_diff(&mut out, &stats, &pair, &opts)
    } else {
        write_report(&mut out, &stats, &opts)
    };
    let flushed = written.and_then(|()| {
        out.flush()
            .map_err(|e| vftrace_report::ViewError::output("standard output", e))
    });
    unless_closed_pipe(flushed)?;
    Ok(())
}
