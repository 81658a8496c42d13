//! `vftrace merge`: guest functions, host KVM events and host programs on one timeline.
use std::path::{Path, PathBuf};

use vftrace_convert::TimelineOutput;
use vftrace_merge::{merge, MergeError, MergeOptions, DEFAULT_MARKER_PORT};

#[derive(clap::Args)]
pub struct Args {
    /// Guest trace directory (uftrace format with vftrace.clock, source=guest); repeatable:
    /// several guests of one capture each become a process.
    #[arg(long = "guest")]
    pub guests: Vec<PathBuf>,
    /// Host KVM event capture (`vftrace kvm`, trace-cmd report or tracefs text).
    #[arg(long)]
    pub kvm: Option<PathBuf>,
    /// Host program trace directory (vftrace, or uftrace on its default CLOCK_MONOTONIC); repeatable.
    #[arg(long = "host")]
    pub hosts: Vec<PathBuf>,
    /// Stack samples of `vftrace profile` (its output directory or vftrace.samples).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// I/O port the guest writes the low 32 bits of its TSC to (high 32 bits optionally to port + 4).
    #[arg(long, default_value_t = DEFAULT_MARKER_PORT, value_parser = parse_port)]
    pub marker_port: u16,
    /// TSC frequency, e.g. 2596130000, 2596.13MHz or 2.6GHz (default: detected).
    #[arg(long, value_parser = parse_hz)]
    pub tsc_hz: Option<f64>,
    /// Largest believable delay from a guest marker write to its kvm_pio, in microseconds.
    #[arg(long, default_value_t = 1000.0, value_parser = parse_latency_us)]
    pub max_marker_latency_us: f64,
    /// Output: *.json (Chrome trace JSON) or *.pftrace (Perfetto).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Use inputs cut short or damaged as far as they can be read (a capture whose recorder
    /// was killed, a truncated TID.dat), with a warning, instead of failing.
    #[arg(long)]
    pub lenient: bool,
}

fn parse_port(text: &str) -> Result<u16, String> {
    super::parse_number(text)
        .and_then(|v| u16::try_from(v).ok())
        .ok_or_else(|| format!("{text:?} is not a port number (0..0xffff, 0x... for hex)"))
}

/// A TSC frequency with an optional unit; 1 MHz to 100 GHz (anything else is a typo).
pub(crate) fn parse_hz(text: &str) -> Result<f64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (number, scale) = [("ghz", 1e9), ("mhz", 1e6), ("khz", 1e3), ("hz", 1.0)]
        .iter()
        .find_map(|(unit, scale)| {
            lower
                .strip_suffix(unit)
                .map(|n| (n.trim().to_string(), *scale))
        })
        .unwrap_or((lower.clone(), 1.0));
    match number.parse::<f64>() {
        Ok(v) if (1e6..=1e11).contains(&(v * scale)) => Ok(v * scale),
        _ => Err(format!(
            "{text:?} is not a TSC frequency between 1 MHz and 100 GHz (e.g. 2596130000, \
             2596.13MHz, 2.6GHz; the kernel log has it: `dmesg | grep tsc:`)"
        )),
    }
}

fn parse_latency_us(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a number of microseconds (>= 0)")),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = MergeOptions {
        guests: args.guests,
        kvm: args.kvm,
        hosts: args.hosts,
        profile: args.profile,
        marker_port: args.marker_port,
        tsc_hz: args.tsc_hz,
        max_marker_latency_ns: args.max_marker_latency_us * 1e3,
        lenient: args.lenient,
        ..MergeOptions::default()
    };
    let inputs: Vec<&Path> = opts
        .guests
        .iter()
        .chain(&opts.kvm)
        .chain(&opts.hosts)
        .map(PathBuf::as_path)
        .collect();
    let mut output = TimelineOutput::create(&args.output, None, &inputs)?;
    let report = merge(&opts, &mut *output.sink).map_err(|e| {
        let hint = if matches!(e, MergeError::Capture(_)) && !opts.lenient {
            " (if the capture was cut short, --lenient uses what it holds)"
        } else {
            ""
        };
        anyhow::anyhow!("{e}{hint}; {} was not written", args.output.display())
    })?;
    if !report.data_errors.is_empty() && !opts.lenient {
        super::print_out(&report.to_string())?;
        anyhow::bail!(
            "{} input file(s) could not be read to the end, so {} was not written; \
             --lenient writes what comes before the damage",
            report.data_errors.len(),
            args.output.display()
        );
    }
    // Committed before anything is printed: a reader of the summary that stops early
    // (`| head`) must not cost the output.
    output.commit()?;
    super::print_out(&format!("{report}wrote {}\n", args.output.display()))?;
    Ok(())
}
