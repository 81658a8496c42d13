//! Any bytes: maps parsing and the symbolizer's module grouping must not panic; accepted
//! writable maps round-trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use vftrace_format::maps::{parse_maps, write_maps};
use vftrace_format::symbolizer::modules_of;

fuzz_target!(|data: &[u8]| {
    if let Ok(maps) = parse_maps(data, Path::new("sid.map")) {
        let _ = modules_of(&maps);
        let mut out = Vec::new();
        if write_maps(&mut out, &maps).is_ok() {
            assert_eq!(
                parse_maps(&out, Path::new("sid.map")).expect("written map parses"),
                maps
            );
        }
    }
});
