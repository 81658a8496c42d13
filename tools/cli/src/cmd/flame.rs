//! `vftrace flame`: a flame graph of inclusive time (SVG, drawn by inferno), from a trace
//! directory or from a file of folded stacks (what `vftrace profile` writes).
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use vftrace_convert::TerminalProgress;
use vftrace_report::flame::{fold_trace, read_folded, write_folded, write_svg};
use vftrace_report::output::write_file;
use vftrace_report::{unless_closed_pipe, ViewError};

#[derive(clap::Args)]
pub struct Args {
    /// A trace directory, or a file of folded stacks (`frame;frame;frame COUNT` lines).
    #[arg(default_value = "uftrace.data")]
    pub input: PathBuf,
    /// Output file (default: flame.svg; with --folded, standard output).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Write the folded stacks (counts in ns) instead of drawing them.
    #[arg(long)]
    pub folded: bool,
    /// Title of the graph (default: the input's name).
    #[arg(long)]
    pub title: Option<String>,
    /// Only these threads of a trace (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub tid: Option<Vec<u32>>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let input = &args.input;
    let folded = if input.is_dir() {
        let mut progress = TerminalProgress::new(format!("reading {}", input.display()));
        let folded = fold_trace(input, args.tid.as_deref(), &mut |done, total| {
            progress.update(done, total)
        });
        progress.finish();
        folded.with_context(|| format!("reading the trace {}", input.display()))?
    } else {
        read_folded(input)?
    };
    if folded.truncated > 0 {
        eprintln!(
            "vftrace: warning: {} calls on call paths beyond the first {} distinct ones are counted in their caller",
            folded.truncated,
            vftrace_report::flame::MAX_STACKS
        );
    }
    let title = args
        .title
        .clone()
        .unwrap_or_else(|| format!("vftrace: {}", input.display()));
    let output = match (&args.output, args.folded) {
        (Some(o), _) => o.clone(),
        (None, true) => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let result = write_folded(&folded, &mut out).and_then(|()| {
                out.flush()
                    .map_err(|e| ViewError::output("standard output", e))
            });
            unless_closed_pipe(result)?;
            return Ok(());
        }
        (None, false) => PathBuf::from("flame.svg"),
    };
    write_file(&output, &[input.as_path()], |out| {
        if args.folded {
            write_folded(&folded, out)
        } else {
            write_svg(&folded, &title, out)
        }
    })?;
    eprintln!(
        "vftrace: {} stacks -> {}",
        folded.stacks.len(),
        output.display()
    );
    Ok(())
}
