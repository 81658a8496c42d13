//! `vftrace capture`: a guest's vftrace byte stream -> a uftrace directory.
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use vftrace_guest::{capture, CaptureOptions, CaptureReport};

#[derive(clap::Args)]
pub struct Args {
    /// The stream the guest wrote (a file, or `-` for standard input).
    pub stream: PathBuf,
    /// Output uftrace directory.
    #[arg(short, long, default_value = "uftrace.data")]
    pub output: PathBuf,
    /// The guest's ELF image, for function names.
    #[arg(long)]
    pub elf: Option<PathBuf>,
    /// TSC frequency, e.g. 2596130000, 2596.13MHz or 2.6GHz, when the guest did not report
    /// one (or to override it).
    #[arg(long, value_parser = super::merge::parse_hz)]
    pub tsc_hz: Option<f64>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let from_stdin = args.stream.as_os_str() == "-";
    let opts = CaptureOptions {
        elf: args.elf.as_deref(),
        tsc_hz: args.tsc_hz,
        stream_file: (!from_stdin).then_some(args.stream.as_path()),
    };
    let report = if from_stdin {
        capture(std::io::stdin().lock(), &args.output, &opts)
    } else {
        let file = File::open(&args.stream)
            .with_context(|| format!("cannot open {}", args.stream.display()))?;
        capture(file, &args.output, &opts)
    }
    .with_context(|| format!("{}: capture failed", args.stream.display()))?;
    if let Some(elf) = &args.elf {
        write_probe_names(elf, &args.output)?;
    }
    print_summary(&report, &args.output.display().to_string());
    if let Some(e) = &report.error {
        bail!(
            "{}: {e}; the {} frames before it were written to {} (a complete trace up to there)",
            args.stream.display(),
            report.frames,
            args.output.display()
        );
    }
    Ok(())
}

/// One paragraph about a capture, shared with `vftrace demo`.
pub fn print_summary(report: &CaptureReport, output: &str) {
    let name = report
        .header
        .as_ref()
        .map(|h| h.display_name())
        .unwrap_or_default();
    println!(
        "captured guest \"{name}\": {} records in {} thread(s), {} lost, {} frames, {} symbols, TSC {:.0} Hz -> {output}",
        report.records,
        report.tids.len(),
        report.lost(),
        report.frames,
        report.symbols,
        report.tsc_hz
    );
}

/// Copies the probe names the guest image declares (`vftrace::probe_names!`) beside its
/// captured trace (`vftrace.probes`), where `vftrace merge` finds them.
pub fn write_probe_names(elf: &Path, dir: &Path) -> anyhow::Result<()> {
    let names = vftrace_symbols::probe_names(elf)?;
    if !names.is_empty() {
        vftrace_format::probes::write_probe_names(dir, &names).with_context(|| {
            format!(
                "cannot write {}",
                dir.join(vftrace_format::probes::PROBES_FILE).display()
            )
        })?;
    }
    Ok(())
}
