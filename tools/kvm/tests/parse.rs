//! Reading captures: fixtures of every supported format, and bad input.

use std::path::{Path, PathBuf};
use vftrace_kvm::{
    parse_capture, parse_capture_with, read_capture, Capture, CaptureError, KvmEventKind,
    ParseOptions,
};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn kinds(capture: &Capture) -> Vec<&str> {
    capture.events.iter().map(|e| e.kind.name()).collect()
}

#[test]
fn trace_cmd_report_text() {
    let capture = read_capture(&data("trace-cmd-report.txt")).unwrap();
    assert_eq!(capture.source, "trace-cmd report");
    assert_eq!(capture.events.len(), 21);
    assert!(capture.syncs.is_empty());
    assert_eq!(capture.tsc_hz, None);
    assert_eq!(
        capture.lost_events, 1,
        "`[EVENTS DROPPED]` counts as at least one"
    );

    // `1349.940954051` is the TSC 1349940954051 with a dot put in.
    let first = &capture.events[0];
    assert_eq!(
        (first.tsc, first.cpu, first.pid, first.comm.as_str()),
        (1349940954051, 1, 12333, "qemu-system-x86")
    );
    assert_eq!(
        first.kind,
        KvmEventKind::WriteTscOffset {
            vcpu: 0,
            prev: 0,
            next: 18446742723768597565
        }
    );
    // Read as i64, the offset is minus the host TSC at VM creation (what PVM reports).
    assert_eq!(18446742723768597565u64 as i64, -1349940954051);

    let pio: Vec<_> = capture
        .events
        .iter()
        .filter(|e| e.kind.name() == "kvm_pio")
        .collect();
    assert_eq!(
        pio[0].kind,
        KvmEventKind::Pio {
            write: true,
            port: 0x6a0,
            size: 4,
            count: 1,
            val: Some(0x4ebfff1b)
        }
    );
    assert_eq!(pio[0].tsc, 1349941301202);
    assert!(capture.events.contains(&vftrace_kvm::KvmEvent {
        tsc: 1349941299876,
        cpu: 1,
        pid: 12333,
        comm: "qemu-system-x86".into(),
        kind: KvmEventKind::Exit {
            reason: "IO_INSTRUCTION".into(),
            rip: Some(0xff0b),
            vcpu: Some(0)
        },
    }));
    assert!(capture.events.iter().any(|e| e.kind
        == KvmEventKind::Entry {
            vcpu: Some(1),
            rip: Some(0xff1f)
        }
        && e.cpu == 0));
    assert!(capture.events.iter().any(|e| e.kind
        == KvmEventKind::Mmio {
            write: true,
            len: 4,
            gpa: 0xfee000b0,
            val: Some(0)
        }));
    assert!(capture
        .events
        .iter()
        .any(|e| e.kind == KvmEventKind::Hypercall { nr: 0xc }));
    assert!(capture.events.iter().any(|e| e.kind
        == KvmEventKind::Other {
            name: "kvm_msr".into(),
            fields: "msr_read 10 = 0x2d4f1f6c17a".into()
        }));
}

#[test]
fn tracefs_text_with_and_without_irq_flags() {
    let plain = read_capture(&data("tracefs-trace.txt")).unwrap();
    let flagged = read_capture(&data("tracefs-trace-noirqinfo.txt")).unwrap();
    for capture in [&plain, &flagged] {
        assert_eq!(capture.source, "tracefs text");
        assert_eq!(capture.events.len(), 8);
        assert_eq!(capture.lost_events, 0);
        assert_eq!(
            kinds(capture)[..5],
            [
                "kvm_write_tsc_offset",
                "kvm_write_tsc_offset",
                "kvm_write_tsc_offset",
                "kvm_userspace_exit",
                "kvm_pio"
            ]
        );
        assert_eq!(
            capture.events[4].kind,
            KvmEventKind::Pio {
                write: true,
                port: 0x6a0,
                size: 4,
                count: 1,
                val: Some(0x4ebfff1b)
            }
        );
        assert_eq!(capture.events[4].tsc, 2132114718043);
    }
    assert_eq!(plain.events, flagged.events);

    // trace_pipe output: no header at all.
    let text = std::fs::read_to_string(data("tracefs-trace-noirqinfo.txt")).unwrap();
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let piped = parse_capture(body.as_bytes(), Path::new("pipe.txt")).unwrap();
    assert_eq!(piped.events, plain.events);
}

#[test]
fn lost_event_lines_are_counted() {
    let text = "# tracer: nop\n a-1 [000] 10: kvm_pio: pio_read at 0x10 size 1 count 1 val 0x0\nCPU:1 [LOST 41 EVENTS]\n a-1 [001] 20: x: y\nCPU:0 [LOST 1 EVENTS]\n";
    let capture = parse_capture(text.as_bytes(), Path::new("t")).unwrap();
    assert_eq!(capture.lost_events, 42);
    assert_eq!(capture.events.len(), 2);
}

fn error_of(bytes: &[u8]) -> CaptureError {
    match parse_capture(bytes, Path::new("bad.kvm")) {
        Ok(c) => panic!("{:?} was read: {c:?}", String::from_utf8_lossy(bytes)),
        Err(e) => e,
    }
}

#[test]
fn garbage_is_an_error_naming_file_and_line() {
    let good = " a-1 [000] 10: kvm_pio: pio_read at 0x10 size 1 count 1 val 0x0\n";
    for (bad, line) in [
        ("hello world\n", 1),
        ("garbage", 1),
        ("\0\0\0\0", 1),
        ("# tracer: nop\n a-1 [000] 1.5: x: y\n", 2),
        (" a-1 [000] 10: kvm_pio: pio_read\n a-x [000] 10: x: y\n", 2),
        (" a-1 [000] 99999999999999999999999: x: y\n", 1),
        (" a-1 [000] 99999999999.999999999: x: y\n", 1),
        (" a-1 [999999999999] 10: x: y\n", 1),
        (" a-1 [000] 10 x y\n", 1),
        ("CPU:0 [LOST many EVENTS]\n", 1),
    ] {
        let text = format!("{good}{bad}");
        let e = error_of(text.as_bytes());
        assert_eq!(
            (e.file.as_path(), e.line),
            (Path::new("bad.kvm"), line + 1),
            "{bad:?}: {e}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("bad.kvm:{}: ", line + 1)),
            "{e}"
        );
    }
    let e = error_of(b"");
    assert!(e.to_string().contains("empty"), "{e}");
    let e = error_of(b"\x17\x08\x44tracing6\0\0\0");
    assert!(e.to_string().contains("trace-cmd report"), "{e}");
    let e = error_of(b"# vftrace kvm capture v9\n");
    assert!(e.to_string().contains("version"), "{e}");
}

#[test]
fn over_long_lines_are_refused_even_leniently() {
    let mut text = " a-1 [000] 10: x: ".to_string();
    text.push_str(&"y".repeat(70_000));
    text.push('\n');
    let e = error_of(text.as_bytes());
    assert_eq!(e.line, 1);
    assert!(e.message.contains("limit"), "{e}");
    let lenient = ParseOptions { lenient: true };
    assert!(parse_capture_with(text.as_bytes(), Path::new("x"), &lenient).is_err());
}

const VFTRACE: &str = "# vftrace kvm capture v1\nclock x86-tsc\nsync 100 5000 20\n\
ev 150 1 77 qemu kvm_pio pio_write at 0xf4 size 4 count 1 val 0x21\n\
ev 160 0 77 qemu kvm_write_tsc_offset vcpu=0 prev=0 next=18446744073709551516\n\
sync 2596130100 1000005000\ntsc_hz 2596130000.0 sync\nlost 0\nend 2\n";

#[test]
fn vftrace_capture_and_its_damage() {
    let capture = parse_capture(VFTRACE.as_bytes(), Path::new("ok")).unwrap();
    assert_eq!(capture.source, "vftrace");
    assert_eq!(capture.events.len(), 2);
    assert_eq!(
        capture.events[1].kind,
        KvmEventKind::WriteTscOffset {
            vcpu: 0,
            prev: 0,
            next: u64::MAX - 99
        }
    );
    assert_eq!(capture.tsc_hz, Some(2596130000.0));
    assert_eq!(capture.tsc_to_monotonic_ns(100), Some(5000.0));
    assert_eq!(capture.monotonic_ns_to_tsc(5000), Some(100.0));

    // Cut anywhere before `end`: an error naming the last line, unless lenient.
    let lines: Vec<&str> = VFTRACE.lines().collect();
    for keep in 1..lines.len() {
        let cut = lines[..keep].join("\n") + "\n";
        let e = error_of(cut.as_bytes());
        assert_eq!(e.line, keep, "{cut}");
        let lenient = parse_capture_with(
            cut.as_bytes(),
            Path::new("x"),
            &ParseOptions { lenient: true },
        )
        .unwrap();
        assert!(lenient.capture.events.len() <= 2);
    }
    // Cut in the middle of a line.
    let e = error_of(&VFTRACE.as_bytes()[..VFTRACE.find("0x21").unwrap()]);
    assert_eq!(e.line, 4);

    for (from, to, line) in [
        ("end 2", "end 3", 9),
        ("lost 0", "lost -1", 8),
        ("tsc_hz 2596130000.0", "tsc_hz 1e300", 7),
        ("tsc_hz 2596130000.0", "tsc_hz NaN", 7),
        ("clock x86-tsc", "clock local", 2),
        ("sync 100 5000 20", "sync 100", 3),
        (
            "ev 150 1 77 qemu kvm_pio pio_write at 0xf4 size 4 count 1 val 0x21",
            "ev 150 1 77",
            4,
        ),
        ("ev 150 1 77 qemu", "ev 150 one 77 qemu", 4),
        ("ev 150 1 77 qemu", "ev 150 1 77 q%zzemu", 4),
        ("ev 150", "ev 99999999999999999999", 4),
        ("lost 0\n", "lost 0\nbogus item\n", 9),
        ("end 2\n", "end 2\nev 1 1 1 a b\n", 10),
    ] {
        let damaged = VFTRACE.replacen(from, to, 1);
        assert_ne!(damaged, VFTRACE);
        let e = error_of(damaged.as_bytes());
        assert_eq!(e.line, line, "{to}: {e}");
    }
}

#[test]
fn lenient_reading_skips_and_counts() {
    let text = " a-1 [000] 10: x: y\nnonsense\n a-1 [000] 11: x: y\nmore nonsense\n";
    assert_eq!(error_of(text.as_bytes()).line, 2);
    let parsed = parse_capture_with(
        text.as_bytes(),
        Path::new("l"),
        &ParseOptions { lenient: true },
    )
    .unwrap();
    assert_eq!(parsed.capture.events.len(), 2);
    assert_eq!(parsed.skipped_lines, 2);
    assert_eq!(
        parsed.skipped.iter().map(|e| e.line).collect::<Vec<_>>(),
        [2, 4]
    );
    // Nothing readable at all is still an error.
    let e =
        parse_capture_with(b"a\nb\n", Path::new("l"), &ParseOptions { lenient: true }).unwrap_err();
    assert!(e.message.contains("not a capture"), "{e}");
}

#[test]
fn random_bytes_never_panic() {
    // Deterministic xorshift: mutations of real captures and plain noise.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seeds = [
        VFTRACE.as_bytes().to_vec(),
        std::fs::read(data("trace-cmd-report.txt")).unwrap(),
        std::fs::read(data("tracefs-trace-noirqinfo.txt")).unwrap(),
    ];
    for round in 0..3000 {
        let mut bytes = seeds[round % seeds.len()].clone();
        for _ in 0..(next() % 8) {
            let at = (next() as usize) % bytes.len().max(1);
            match next() % 4 {
                0 if !bytes.is_empty() => bytes[at] = next() as u8,
                1 if !bytes.is_empty() => bytes.truncate(at),
                2 => bytes.insert(
                    at.min(bytes.len()),
                    b"0123456789:.[]- %\n"[next() as usize % 18],
                ),
                _ => {}
            }
        }
        for lenient in [false, true] {
            let _ = parse_capture_with(&bytes, Path::new("fuzz"), &ParseOptions { lenient });
        }
    }
}
