//! The guest's ELF images at their load addresses (`IMAGE[@LOAD_ADDRESS]`): function names for
//! addresses, function starts and code bytes for the walk's leaf frame, where vftrace's own
//! tracer lives in them (its return trampoline and thread-local block, see [`crate::shadow`]),
//! and a check that the guest really runs these images.
//!
//! Functions come from the symbols crate (the same reader `vftrace sym` uses); segments, the
//! TLS template and code bytes from the ELF file directly.
use std::borrow::Cow;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSegment, ObjectSymbol, SegmentFlags, SymbolKind};
use vftrace_symbols::{elf_functions, ElfSymbols, ImageKind, SymError};

use crate::shadow::{TracerLayout, TLS_WORD_BYTES};

mod matching;
pub use matching::Verification;

const PF_X: u32 = 1;
const PT_TLS: u32 = 7;

/// `IMAGE[@LOAD_ADDRESS]` as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    pub path: PathBuf,
    pub load_address: Option<u64>,
}

impl ImageSpec {
    /// Splits at the last `@` when what follows is a number (decimal or 0x hex); a path may
    /// contain `@` itself.
    pub fn parse(
        text: &str,
        parse_number: impl Fn(&str) -> Option<u64>,
    ) -> Result<ImageSpec, String> {
        if let Some((path, addr)) = text.rsplit_once('@') {
            if let Some(load) = parse_number(addr) {
                if path.is_empty() {
                    return Err(format!("{text:?}: no image before '@'"));
                }
                return Ok(ImageSpec {
                    path: PathBuf::from(path),
                    load_address: Some(load),
                });
            }
            if addr.starts_with("0x") || addr.chars().all(|c| c.is_ascii_digit()) {
                return Err(format!(
                    "{text:?}: {addr:?} is not a load address (0x... for hex)"
                ));
            }
        }
        Ok(ImageSpec {
            path: PathBuf::from(text),
            load_address: None,
        })
    }
}

/// Why an image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Symbols(#[from] SymError),
    #[error("{}: {message}", path.display())]
    Elf { path: PathBuf, message: String },
}

/// One image, placed.
pub struct Image {
    pub path: PathBuf,
    /// What to add to a link-time address for the runtime one.
    pub bias: u64,
    /// Runtime address range of its loadable segments.
    pub start: u64,
    pub end: u64,
    symbols: ElfSymbols,
    /// Demangled names, by index of `symbols.functions`.
    names: Vec<String>,
    /// Executable segments: runtime address and the file's bytes.
    code: Vec<(u64, Vec<u8>)>,
    pub tracer: Option<TracerLayout>,
    /// False for a position-independent image given without a load address: where it is must
    /// be found ([`Images::place_by_code`]).
    pub placed: bool,
}

/// All images; looks addresses up in them.
pub struct Images {
    pub images: Vec<Image>,
}

/// A function an address falls in.
pub struct FunctionAt<'a> {
    pub name: &'a str,
    /// Runtime address of its first instruction.
    pub start: u64,
}

impl Images {
    pub fn load(specs: &[ImageSpec]) -> Result<Images, ImageError> {
        let images = specs
            .iter()
            .map(Image::load)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Images { images })
    }

    /// Images whose address ranges overlap (pairs of paths), for a warning: the first one
    /// listed wins.
    pub fn overlaps(&self) -> Vec<(&Path, &Path)> {
        let mut out = Vec::new();
        for (i, a) in self.images.iter().enumerate() {
            for b in &self.images[i + 1..] {
                if a.start < b.end && b.start < a.end {
                    out.push((a.path.as_path(), b.path.as_path()));
                }
            }
        }
        out
    }

    fn image_at(&self, addr: u64) -> Option<&Image> {
        self.images
            .iter()
            .find(|i| (i.start..i.end).contains(&addr))
    }

    pub fn function_at(&self, addr: u64) -> Option<FunctionAt<'_>> {
        let image = self.image_at(addr)?;
        let link = addr.wrapping_sub(image.bias);
        let f = image.symbols.function_at(link)?;
        let idx = image.symbols.functions.partition_point(|g| g.addr < f.addr);
        Some(FunctionAt {
            name: &image.names[idx],
            start: f.addr.wrapping_add(image.bias),
        })
    }

    /// The frame's name: the function, `IMAGE+0xOFFSET` inside an image but outside its
    /// functions, `[unknown]` elsewhere (perf's name for it).
    pub fn frame_name(&self, addr: u64) -> Cow<'_, str> {
        if let Some(f) = self.function_at(addr) {
            return Cow::Borrowed(f.name);
        }
        match self.image_at(addr) {
            Some(image) => Cow::Owned(format!(
                "{}+{:#x}",
                image
                    .path
                    .file_name()
                    .map_or(Cow::Borrowed("?"), |n| n.to_string_lossy()),
                addr - image.start
            )),
            None => Cow::Borrowed("[unknown]"),
        }
    }

    /// The file's bytes at runtime address `addr`, if it lies in an executable segment.
    pub fn code(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let image = self.image_at(addr)?;
        image.code.iter().find_map(|(start, bytes)| {
            let off = addr.checked_sub(*start)? as usize;
            bytes.get(off..off.checked_add(len)?)
        })
    }

    /// The first image built with vftrace's tracer, if any.
    pub fn tracer(&self) -> Option<&TracerLayout> {
        self.images.iter().find_map(|i| i.tracer.as_ref())
    }
}

impl Image {
    fn load(spec: &ImageSpec) -> Result<Image, ImageError> {
        let symbols = elf_functions(&spec.path)?;
        let elf_err = |message: String| ImageError::Elf {
            path: spec.path.clone(),
            message,
        };
        let data = std::fs::read(&spec.path).map_err(|e| elf_err(format!("cannot read: {e}")))?;
        let file = object::File::parse(&*data)
            .map_err(|e| elf_err(format!("not a valid ELF file: {e}")))?;
        if file.architecture() != object::Architecture::X86_64 {
            return Err(elf_err(format!(
                "a {:?} image; only x86_64 guests can be sampled",
                file.architecture()
            )));
        }
        let bias = symbols.load_bias(spec.load_address);
        let mut start = u64::MAX;
        let mut end = 0u64;
        let mut code = Vec::new();
        for segment in file.segments() {
            let lo = segment.address().wrapping_add(bias);
            let hi = lo.saturating_add(segment.size());
            start = start.min(lo);
            end = end.max(hi);
            let executable = matches!(segment.flags(), SegmentFlags::Elf { p_flags, .. } if p_flags.0 & PF_X != 0);
            if executable {
                let bytes = segment
                    .data()
                    .map_err(|e| elf_err(format!("cannot read a segment: {e}")))?;
                code.push((lo, bytes.to_vec()));
            }
        }
        if start >= end {
            return Err(elf_err("no loadable segment".into()));
        }
        let names = symbols
            .functions
            .iter()
            .map(|f| demangle(&f.name))
            .collect();
        let tracer = tracer_layout(&file, &symbols, bias).map_err(elf_err)?;
        let placed = spec.load_address.is_some() || symbols.kind == ImageKind::Exec;
        Ok(Image {
            placed,
            path: spec.path.clone(),
            bias,
            start,
            end,
            symbols,
            names,
            code,
            tracer,
        })
    }

    pub fn kind(&self) -> ImageKind {
        self.symbols.kind
    }

    /// Moves the image to load bias `bias`.
    fn rebase(&mut self, bias: u64) {
        let delta = bias.wrapping_sub(self.bias);
        self.start = self.start.wrapping_add(delta);
        self.end = self.end.wrapping_add(delta);
        for (addr, _) in &mut self.code {
            *addr = addr.wrapping_add(delta);
        }
        if let Some(t) = &mut self.tracer {
            t.trampoline = t.trampoline.wrapping_add(delta);
        }
        self.bias = bias;
        self.placed = true;
    }
}

/// Rust names without their hashes (`guest::workload::fib`), others as they are.
fn demangle(name: &str) -> String {
    match rustc_demangle::try_demangle(name) {
        Ok(d) => format!("{d:#}"),
        Err(_) => name.to_string(),
    }
}

/// Where vftrace's tracer keeps its shadow stack in an image built with it: the return
/// trampoline's address and the thread-local block's offset from the thread pointer
/// (local-exec TLS, x86_64 variant II: the block ends at the thread pointer).
fn tracer_layout(
    file: &object::File<'_>,
    symbols: &ElfSymbols,
    bias: u64,
) -> Result<Option<TracerLayout>, String> {
    let Some(trampoline) = symbols
        .functions
        .iter()
        .find(|f| f.name == "vftrace_return_trampoline")
    else {
        return Ok(None);
    };
    let tls_symbol = vftrace_format::abi::shadow_layout::TLS_SYMBOL;
    let Some(block) = file
        .symbols()
        .find(|s| s.kind() == SymbolKind::Tls && s.name() == Ok(tls_symbol))
    else {
        return Err(format!("has vftrace_return_trampoline but no {tls_symbol} TLS symbol: a vftrace build this tool does not know"));
    };
    let Some(tls) = elf_tls_segment(file) else {
        return Err("has vftrace's TLS block but no PT_TLS segment".into());
    };
    let (memsz, align) = tls;
    if block.address().saturating_add(TLS_WORD_BYTES) > memsz {
        return Err(format!(
            "its TLS segment ({memsz} bytes) cannot hold vftrace's thread-local word at offset {}: a vftrace build this tool does not know",
            block.address()
        ));
    }
    let block_size = memsz.next_multiple_of(align.max(1));
    Ok(Some(TracerLayout {
        trampoline: trampoline.addr.wrapping_add(bias),
        word_from_tp: block.address() as i64 - block_size as i64,
    }))
}

/// (p_memsz, p_align) of the PT_TLS program header.
fn elf_tls_segment(file: &object::File<'_>) -> Option<(u64, u64)> {
    use object::read::elf::{FileHeader, ProgramHeader};
    use object::Endianness;
    match file {
        object::File::Elf64(elf) => {
            let endian: Endianness = elf.endian();
            elf.elf_header()
                .program_headers(endian, elf.data())
                .ok()?
                .iter()
                .find(|ph| ph.p_type(endian).0 == PT_TLS)
                .map(|ph| (ph.p_memsz(endian), ph.p_align(endian)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(t: &str) -> Option<u64> {
        match t.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => t.parse().ok(),
        }
    }

    #[test]
    fn image_specs() {
        assert_eq!(
            ImageSpec::parse("k.elf@0x1000", num).unwrap(),
            ImageSpec {
                path: "k.elf".into(),
                load_address: Some(0x1000)
            }
        );
        assert_eq!(
            ImageSpec::parse("a@b/k.elf", num).unwrap().path,
            Path::new("a@b/k.elf")
        );
        assert!(ImageSpec::parse("k@0xzz", num)
            .unwrap_err()
            .contains("not a load address"));
        assert!(ImageSpec::parse("@0x10", num).is_err());
    }

    #[test]
    fn rust_names_lose_their_hashes() {
        assert_eq!(
            demangle("_ZN5guest8workload3fib17hbdc68a0acabb300eE"),
            "guest::workload::fib"
        );
        assert_eq!(demangle("memcpy"), "memcpy");
    }
}
