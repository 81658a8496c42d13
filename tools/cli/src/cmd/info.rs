//! `vftrace info`: what was recorded (program, command line, threads, records, lost records,
//! clock, time span, exit status), as `uftrace info` and more.
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use vftrace_convert::TerminalProgress;
use vftrace_report::info::write_info;
use vftrace_report::{unless_closed_pipe, ViewError};

#[derive(clap::Args)]
pub struct Args {
    /// The trace directory (written by vftrace or `uftrace record`).
    #[arg(default_value = "uftrace.data")]
    pub dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut progress = TerminalProgress::new(format!("reading {}", args.dir.display()));
    let result = write_info(&args.dir, &mut out, &mut |done, total| {
        progress.update(done, total)
    })
    .and_then(|()| {
        out.flush()
            .map_err(|e| ViewError::output("standard output", e))
    });
    progress.finish();
    unless_closed_pipe(result).with_context(|| format!("reading {}", args.dir.display()))?;
    Ok(())
}
