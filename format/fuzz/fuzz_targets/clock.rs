//! Any bytes: clock parsing must not panic; accepted clocks round-trip and convert without
//! panicking in both directions.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use vftrace_format::clock::ClockMap;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = ClockMap::parse(data, Path::new("vftrace.clock")) {
        let mut out = Vec::new();
        c.write_to(&mut out).expect("parsed clock writes");
        assert_eq!(
            ClockMap::parse(&out, Path::new("vftrace.clock")).unwrap(),
            c
        );
        for v in [0, 1, c.tsc_base, c.ns_base, u64::MAX / 2, u64::MAX] {
            let _ = c.ns_to_tsc(c.tsc_to_ns(v));
        }
    }
});
