//! End-to-end merges: synthetic guest traces and captures with known clocks, and a real host
//! program recorded by uftrace 0.13, checked in the Chrome JSON the merge writes.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use vftrace_convert::ChromeJsonWriter;
use vftrace_format::clock::{ClockMap, ClockSource};
use vftrace_format::dir::TraceDirWriter;
use vftrace_format::info::Info;
use vftrace_format::maps;
use vftrace_format::record::{Record, RecordType};
use vftrace_format::sym::Symbol;
use vftrace_format::task::TaskLine;
use vftrace_kvm::{Capture, ClockSync, KvmEvent, KvmEventKind};
use vftrace_merge::{
    merge, AlignmentKind, MergeError, MergeOptions, MergeReport, KVM_PID, UNKNOWN_THREAD_TID,
    UNKNOWN_VMM_GUEST_PID as GUEST_PID,
};

const HZ: f64 = 2.6e9;
/// Host TSC at the start of the synthetic captures (about 5.3 h of uptime).
const H0: u64 = 50_000_000_000_000;
/// CLOCK_MONOTONIC at H0.
const M0: u64 = 1_000_000_000_000;
const US: u64 = 2_600;
const KERNEL: &str = "/guest/kernel";
const KERNEL_BASE: u64 = 0x20_0000;

/// A fresh directory, removed when the test passes.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("vftrace-merge-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// Expected output time (CLOCK_MONOTONIC ns) of host TSC `tsc` in the synthetic captures.
fn mono(tsc: u64) -> f64 {
    M0 as f64 + (tsc as f64 - H0 as f64) / HZ * 1e9
}

/// Guest functions: f at +0x100 (size 0x100), g at +0x200, h at +0x300.
fn addr(name: &str) -> u64 {
    KERNEL_BASE
        + match name {
            "f" => 0x100,
            "g" => 0x200,
            _ => 0x300,
        }
}

/// A guest trace: one tid per entry of `threads`, records given as (guest TSC, entry?, depth,
/// function), converted to ns with the guest clock.
/// (guest TSC, entry?, depth, function name).
type GuestRecord<'a> = (u64, bool, u16, &'a str);

fn write_guest(dir: &Path, clock: &ClockMap, threads: &[(u32, Vec<GuestRecord>)]) {
    let mut w = TraceDirWriter::create(dir).unwrap();
    let sid = "0123456789abcdef";
    let mut tasks = vec![TaskLine::Session {
        timestamp_ns: 0,
        pid: 1,
        sid: sid.into(),
        exename: KERNEL.into(),
    }];
    for (tid, recs) in threads {
        let records = recs.iter().map(|&(tsc, entry, depth, f)| {
            let kind = if entry {
                RecordType::Entry
            } else {
                RecordType::Exit
            };
            Record::new(clock.tsc_to_ns(tsc), kind, depth, addr(f))
        });
        w.write_records(*tid, records.collect::<Vec<_>>()).unwrap();
        tasks.push(TaskLine::Task {
            timestamp_ns: 0,
            tid: *tid,
            pid: 1,
        });
    }
    w.write_tasks(&tasks).unwrap();
    w.write_map(
        sid,
        &maps::guest_map(KERNEL_BASE, KERNEL_BASE + 0x10_0000, KERNEL),
    )
    .unwrap();
    let syms = [
        Symbol::function(0x100, 0x100, "f"),
        Symbol::function(0x200, 0x100, "g"),
        Symbol::function(0x300, 0x100, "h"),
    ];
    w.write_symbols(KERNEL, &syms).unwrap();
    let mut info = Info::new(KERNEL, "kernel");
    info.tids = threads.iter().map(|(t, _)| *t).collect();
    w.write_info(&info).unwrap();
    w.write_clock(clock).unwrap();
    w.finish().unwrap();
}

fn ev(tsc: u64, pid: u32, kind: KvmEventKind) -> KvmEvent {
    KvmEvent {
        tsc,
        cpu: 1,
        pid,
        comm: "qemu-system-x86".into(),
        kind,
    }
}

fn tsc_offset(tsc: u64, pid: u32, vcpu: u32, prev: i64, next: i64) -> KvmEvent {
    ev(
        tsc,
        pid,
        KvmEventKind::WriteTscOffset {
            vcpu,
            prev: prev as u64,
            next: next as u64,
        },
    )
}

fn pio(tsc: u64, pid: u32, port: u16, val: u64) -> KvmEvent {
    ev(
        tsc,
        pid,
        KvmEventKind::Pio {
            write: true,
            port,
            size: 4,
            count: 1,
            val: Some(val),
        },
    )
}

fn write_capture(path: &Path, events: Vec<KvmEvent>) {
    let capture = Capture {
        events,
        syncs: vec![
            ClockSync {
                tsc: H0,
                mono_ns: M0,
            },
            ClockSync {
                tsc: H0 + 1_300_000_000,
                mono_ns: M0 + 500_000_000,
            },
        ],
        tsc_hz: Some(HZ),
        lost_events: 0,
        source: "vftrace".into(),
        ..Default::default()
    };
    vftrace_kvm::write_capture(path, &capture).unwrap();
}

/// Runs a merge into Chrome JSON and returns the report and the parsed events.
/// Writes `events` as a capture beside the guest trace and merges the two.
fn merge_guest_and_capture(
    dir: &Scratch,
    guest: PathBuf,
    events: Vec<KvmEvent>,
) -> (MergeReport, Vec<Value>) {
    let capture = dir.0.join("kvm.capture");
    write_capture(&capture, events);
    run_merge(&MergeOptions {
        guests: vec![guest],
        kvm: Some(capture),
        ..Default::default()
    })
}

fn run_merge(opts: &MergeOptions) -> (MergeReport, Vec<Value>) {
    let mut sink = ChromeJsonWriter::new(Vec::new()).unwrap();
    let report = merge(opts, &mut sink).unwrap();
    let doc: Value = serde_json::from_slice(&sink.into_inner()).expect("the output is valid JSON");
    (report, doc["traceEvents"].as_array().unwrap().clone())
}

/// Track names: (pid, tid) -> thread name, pid -> process name.
fn names(events: &[Value]) -> (BTreeMap<u64, String>, BTreeMap<(u64, u64), String>) {
    let mut procs = BTreeMap::new();
    let mut threads = BTreeMap::new();
    for e in events.iter().filter(|e| e["ph"] == "M") {
        let pid = e["pid"].as_u64().unwrap();
        let name = e["args"]["name"].as_str().unwrap().to_string();
        match e["name"].as_str().unwrap() {
            "process_name" => {
                procs.insert(pid, name);
            }
            "thread_name" => {
                threads.insert((pid, e["tid"].as_u64().unwrap()), name);
            }
            _ => {}
        }
    }
    (procs, threads)
}

/// Slices of one track as (name, begin us, end us), checking B/E balance.
fn slices(events: &[Value], pid: u32, tid: u64) -> Vec<(String, f64, f64)> {
    let mut open: Vec<(String, f64)> = Vec::new();
    let mut out = Vec::new();
    for e in events.iter().filter(|e| e["pid"] == pid && e["tid"] == tid) {
        match e["ph"].as_str().unwrap() {
            "B" => open.push((
                e["name"].as_str().unwrap().into(),
                e["ts"].as_f64().unwrap(),
            )),
            "E" => {
                let (name, begin) = open.pop().expect("E without B");
                if name != vftrace_merge::GUEST_RUN {
                    out.push((name, begin, e["ts"].as_f64().unwrap()));
                }
            }
            _ => {}
        }
    }
    assert!(open.is_empty());
    out
}

/// Track of guest vCPU `vcpu` when its host thread is unknown.
const fn unknown(vcpu: u32) -> u64 {
    (UNKNOWN_THREAD_TID + vcpu) as u64
}

fn instants<'a>(events: &'a [Value], pid: u32, name: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["ph"] == "i" && e["pid"] == pid && e["name"] == name)
        .collect()
}

/// (start, end) of each flow (JSON "s" and "f" events by id).
fn flows(events: &[Value]) -> Vec<(f64, f64)> {
    let of = |ph: &str| -> Vec<(u64, f64)> {
        events
            .iter()
            .filter(|e| e["ph"] == ph)
            .map(|e| (e["id"].as_u64().unwrap(), e["ts"].as_f64().unwrap()))
            .collect()
    };
    let ends = of("f");
    of("s")
        .into_iter()
        .map(|(id, ts)| (ts, ends.iter().find(|(i, _)| *i == id).expect("flow end").1))
        .collect()
}

fn assert_us(actual: f64, expected_ns: f64, what: &str) {
    assert!(
        (actual - expected_ns / 1e3).abs() < 0.002,
        "{what}: {actual} us, expected {} us",
        expected_ns / 1e3
    );
}

#[test]
fn pvm_guest_on_host_timeline_with_wrapping_markers() {
    let dir = scratch("pvm");
    let guest = dir.0.join("guest");
    // PVM: the guest reads the host TSC; KVM still records an offset (minus the host TSC at
    // VM creation), three times.
    let created = H0 + 1_000 * US;
    let off = -(created as i64);
    let clock = ClockMap::new(HZ, created + 10 * US, 0, ClockSource::Guest);
    // A marker whose low 32 bits wrap between the guest's write and the host's pio.
    let wrap_write = ((((H0 + 200_000 * US) >> 32) + 1) << 32) - 3 * US;
    let f_in = created + 50_000 * US;
    let recs = vec![
        (f_in, true, 0, "f"),
        (f_in + 20 * US, true, 1, "g"),
        (f_in + 70 * US, false, 1, "g"),
        (wrap_write + 40 * US, false, 0, "f"),
    ];
    write_guest(&guest, &clock, &[(1, recs)]);
    let writes = [created + 20 * US, f_in + 30 * US, wrap_write];
    let latencies = [28 * US, 4 * US, 5 * US];
    let mut events: Vec<KvmEvent> = (0..3)
        .map(|i| tsc_offset(created + i, 7000, 0, if i == 0 { 0 } else { off }, off))
        .collect();
    for (w, l) in writes.iter().zip(latencies) {
        events.push(pio(w + l, 7000, 0x6a0, w & 0xffff_ffff));
    }
    events.push(pio(wrap_write + 100 * US, 7000, 0xf4, 0x10)); // isa-debug-exit
    let capture = dir.0.join("kvm.capture");
    write_capture(&capture, events);
    assert!(
        ((wrap_write + 5 * US) as u32) < (wrap_write as u32),
        "the marker's low bits wrap before the pio"
    );

    let opts = MergeOptions {
        guests: vec![guest],
        kvm: Some(capture),
        ..Default::default()
    };
    let (report, events) = run_merge(&opts);
    println!("{report}");
    assert_eq!(report.guests[0].alignment, AlignmentKind::Identity);
    assert!(!report.guests[0].alignment_doubtful);
    assert_eq!(report.guests[0].markers.len(), 3);
    for (pair, (w, l)) in report.guests[0]
        .markers
        .iter()
        .zip(writes.iter().zip(latencies))
    {
        assert_eq!(
            pair.guest_tsc, *w,
            "full guest TSC rebuilt from the low 32 bits"
        );
        assert_eq!(pair.guest_host_tsc, *w);
        assert!(
            pair.pio_host_tsc >= pair.guest_host_tsc,
            "cause before effect"
        );
        assert_eq!(pair.residual_tsc(), l as i64);
    }
    let stats = report.guests[0].residual_stats.unwrap();
    assert!(
        (stats.min_ns - 4.0 * US as f64 / 2.6).abs() < 1.0 && (stats.max_ns - 28e3).abs() < 1.0,
        "{stats}"
    );
    assert_eq!(report.guests[0].recorded_offsets[&0][1].offset, off);
    assert_eq!(report.guests[0].functions, 2);
    assert_eq!(report.tsc_hz, HZ);

    let (procs, threads) = names(&events);
    // The guest is a process named after its image; its vCPU track is the host thread that
    // ran it (the capture names no process: the guest's pid is made up).
    assert_eq!(procs[&(GUEST_PID as u64)], "kernel");
    assert!(!procs.contains_key(&(KVM_PID as u64)), "{procs:?}");
    assert_eq!(threads[&(GUEST_PID as u64, 7000)], "vCPU 0");
    assert_eq!(report.guests[0].vcpu_threads, [Some(7000)]);
    let s = slices(&events, GUEST_PID, 7000);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].0, "g");
    assert_us(s[0].1, mono(f_in + 20 * US), "g begins");
    assert_eq!(s[1].0, "f");
    assert_us(s[1].1, mono(f_in), "f begins");
    assert_us(s[1].2, mono(wrap_write + 40 * US), "f ends");
    // Markers: at the pio, and at the guest's write before it, joined by a flow; hex as hex.
    let host_markers = instants(&events, GUEST_PID, "marker (kvm_pio)");
    let guest_markers = instants(&events, GUEST_PID, "marker (guest write)");
    assert_eq!((host_markers.len(), guest_markers.len()), (3, 3));
    let mut expected_flows = Vec::new();
    for (h, g) in host_markers.iter().zip(&guest_markers) {
        assert!(g["ts"].as_f64().unwrap() < h["ts"].as_f64().unwrap());
        assert_eq!(h["args"]["guest_tsc"], g["args"]["guest_tsc"]);
        assert!(h["args"]["guest_tsc"].as_str().unwrap().starts_with("0x"));
        assert_eq!(h["args"]["port"], "0x6a0");
        expected_flows.push((g["ts"].as_f64().unwrap(), h["ts"].as_f64().unwrap()));
    }
    assert_eq!(flows(&events), expected_flows);
    assert_eq!(instants(&events, GUEST_PID, "tsc offset vCPU 0").len(), 3);
    assert_eq!(instants(&events, GUEST_PID, "pio write 0xf4").len(), 1);
}

#[test]
fn vmx_offsets_two_vcpus_and_an_offset_change() {
    let dir = scratch("vmx");
    let guest = dir.0.join("guest");
    let created = H0 + 500 * US;
    let off0 = -(created as i64) + 1_000_000;
    let off1a = off0 + 12_345;
    let change_at = H0 + 400_000 * US;
    let off1b = off1a + 2_600_000; // the guest's clock on vCPU 1 jumps 1 ms ahead
    let g0 = |host: u64| host.wrapping_add(off0 as u64);
    let g1 = |host: u64| {
        if host < change_at {
            host.wrapping_add(off1a as u64)
        } else {
            host.wrapping_add(off1b as u64)
        }
    };
    let clock = ClockMap::new(HZ, g0(created + 5 * US), 0, ClockSource::Guest);
    // vCPU 0 (tid 10) runs f; vCPU 1 (tid 20) runs h across the offset change.
    let (f_at, h_at) = (H0 + 100_000 * US, H0 + 300_000 * US);
    let h_end = H0 + 600_000 * US;
    write_guest(
        &guest,
        &clock,
        &[
            (
                10,
                vec![
                    (g0(f_at), true, 0, "f"),
                    (g0(f_at + 10 * US), false, 0, "f"),
                ],
            ),
            (
                20,
                vec![(g1(h_at), true, 0, "h"), (g1(h_end), false, 0, "h")],
            ),
        ],
    );
    let events = vec![
        tsc_offset(created, 7000, 0, 0, off0),
        tsc_offset(created + 50, 7001, 1, 0, off1a),
        tsc_offset(change_at, 7001, 1, off1a, off1b),
        pio(
            f_at + 5 * US + 4 * US,
            7000,
            0x6a0,
            g0(f_at + 5 * US) & 0xffff_ffff,
        ),
        pio(
            h_at + 30 * US,
            7001,
            0x6a0,
            g1(h_at + 26 * US) & 0xffff_ffff,
        ),
        pio(
            h_end - 30 * US,
            7001,
            0x6a0,
            g1(h_end - 35 * US) & 0xffff_ffff,
        ),
    ];
    let (report, events) = merge_guest_and_capture(&dir, guest, events);
    println!("{report}");
    assert_eq!(
        report.guests[0].alignment,
        AlignmentKind::KvmOffset,
        "{}",
        report.guests[0].alignment_reason
    );
    assert!(
        report.guests[0]
            .residuals_ns
            .iter()
            .all(|r| (0.0..=5_000.0).contains(r)),
        "{:?}",
        report.guests[0].residuals_ns
    );
    assert_eq!(
        report.guests[0]
            .markers
            .iter()
            .map(|m| m.vcpu)
            .collect::<Vec<_>>(),
        [0, 1, 1]
    );
    assert_eq!(
        report.guests[0].applied_offsets[&1].len(),
        3,
        "vCPU 1: prev, first offset, changed offset"
    );
    let (_, threads) = names(&events);
    assert_eq!(threads[&(GUEST_PID as u64, 7001)], "vCPU 1");
    assert_eq!(report.guests[0].vcpu_threads, [Some(7000), Some(7001)]);
    let f = slices(&events, GUEST_PID, 7000);
    assert_eq!(f[0].0, "f");
    assert_us(f[0].1, mono(f_at), "f begins");
    assert_us(f[0].2, mono(f_at + 10 * US), "f ends");
    let h = slices(&events, GUEST_PID, 7001);
    assert_eq!(h[0].0, "h");
    assert_us(h[0].1, mono(h_at), "h begins before the offset change");
    assert_us(h[0].2, mono(h_end), "h ends after the offset change");
}

#[test]
fn no_markers_no_offsets_is_identity_and_says_so() {
    let dir = scratch("nomarkers");
    let guest = dir.0.join("guest");
    let clock = ClockMap::new(HZ, H0 + 7 * US, 0, ClockSource::Guest);
    write_guest(
        &guest,
        &clock,
        &[(
            1,
            vec![(H0 + 10 * US, true, 0, "f"), (H0 + 20 * US, false, 0, "f")],
        )],
    );
    let (report, events) =
        merge_guest_and_capture(&dir, guest, vec![pio(H0 + 30 * US, 1, 0x3f8, 0x41)]);
    assert_eq!(report.guests[0].alignment, AlignmentKind::Identity);
    assert!(
        report.guests[0].alignment_reason.contains("no markers"),
        "{}",
        report.guests[0].alignment_reason
    );
    assert!(report.to_string().contains("markers:   none"));
    assert_us(
        slices(&events, GUEST_PID, unknown(0))[0].1,
        mono(H0 + 10 * US),
        "f begins",
    );
}

/// True if `tool` runs. In CI a missing tool fails the test; elsewhere it is skipped loudly.
fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        vftrace_testsupport::missing(tool, "this test needs it");
    }
    ok
}

#[test]
fn real_uftrace_host_trace_placed_with_clock_pairs() {
    if !have("gcc") || !have("uftrace") {
        return;
    }
    let dir = scratch("uftrace");
    let src = dir.0.join("prog.c");
    std::fs::write(
        &src,
        "#include <unistd.h>\n__attribute__((noinline)) int leaf(int x) { usleep(1000); return x * 2; }\n\
         __attribute__((noinline)) int mid(int x) { return leaf(x) + 1; }\n\
         int main(void) { int s = 0; for (int i = 0; i < 3; i++) s += mid(i); return s == 0; }\n",
    )
    .unwrap();
    let prog = dir.0.join("prog");
    vftrace_testsupport::gcc(&src, &prog, &["-pg", "-O1"]);
    let trace = dir.0.join("trace");

    // A capture as `vftrace kvm` makes it: clock pairs before and after, frequency from them.
    let first = vftrace_kvm::clock::measure_sync(64).sync;
    vftrace_testsupport::uftrace_record(&prog, &trace, &["--no-libcall"]);
    std::thread::sleep(std::time::Duration::from_millis(120));
    let last = vftrace_kvm::clock::measure_sync(64).sync;
    let hz = vftrace_kvm::clock::tsc_hz_between(first, last).unwrap();
    let capture = Capture {
        events: vec![pio(first.tsc + 1000, 4242, 0x3f8, 0x41)],
        syncs: vec![first, last],
        tsc_hz: Some(hz),
        lost_events: 0,
        source: "vftrace".into(),
        ..Default::default()
    };
    let capture_path = dir.0.join("kvm.capture");
    vftrace_kvm::write_capture(&capture_path, &capture).unwrap();

    let opts = MergeOptions {
        kvm: Some(capture_path),
        hosts: vec![trace.clone()],
        ..Default::default()
    };
    let (report, events) = run_merge(&opts);
    println!("{report}");
    assert_eq!(report.host_traces.len(), 1);
    assert_eq!(
        report.host_traces[0].functions, 7,
        "main, 3 x mid, 3 x leaf"
    );

    // The judge: uftrace's own Chrome export of the same trace (ts in us, CLOCK_MONOTONIC).
    let dump = Command::new("uftrace")
        .args(["dump", "--chrome", "-d"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(dump.status.success());
    let theirs: Value = serde_json::from_slice(&dump.stdout).expect("uftrace dump --chrome JSON");
    let their_begins: Vec<(String, f64)> = theirs["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        // uftrace also exports its sched events (linux:schedule) as slices.
        .filter(|e| {
            e["ph"] == "B" && ["main", "mid", "leaf"].contains(&e["name"].as_str().unwrap())
        })
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["ts"].as_f64().unwrap(),
            )
        })
        .collect();
    let (procs, _) = names(&events);
    let pid = procs
        .iter()
        .find(|(_, n)| n.starts_with("host: prog "))
        .map(|(p, _)| *p)
        .expect("a host: prog PID process");
    let ours: Vec<(String, f64)> = {
        let mut v: Vec<(String, f64)> = events
            .iter()
            .filter(|e| e["ph"] == "B" && e["pid"] == pid)
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["ts"].as_f64().unwrap(),
                )
            })
            .collect();
        v.sort_by(|a, b| a.1.total_cmp(&b.1));
        v
    };
    assert_eq!(ours.len(), 7);
    assert_eq!(ours.len(), their_begins.len());
    for ((n1, t1), (n2, t2)) in ours.iter().zip(&their_begins) {
        assert_eq!(n1, n2);
        assert!(
            (t1 - t2).abs() < 0.002,
            "{n1}: ours {t1} us, uftrace {t2} us"
        );
    }
    // And the program ran between the capture's two clock pairs.
    let main_ts = ours.iter().find(|(n, _)| n == "main").unwrap().1 * 1e3;
    assert!(main_ts > first.mono_ns as f64 && main_ts < last.mono_ns as f64);
    // The KVM event is on the same scale: the capture's first pair is at its mono time.
    let kvm_ts = events
        .iter()
        .find(|e| e["pid"] == KVM_PID && e["ph"] == "i")
        .unwrap()["ts"]
        .as_f64()
        .unwrap()
        * 1e3;
    assert!(
        (kvm_ts - (first.mono_ns as f64 + 1000.0 / hz * 1e9)).abs() < 2.0,
        "{kvm_ts}"
    );
}

#[test]
fn bad_inputs_are_errors_naming_the_file() {
    let dir = scratch("bad");
    let guest = dir.0.join("guest");
    let clock = ClockMap::new(HZ, H0, 0, ClockSource::Guest);
    write_guest(
        &guest,
        &clock,
        &[(
            1,
            vec![
                (H0 + 10, true, 0, "f"),
                (H0 + 20, true, 1, "g"),
                (H0 + 30, false, 1, "g"),
                (H0 + 40, false, 0, "f"),
            ],
        )],
    );

    // Garbage in the capture: the file and line.
    let capture = dir.0.join("kvm.capture");
    write_capture(&capture, vec![pio(H0 + 5, 1, 0x6a0, 1)]);
    let mut text = std::fs::read_to_string(&capture).unwrap();
    text = text.replacen("\nev ", "\nthis is not an event\nev ", 1);
    std::fs::write(&capture, text).unwrap();
    let mut sink = ChromeJsonWriter::new(Vec::new()).unwrap();
    let err = merge(
        &MergeOptions {
            guests: vec![guest.clone()],
            kvm: Some(capture.clone()),
            ..Default::default()
        },
        &mut sink,
    )
    .unwrap_err();
    assert!(matches!(err, MergeError::Capture(_)));
    let msg = err.to_string();
    assert!(
        msg.contains("kvm.capture:") && msg.chars().any(|c| c.is_ascii_digit()),
        "{msg}"
    );

    // No inputs at all.
    let err = merge(&MergeOptions::default(), &mut sink).unwrap_err();
    assert!(matches!(err, MergeError::NoInput));

    // A guest trace without vftrace.clock.
    let no_clock = dir.0.join("noclock");
    std::fs::create_dir_all(&no_clock).unwrap();
    for entry in std::fs::read_dir(&guest).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap() != "vftrace.clock" {
            std::fs::copy(&p, no_clock.join(p.file_name().unwrap())).unwrap();
        }
    }
    let err = merge(
        &MergeOptions {
            guests: vec![no_clock],
            tsc_hz: Some(HZ),
            ..Default::default()
        },
        &mut sink,
    )
    .unwrap_err();
    assert!(err.to_string().contains("noclock/vftrace.clock"), "{err}");

    // A missing host directory.
    let err = merge(
        &MergeOptions {
            hosts: vec![dir.0.join("nope")],
            tsc_hz: Some(HZ),
            ..Default::default()
        },
        &mut sink,
    )
    .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");

    // A record file corrupt after its first two records: they are kept, the rest reported.
    let dat = guest.join("1.dat");
    let mut bytes = std::fs::read(&dat).unwrap();
    bytes[32..48].copy_from_slice(&[0xff; 16]);
    std::fs::write(&dat, &bytes).unwrap();
    let (report, events) = run_merge(&MergeOptions {
        guests: vec![guest.clone()],
        tsc_hz: Some(HZ),
        ..Default::default()
    });
    assert_eq!(report.data_errors.len(), 1);
    assert!(
        report.data_errors[0].contains("1.dat") && report.data_errors[0].contains("offset 32"),
        "{:?}",
        report.data_errors
    );
    assert_eq!(
        slices(&events, GUEST_PID, unknown(0)).len(),
        2,
        "f and g, closed at the last good record"
    );

    // Truncated mid-record.
    std::fs::write(&dat, &bytes[..40]).unwrap();
    let (report, _) = run_merge(&MergeOptions {
        guests: vec![guest],
        tsc_hz: Some(HZ),
        ..Default::default()
    });
    assert!(
        report.data_errors.iter().any(|e| e.contains("1.dat")),
        "{:?}",
        report.data_errors
    );
}

#[test]
fn perfetto_output_through_timeline_output() {
    let dir = scratch("pftrace");
    let guest = dir.0.join("guest");
    let clock = ClockMap::new(HZ, H0, 0, ClockSource::Guest);
    write_guest(
        &guest,
        &clock,
        &[(1, vec![(H0 + 10, true, 0, "f"), (H0 + 20, false, 0, "f")])],
    );
    let out = dir.0.join("merged.pftrace");
    let mut output = vftrace_convert::TimelineOutput::create(&out, None, &[&guest]).unwrap();
    let report = merge(
        &MergeOptions {
            guests: vec![guest],
            tsc_hz: Some(HZ),
            ..Default::default()
        },
        &mut *output.sink,
    )
    .unwrap();
    assert_eq!(report.guests[0].functions, 1);
    output.commit().unwrap();
    let bytes = std::fs::read(&out).unwrap();
    assert!(
        bytes.len() > 20 && bytes.windows(6).any(|w| w == b"vCPU 0"),
        "track name in the protobuf"
    );
}

#[test]
fn guest_marker_list_places_a_guest_with_an_unknown_offset() {
    // The capture missed VM creation (no offset events) and the guest's TSC is unrelated to
    // the host's: the guest's own marker list (full TSCs) lets the offset be estimated.
    let dir = scratch("estimated");
    let guest = dir.0.join("guest");
    let off: i64 = -(H0 as i64) + 77_777_777_777;
    let g = |host: u64| host.wrapping_add(off as u64);
    let clock = ClockMap::new(HZ, g(H0 + 100 * US), 0, ClockSource::Guest);
    let f_at = H0 + 2_000_000 * US; // 2 s in: several 2^32 wraps after the anchor
    write_guest(
        &guest,
        &clock,
        &[(
            1,
            vec![(g(f_at), true, 0, "f"), (g(f_at + 50 * US), false, 0, "f")],
        )],
    );
    let writes = [H0 + 1_000 * US, f_at + 10 * US, f_at + 900_000 * US];
    let latencies = [3 * US, 4 * US, 6 * US];
    let mut list = String::from("# vftrace guest markers: guest_tsc value phase (port 0x6a0)\n");
    for (i, w) in writes.iter().enumerate() {
        list.push_str(&format!("{} {:#x} {}\n", g(*w), g(*w) as u32, i + 1));
    }
    std::fs::write(guest.join("vftrace.markers"), list).unwrap();
    let events = writes
        .iter()
        .zip(latencies)
        .map(|(w, l)| pio(w + l, 7000, 0x6a0, g(*w) & 0xffff_ffff))
        .collect();
    let (report, events) = merge_guest_and_capture(&dir, guest, events);
    println!("{report}");
    assert_eq!(
        report.guests[0].alignment,
        AlignmentKind::MarkerEstimated,
        "{}",
        report.guests[0].alignment_reason
    );
    assert_eq!(
        (
            report.guests[0].guest_markers,
            report.guests[0].guest_markers_matched
        ),
        (3, 3)
    );
    assert_eq!(report.guests[0].marker_phases, [Some(1), Some(2), Some(3)]);
    // Estimated offset = true offset - smallest latency (3 us): f shows up 3 us late.
    assert_eq!(
        report.guests[0].applied_offsets[&u32::MAX][0].offset,
        off - 3 * US as i64
    );
    let f = slices(&events, GUEST_PID, 7000);
    assert_us(f[0].1, mono(f_at + 3 * US), "f begins (3 us late)");
    let host_markers = instants(&events, GUEST_PID, "marker (kvm_pio)");
    assert_eq!(host_markers[1]["args"]["phase"], 2);
    assert!(report.guests[0].residuals_ns.iter().all(|r| *r >= 0.0));
}

/// Complete slices of a track as (name, begin us, end us, args), from B/E pairs.
fn slices_with_args(events: &[Value], pid: u32, tid: u64) -> Vec<(String, f64, f64, Value)> {
    let mut open: Vec<(String, f64, Value)> = Vec::new();
    let mut out = Vec::new();
    for e in events.iter().filter(|e| e["pid"] == pid && e["tid"] == tid) {
        match e["ph"].as_str().unwrap() {
            "B" => open.push((
                e["name"].as_str().unwrap().into(),
                e["ts"].as_f64().unwrap(),
                e["args"].clone(),
            )),
            "E" => {
                let (name, begin, mut args) = open.pop().expect("E without B");
                if let (Some(a), Some(end_args)) = (args.as_object_mut(), e["args"].as_object()) {
                    a.extend(end_args.clone());
                } else if args.is_null() {
                    args = e["args"].clone();
                }
                out.push((name, begin, e["ts"].as_f64().unwrap(), args));
            }
            _ => {}
        }
    }
    out
}

/// Issue 12, on a host with VM exit events: a tracefs text capture of a VMX host
/// (tests/data/vmx-exits.txt: kvm_exit/kvm_entry, a preemption of the vCPU thread inside an
/// exit, QEMU's main thread waking up, a marker and a probe) merged with a guest trace.
#[test]
fn exits_and_preemption_are_spans_on_the_vcpu_track() {
    let dir = scratch("vmx-exits");
    let guest = dir.0.join("guest");
    const B: u64 = 1_000_000_000;
    let clock = ClockMap::new(HZ, B, 0, ClockSource::Guest);
    let recs = vec![
        (B + 10_000, true, 0, "f"),
        (B + 20_000, true, 1, "g"),
        (B + 2_700_000, false, 1, "g"),
        (B + 3_000_000, false, 0, "f"),
    ];
    write_guest(&guest, &clock, &[(1, recs)]);
    let write = B + 2_800_000;
    std::fs::write(
        guest.join("vftrace.markers"),
        format!(
            "# vftrace guest markers: guest_tsc value phase guest_tsc_after (port 0x6a0)\n{write} {:#x} 1 {}\n",
            write as u32,
            write + 12_000
        ),
    )
    .unwrap();
    std::fs::write(
        guest.join("vftrace.probes"),
        "# vftrace guest probes: id name\n2 checked\n",
    )
    .unwrap();
    let capture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vmx-exits.txt");
    let (report, events) = run_merge(&MergeOptions {
        guests: vec![guest],
        kvm: Some(capture),
        tsc_hz: Some(HZ),
        ..Default::default()
    });
    println!("{report}");
    let g = &report.guests[0];
    assert_eq!(
        (g.pid, g.vmm_pid, g.vcpu_threads.as_slice()),
        (5000, Some(5000), &[Some(5001)][..])
    );
    assert_eq!(g.window_violations, 0);
    assert_eq!(g.windows, 1);
    let width = g.window_stats.unwrap().median_ns;
    assert!((width - 12_000.0 / 2.6).abs() < 1.0, "{width}");
    let (procs, threads) = names(&events);
    assert_eq!(procs[&5000], "kernel");
    assert_eq!(threads[&(5000, 5001)], "vCPU 0");
    assert_eq!(threads[&(5000, 5000)], "qemu-system-x86");
    assert!(
        !threads.keys().any(|(_, t)| *t == 77 || *t == 0),
        "only the VMM's threads: {threads:?}"
    );

    let us = |tsc: u64| tsc as f64 / HZ * 1e6;
    let track = slices_with_args(&events, 5000, 5001);
    let find = |name: &str| -> Vec<&(String, f64, f64, Value)> {
        track.iter().filter(|s| s.0 == name).collect()
    };
    let periods = find("vCPU not running");
    assert_eq!(periods.len(), 3, "{track:?}");
    let close = |a: f64, b: f64| (a - b).abs() < 0.002;
    assert!(close(periods[0].1, us(B + 30_000)) && close(periods[0].2, us(B + 2_632_000)));
    assert_eq!(
        periods[0].3["reasons"],
        "VM exit: EXTERNAL_INTERRUPT, preempted"
    );
    let preempted = find("preempted");
    assert!(close(preempted[0].1, us(B + 31_000)) && close(preempted[0].2, us(B + 2_631_000)));
    assert_eq!(
        find("VM exit: EXTERNAL_INTERRUPT").len(),
        2,
        "before and after the preemption"
    );
    assert_eq!(
        find("VM exit: IO_INSTRUCTION").len(),
        2,
        "the marker's and the probe's"
    );
    // Host time inside each function, as its argument.
    let ns = |ticks: u64| ticks as f64 / 2.6;
    let not_running = |name: &str| find(name)[0].3["not_running_ns"].as_f64().unwrap();
    assert!(
        (not_running("g") - ns(2_602_000)).abs() <= 2.0,
        "{}",
        not_running("g")
    );
    assert!((not_running("f") - ns(2_602_000 + 9_000 + 5_000)).abs() <= 3.0);
    assert_eq!(g.inflated[0].name, "g");
    assert!(g.host_time.known);
    assert!((g.host_time.not_running_ns as f64 - ns(2_616_000)).abs() <= 3.0);
    assert!(g.host_time.by_reason["preempted"] > g.host_time.by_reason["VM exit: IO_INSTRUCTION"]);
    // QEMU's main thread: when it ran.
    let running = slices_with_args(&events, 5000, 5000);
    assert_eq!(running.len(), 1);
    assert!(close(running[0].1, us(B + 2_610_000)) && close(running[0].2, us(B + 2_650_000)));
    // The probe, named, at host time; the marker's flow from the guest's write to the pio.
    let probes = instants(&events, 5000, "probe: checked");
    assert_eq!(probes.len(), 1);
    assert_eq!(probes[0]["args"]["value"], 1234);
    assert!(close(probes[0]["ts"].as_f64().unwrap(), us(B + 2_901_000)));
    let f = flows(&events);
    assert_eq!(f.len(), 1);
    assert!(close(f[0].0, us(write)) && close(f[0].1, us(B + 2_802_000)));
    let marker = &instants(&events, 5000, "marker (guest write)")[0];
    assert_eq!(marker["args"]["host_stamp_in_window"], true);
    assert!(report.to_string().contains("inflated:  g: "), "{report}");
}
