//! Hostile ELF images: reading their symbols and placing them anywhere gives symbols or an
//! error naming the file, never a panic.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vftrace_symbols::{parse_elf, sym_symbols, Placement};

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.elf");
    let symbols = match parse_elf(data, path) {
        Ok(s) => s,
        Err(e) => {
            assert!(e.to_string().starts_with("fuzz.elf"), "{e}");
            return;
        }
    };
    assert!(!symbols.functions.is_empty());
    assert!(symbols.functions.windows(2).all(|w| w[0].addr < w[1].addr));
    let _ = symbols.build_id_hex();
    for load_address in [None, Some(0), Some(0x5555_5555_4000), Some(u64::MAX)] {
        for map_start in [None, Some(0), Some(symbols.first_load_vaddr)] {
            let placement = Placement {
                load_address,
                map_start,
                path_name: None,
            };
            if let Ok((_, syms)) = sym_symbols(&symbols, &placement) {
                assert_eq!(syms.len(), symbols.functions.len());
            }
        }
        let _ = symbols.function_at(symbols.load_bias(load_address));
    }
});
