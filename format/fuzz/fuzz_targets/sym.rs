//! Any bytes: symbol parsing, lookup and demangling must not panic; a written symbol file must
//! parse back to the same sorted symbols.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use vftrace_format::sym::{demangle, parse_symbols, write_symbols};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = demangle(text);
    }
    if let Ok(file) = parse_symbols(data, Path::new("x.sym")) {
        for s in &file.symbols {
            let _ = demangle(&s.name);
            let _ = file.find(s.addr);
            let _ = file.find(s.addr.wrapping_add(s.size));
        }
        // Symbols with distinct addresses and sizes that fit survive a write/parse cycle.
        let mut syms = file.symbols.clone();
        syms.dedup_by_key(|s| s.addr);
        let ends_before_next = |w: &[vftrace_format::sym::Symbol]| {
            w[0].addr
                .checked_add(w[0].size)
                .is_some_and(|end| end <= w[1].addr)
        };
        let ok = syms.windows(2).all(ends_before_next)
            && syms
                .iter()
                .all(|s| s.size > 0 && s.addr.checked_add(s.size).is_some());
        let mut out = Vec::new();
        if ok && write_symbols(&mut out, "/m", &syms).is_ok() {
            let back = parse_symbols(&out, Path::new("x.sym")).expect("written sym file parses");
            assert_eq!(back.symbols, syms);
        }
    }
});
