//! Bad input gets errors naming the file and the byte offset or line; bad writer use gets an
//! error saying what to fix instead of a directory uftrace cannot read.

mod common;

use std::path::Path;

use common::TempDir;
use vftrace_format::dir::{make_session_id, TraceDir, TraceDirWriter};
use vftrace_format::info::Info;
use vftrace_format::maps::guest_map;
use vftrace_format::record::{Record, RecordType};
use vftrace_format::task::TaskLine;
use vftrace_format::FormatError;

const PID: u32 = 77;
const BASE: u64 = 0x4000_0000;

/// A small valid trace: one tid, main() -> f().
fn valid_trace(dir: &Path) {
    let sid = make_session_id(1);
    let mut w = TraceDirWriter::create(dir).unwrap();
    w.write_records(
        PID,
        [
            Record::new(100, RecordType::Entry, 0, BASE + 0x10),
            Record::new(110, RecordType::Entry, 1, BASE + 0x20),
            Record::new(120, RecordType::Exit, 1, BASE + 0x20),
            Record::new(130, RecordType::Exit, 0, BASE + 0x10),
        ],
    )
    .unwrap();
    let mut info = Info::new("/x/prog", "prog");
    info.tids = vec![PID];
    w.write_info(&info).unwrap();
    w.write_tasks(&[
        TaskLine::Session {
            timestamp_ns: 50,
            pid: PID,
            sid: sid.clone(),
            exename: "/x/prog".into(),
        },
        TaskLine::Task {
            timestamp_ns: 50,
            tid: PID,
            pid: PID,
        },
    ])
    .unwrap();
    w.write_map(&sid, &guest_map(BASE, BASE + 0x1000, "/x/prog"))
        .unwrap();
    w.write_symbols(
        "/x/prog",
        &[
            vftrace_format::sym::Symbol::function(0x10, 0x10, "main"),
            vftrace_format::sym::Symbol::function(0x20, 0x10, "f"),
        ],
    )
    .unwrap();
    w.finish().unwrap();
}

fn open_err(dir: &Path) -> FormatError {
    TraceDir::open(dir).expect_err("open should fail")
}

fn first_record_err(dir: &Path) -> FormatError {
    let t = TraceDir::open(dir).unwrap();
    t.records(PID)
        .unwrap()
        .find_map(Result::err)
        .expect("a record error")
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    std::fs::write(path, b).unwrap();
}

/// Replaces the first `from` in a (possibly binary) file.
fn replace(path: &Path, from: &str, to: &str) {
    let mut b = std::fs::read(path).unwrap();
    let at = b.windows(from.len()).position(|w| w == from.as_bytes());
    let at = at.unwrap_or_else(|| panic!("{from:?} not in {}", path.display()));
    b.splice(at..at + from.len(), to.bytes());
    std::fs::write(path, b).unwrap();
}

#[test]
fn truncated_data_file() {
    let tmp = TempDir::new("trunc");
    valid_trace(tmp.path());
    let dat = tmp.path().join(format!("{PID}.dat"));
    edit(&dat, |b| b.truncate(16 * 3 + 5));
    let err = first_record_err(tmp.path());
    assert_eq!(err.file, dat);
    assert_eq!(err.offset, Some(48));
    assert_eq!(err.to_string(), format!("{}: offset 48: truncated record: 5 trailing bytes at the end of the file (records are 16 bytes)", dat.display()));
}

#[test]
fn bad_record_magic() {
    let tmp = TempDir::new("magic");
    valid_trace(tmp.path());
    let dat = tmp.path().join(format!("{PID}.dat"));
    edit(&dat, |b| b[2 * 16 + 8] &= !0b0011_1000);
    let err = first_record_err(tmp.path());
    assert_eq!(err.offset, Some(32));
    assert!(
        err.to_string()
            .starts_with(&format!("{}: offset 32: bad record magic", dat.display())),
        "{err}"
    );
}

#[test]
fn broken_info() {
    let tmp = TempDir::new("info");
    valid_trace(tmp.path());
    let info = tmp.path().join("info");
    edit(&info, |b| b[0] = b'X');
    let err = open_err(tmp.path());
    assert_eq!((err.file.as_path(), err.offset), (info.as_path(), Some(0)));
    assert!(err.message.contains("magic"), "{err}");

    valid_trace(tmp.path());
    replace(&info, "taskinfo:nr_tid=1", "taskinfo:nr_tid=2");
    let err = open_err(tmp.path());
    assert!(err.message.contains("nr_tid=2 but 1 tids"), "{err}");
    assert!(err.offset.is_some());

    valid_trace(tmp.path());
    replace(&info, "cmdline:", "cmdlime:");
    let err = open_err(tmp.path());
    let at = std::fs::read(&info)
        .unwrap()
        .windows(8)
        .position(|w| w == b"cmdlime:")
        .unwrap();
    assert_eq!(err.offset, Some(at as u64));
    assert!(
        err.to_string()
            .contains(&format!("info: offset {at}: expected `cmdline:`")),
        "{err}"
    );

    valid_trace(tmp.path());
    edit(&info, |b| b.truncate(30));
    assert!(open_err(tmp.path()).message.contains("header truncated"));
}

#[test]
fn broken_task_txt() {
    let tmp = TempDir::new("task");
    valid_trace(tmp.path());
    let task = tmp.path().join("task.txt");
    replace(
        &task,
        &format!("TASK timestamp=0.000000050 tid={PID}"),
        "TASK timestamp=0.000000050 tid=abc",
    );
    let err = open_err(tmp.path());
    assert_eq!((err.file.as_path(), err.line), (task.as_path(), Some(2)));
    assert!(
        err.to_string()
            .ends_with("task.txt:2: field `tid=abc` is not a number"),
        "{err}"
    );
}

#[test]
fn broken_map_and_missing_map() {
    let tmp = TempDir::new("map");
    valid_trace(tmp.path());
    let sid = make_session_id(1);
    let map = tmp.path().join(format!("sid-{sid}.map"));
    replace(&map, "[stack]", "[stack]\nnot a mapping");
    let err = open_err(tmp.path());
    assert_eq!((err.file.as_path(), err.line), (map.as_path(), Some(3)));

    std::fs::remove_file(&map).unwrap();
    let err = open_err(tmp.path());
    assert_eq!(err.file, map);
    assert!(err.message.contains("missing session map"), "{err}");
}

#[test]
fn broken_sym_file() {
    let tmp = TempDir::new("sym");
    valid_trace(tmp.path());
    let sym = tmp.path().join("prog.sym");
    replace(&sym, "0000000000000020 T f", "00000000000000zz T f");
    let t = TraceDir::open(tmp.path()).unwrap();
    let err = t.symbolizer().unwrap_err();
    assert_eq!((err.file.as_path(), err.line), (sym.as_path(), Some(4)));
    assert!(err.message.contains("address is not hex"), "{err}");
}

#[test]
fn broken_clock_file() {
    let tmp = TempDir::new("clock");
    valid_trace(tmp.path());
    std::fs::write(
        tmp.path().join("vftrace.clock"),
        "tsc_hz=2e9\ntsc_base=1\nns_base=x\nsource=host\n",
    )
    .unwrap();
    let err = open_err(tmp.path());
    assert_eq!(err.line, Some(3));
    assert!(
        err.to_string()
            .ends_with("vftrace.clock:3: ns_base=\"x\" is not an unsigned integer"),
        "{err}"
    );
}

/// The writer refuses what uftrace could not read, saying what to fix.
#[test]
fn writer_enforces_uftrace_rules() {
    let tmp = TempDir::new("writer");
    let mut w = TraceDirWriter::create(tmp.path()).unwrap();
    w.write_records(1, [Record::new(10, RecordType::Entry, 0, 1)])
        .unwrap();
    let err = w
        .write_records(1, [Record::new(9, RecordType::Exit, 0, 1)])
        .unwrap_err();
    assert!(
        err.to_string().contains("earlier than the previous record"),
        "{err}"
    );
    let mut more = Record::new(11, RecordType::Entry, 0, 1);
    more.more = true;
    assert!(w.write_records(1, [more]).is_err());
    let err = w.finish().unwrap_err();
    assert!(
        err.to_string().contains("write_info was never called"),
        "{err}"
    );

    let finish_with = |tids: Vec<u32>, task_ts: u64, map: bool, dlopen_sid: Option<String>| {
        let dir = TempDir::new("writer-case");
        let sid = make_session_id(5);
        let mut w = TraceDirWriter::create(dir.path()).unwrap();
        w.write_records(1, [Record::new(10, RecordType::Entry, 0, BASE)])
            .unwrap();
        let mut info = Info::new("/p", "p");
        info.tids = tids;
        w.write_info(&info).unwrap();
        let mut lines = vec![
            TaskLine::Session {
                timestamp_ns: 0,
                pid: 1,
                sid: sid.clone(),
                exename: "/p".into(),
            },
            TaskLine::Task {
                timestamp_ns: task_ts,
                tid: 1,
                pid: 1,
            },
        ];
        if let Some(sid) = dlopen_sid {
            let libname = "/l.so".into();
            lines.push(TaskLine::Dlopen {
                timestamp_ns: 1,
                tid: 1,
                sid,
                base: 0x1000,
                libname,
            });
        }
        w.write_tasks(&lines).unwrap();
        if map {
            w.write_map(&sid, &guest_map(BASE, BASE + 16, "/p"))
                .unwrap();
        }
        w.finish().unwrap_err().to_string()
    };
    let cases = [
        (
            finish_with(vec![], 0, true, None),
            "tid 1 has records but is not in info.tids",
        ),
        (
            finish_with(vec![1, 2], 0, true, None),
            "tid 2 is in info but has no TASK line",
        ),
        (
            finish_with(vec![1], 11, true, None),
            "TASK timestamp 0.000000011 is after its first record",
        ),
        (finish_with(vec![1], 0, false, None), "has no map"),
        (
            finish_with(vec![1], 0, true, Some(make_session_id(6))),
            "which has no earlier SESS line",
        ),
    ];
    for (msg, want) in cases {
        assert!(msg.contains(want), "{msg:?} does not say {want:?}");
    }
}

#[test]
fn writer_refuses_to_clobber_other_directories() {
    let tmp = TempDir::new("clobber");
    std::fs::write(tmp.path().join("precious.txt"), "keep me").unwrap();
    let err = TraceDirWriter::create(tmp.path())
        .err()
        .expect("must refuse");
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert!(tmp.path().join("precious.txt").exists());

    // An old trace directory is reused, its stale data files removed.
    let trace = TempDir::new("reuse");
    valid_trace(trace.path());
    std::fs::write(trace.path().join("999.dat"), [0u8; 16]).unwrap();
    valid_trace(trace.path());
    assert!(!trace.path().join("999.dat").exists());
}
