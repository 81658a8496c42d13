//! Any bytes: parse_capture returns Ok or an error with a line inside the input, never
//! panics; whatever it reads survives a write/read round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use vftrace_kvm::{parse_capture_with, CaptureWriter, ParseOptions};

fuzz_target!(|data: &[u8]| {
    let file = Path::new("fuzz.kvm");
    let lines = data.split(|&b| b == b'\n').count();
    for lenient in [false, true] {
        match parse_capture_with(data, file, &ParseOptions { lenient }) {
            Err(e) => assert!(e.line <= lines, "line {} of {lines}", e.line),
            Ok(parsed) => {
                let capture = parsed.capture;
                let mut bytes = Vec::new();
                let mut writer = CaptureWriter::new(&mut bytes).unwrap();
                for sync in &capture.syncs {
                    writer.sync(*sync, None).unwrap();
                }
                for event in &capture.events {
                    writer.event(event).unwrap();
                }
                writer
                    .finish(capture.tsc_hz.map(|hz| (hz, "sync")), capture.lost_events)
                    .unwrap();
                let again =
                    vftrace_kvm::parse_capture(&bytes, file).expect("our own output reads back");
                assert_eq!(again.events, capture.events);
                assert_eq!(again.syncs, capture.syncs);
                assert_eq!(again.lost_events, capture.lost_events);
            }
        }
    }
});
