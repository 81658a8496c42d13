//! `vftrace convert`: a uftrace directory to Chrome trace JSON or Perfetto protobuf.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use vftrace_convert::{
    convert_dir, ConvertError, ConvertOptions, OutputFormat, TerminalProgress, TimelineOutput,
};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// Chrome trace event JSON (Perfetto UI, chrome://tracing, speedscope, scripts).
    Json,
    /// Perfetto protobuf: several times smaller, opens fastest in ui.perfetto.dev.
    Perfetto,
}

#[derive(clap::Args)]
pub struct Args {
    /// The trace directory (written by vftrace or `uftrace record`).
    #[arg(default_value = "uftrace.data")]
    pub dir: PathBuf,
    /// Output file; *.json is Chrome JSON, *.pftrace / *.perfetto-trace / *.pb is Perfetto.
    #[arg(short, long, default_value = "trace.pftrace")]
    pub output: PathBuf,
    /// Output format, if the file name does not tell.
    #[arg(short, long, value_enum)]
    pub format: Option<Format>,
    /// Nanoseconds added to every timestamp.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub time_offset_ns: i64,
    /// Convert only these thread ids (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub tid: Option<Vec<u32>>,
    /// Convert data files cut short or damaged up to the damage, with a warning, instead of
    /// failing.
    #[arg(long)]
    pub lenient: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let format = args.format.map(|f| match f {
        Format::Json => OutputFormat::ChromeJson,
        Format::Perfetto => OutputFormat::Perfetto,
    });
    let mut output = TimelineOutput::create(&args.output, format, &[&args.dir])?;
    let opts = ConvertOptions {
        time_offset_ns: args.time_offset_ns,
        tids: args.tid,
        lenient: args.lenient,
        ..Default::default()
    };
    let started = Instant::now();
    let mut progress = TerminalProgress::new("converting");
    let converted = convert_dir(&args.dir, &mut *output.sink, &opts, &mut |done, total| {
        progress.update(done, total)
    });
    progress.finish();
    let summary = converted.map_err(|e| {
        let hint = match e {
            ConvertError::Records(_) => "; --lenient converts what comes before the damage",
            _ => "",
        };
        anyhow::anyhow!(
            "converting {}: {e}{hint} ({} was not written)",
            args.dir.display(),
            args.output.display()
        )
    })?;
    output
        .sink
        .finish()
        .with_context(|| format!("writing {}", args.output.display()))?;
    output.commit()?;
    let secs = started.elapsed().as_secs_f64();
    let out_bytes = std::fs::metadata(&args.output).map_or(0, |m| m.len());
    eprintln!(
        "vftrace: {} records of {} thread(s), {:.1} MB of .dat in {:.2} s ({:.0} MB/s) -> {} ({:.1} MB, {} slices)",
        summary.records,
        summary.threads,
        summary.dat_bytes as f64 / 1e6,
        secs,
        summary.dat_bytes as f64 / 1e6 / secs.max(1e-9),
        args.output.display(),
        out_bytes as f64 / 1e6,
        summary.slices
    );
    for e in &summary.damaged {
        eprintln!("vftrace: warning: {e}; converted what comes before it");
    }
    for tid in &summary.missing_threads {
        eprintln!("vftrace: warning: thread {tid} is listed in info but has no data file; skipped");
    }
    let r = &summary.repairs;
    if r.lost_markers > 0 {
        eprintln!("vftrace: warning: {} records were lost while recording ({} LOST markers shown as instants)", r.lost_records, r.lost_markers);
    }
    if r.unmatched_exits + r.closed_by_depth + r.closed_at_end + r.time_inversions > 0 {
        eprintln!(
            "vftrace: note: repaired unbalanced records: {} exits without entry skipped, {} slices closed at a shallower record, \
             {} closed at the thread's end, {} timestamps going backwards",
            r.unmatched_exits, r.closed_by_depth, r.closed_at_end, r.time_inversions
        );
    }
    Ok(())
}
