//! A whole hostile trace directory (and a KVM capture beside it) through `convert` and `merge`:
//! errors, never a panic, unbounded memory or a file written outside the output.
//!
//! The input is a list of files, each `[name index: u8][length: u16 LE][bytes]`, the name
//! picked from [`NAMES`] (so the fuzzer can reach every file a directory reader opens; the
//! seed in seeds/trace_dir is a directory `vftrace capture` wrote).
#![no_main]
use std::io;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vftrace_convert::{convert_dir, ChromeJsonWriter, ConvertOptions};
use vftrace_merge::{merge, MergeOptions};

const NAMES: &[&str] = &[
    "info",
    "task.txt",
    "sid-63cbe1e459320dd7.map",
    "guest.sym",
    "1.dat",
    "2.dat",
    "vftrace.clock",
    "vftrace.markers",
    "kallsyms",
    "host.kvm",
];

/// One directory per fuzzing process, emptied before each input.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::temp_dir().join(format!("vftrace-fuzz-trace-dir-{}", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let root = dir();
    let _ = std::fs::remove_dir_all(root);
    let trace = root.join("trace");
    std::fs::create_dir_all(&trace).unwrap();
    let kvm = root.join("host.kvm");
    let mut rest = data;
    while let [name, lo, hi, tail @ ..] = rest {
        let len = (u16::from_le_bytes([*lo, *hi]) as usize).min(tail.len());
        let name = NAMES[*name as usize % NAMES.len()];
        let path = if name == "host.kvm" { kvm.clone() } else { trace.join(name) };
        std::fs::write(path, &tail[..len]).unwrap();
        rest = &tail[len..];
    }
    for lenient in [false, true] {
        let mut sink = ChromeJsonWriter::new(io::sink()).unwrap();
        let opts = ConvertOptions {
            lenient,
            ..Default::default()
        };
        let _ = convert_dir(&trace, &mut sink, &opts, &mut |done, total| {
            assert!(done <= total, "progress {done} of {total}")
        });
        let opts = MergeOptions {
            guest: Some(trace.clone()),
            kvm: kvm.exists().then(|| kvm.clone()),
            tsc_hz: Some(2e9),
            allow_local_tsc_hz: false,
            lenient,
            ..Default::default()
        };
        let mut sink = ChromeJsonWriter::new(io::sink()).unwrap();
        if let Ok(report) = merge(&opts, &mut sink) {
            let _ = report.to_string();
        }
        let opts = MergeOptions {
            hosts: vec![trace.clone()],
            ..opts
        };
        let mut sink = ChromeJsonWriter::new(io::sink()).unwrap();
        let _ = merge(&opts, &mut sink);
    }
    // Nothing but the inputs: readers never write.
    let mut names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.retain(|n| n != "trace" && n != "host.kvm");
    assert!(names.is_empty(), "{names:?}");
});
