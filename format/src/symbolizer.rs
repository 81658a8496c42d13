//! Address -> function name, the way uftrace 0.13 resolves record addresses.
//!
//! Records hold a function's absolute runtime address (cut to 48 bits). uftrace finds the
//! mapping containing it (consecutive map lines of one path form one module starting at the
//! first line), subtracts the module start and searches that module's `.sym` table. Addresses at
//! or above the kernel boundary (guessed from the `[stack]` line) are looked up in `kallsyms`.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::error::FormatError;
use crate::maps::{guess_kernel_base, MapEntry};
use crate::record::ADDR_MASK;
use crate::sym::{
    alternate_sym_file_name, demangle, find_in, parse_symbols, sym_file_name, Symbol, SymbolFile,
    MAX_SYM_BYTES,
};

/// One module's address range in a session.
#[derive(Clone, Debug)]
struct Range {
    start: u64,
    end: u64,
    module: usize,
}

/// A loaded module: its map path and its symbols with demangled names.
#[derive(Clone, Debug)]
struct Module {
    path: String,
    symbols: Vec<Symbol>,
}

/// Resolves addresses to (demangled) function names. Build it with
/// [`crate::dir::TraceDir::symbolizer`] or [`Symbolizer::new`].
#[derive(Clone, Debug, Default)]
pub struct Symbolizer {
    ranges: Vec<Range>,
    modules: Vec<Module>,
    kernel_base: Option<u64>,
    kernel: Vec<Symbol>,
}

/// Groups map lines into modules as uftrace's `read_session_map` does: file-backed lines only,
/// consecutive lines of one path merged. Returns (path, start, end) and the kernel boundary.
pub fn modules_of(maps: &[MapEntry]) -> (Vec<(String, u64, u64)>, Option<u64>) {
    let mut out: Vec<(String, u64, u64)> = Vec::new();
    let mut kernel_base = None;
    for m in maps {
        if m.path.is_empty() {
            continue;
        }
        if m.path.starts_with('[') {
            if m.path.starts_with("[stack") {
                kernel_base = Some(guess_kernel_base(m.start));
            }
            continue;
        }
        // uftrace's sscanf("%s") stops at a blank.
        let path = m.path.split_whitespace().next().unwrap_or("");
        match out.last_mut() {
            Some(last) if last.0 == path => last.2 = m.end,
            _ => out.push((path.to_string(), m.start, m.end)),
        }
    }
    (out, kernel_base)
}

impl Symbolizer {
    /// An empty symbolizer (every lookup fails).
    pub fn new() -> Symbolizer {
        Symbolizer::default()
    }

    /// Adds the modules of one session's maps, loading each module's symbols from `sym_dir`
    /// as uftrace names them (`basename.sym`, or `basename-XXXX.sym` whose `# path name:` is the
    /// module's path). A module without a symbol file resolves nothing. `sym_dir/kallsyms`, if
    /// present, is loaded for kernel addresses.
    pub fn add_session(&mut self, maps: &[MapEntry], sym_dir: &Path) -> Result<(), FormatError> {
        let (modules, kernel_base) = modules_of(maps);
        if self.kernel_base.is_none() {
            self.kernel_base = kernel_base;
        }
        for (path, start, end) in modules {
            let module = self.module_index(&path, sym_dir)?;
            self.ranges.push(Range {
                start: start & ADDR_MASK,
                end: end & ADDR_MASK,
                module,
            });
        }
        self.ranges.sort_by_key(|r| r.start);
        if self.kernel_base.is_some() && self.kernel.is_empty() {
            let kallsyms = sym_dir.join("kallsyms");
            if kallsyms.is_file() {
                let bytes = crate::output::read_capped(&kallsyms, MAX_SYM_BYTES)
                    .map_err(|e| FormatError::io(&kallsyms, &e))?;
                self.kernel = demangled(parse_symbols(&bytes, &kallsyms)?.symbols);
            }
        }
        Ok(())
    }

    /// Adds a library loaded by dlopen at `base` (a `DLOP` line of task.txt). Its range ends
    /// where its last symbol ends.
    pub fn add_dlopen(
        &mut self,
        base: u64,
        libname: &str,
        sym_dir: &Path,
    ) -> Result<(), FormatError> {
        let module = self.module_index(libname, sym_dir)?;
        let len = self.modules[module]
            .symbols
            .iter()
            .map(|s| s.addr.saturating_add(s.size))
            .max()
            .unwrap_or(0);
        let start = base & ADDR_MASK;
        self.ranges.push(Range {
            start,
            end: start.saturating_add(len),
            module,
        });
        self.ranges.sort_by_key(|r| r.start);
        Ok(())
    }

    /// Adds a module from symbols already in memory (e.g. a guest image's ELF symbols).
    pub fn add_module(&mut self, path: &str, start: u64, end: u64, symbols: Vec<Symbol>) {
        let mut symbols = demangled(symbols);
        symbols.sort_by_key(|s| s.addr);
        self.modules.push(Module {
            path: path.to_string(),
            symbols,
        });
        self.ranges.push(Range {
            start: start & ADDR_MASK,
            end: end & ADDR_MASK,
            module: self.modules.len() - 1,
        });
        self.ranges.sort_by_key(|r| r.start);
    }

    fn module_index(&mut self, path: &str, sym_dir: &Path) -> Result<usize, FormatError> {
        if let Some(i) = self.modules.iter().position(|m| m.path == path) {
            return Ok(i);
        }
        let symbols = match find_symbol_file(sym_dir, path)? {
            Some(file) => demangled(file.symbols),
            None => Vec::new(),
        };
        self.modules.push(Module {
            path: path.to_string(),
            symbols,
        });
        Ok(self.modules.len() - 1)
    }

    /// True when uftrace would take `addr` for a kernel address: at or above the boundary it
    /// guesses from the `[stack]` line. A 48-bit record address never is (uftrace reads kernel
    /// functions from kernel-*.dat files, not from TID.dat).
    pub fn is_kernel(&self, addr: u64) -> bool {
        self.kernel_base.is_some_and(|base| addr >= base)
    }

    /// The symbol containing `addr` and the module path it belongs to (`[kernel]` for kernel
    /// symbols). Names are demangled as uftrace prints them. A full 64-bit address that is not
    /// a known kernel symbol is also tried cut to the 48 bits records keep, so a higher-half
    /// guest image resolves whether its addresses come from a record or from its ELF file.
    pub fn lookup_symbol(&self, addr: u64) -> Option<(&str, &Symbol)> {
        if self.is_kernel(addr) {
            if let Some(s) = find_in(&self.kernel, addr) {
                return Some(("[kernel]", s));
            }
        }
        let addr = addr & ADDR_MASK;
        let idx = self.ranges.partition_point(|r| r.start <= addr);
        // Ranges of different sessions may overlap; try the nearest ones first.
        self.ranges[..idx]
            .iter()
            .rev()
            .filter(|r| addr < r.end)
            .find_map(|r| {
                let m = &self.modules[r.module];
                find_in(&m.symbols, addr - r.start).map(|s| (m.path.as_str(), s))
            })
    }

    /// The (demangled) name of the function containing `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&str> {
        self.lookup_symbol(addr).map(|(_, s)| s.name.as_str())
    }

    /// The function name, or `<hex address>` as uftrace prints an unresolved address.
    pub fn name_or_hex(&self, addr: u64) -> Cow<'_, str> {
        match self.lookup(addr) {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(format!("<{addr:x}>")),
        }
    }

    /// Number of modules known (with or without symbols).
    pub fn module_count(&self) -> usize {
        self.modules.len()
    }
}

fn demangled(mut symbols: Vec<Symbol>) -> Vec<Symbol> {
    for s in &mut symbols {
        if let Cow::Owned(n) = demangle(&s.name) {
            s.name = n;
        }
    }
    symbols
}

/// Finds and parses the symbol file uftrace would use for `module_path` in `dir`:
/// `basename.sym` unless its `# path name:` names another path, else a `basename-*.sym` whose
/// header names this path (uftrace's `basename-<build-id or checksum>.sym`).
pub fn find_symbol_file(dir: &Path, module_path: &str) -> Result<Option<SymbolFile>, FormatError> {
    let load = |p: &Path| -> Result<SymbolFile, FormatError> {
        let bytes =
            crate::output::read_capped(p, MAX_SYM_BYTES).map_err(|e| FormatError::io(p, &e))?;
        parse_symbols(&bytes, p)
    };
    let primary = dir.join(sym_file_name(module_path));
    if primary.is_file() {
        let f = load(&primary)?;
        if f.path_name.as_deref().is_none_or(|p| p == module_path) {
            return Ok(Some(f));
        }
    }
    let mut candidates: Vec<PathBuf> = vec![dir.join(alternate_sym_file_name(module_path))];
    let base = sym_file_name(module_path);
    let prefix = format!("{}-", &base[..base.len() - 4]);
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut others: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".sym"))
            })
            .collect();
        others.sort();
        candidates.extend(others);
    }
    for c in candidates {
        if c.is_file() {
            let f = load(&c)?;
            if f.path_name.as_deref() == Some(module_path) {
                return Ok(Some(f));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::MapEntry;

    fn tmpdir(tag: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("vftrace-symbolizer-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn kernel_addresses_use_kallsyms() {
        let dir = tmpdir("kernel");
        std::fs::write(
            dir.join("kallsyms"),
            "ffffffff81000000 T _stext\nffffffff81000100 T schedule\nffffffff81000200 t helper\t[mod]\nffffffff81000300 T _etext\n",
        )
        .unwrap();
        let maps = [
            MapEntry::new(0x5555_0000_0000, 0x5555_0001_0000, "/bin/x"),
            MapEntry::stack(0x7ffd_0000_0000, 0x7ffd_0002_1000),
        ];
        let mut s = Symbolizer::new();
        s.add_session(&maps, &dir).unwrap();
        assert!(s.is_kernel(0xffff_ffff_8100_0150));
        assert_eq!(s.lookup(0xffff_ffff_8100_0150), Some("schedule"));
        assert_eq!(
            s.lookup_symbol(0xffff_ffff_8100_0250).unwrap(),
            (
                "[kernel]",
                &Symbol::new(0xffff_ffff_8100_0200, 0x100, 't', "helper")
            )
        );
        // Like uftrace, a 48-bit (record) address is never a kernel address.
        assert!(!s.is_kernel(0xffff_8100_0250));
        assert_eq!(s.lookup(0xffff_8100_0250), None);
        assert!(!s.is_kernel(0x5555_0000_1000));
        assert_eq!(s.lookup(0x5555_0000_1000), None); // no /bin/x symbol file
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dlopen_and_in_memory_modules() {
        let dir = tmpdir("dlopen");
        let mut f = Vec::new();
        crate::sym::write_symbols(
            &mut f,
            "/lib/plugin.so",
            &[Symbol::function(0x100, 0x10, "plugin_fn")],
        )
        .unwrap();
        std::fs::write(dir.join("plugin.so.sym"), f).unwrap();
        let mut s = Symbolizer::new();
        s.add_dlopen(0x7f00_0000_0000, "/lib/plugin.so", &dir)
            .unwrap();
        s.add_module(
            "/guest/k",
            0x1000,
            0x2000,
            vec![Symbol::function(
                0x10,
                0x10,
                "_ZN1k4main17h0123456789abcdefE",
            )],
        );
        assert_eq!(s.lookup(0x7f00_0000_0105), Some("plugin_fn"));
        assert_eq!(s.lookup(0x7f00_0000_0110), None);
        assert_eq!(s.lookup(0x1015), Some("k::main"));
        assert_eq!(s.name_or_hex(0x3000), "<3000>");
        assert_eq!(s.module_count(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
