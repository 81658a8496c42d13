//! Hostile guest streams: decoding and capturing must never panic, allocate without bound, or
//! write outside the output directory.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vftrace_format::stream::StreamReader;

fuzz_target!(|data: &[u8]| {
    let mut offset = 0;
    for item in StreamReader::new(data) {
        match item {
            Ok(frame) => {
                assert!(frame.offset >= offset);
                offset = frame.offset;
            }
            Err(e) => {
                assert!(e.offset <= data.len() as u64);
                let _ = e.to_string();
            }
        }
    }
    let out = std::env::temp_dir().join(format!("vftrace-guest-fuzz-{}", std::process::id()));
    let _ = vftrace_guest::capture(data, &out.join("trace"), &Default::default());
    let _ = std::fs::remove_dir_all(&out);
});
