//! Symbol files: `DIR/basename(module path).sym`, nm -n style.
//!
//! uftrace 0.13 (`load_module_symbol_file`) reads lines `HEX TYPE NAME` with addresses relative
//! to the start of the module's first mapping, keeps only the types `?TtwPKDdvu`, skips `#`
//! header lines and a line repeating the previous address and type, and gives each symbol the
//! size up to the next line. A `?` line or a name `__sym_end`, `__dynsym_end` or `__func_end`
//! only ends the previous symbol. Without such a terminator the last symbol has size 0 and
//! never resolves. A `# path name:` header that differs from the map's path makes uftrace look
//! for `basename-XXXX.sym` instead, so the writer always writes the module's own path.

use std::borrow::Cow;
use std::io::{self, Write};
use std::path::Path;

use crate::error::{numbered_lines, text_of, FormatError};

/// One symbol: a module-relative address range and a (mangled) name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Symbol {
    /// Relative to the start of the module's first mapping.
    pub addr: u64,
    /// Size in bytes; 0 = "up to the next symbol" (uftrace's rule).
    pub size: u64,
    /// nm type letter: `T`/`t` text, `W`/`w` weak, `P` PLT, `D`/`d` data...
    pub kind: char,
    pub name: String,
}

impl Symbol {
    pub fn new(addr: u64, size: u64, kind: char, name: impl Into<String>) -> Symbol {
        Symbol {
            addr,
            size,
            kind,
            name: name.into(),
        }
    }

    /// A text (`T`) symbol.
    pub fn function(addr: u64, size: u64, name: impl Into<String>) -> Symbol {
        Symbol::new(addr, size, 'T', name)
    }

    /// True when `addr` (module-relative) is inside this symbol.
    pub fn contains(&self, addr: u64) -> bool {
        self.addr <= addr && addr - self.addr < self.size
    }
}

/// The symbol types uftrace 0.13 keeps (`?` only as a terminator).
pub const KEPT_TYPES: &str = "?TtwPKDdvu";

/// Largest `.sym` file (or `kallsyms`) read: the largest programs' symbol tables are tens of
/// MiB of text.
pub const MAX_SYM_BYTES: u64 = 256 << 20;

/// Names uftrace treats as terminators rather than symbols.
pub fn is_terminator_name(name: &str) -> bool {
    matches!(name, "__sym_end" | "__dynsym_end" | "__func_end")
}

/// The file name uftrace 0.13 looks up for a module: `basename(path).sym`.
pub fn sym_file_name(module_path: &str) -> String {
    let base = module_path.rsplit('/').next().unwrap_or(module_path);
    format!("{base}.sym")
}

/// The name uftrace 0.13 uses instead when `basename.sym` belongs to another path and the map
/// has no build-id: `basename-CSUM.sym`, CSUM being the 16-bit sum of the path's (signed) chars.
pub fn alternate_sym_file_name(module_path: &str) -> String {
    let csum = module_path
        .bytes()
        .fold(0u16, |acc, b| acc.wrapping_add(b as i8 as i16 as u16));
    let base = sym_file_name(module_path);
    format!("{}-{csum:04x}.sym", &base[..base.len() - 4])
}

/// A parsed symbol file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SymbolFile {
    /// From the `# path name:` header.
    pub path_name: Option<String>,
    /// From the `# build-id:` header.
    pub build_id: Option<String>,
    /// Kept symbols with uftrace's sizes, sorted by address. Terminators are not included.
    pub symbols: Vec<Symbol>,
}

impl SymbolFile {
    /// The symbol containing module-relative `addr` (uftrace's `find_sym`).
    pub fn find(&self, addr: u64) -> Option<&Symbol> {
        find_in(&self.symbols, addr)
    }
}

/// The symbol of sorted `symbols` containing `addr`.
pub fn find_in(symbols: &[Symbol], addr: u64) -> Option<&Symbol> {
    let idx = symbols.partition_point(|s| s.addr <= addr);
    symbols[..idx].last().filter(|s| s.contains(addr))
}

/// Checks that `symbols` can be written so uftrace reads them back.
pub fn validate(symbols: &[Symbol]) -> Result<(), String> {
    for s in symbols {
        if s.name.is_empty() || s.name.contains(['\n', '\r', '\t', '\0']) {
            return Err(format!(
                "symbol name {:?} is empty or contains a tab, NUL or line break",
                s.name
            ));
        }
        if !s.kind.is_ascii_graphic() {
            return Err(format!(
                "symbol {:?} has type {:?}, not an nm letter",
                s.name, s.kind
            ));
        }
        if s.addr.checked_add(s.size).is_none() {
            return Err(format!(
                "symbol {:?} at {:#x} + {:#x} overflows",
                s.name, s.addr, s.size
            ));
        }
    }
    Ok(())
}

/// Writes a symbol file for the module mapped from `module_path`: headers, the symbols sorted
/// by address (nm's weak `W`/`V` written as uftrace's `w`/`v`), a `? __func_end` after a sized symbol that is followed by a gap, and a final
/// `? __sym_end` so the last symbol resolves (at `addr + size`, or `addr + 1` for size 0).
pub fn write_symbols(mut w: impl Write, module_path: &str, symbols: &[Symbol]) -> io::Result<()> {
    validate(symbols).map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
    if module_path.contains(['\n', '\r']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("module path {module_path:?} contains a line break"),
        ));
    }
    let mut sorted: Vec<&Symbol> = symbols.iter().collect();
    sorted.sort_by(|a, b| a.addr.cmp(&b.addr).then_with(|| b.size.cmp(&a.size)));
    let mut out = String::with_capacity(64 + sorted.len() * 40);
    use std::fmt::Write as _;
    let _ = writeln!(out, "# symbols: {}", sorted.len());
    let _ = writeln!(out, "# path name: {module_path}");
    for (i, s) in sorted.iter().enumerate() {
        // nm prints weak symbols as `W`/`V`; uftrace only keeps the lower-case letters.
        let kind = match s.kind {
            'W' => 'w',
            'V' => 'v',
            k => k,
        };
        let _ = writeln!(out, "{:016x} {kind} {}", s.addr, s.name);
        let end = s.addr + s.size.max(1);
        match sorted.get(i + 1) {
            Some(next) if s.size > 0 && next.addr > end => {
                let _ = writeln!(out, "{end:016x} ? __func_end");
            }
            Some(_) => {}
            None => {
                let _ = writeln!(out, "{end:016x} ? __sym_end");
            }
        }
    }
    w.write_all(out.as_bytes())
}

/// Parses a symbol file (or a kallsyms copy) exactly as uftrace 0.13 interprets it. Lines
/// uftrace would skip as malformed are errors here, naming their line.
pub fn parse_symbols(bytes: &[u8], file: &Path) -> Result<SymbolFile, FormatError> {
    let text = text_of(bytes, file)?;
    let mut out = SymbolFile::default();
    let mut prev: Option<(u64, char)> = None;
    for (n, line) in numbered_lines(text) {
        if let Some(header) = line.strip_prefix('#') {
            if let Some(p) = header.strip_prefix(" path name: ") {
                out.path_name = Some(p.to_string());
            } else if let Some(id) = header.strip_prefix(" build-id: ") {
                out.build_id = Some(id.trim().to_string());
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let bad = |m: &str| {
            FormatError::at_line(
                file,
                n,
                format!("{m}: {:?}", line.get(..60).unwrap_or(line)),
            )
        };
        let (addr, rest) = line
            .split_once(' ')
            .ok_or_else(|| bad("expected `ADDRESS TYPE NAME`"))?;
        if addr.is_empty() || addr.len() > 16 {
            return Err(bad("address is not 1 to 16 hex digits"));
        }
        let addr = u64::from_str_radix(addr, 16).map_err(|_| bad("address is not hex"))?;
        let mut chars = rest.chars();
        let kind = chars.next().ok_or_else(|| bad("missing symbol type"))?;
        let name = chars
            .as_str()
            .strip_prefix(' ')
            .ok_or_else(|| bad("expected a space after the symbol type"))?;
        // Kernel module symbols carry "\t[module]".
        let name = name.split('\t').next().unwrap_or(name);
        if prev == Some((addr, kind)) || !KEPT_TYPES.contains(kind) {
            continue;
        }
        prev = Some((addr, kind));
        if kind == '?' || is_terminator_name(name) {
            if let Some(last) = out.symbols.last_mut() {
                last.size = addr.wrapping_sub(last.addr);
            }
            continue;
        }
        if let Some(last) = out.symbols.last_mut() {
            if last.size == 0 {
                last.size = addr.wrapping_sub(last.addr);
            }
        }
        out.symbols.push(Symbol {
            addr,
            size: 0,
            kind,
            name: name.to_string(),
        });
    }
    out.symbols.sort_by_key(|s| s.addr);
    Ok(out)
}

/// Demangles `name` the way uftrace 0.13's default ("simple") demangler prints it, for the
/// common shapes: legacy Rust `_ZN...17h<hash>E` (hash dropped, `$LT$`-style escapes decoded,
/// `..` kept) and plain C++ nested names (`_ZN3ABC3fooEv` -> `ABC::foo`, arguments dropped).
/// C++ constructors/destructors, `std::` and template arguments (dropped) are handled too.
/// Anything else (v0 Rust `_R...`, operators, substitutions) is returned as is.
pub fn demangle(name: &str) -> Cow<'_, str> {
    demangle_simple(name).map_or(Cow::Borrowed(name), Cow::Owned)
}

const RUST_ESCAPES: [(&str, &str); 19] = [
    ("SP", "@"),
    ("BP", "*"),
    ("RF", "&"),
    ("LT", "<"),
    ("GT", ">"),
    ("LP", "("),
    ("RP", ")"),
    ("C", ","),
    ("u20", " "),
    ("u22", "\""),
    ("u27", "'"),
    ("u2b", "+"),
    ("u3b", ";"),
    ("u3d", "="),
    ("u5b", "["),
    ("u5d", "]"),
    ("u7b", "{"),
    ("u7d", "}"),
    ("u7e", "~"),
];

fn demangle_simple(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix("_GLOBAL__sub_I_") {
        return demangle_simple(rest).map(|n| format!("_GLOBAL__sub_I_{n}"));
    }
    let b = name.as_bytes();
    let mut out: Vec<String> = Vec::new();
    let mut pos;
    if name.starts_with("_ZN") {
        pos = 3;
        // cv- and ref-qualifiers of a member function.
        while matches!(b.get(pos), Some(b'r' | b'V' | b'K')) {
            pos += 1;
        }
        if matches!(b.get(pos), Some(b'R' | b'O')) {
            pos += 1;
        }
        if name[pos..].starts_with("St") {
            out.push("std".into());
            pos += 2;
        }
        loop {
            match *b.get(pos)? {
                b'E' => break,
                b'0'..=b'9' => pos = source_name(name, pos, &mut out)?,
                b'I' => pos = skip_template_args(b, pos)?,
                b'C' if matches!(b.get(pos + 1), Some(b'1'..=b'3')) => {
                    out.push(out.last()?.clone());
                    pos += 2;
                }
                b'D' if matches!(b.get(pos + 1), Some(b'0'..=b'2')) => {
                    out.push(format!("~{}", out.last()?));
                    pos += 2;
                }
                _ => return None,
            }
        }
    } else if name.starts_with("_ZSt") && b.get(4).is_some_and(u8::is_ascii_digit) {
        out.push("std".into());
        source_name(name, 4, &mut out)?;
    } else if name.starts_with("_Z") && b.get(2).is_some_and(u8::is_ascii_digit) {
        source_name(name, 2, &mut out)?;
    } else {
        return None;
    }
    // What follows (parameter types, `.llvm.N` suffixes) is dropped like uftrace's simple mode.
    if out.is_empty() {
        return None;
    }
    Some(out.join("::"))
}

/// Reads `<len><name>` at `pos`, appends it (unless it is a Rust hash) and returns the new pos.
fn source_name(name: &str, pos: usize, out: &mut Vec<String>) -> Option<usize> {
    let digits = name.as_bytes()[pos..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    let len: usize = name.get(pos..pos + digits)?.parse().ok()?;
    let start = pos + digits;
    let part = name.get(start..start.checked_add(len)?)?;
    let is_rust_hash =
        len == 17 && part.starts_with('h') && part[1..].bytes().all(|c| c.is_ascii_hexdigit());
    if !is_rust_hash {
        let mut s = String::new();
        push_rust_unescaped(&mut s, part);
        out.push(s);
    }
    Some(start + len)
}

/// Skips a template argument list `I ... E` starting at `pos` (the simple demangler drops it).
fn skip_template_args(b: &[u8], mut pos: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match *b.get(pos)? {
            b'I' | b'N' | b'L' | b'X' => {
                depth += 1;
                pos += 1;
            }
            b'E' => {
                depth -= 1;
                pos += 1;
                if depth == 0 {
                    return Some(pos);
                }
            }
            b'0'..=b'9' => {
                let digits = b[pos..].iter().take_while(|c| c.is_ascii_digit()).count();
                let len: usize = std::str::from_utf8(&b[pos..pos + digits])
                    .ok()?
                    .parse()
                    .ok()?;
                pos = pos.checked_add(digits)?.checked_add(len)?;
            }
            _ => pos += 1,
        }
    }
}

/// uftrace's `$..$` decoding: known codes are replaced. At an unknown `$` uftrace copies the
/// rest of the component literally, after having already copied the text before that `$`, so
/// that text appears twice (`weird$XX$f` -> `weirdweird$XX$f`); kept so names match its output.
fn push_rust_unescaped(out: &mut String, part: &str) {
    let mut p = part;
    while let Some(d) = p.find('$') {
        let after = &p[d + 1..];
        out.push_str(&p[..d]);
        let Some((code, punc)) = RUST_ESCAPES
            .iter()
            .find(|(code, _)| after.starts_with(code))
        else {
            break;
        };
        out.push_str(punc);
        // uftrace skips the code and one more character, which is the closing `$`.
        p = after.get(code.len() + 1..).unwrap_or("");
    }
    out.push_str(p);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_terminators() {
        let syms = vec![
            Symbol::function(0x1200, 0x10, "b"),
            Symbol::function(0x1100, 0x100, "a"),
            Symbol::function(0x1300, 0, "c"),
            Symbol::function(0x1400, 0x20, "last"),
        ];
        let mut buf = Vec::new();
        write_symbols(&mut buf, "/guest/kernel", &syms).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(text.contains("0000000000001210 ? __func_end\n"), "{text}");
        assert!(text.ends_with("0000000000001420 ? __sym_end\n"), "{text}");
        let f = parse_symbols(&buf, Path::new("kernel.sym")).unwrap();
        assert_eq!(f.path_name.as_deref(), Some("/guest/kernel"));
        let mut want = syms.clone();
        want.sort_by_key(|s| s.addr);
        want[2].size = 0x100; // size 0 means "up to the next symbol"
        assert_eq!(f.symbols, want);
        assert_eq!(f.find(0x141f).unwrap().name, "last");
        assert!(f.find(0x1420).is_none());
        assert!(f.find(0x1250).is_none());
    }

    #[test]
    fn reads_uftraces_own_file() {
        let text = "# symbols: 3\n# path name: /tmp/t\n000000000000037c d __abi_tag\n000000000000039c ? __sym_end\n\
                    0000000000001030 P printf\n0000000000001070 ? __dynsym_end\n00000000000011c9 T leaf\n\
                    00000000000011e1 T mid\n0000000000001279 ? __func_end\n0000000000002000 D _IO_stdin_used\n";
        let f = parse_symbols(text.as_bytes(), Path::new("t.sym")).unwrap();
        let names: Vec<_> = f
            .symbols
            .iter()
            .map(|s| (s.name.as_str(), s.size))
            .collect();
        assert_eq!(
            names,
            [
                ("__abi_tag", 0x20),
                ("printf", 0x40),
                ("leaf", 0x18),
                ("mid", 0x98),
                ("_IO_stdin_used", 0)
            ]
        );
    }

    #[test]
    fn errors_name_line() {
        let err = parse_symbols(b"# x\n1000 T a\nzz T b\n", Path::new("d/k.sym")).unwrap_err();
        assert!(
            err.to_string().starts_with("d/k.sym:3: address is not hex"),
            "{err}"
        );
        let err = parse_symbols(b"1000 T\n", Path::new("k.sym")).unwrap_err();
        assert_eq!(err.line, Some(1));
    }

    #[test]
    fn file_names() {
        assert_eq!(sym_file_name("/usr/lib/libc.so.6"), "libc.so.6.sym");
        // uftrace: csum of "/a" = 0x2f + 0x61.
        assert_eq!(alternate_sym_file_name("/a"), "a-0090.sym");
    }

    #[test]
    fn demangles_like_uftrace() {
        assert_eq!(demangle("_ZN3foo3bar17h05af221e174051e9E"), "foo::bar");
        assert_eq!(demangle("_ZN3ABC3fooEv"), "ABC::foo");
        assert_eq!(demangle("_ZN2ns3ns13foo4bar1Ev"), "ns::ns1::foo::bar1");
        assert_eq!(
            demangle("_ZN70_$LT$alloc..vec..Vec$LT$T$C$A$GT$$u20$as$u20$core..ops..drop..Drop$GT$4drop17h0123456789abcdefE"),
            "_<alloc..vec..Vec<T,A> as core..ops..drop..Drop>::drop"
        );
        assert_eq!(demangle("_Z3fooi"), "foo");
        assert_eq!(
            demangle("_ZN11weird$XX$ab1f17h0123456789abcdefE"),
            "weirdweird$XX$ab::f"
        );
        assert_eq!(demangle("main"), "main");
        assert_eq!(demangle("_RNvCs1234_3foo3bar"), "_RNvCs1234_3foo3bar");
        assert_eq!(
            demangle("_ZN3foo3bar17h05af221e174051e9E.llvm.123"),
            "foo::bar"
        );
        assert_eq!(demangle("_ZNK3Foo3getEv"), "Foo::get");
        assert_eq!(demangle("_ZN3FooC2Ev"), "Foo::Foo");
        assert_eq!(
            demangle("_ZNSt6thread6_StateD0Ev"),
            "std::thread::_State::~_State"
        );
        assert_eq!(
            demangle("_ZNSt6vectorIiSaIiEE9push_backERKi"),
            "std::vector::push_back"
        );
        assert_eq!(demangle("_ZN3foo"), "_ZN3foo");
        assert_eq!(demangle("_ZN999foo"), "_ZN999foo");
    }
}
