//! Any bytes: `Info::parse` must not panic; what it accepts must write and parse back equal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use vftrace_format::info::Info;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = Info::parse(data, Path::new("info")) {
        // Not everything uftrace accepts is writable (e.g. over-long lines); what is, must
        // read back to the same value.
        if let Ok(bytes) = info.to_bytes() {
            let back = Info::parse(&bytes, Path::new("info")).expect("written info parses");
            assert_eq!(back.to_bytes().unwrap(), bytes);
        }
    }
});
