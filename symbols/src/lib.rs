//! uftrace `.sym` files from ELF symbol tables, relocated to a load address.
//!
//! [`elf_functions`] reads the function symbols (`STT_FUNC`, `STT_GNU_IFUNC`) of any 32- or
//! 64-bit ELF image (a kernel, a static or PIE program, a shared object) together with what is
//! needed to place them: the image kind, the first loadable segment and the build-id.
//! [`write_sym_file`] writes them in uftrace's `.sym` format through `vftrace_format::sym`.
//!
//! Addresses in a `.sym` file are relative to the start of the module's first mapping (what
//! uftrace's own `record` writes, with the `SYM_REL_ADDR` feature). For an image mapped the
//! usual way that start is the runtime address of the page holding the first loadable segment,
//! so the file's content does not depend on the load address; [`Placement`] says where the
//! image was loaded and which mapping start the addresses are relative to.
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

use object::{Object, ObjectKind, ObjectSegment, ObjectSymbol, SymbolFlags};
use vftrace_format::output::OutputFile;
use vftrace_format::record::ADDR_MASK;
use vftrace_format::sym::Symbol;

/// Largest ELF file read (the whole file is read to find its symbol tables).
pub const MAX_ELF_BYTES: u64 = 2 << 30;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// Page size used to round the first loadable segment down to the start of its mapping.
const PAGE_SIZE: u64 = 4096;
const STT_FUNC: u8 = 2;
const STT_GNU_IFUNC: u8 = 10;
const STB_LOCAL: u8 = 0;
const STB_WEAK: u8 = 2;

/// `e_type` of an image that can be run or mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// `ET_EXEC`: runs at its link addresses (a kernel, a non-PIE program).
    Exec,
    /// `ET_DYN`: position independent (PIE program, shared object); runtime = load + st_value.
    Dyn,
}

impl fmt::Display for ImageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageKind::Exec => "ET_EXEC",
            ImageKind::Dyn => "ET_DYN",
        })
    }
}

/// Symbol binding, which picks the letter in the `.sym` file (`T`, `t`, `w`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Binding {
    Global,
    Weak,
    Local,
}

/// One function of the image, at its link-time address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfFunction {
    /// `st_value`: the link-time address.
    pub addr: u64,
    /// `st_size`; 0 for hand-written assembly that did not declare it.
    pub size: u64,
    pub name: String,
    pub binding: Binding,
}

impl ElfFunction {
    /// The `.sym` letter for this function: `T`, `t`, or `w` for weak (uftrace 0.13 keeps
    /// only `?TtwPKDdvu`, so nm's `W` would be dropped).
    pub fn type_char(&self) -> char {
        match self.binding {
            Binding::Global => 'T',
            Binding::Weak => 'w',
            Binding::Local => 't',
        }
    }
}

/// The functions of an ELF image and what is needed to relocate them.
#[derive(Clone, Debug)]
pub struct ElfSymbols {
    /// The file they were read from.
    pub path: PathBuf,
    pub kind: ImageKind,
    /// `p_vaddr` of the first `PT_LOAD` segment (lowest address).
    pub first_load_vaddr: u64,
    /// `e_entry`.
    pub entry: u64,
    /// Contents of the `NT_GNU_BUILD_ID` note, if any.
    pub build_id: Option<Vec<u8>>,
    /// Sorted by address; one function per address (globals win over weak over local names,
    /// then the lexically first name, so the result is deterministic).
    pub functions: Vec<ElfFunction>,
    /// True when the functions came from `.dynsym` because the file has no `.symtab`.
    pub from_dynsym: bool,
    /// Some code calls (or defines) `mcount`, `_mcount` or `__fentry__`: it was built with
    /// `-pg`, `-pg -mfentry` or `-Z instrument-mcount`.
    pub instrumented: bool,
    /// It has a program interpreter (`.interp`): a dynamically linked executable, which a
    /// library can be preloaded into.
    pub has_interpreter: bool,
}

impl ElfSymbols {
    /// The build-id as lowercase hex, the way uftrace prints it.
    pub fn build_id_hex(&self) -> Option<String> {
        self.build_id
            .as_ref()
            .map(|id| id.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Link address of the start of the image's first mapping (first `PT_LOAD`, page-aligned).
    pub fn link_base(&self) -> u64 {
        self.first_load_vaddr & !(PAGE_SIZE - 1)
    }

    /// What to add to a link address to get the runtime address when loaded at `load_address`.
    ///
    /// `ET_DYN`: runtime = load + st_value, so the bias is the load address (0 if not given).
    /// `ET_EXEC`: runs as linked unless told; a given load address is where the first mapping
    /// (the page of the first `PT_LOAD`) starts, e.g. a relocated (KASLR) kernel's `_text` page.
    pub fn load_bias(&self, load_address: Option<u64>) -> u64 {
        match (self.kind, load_address) {
            (ImageKind::Dyn, load) => load.unwrap_or(0),
            (ImageKind::Exec, None) => 0,
            (ImageKind::Exec, Some(load)) => load.wrapping_sub(self.link_base()),
        }
    }

    /// The load address that puts the image's first mapping at `map_start` (the inverse of
    /// [`ElfSymbols::load_bias`] plus [`ElfSymbols::link_base`]).
    pub fn load_address_for_map_start(&self, map_start: u64) -> u64 {
        match self.kind {
            ImageKind::Dyn => map_start.wrapping_sub(self.link_base()),
            ImageKind::Exec => map_start,
        }
    }

    /// The function containing link-time address `addr` (by size, or the nearest one before it
    /// if sizes are unknown). Used by tests and by tools that symbolize without a trace dir.
    pub fn function_at(&self, addr: u64) -> Option<&ElfFunction> {
        let idx = self
            .functions
            .partition_point(|f| f.addr <= addr)
            .checked_sub(1)?;
        let func = &self.functions[idx];
        let end = func.addr.saturating_add(func.size.max(1));
        (addr < end || func.size == 0).then_some(func)
    }
}

/// Where an image was loaded and what the `.sym` addresses are relative to.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    /// See [`ElfSymbols::load_bias`]. `None`: ET_DYN at 0, ET_EXEC as linked.
    pub load_address: Option<u64>,
    /// Start of the module's first mapping in the trace's `sid-*.map`; the `.sym` addresses are
    /// relative to it. `None`: the runtime address of the first loadable page.
    pub map_start: Option<u64>,
    /// Written as `# path name:`; must equal the path in the trace's map, or uftrace looks for
    /// another file. `None`: the ELF's own path.
    pub path_name: Option<String>,
}

/// Why an ELF file could not be turned into symbols, or the `.sym` not written.
#[derive(Debug, thiserror::Error)]
pub enum SymError {
    #[error("{}: cannot read: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: not a valid ELF file: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("{}: is a {what}, not an executable, kernel or shared object", path.display())]
    NotAnImage { path: PathBuf, what: &'static str },
    #[error("{}: no function symbols (stripped? rebuild without -s / strip)", path.display())]
    NoFunctions { path: PathBuf },
    #[error("{}: function {name} at {addr:#x} is below the mapping start {base:#x}; wrong --load-address or map?", path.display())]
    BelowBase {
        path: PathBuf,
        name: String,
        addr: u64,
        base: u64,
    },
    #[error("{}: cannot write: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    TraceMap(#[from] vftrace_format::error::FormatError),
    #[error("{}: no sid-*.map mentions {name}; give --load-address and -o instead of -d", dir.display())]
    NotInTraceMap { dir: PathBuf, name: String },
}

/// What a program is, as far as tracing it goes; unlike [`elf_functions`] this works on a
/// stripped file too (the dynamic symbol table still names `mcount`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageFacts {
    /// Some code calls (or defines) `mcount`, `_mcount` or `__fentry__`.
    pub instrumented: bool,
    /// It has a program interpreter: a dynamically linked executable.
    pub has_interpreter: bool,
    /// It defines vftrace's backend (it links libvftrace.a or the `vftrace` crate).
    pub links_vftrace: bool,
}

/// [`ImageFacts`] of the ELF file at `path`.
pub fn image_facts(path: &Path) -> Result<ImageFacts, SymError> {
    let data = read_elf(path)?;
    if !data.starts_with(ELF_MAGIC) {
        return Err(SymError::Parse {
            path: path.to_owned(),
            reason: "no ELF magic at offset 0".into(),
        });
    }
    let file = object::File::parse(&*data).map_err(|e| SymError::Parse {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let names = || file.symbols().chain(file.dynamic_symbols());
    Ok(ImageFacts {
        instrumented: names().any(|s| matches!(s.name(), Ok("mcount" | "_mcount" | "__fentry__"))),
        has_interpreter: file.section_by_name(".interp").is_some(),
        links_vftrace: names().any(|s| !s.is_undefined() && s.name() == Ok("vftrace_backend_init")),
    })
}

/// Reads the function symbols and image information of the ELF file at `path`.
///
/// Uses `.symtab`, or `.dynsym` when the file was stripped. Undefined and zero-address symbols
/// are skipped. Errors name the file; corrupt or truncated input never panics. The magic is
/// checked before the rest is read, and files over [`MAX_ELF_BYTES`] are refused.
pub fn elf_functions(path: &Path) -> Result<ElfSymbols, SymError> {
    parse_elf(&read_elf(path)?, path)
}

/// The bytes of an ELF file, capped at [`MAX_ELF_BYTES`]; a file without the ELF magic is not
/// read further (it may be huge, or /dev/zero): its first bytes are returned for the parser to
/// refuse.
fn read_elf(path: &Path) -> Result<Vec<u8>, SymError> {
    let read_err = |error| SymError::Read {
        path: path.to_owned(),
        error,
    };
    let mut magic = [0u8; 4];
    let got = File::open(path)
        .and_then(|f| f.take(4).read(&mut magic))
        .map_err(read_err)?;
    if magic[..got] == ELF_MAGIC[..] {
        vftrace_format::output::read_capped(path, MAX_ELF_BYTES).map_err(read_err)
    } else {
        Ok(magic[..got].to_vec())
    }
}

/// The probe names a guest image declares (`vftrace::probe_names!`: ELF notes in the section
/// `vftrace_format::probes::NOTE_SECTION`); empty when it declares none.
pub fn probe_names(path: &Path) -> Result<vftrace_format::probes::ProbeNames, SymError> {
    use object::ObjectSection;
    let data = vftrace_format::output::read_capped(path, MAX_ELF_BYTES).map_err(|error| {
        SymError::Read {
            path: path.to_owned(),
            error,
        }
    })?;
    let parse_err = |reason: String| SymError::Parse {
        path: path.to_owned(),
        reason,
    };
    if !data.starts_with(ELF_MAGIC) {
        return Err(parse_err("no ELF magic at offset 0".into()));
    }
    let file = object::File::parse(&*data).map_err(|e| parse_err(e.to_string()))?;
    let Some(section) = file.section_by_name(vftrace_format::probes::NOTE_SECTION) else {
        return Ok(Default::default());
    };
    let bytes = section.data().map_err(|e| parse_err(e.to_string()))?;
    Ok(vftrace_format::probes::parse_probe_notes(bytes))
}

/// [`elf_functions`] of an image already in memory; `path` names it in errors and results.
pub fn parse_elf(data: &[u8], path: &Path) -> Result<ElfSymbols, SymError> {
    let parse_err = |e: object::Error| SymError::Parse {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    if !data.starts_with(ELF_MAGIC) {
        return Err(SymError::Parse {
            path: path.to_owned(),
            reason: "no ELF magic at offset 0".into(),
        });
    }
    let file = object::File::parse(data).map_err(parse_err)?;
    let kind = match file.kind() {
        ObjectKind::Executable => ImageKind::Exec,
        ObjectKind::Dynamic => ImageKind::Dyn,
        ObjectKind::Relocatable => {
            return Err(SymError::NotAnImage {
                path: path.to_owned(),
                what: "relocatable object (.o)",
            })
        }
        ObjectKind::Core => {
            return Err(SymError::NotAnImage {
                path: path.to_owned(),
                what: "core dump",
            })
        }
        _ => {
            return Err(SymError::NotAnImage {
                path: path.to_owned(),
                what: "file of unknown ELF type",
            })
        }
    };
    // `segments()` yields the PT_LOAD segments only.
    let first_load_vaddr =
        file.segments()
            .map(|s| s.address())
            .min()
            .ok_or_else(|| SymError::Parse {
                path: path.to_owned(),
                reason: "no PT_LOAD segment".into(),
            })?;
    let build_id = file.build_id().map_err(parse_err)?.map(<[u8]>::to_vec);

    let from_dynsym = file.symbol_table().is_none();
    let symbols: Vec<_> = if from_dynsym {
        file.dynamic_symbols().collect()
    } else {
        file.symbols().collect()
    };
    // Instrumented code calls one of these: an undefined reference (glibc's or a preloaded
    // tracer's), or a definition (a tracer linked in).
    let instrumented = file
        .symbols()
        .chain(file.dynamic_symbols())
        .any(|s| matches!(s.name(), Ok("mcount" | "_mcount" | "__fentry__")));
    let has_interpreter = file.section_by_name(".interp").is_some();
    let mut functions = Vec::new();
    for sym in symbols {
        let SymbolFlags::Elf { st_info, .. } = sym.flags() else {
            continue;
        };
        let st_info: u8 = st_info.0;
        let st_type = st_info & 0xf;
        if (st_type != STT_FUNC && st_type != STT_GNU_IFUNC)
            || sym.is_undefined()
            || sym.address() == 0
        {
            continue;
        }
        let name = sym.name().map_err(parse_err)?;
        if name.is_empty() {
            continue;
        }
        let binding = match st_info >> 4 {
            STB_LOCAL => Binding::Local,
            STB_WEAK => Binding::Weak,
            _ => Binding::Global,
        };
        functions.push(ElfFunction {
            addr: sym.address(),
            size: sym.size(),
            name: name.to_owned(),
            binding,
        });
    }
    if functions.is_empty() {
        return Err(SymError::NoFunctions {
            path: path.to_owned(),
        });
    }
    functions.sort_by(|a, b| (a.addr, a.binding, &a.name).cmp(&(b.addr, b.binding, &b.name)));
    // Aliases (same address) make uftrace's lookup ambiguous: keep the preferred name, and the
    // largest size any alias declared.
    functions.dedup_by(|later, kept| {
        let same = later.addr == kept.addr;
        if same {
            kept.size = kept.size.max(later.size);
        }
        same
    });
    Ok(ElfSymbols {
        path: path.to_owned(),
        kind,
        first_load_vaddr,
        entry: file.entry(),
        build_id,
        functions,
        from_dynsym,
        instrumented,
        has_interpreter,
    })
}

/// The name to write for `name`: uftrace 0.13 demangles C++ and legacy Rust names itself, but
/// not Rust's v0 names (`_R...`, the default of recent rustc): those are written demangled,
/// without the crate hashes.
pub fn readable_name(name: &str) -> String {
    if name.starts_with("_R") {
        if let Ok(d) = rustc_demangle::try_demangle(name) {
            return format!("{d:#}");
        }
    }
    name.to_owned()
}

/// The symbols of a `.sym` file for `symbols` placed by `placement`, and the module path
/// to write in its header.
///
/// Addresses are runtime addresses minus the mapping start. The format crate's writer adds the
/// terminators uftrace needs (it takes a symbol's size as the gap to the next line).
pub fn sym_symbols(
    symbols: &ElfSymbols,
    placement: &Placement,
) -> Result<(String, Vec<Symbol>), SymError> {
    // Records and maps hold 48-bit addresses (a higher-half kernel's are cut): compare there.
    let bias = symbols.load_bias(placement.load_address);
    let base = placement
        .map_start
        .unwrap_or_else(|| symbols.link_base().wrapping_add(bias))
        & ADDR_MASK;
    let entries = symbols
        .functions
        .iter()
        .map(|func| {
            let runtime = func.addr.wrapping_add(bias) & ADDR_MASK;
            let rel = runtime
                .checked_sub(base)
                .ok_or_else(|| SymError::BelowBase {
                    path: symbols.path.clone(),
                    name: func.name.clone(),
                    addr: runtime,
                    base,
                })?;
            Ok(Symbol::new(
                rel,
                func.size,
                func.type_char(),
                readable_name(&func.name),
            ))
        })
        .collect::<Result<Vec<_>, SymError>>()?;
    let path_name = placement
        .path_name
        .clone()
        .unwrap_or_else(|| absolute(&symbols.path));
    Ok((path_name, entries))
}

/// Writes the `.sym` file for `symbols` placed by `placement` to `out`, through a temporary
/// renamed on success; an `out` that is the ELF file itself is refused.
pub fn write_sym_file(
    symbols: &ElfSymbols,
    placement: &Placement,
    out: &Path,
) -> Result<(), SymError> {
    let (path_name, entries) = sym_symbols(symbols, placement)?;
    let write_err = |error| SymError::Write {
        path: out.to_owned(),
        error,
    };
    let output = OutputFile::create(out, &[&symbols.path]).map_err(write_err)?;
    let mut file = BufWriter::new(output);
    vftrace_format::sym::write_symbols(&mut file, &path_name, &entries).map_err(write_err)?;
    file.into_inner()
        .map_err(|e| write_err(e.into_error()))?
        .commit()
        .map_err(write_err)
}

/// Finds the mapping of `symbols`' file in the trace directory `dir` (by file name, in any
/// `sid-*.map`) and returns where to put it and the `.sym` path uftrace will look up,
/// `dir/basename(map path).sym`. The map's start becomes the base of the addresses and gives
/// the load address; the map's path goes into the header.
pub fn placement_in_trace_dir(
    symbols: &ElfSymbols,
    dir: &Path,
) -> Result<(Placement, PathBuf), SymError> {
    use vftrace_format::maps::parse_maps;
    let name = symbols
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let read_dir = std::fs::read_dir(dir).map_err(|error| SymError::Read {
        path: dir.to_owned(),
        error,
    })?;
    let mut map_files: Vec<PathBuf> = read_dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("sid-") && n.ends_with(".map"))
        })
        .collect();
    map_files.sort();
    for map_file in map_files {
        let bytes =
            vftrace_format::output::read_capped(&map_file, vftrace_format::dir::MAX_MAP_BYTES)
                .map_err(|error| SymError::Read {
                    path: map_file.clone(),
                    error,
                })?;
        let entries = parse_maps(&bytes, &map_file)?;
        // uftrace merges consecutive lines of one path into a module starting at the first.
        let Some(entry) = entries
            .iter()
            .find(|e| e.is_file() && e.path.rsplit('/').next() == Some(name.as_str()))
        else {
            continue;
        };
        let placement = Placement {
            load_address: Some(symbols.load_address_for_map_start(entry.start)),
            map_start: Some(entry.start),
            path_name: Some(entry.path.clone()),
        };
        return Ok((
            placement,
            dir.join(vftrace_format::sym::sym_file_name(&entry.path)),
        ));
    }
    Err(SymError::NotInTraceMap {
        dir: dir.to_owned(),
        name,
    })
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(kind: ImageKind, first_load_vaddr: u64, funcs: &[(u64, u64, &str)]) -> ElfSymbols {
        ElfSymbols {
            path: PathBuf::from("/k/kernel"),
            kind,
            first_load_vaddr,
            entry: first_load_vaddr,
            build_id: Some(vec![0xab, 0x01]),
            instrumented: false,
            has_interpreter: false,
            functions: funcs
                .iter()
                .map(|&(addr, size, name)| ElfFunction {
                    addr,
                    size,
                    name: name.into(),
                    binding: Binding::Global,
                })
                .collect(),
            from_dynsym: false,
        }
    }

    #[test]
    fn higher_half_kernel_matches_its_48_bit_map() {
        // Linked at 0xffffffff80000000; the trace's map holds the address cut to 48 bits.
        let k = image(
            ImageKind::Exec,
            0xffff_ffff_8000_0000,
            &[
                (0xffff_ffff_8000_1000, 0x20, "start_kernel"),
                (0xffff_ffff_8000_2000, 0x10, "idle"),
            ],
        );
        let placement = Placement {
            map_start: Some(0xffff_ffff_8000_0000 & ADDR_MASK),
            ..Default::default()
        };
        let (path, syms) = sym_symbols(&k, &placement).unwrap();
        assert_eq!(path, "/k/kernel");
        let addrs: Vec<(u64, &str)> = syms.iter().map(|s| (s.addr, s.name.as_str())).collect();
        assert_eq!(addrs, [(0x1000, "start_kernel"), (0x2000, "idle")]);
        // Relocated (KASLR-style): same relative addresses, and the bias moves the image.
        assert_eq!(k.load_bias(Some(0xffff_ffff_9000_0000)), 0x1000_0000);
        assert_eq!(k.build_id_hex().as_deref(), Some("ab01"));
    }

    #[test]
    fn function_lookup_by_link_address() {
        let k = image(ImageKind::Dyn, 0, &[(0x1000, 0x10, "a"), (0x1010, 0, "b")]);
        assert_eq!(k.function_at(0x100f).unwrap().name, "a");
        assert_eq!(k.function_at(0x1010).unwrap().name, "b");
        assert!(k.function_at(0xfff).is_none());
    }
}
