//! Any bytes: task.txt parsing must not panic; accepted writable lines round-trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use vftrace_format::task::{parse_tasks, write_tasks};

fuzz_target!(|data: &[u8]| {
    if let Ok(lines) = parse_tasks(data, Path::new("task.txt")) {
        let mut out = Vec::new();
        if write_tasks(&mut out, &lines).is_ok() {
            assert_eq!(
                parse_tasks(&out, Path::new("task.txt")).expect("written task.txt parses"),
                lines
            );
        }
    }
});
