//! Conversions of real `uftrace record` recordings, judged by `uftrace replay` and serde_json.

mod common;

use std::fs;
use std::process::Command;

use common::{chrome_calls, record_c_program, replay_calls, run};
use vftrace_convert::{
    convert_dir, ChromeJsonWriter, ConvertOptions, PerfettoWriter, TimelineSink,
};
use vftrace_format::record::{Record, RecordType, RECORD_SIZE};

/// Converts `dir` to Chrome JSON as `vftrace convert` does (one "X" event per call).
fn to_json(dir: &std::path::Path) -> (Vec<u8>, vftrace_convert::ConvertSummary) {
    let mut sink = ChromeJsonWriter::complete(Vec::new()).unwrap();
    let summary = convert_dir(dir, &mut sink, &ConvertOptions::default(), &mut |_, _| {}).unwrap();
    sink.finish().unwrap();
    (sink.into_inner(), summary)
}

#[test]
fn calls_match_uftrace_replay() {
    let Some((_work, data)) = record_c_program("calls") else {
        return;
    };
    let (json, summary) = to_json(&data);
    let (ours, instants) = chrome_calls(&json);
    assert!(instants.is_empty());
    assert_eq!(summary.repairs, Default::default());

    let replay = run(Command::new("uftrace")
        .args(["replay", "-f", "duration,tid", "-d"])
        .arg(&data));
    let theirs = replay_calls(&replay);
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "different threads"
    );
    assert_eq!(theirs.len(), 2, "the program runs two threads");
    for (tid, calls) in &theirs {
        let mine = &ours[tid];
        assert_eq!(mine.len(), calls.len(), "number of calls of thread {tid}");
        for (m, (t, tolerance)) in mine.iter().zip(calls) {
            assert_eq!(
                (&m.name, m.depth),
                (&t.name, t.depth),
                "thread {tid}: {m:?} vs {t:?}"
            );
            assert!(
                (m.duration_ns - t.duration_ns).abs() <= *tolerance,
                "thread {tid}: duration of {} is {} ns, replay says {} ns",
                m.name,
                m.duration_ns,
                t.duration_ns
            );
        }
    }
    let names: Vec<&str> = ours.values().flatten().map(|c| c.name.as_str()).collect();
    for expected in ["main", "middle", "leaf", "fib", "worker", "slow", "usleep"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    // Both threads are tracks of the one process, named after the program.
    let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let events = doc["traceEvents"].as_array().unwrap();
    let pids: std::collections::BTreeSet<u64> =
        events.iter().map(|e| e["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids.len(), 1);
    let process_name = events.iter().find(|e| e["name"] == "process_name").unwrap();
    assert_eq!(process_name["args"]["name"], "calls");
}

#[test]
fn begin_end_pairs_and_complete_events_hold_the_same_calls() {
    let Some((_work, data)) = record_c_program("calls") else {
        return;
    };
    let (complete, _) = to_json(&data);
    let mut sink = ChromeJsonWriter::new(Vec::new()).unwrap();
    convert_dir(&data, &mut sink, &ConvertOptions::default(), &mut |_, _| {}).unwrap();
    sink.finish().unwrap();
    let pairs = sink.into_inner();
    assert!(complete.len() * 4 < pairs.len() * 3, "X events are shorter");
    let (complete_calls, _) = chrome_calls(&complete);
    let (pair_calls, _) = chrome_calls(&pairs);
    assert!(complete_calls.values().map(Vec::len).sum::<usize>() > 30);
    assert_eq!(complete_calls, pair_calls);
}

#[test]
fn perfetto_is_much_smaller_than_json() {
    let Some((_work, data)) = record_c_program("many_calls") else {
        return;
    };
    let (json, summary) = to_json(&data);
    assert!(summary.slices > 20_000);
    let mut sink = ChromeJsonWriter::new(Vec::new()).unwrap();
    convert_dir(&data, &mut sink, &ConvertOptions::default(), &mut |_, _| {}).unwrap();
    sink.finish().unwrap();
    let pairs_json = sink.into_inner();
    let mut sink = PerfettoWriter::new(Vec::new()).unwrap();
    convert_dir(&data, &mut sink, &ConvertOptions::default(), &mut |_, _| {}).unwrap();
    sink.finish().unwrap();
    let proto = sink.into_inner();
    assert!(
        proto.len() * 3 < json.len(),
        "perfetto {} bytes vs json of X events {} bytes",
        proto.len(),
        json.len()
    );
    // "B"/"E" pairs, as `uftrace dump --chrome` writes them.
    assert!(
        proto.len() * 9 < pairs_json.len() * 2,
        "perfetto {} bytes vs json of B/E pairs {} bytes",
        proto.len(),
        pairs_json.len()
    );
}

/// Reads all records of a .dat file.
fn read_records(path: &std::path::Path) -> Vec<Record> {
    fs::read(path)
        .unwrap()
        .chunks_exact(RECORD_SIZE)
        .map(|c| Record::from_bytes(c.try_into().unwrap()).unwrap())
        .collect()
}

fn write_records(path: &std::path::Path, records: &[Record]) {
    fs::write(
        path,
        records
            .iter()
            .flat_map(|r| r.to_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
}

/// The .dat file of the main thread (the one with the most records).
fn biggest_dat(dir: &std::path::Path) -> std::path::PathBuf {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "dat")
                && !p.file_name().unwrap().to_str().unwrap().starts_with("perf")
        })
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap()
}

#[test]
fn lost_records_still_give_valid_balanced_json() {
    let Some((_work, data)) = record_c_program("calls") else {
        return;
    };
    let dat = biggest_dat(&data);
    let mut records = read_records(&dat);
    // Replace 7 records in the middle (inside main) with a LOST record, as uftrace does when
    // its buffers overflow.
    let at = records.len() / 2;
    let lost = Record::lost(records[at].time, records[at].depth, 7);
    records.splice(at..at + 7, [lost]);
    write_records(&dat, &records);

    let (json, summary) = to_json(&data);
    let (calls, instants) = chrome_calls(&json);
    assert_eq!(summary.repairs.lost_records, 7);
    assert_eq!(instants.len(), 1);
    assert_eq!(instants[0]["name"], "lost 7 records");
    assert_eq!(instants[0]["args"]["count"], 7);
    assert!(calls.values().flatten().any(|c| c.name == "main"));
}

#[test]
fn unbalanced_records_still_give_valid_balanced_json() {
    let Some((_work, data)) = record_c_program("calls") else {
        return;
    };
    let dat = biggest_dat(&data);
    let records = read_records(&dat);
    // Start inside main (exits without entries follow) and stop before main returns
    // (entries never exit).
    let first_in_main = records
        .iter()
        .position(|r| r.kind == RecordType::Entry && r.depth == 1)
        .unwrap()
        + 1;
    let cut = &records[first_in_main..records.len() - 3];
    write_records(&dat, cut);

    let (json, summary) = to_json(&data);
    let (calls, _) = chrome_calls(&json);
    assert!(summary.repairs.unmatched_exits > 0, "{summary:?}");
    assert!(summary.repairs.closed_at_end > 0, "{summary:?}");
    // The calls left open end at the thread's last record.
    let last_ns = (cut.last().unwrap().time) as f64;
    let tid: u64 = dat.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let main_thread = &calls[&tid];
    let outermost = main_thread.last().unwrap();
    assert_eq!(outermost.begin_ns + outermost.duration_ns, last_ns);
}

#[test]
fn corrupt_data_is_an_error_naming_file_and_offset_and_output_stays_valid() {
    let Some((_work, data)) = record_c_program("calls") else {
        return;
    };
    let dat = biggest_dat(&data);
    let mut bytes = fs::read(&dat).unwrap();
    let bad_record = 20;
    bytes[bad_record * RECORD_SIZE + 8] ^= 0b1000; // break the magic
    fs::write(&dat, &bytes).unwrap();

    let mut sink = ChromeJsonWriter::complete(Vec::new()).unwrap();
    let err =
        convert_dir(&data, &mut sink, &ConvertOptions::default(), &mut |_, _| {}).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(dat.file_name().unwrap().to_str().unwrap()),
        "{message}"
    );
    assert!(
        message.contains(&format!("offset {}", bad_record * RECORD_SIZE)),
        "{message}"
    );
    sink.finish().unwrap();
    chrome_calls(&sink.into_inner());
}

#[test]
fn progress_reaches_the_total() {
    let Some((_work, data)) = record_c_program("calls") else {
        return;
    };
    let mut sink = ChromeJsonWriter::new(std::io::sink()).unwrap();
    let mut reports = Vec::new();
    let summary = convert_dir(
        &data,
        &mut sink,
        &ConvertOptions::default(),
        &mut |done, total| reports.push((done, total)),
    )
    .unwrap();
    let &(done, total) = reports.last().unwrap();
    assert_eq!(done, total);
    assert_eq!(total, summary.dat_bytes);
    assert!(reports.windows(2).all(|w| w[0].0 <= w[1].0));
}
