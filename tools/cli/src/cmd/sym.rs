//! `vftrace sym`: a uftrace `.sym` file for an ELF image.
use std::path::PathBuf;

use anyhow::Context;
use vftrace_symbols::{elf_functions, placement_in_trace_dir, write_sym_file, Placement};

#[derive(clap::Args)]
pub struct Args {
    /// The ELF image: a kernel, a static or PIE program, a shared object.
    pub elf: PathBuf,
    /// Where the image was loaded (hex with 0x, or decimal). ET_DYN: runtime address =
    /// load + st_value (default 0). ET_EXEC: where its first loadable page starts (default: as
    /// linked). With -d the trace's map gives it.
    #[arg(long, value_parser = parse_address)]
    pub load_address: Option<u64>,
    /// Output file (default: BASENAME.sym in the current directory).
    #[arg(short, long, conflicts_with = "trace_dir")]
    pub output: Option<PathBuf>,
    /// Write into this uftrace directory, under the name and base its sid-*.map implies.
    #[arg(short = 'd', long = "trace-dir")]
    pub trace_dir: Option<PathBuf>,
}

fn parse_address(text: &str) -> Result<u64, String> {
    super::parse_number(text)
        .ok_or_else(|| format!("{text:?} is not an address (use 0x... for hex)"))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let symbols = elf_functions(&args.elf)?;
    let (mut placement, out) = match (&args.trace_dir, &args.output) {
        (Some(dir), _) => placement_in_trace_dir(&symbols, dir)?,
        (None, Some(out)) => (Placement::default(), out.clone()),
        (None, None) => {
            let name = args
                .elf
                .file_name()
                .context("the ELF path has no file name")?;
            (
                Placement::default(),
                PathBuf::from(format!("{}.sym", name.to_string_lossy())),
            )
        }
    };
    if args.load_address.is_some() {
        placement.load_address = args.load_address;
    }
    write_sym_file(&symbols, &placement, &out)?;
    let bias = symbols.load_bias(placement.load_address);
    outln!(
        "{}: {} functions ({}{}{}), load bias {:#x} -> {}",
        args.elf.display(),
        symbols.functions.len(),
        symbols.kind,
        symbols
            .build_id_hex()
            .map(|id| format!(", build-id {id}"))
            .unwrap_or_default(),
        if symbols.from_dynsym {
            ", from .dynsym: the file is stripped"
        } else {
            ""
        },
        bias,
        out.display()
    );
    Ok(())
}
