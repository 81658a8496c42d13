//! Whole uftrace trace directories: [`TraceDirWriter`] creates one that uftrace 0.13 reads;
//! [`TraceDir`] opens one (ours or uftrace's).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::clock::{ClockMap, CLOCK_FILE};
use crate::error::FormatError;
use crate::info::{self, Info};
use crate::maps::{self, parse_maps, MapEntry};
use crate::record::{Record, RECORD_SIZE};
use crate::sym::{self, alternate_sym_file_name, sym_file_name, Symbol};
use crate::task::{self, parse_tasks, TaskLine, SESSION_ID_LEN};

pub use crate::reader::RecordReader;
pub use crate::symbolizer::Symbolizer;

/// Largest `info` read (its text sections are a few KiB; the tid list grows with threads).
pub const MAX_INFO_BYTES: u64 = 16 << 20;
/// Largest `task.txt` read (one line per thread, fork and dlopen).
pub const MAX_TASK_BYTES: u64 = 256 << 20;
/// Largest `sid-*.map` read (one line per mapping).
pub const MAX_MAP_BYTES: u64 = 16 << 20;

/// A tid's data is written out once this much is buffered.
const FLUSH_PER_TID: usize = 1 << 20;
/// All buffers are written out once this much is buffered in total.
const FLUSH_TOTAL: usize = 64 << 20;

/// The data file of a tid: `TID.dat`.
pub fn data_file_name(tid: u32) -> String {
    format!("{tid}.dat")
}

/// The map file of a session: `sid-SID.map`.
pub fn map_file_name(sid: &str) -> String {
    format!("sid-{sid}.map")
}

/// A 16-hex-digit session id derived from `seed` (e.g. pid and start time mixed).
pub fn make_session_id(seed: u64) -> String {
    // splitmix64 finaliser: distinct seeds give distinct, well-spread ids.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:016x}", z ^ (z >> 31))
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

/// Per-tid write state.
#[derive(Default)]
struct TidData {
    buf: Vec<u8>,
    first_time: Option<u64>,
    last_time: u64,
    count: u64,
}

/// Writes a uftrace directory that uftrace 0.13 `replay`, `report`, `graph`, `info` and
/// `dump` accept.
///
/// Records may be written in any number of batches per tid; they are buffered and appended to
/// `TID.dat`. Metadata files are written when their method is called. [`TraceDirWriter::finish`]
/// flushes and checks the cross-file rules uftrace depends on (see its docs) and reports any
/// violation as an `InvalidData` error saying what to fix. Dropping the writer without
/// `finish` still writes out buffered records.
pub struct TraceDirWriter {
    path: PathBuf,
    tids: BTreeMap<u32, TidData>,
    buffered: usize,
    info: Option<Info>,
    tasks: Option<Vec<TaskLine>>,
    map_sids: BTreeSet<String>,
    /// sym file name -> module path it holds.
    sym_files: HashMap<String, String>,
    finished: bool,
}

/// Files a previous trace in the directory may have left; removed by `create`.
fn is_trace_file(name: &str) -> bool {
    matches!(
        name,
        "info" | "task.txt" | "task" | "default.opts" | "kallsyms" | "events.txt" | CLOCK_FILE
    ) || name.ends_with(".dat")
        || name.ends_with(".map")
        || name.ends_with(".sym")
}

/// Hermit's errno for "not implemented" (as on Linux).
const HERMIT_ENOSYS: i32 = 38;

impl TraceDirWriter {
    /// Creates `path` (and its parents). An existing empty directory is used; an existing
    /// trace directory (it has an `info` file) has its trace files removed first; anything else
    /// is refused, so a wrong path never clobbers unrelated files.
    pub fn create(path: &Path) -> io::Result<Self> {
        match crate::output::existing_trace_dir(path) {
            Ok(Some(names)) => {
                for n in names.iter().filter(|n| is_trace_file(n)) {
                    let p = path.join(n);
                    if p.is_file() {
                        fs::remove_file(&p)?;
                    }
                }
            }
            Ok(None) => fs::create_dir_all(path)?,
            // uhyve's file system (Hermit) has no stat, readdir or mkdir for folders: the host
            // made the folder it maps into the guest, so it is written into as it is.
            Err(e) if cfg!(target_os = "hermit") && e.raw_os_error() == Some(HERMIT_ENOSYS) => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
        Ok(TraceDirWriter {
            path: path.to_path_buf(),
            tids: BTreeMap::new(),
            buffered: 0,
            info: None,
            tasks: None,
            map_sids: BTreeSet::new(),
            sym_files: HashMap::new(),
            finished: false,
        })
    }

    /// The directory being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends records to `TID.dat`. Times must not decrease within a tid (uftrace stops with
    /// "inverted time"), and argument payloads (`more` bit) are not supported; on such a
    /// record the records before it are kept and an `InvalidInput` error is returned.
    pub fn write_records(
        &mut self,
        tid: u32,
        records: impl IntoIterator<Item = Record>,
    ) -> io::Result<()> {
        let path = self.path.join(data_file_name(tid));
        let data = self.tids.entry(tid).or_default();
        let before = data.buf.len();
        let mut result = Ok(());
        let mut last = data.last_time;
        for r in records {
            if r.more || r.time < last {
                let n = data.count;
                result = Err(invalid(if r.more {
                    format!("tid {tid}: record {n} has the `more` bit set, but no argument payload can be written")
                } else {
                    format!(
                        "tid {tid}: record {n} at time {} is earlier than the previous record at {last}; uftrace stops reading at inverted time (sort each tid's records by time)",
                        r.time
                    )
                }));
                break;
            }
            if data.count == 0 {
                data.first_time = Some(r.time);
            }
            last = r.time;
            data.count += 1;
            data.buf.extend_from_slice(&r.to_bytes());
            // Bounded memory however large one call's batch is.
            if data.buf.len() >= FLUSH_PER_TID {
                if let Err(e) = append_file(&path, &mut data.buf) {
                    result = Err(e);
                    break;
                }
            }
        }
        data.last_time = last;
        // Total buffered = the other tids' buffers + this tid's buffer now.
        self.buffered = self.buffered + data.buf.len() - before;
        if self.buffered >= FLUSH_TOTAL {
            self.flush()?;
        }
        result
    }

    /// Appends records that are already in the file format (`bytes`: whole 16-byte records,
    /// times from `first_time` to `last_time` in order), without copying them into the buffer:
    /// for a consumer that converted a chunk where it lies. The same rules as
    /// [`TraceDirWriter::write_records`] hold; records buffered for `tid` go first.
    pub fn write_raw_records(
        &mut self,
        tid: u32,
        bytes: &[u8],
        first_time: u64,
        last_time: u64,
    ) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if !bytes.len().is_multiple_of(RECORD_SIZE) || last_time < first_time {
            return Err(invalid(format!(
                "tid {tid}: raw records must be whole and in time order"
            )));
        }
        let last = self.tids.get(&tid).map_or(0, |d| d.last_time);
        if first_time < last {
            return Err(invalid(format!(
                "tid {tid}: a record at time {first_time} is earlier than the previous record at {last}; uftrace stops reading at inverted time"
            )));
        }
        self.flush_tid(tid)?;
        let path = self.path.join(data_file_name(tid));
        let data = self.tids.entry(tid).or_default();
        if data.count == 0 {
            data.first_time = Some(first_time);
        }
        data.count += (bytes.len() / RECORD_SIZE) as u64;
        data.last_time = last_time;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| with_path(e, &path))?;
        f.write_all(bytes).map_err(|e| with_path(e, &path))
    }

    fn flush_tid(&mut self, tid: u32) -> io::Result<()> {
        let path = self.path.join(data_file_name(tid));
        let Some(data) = self.tids.get_mut(&tid) else {
            return Ok(());
        };
        self.buffered -= data.buf.len();
        append_file(&path, &mut data.buf)
    }

    /// Writes all buffered records to their files.
    pub fn flush(&mut self) -> io::Result<()> {
        let tids: Vec<u32> = self.tids.keys().copied().collect();
        for tid in tids {
            self.flush_tid(tid)?;
        }
        Ok(())
    }

    /// Tids that have records, ascending.
    pub fn record_tids(&self) -> Vec<u32> {
        self.tids
            .iter()
            .filter(|(_, d)| d.count > 0)
            .map(|(&t, _)| t)
            .collect()
    }

    /// Time of the first record written for `tid`.
    pub fn first_record_time(&self, tid: u32) -> Option<u64> {
        self.tids.get(&tid).and_then(|d| d.first_time)
    }

    /// Number of records written for `tid`.
    pub fn record_count(&self, tid: u32) -> u64 {
        self.tids.get(&tid).map_or(0, |d| d.count)
    }

    /// Writes `info` (replacing an earlier one).
    pub fn write_info(&mut self, info: &Info) -> io::Result<()> {
        let bytes = info.to_bytes()?;
        self.write_file("info", &bytes)?;
        self.info = Some(info.clone());
        Ok(())
    }

    /// Writes `task.txt` with `lines` (replacing an earlier one).
    pub fn write_tasks(&mut self, lines: &[TaskLine]) -> io::Result<()> {
        let mut bytes = Vec::new();
        task::write_tasks(&mut bytes, lines)?;
        self.write_file("task.txt", &bytes)?;
        self.tasks = Some(lines.to_vec());
        Ok(())
    }

    /// Writes `sid-SID.map`. The map must contain a `[stack]` line (see [`crate::maps`]).
    pub fn write_map(&mut self, sid: &str, entries: &[MapEntry]) -> io::Result<()> {
        check_sid(sid)?;
        let mut bytes = Vec::new();
        maps::write_maps(&mut bytes, entries)?;
        self.write_file(&map_file_name(sid), &bytes)?;
        self.map_sids.insert(sid.to_string());
        Ok(())
    }

    /// Writes the symbol file of the module mapped from `module_path` (the exact path of its
    /// map lines), under the name uftrace looks up: `basename.sym`, or, when another module of
    /// the same basename already has that file, `basename-CSUM.sym`. Symbol addresses are
    /// relative to the start of the module's first mapping.
    pub fn write_symbols(&mut self, module_path: &str, symbols: &[Symbol]) -> io::Result<()> {
        let name = self.symbol_file_name(module_path);
        let mut bytes = Vec::new();
        sym::write_symbols(&mut bytes, module_path, symbols)?;
        self.write_file(&name, &bytes)?;
        self.sym_files.insert(name, module_path.to_string());
        Ok(())
    }

    /// The file (in this directory) `write_symbols(module_path, ..)` writes to.
    pub fn symbol_file_name(&self, module_path: &str) -> String {
        let primary = sym_file_name(module_path);
        match self.sym_files.get(&primary) {
            Some(owner) if owner != module_path => alternate_sym_file_name(module_path),
            _ => primary,
        }
    }

    /// Writes `vftrace.clock`.
    pub fn write_clock(&mut self, clock: &ClockMap) -> io::Result<()> {
        let mut bytes = Vec::new();
        clock.write_to(&mut bytes)?;
        self.write_file(CLOCK_FILE, &bytes)
    }

    fn write_file(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let p = self.path.join(name);
        fs::write(&p, bytes).map_err(|e| with_path(e, &p))
    }

    /// Flushes all records and checks what uftrace needs across files:
    /// - `info` was written, has the TASK_SESSION feature and the TASKINFO section, and lists
    ///   each tid once; every tid with records is listed;
    /// - `task.txt` was written; every tid in `info` has a TASK line whose timestamp is not
    ///   after the tid's first record, and whose pid has a SESS line no later than it (or a
    ///   FORK line); every DLOP line follows the SESS line of its session;
    /// - every SESS session has a map file; at least one tid has records.
    pub fn finish(mut self) -> io::Result<()> {
        self.flush()?;
        self.finished = true;
        let dir = self.path.display().to_string();
        let bad = |m: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("trace directory {dir}: {m}"),
            )
        };
        let info = self.info.as_ref().ok_or_else(|| {
            bad(
                "write_info was never called; uftrace cannot open a directory without `info`"
                    .into(),
            )
        })?;
        if !info.has_feature(info::TASK_SESSION) {
            return Err(bad(
                "info lacks the TASK_SESSION feature bit; uftrace garbles or crashes without it"
                    .into(),
            ));
        }
        if info.info_mask & info::TASKINFO == 0 {
            return Err(bad(
                "info lacks the TASKINFO section; uftrace then finds no data".into(),
            ));
        }
        let listed: BTreeSet<u32> = info.tids.iter().copied().collect();
        if listed.len() != info.tids.len() {
            return Err(bad(format!("info lists a tid twice: {:?}", info.tids)));
        }
        let with_records = self.record_tids();
        if with_records.is_empty() {
            return Err(bad(
                "no records were written; uftrace reports \"No data available\"".into(),
            ));
        }
        if let Some(t) = with_records.iter().find(|t| !listed.contains(t)) {
            return Err(bad(format!(
                "tid {t} has records but is not in info.tids {:?}; uftrace would ignore it",
                info.tids
            )));
        }
        let tasks = self
            .tasks
            .as_ref()
            .ok_or_else(|| bad("write_tasks was never called; uftrace needs task.txt".into()))?;
        let sessions: Vec<(u32, u64, &str)> = tasks
            .iter()
            .filter_map(|l| match l {
                TaskLine::Session {
                    pid,
                    timestamp_ns,
                    sid,
                    ..
                } => Some((*pid, *timestamp_ns, sid.as_str())),
                _ => None,
            })
            .collect();
        if sessions.is_empty() {
            return Err(bad("task.txt has no SESS line".into()));
        }
        for (_, _, sid) in &sessions {
            if !self.map_sids.contains(*sid) {
                return Err(bad(format!("session {sid} has no map; call write_map(\"{sid}\", ..) (uftrace aborts without {})", map_file_name(sid))));
            }
        }
        // Each tid's first TASK line, and the forked pids: looked up once per tid.
        let mut first_task: std::collections::HashMap<u32, (u64, u32)> =
            std::collections::HashMap::new();
        let mut forked_pids = std::collections::HashSet::new();
        for l in tasks {
            match l {
                TaskLine::Task {
                    tid,
                    timestamp_ns,
                    pid,
                } => {
                    first_task.entry(*tid).or_insert((*timestamp_ns, *pid));
                }
                TaskLine::Fork { pid, .. } => {
                    forked_pids.insert(*pid);
                }
                _ => {}
            }
        }
        for &tid in &info.tids {
            let task = first_task.get(&tid).copied();
            let Some((ts, pid)) = task else {
                return Err(bad(format!("tid {tid} is in info but has no TASK line in task.txt (uftrace dump --chrome crashes)")));
            };
            if let Some(first) = self.first_record_time(tid) {
                if ts > first {
                    return Err(bad(format!(
                        "tid {tid}: TASK timestamp {} is after its first record at {}; uftrace would not resolve symbols before it",
                        task::Timestamp(ts),
                        task::Timestamp(first)
                    )));
                }
            }
            // A forked child has no SESS line of its own: it inherits its parent's session.
            if !forked_pids.contains(&pid)
                && !sessions.iter().any(|(p, sts, _)| *p == pid && *sts <= ts)
            {
                return Err(bad(format!(
                    "tid {tid}: no SESS line for pid {pid} at or before its TASK timestamp {}",
                    task::Timestamp(ts)
                )));
            }
        }
        // uftrace asserts (and aborts) when a DLOP line names a session not yet seen.
        for (i, l) in tasks.iter().enumerate() {
            if let TaskLine::Dlopen { sid, libname, .. } = l {
                let seen = tasks[..i]
                    .iter()
                    .any(|e| matches!(e, TaskLine::Session { sid: s, .. } if s == sid));
                if !seen {
                    return Err(bad(format!("DLOP line for {libname:?} names session {sid}, which has no earlier SESS line (uftrace aborts)")));
                }
            }
        }
        Ok(())
    }
}

impl TraceDirWriter {
    /// Completes a trace of one process: writes `info` (its `tids` set to the tids with
    /// records), `task.txt` (a SESS line for `pid` and a TASK line per tid, each at that tid's
    /// first record time, so symbols resolve from the first record on) and the session's map,
    /// then [`finish`](Self::finish)es. Returns the session id used.
    pub fn finish_process(
        mut self,
        mut info: Info,
        pid: u32,
        maps: &[MapEntry],
    ) -> io::Result<String> {
        let tids = self.record_tids();
        let first = |t: &u32| self.first_record_time(*t).unwrap_or(0);
        let start = tids.iter().map(first).min().unwrap_or(0);
        let sid = make_session_id(u64::from(pid) << 32 ^ start);
        let mut lines = vec![TaskLine::Session {
            timestamp_ns: start,
            pid,
            sid: sid.clone(),
            exename: info.exename.clone(),
        }];
        lines.extend(tids.iter().map(|t| TaskLine::Task {
            timestamp_ns: first(t),
            tid: *t,
            pid,
        }));
        info.tids = tids;
        info.feat_mask |= info::TASK_SESSION;
        info.info_mask |= info::TASKINFO;
        self.write_info(&info)?;
        self.write_tasks(&lines)?;
        self.write_map(&sid, maps)?;
        self.finish()?;
        Ok(sid)
    }
}

impl Drop for TraceDirWriter {
    fn drop(&mut self) {
        if !self.finished {
            // Keep what was recorded even when the caller failed before finish().
            let _ = self.flush();
        }
    }
}

/// Appends `buf` to the file at `path` and empties it. The file is opened per call: a trace
/// with thousands of threads must not hold thousands of descriptors.
fn append_file(path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| with_path(e, path))?;
    f.write_all(buf).map_err(|e| with_path(e, path))?;
    buf.clear();
    Ok(())
}

fn with_path(e: io::Error, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

fn check_sid(sid: &str) -> io::Result<()> {
    if sid.len() != SESSION_ID_LEN || !sid.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        return Err(invalid(format!("session id {sid:?} must be {SESSION_ID_LEN} printable characters (use make_session_id)")));
    }
    Ok(())
}

/// One session (process) of a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub sid: String,
    pub pid: u32,
    pub exename: String,
    pub maps: Vec<MapEntry>,
}

/// An opened trace directory (written by vftrace or recorded by uftrace).
#[derive(Clone, Debug)]
pub struct TraceDir {
    pub path: PathBuf,
    pub info: Info,
    pub tasks: Vec<TaskLine>,
    pub sessions: Vec<Session>,
    /// From `vftrace.clock`, if present.
    pub clock: Option<ClockMap>,
}

fn read_file(p: &Path, what: &str, limit: u64) -> Result<Vec<u8>, FormatError> {
    crate::output::read_capped(p, limit).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            FormatError::whole_file(
                p,
                format!("missing {what}: is this a uftrace trace directory?"),
            )
        } else {
            FormatError::io(p, &e)
        }
    })
}

impl TraceDir {
    /// Reads `info`, `task.txt`, every session's map and `vftrace.clock` (optional).
    pub fn open(path: impl AsRef<Path>) -> Result<TraceDir, FormatError> {
        let path = path.as_ref().to_path_buf();
        let info_path = path.join("info");
        let info = Info::parse(
            &read_file(&info_path, "info file", MAX_INFO_BYTES)?,
            &info_path,
        )?;
        let task_path = path.join("task.txt");
        let tasks = parse_tasks(
            &read_file(&task_path, "task.txt", MAX_TASK_BYTES)?,
            &task_path,
        )?;
        let mut sessions = Vec::new();
        for l in &tasks {
            if let TaskLine::Session {
                sid, pid, exename, ..
            } = l
            {
                if sessions.iter().any(|s: &Session| s.sid == *sid) {
                    continue;
                }
                if sid.contains('/') {
                    return Err(FormatError::whole_file(
                        &task_path,
                        format!("session id {sid:?} contains '/'"),
                    ));
                }
                let map_path = path.join(map_file_name(sid));
                let maps = parse_maps(
                    &read_file(&map_path, "session map", MAX_MAP_BYTES)?,
                    &map_path,
                )?;
                sessions.push(Session {
                    sid: sid.clone(),
                    pid: *pid,
                    exename: exename.clone(),
                    maps,
                });
            }
        }
        let clock_path = path.join(CLOCK_FILE);
        let clock = match crate::output::read_capped(&clock_path, crate::clock::MAX_CLOCK_BYTES) {
            Ok(bytes) => Some(ClockMap::parse(&bytes, &clock_path)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(FormatError::io(&clock_path, &e)),
        };
        Ok(TraceDir {
            path,
            info,
            tasks,
            sessions,
            clock,
        })
    }

    /// The tids of the trace, as `info` lists them.
    pub fn tids(&self) -> Vec<u32> {
        self.info.tids.clone()
    }

    /// Path of a tid's data file.
    pub fn data_path(&self, tid: u32) -> PathBuf {
        self.path.join(data_file_name(tid))
    }

    /// A streaming reader of `TID.dat`.
    pub fn records(&self, tid: u32) -> Result<RecordReader<BufReader<File>>, FormatError> {
        let p = self.data_path(tid);
        let f = File::open(&p).map_err(|e| FormatError::io(&p, &e))?;
        Ok(RecordReader::new(BufReader::with_capacity(64 << 10, f), p))
    }

    /// Size of `TID.dat` in records (0 if it does not exist).
    pub fn record_count_hint(&self, tid: u32) -> u64 {
        fs::metadata(self.data_path(tid)).map_or(0, |m| m.len() / RECORD_SIZE as u64)
    }

    /// The TASK line of `tid`.
    pub fn task(&self, tid: u32) -> Option<&TaskLine> {
        self.tasks
            .iter()
            .find(|l| matches!(l, TaskLine::Task { tid: t, .. } if *t == tid))
    }

    /// A symbolizer over all sessions' maps, `DLOP` libraries and the directory's `.sym`
    /// files (and `kallsyms`). Sessions whose address ranges overlap resolve to the first
    /// session's module; use [`TraceDir::session_symbolizer`] for exact per-process results.
    pub fn symbolizer(&self) -> Result<Symbolizer, FormatError> {
        let mut s = Symbolizer::new();
        for sess in &self.sessions {
            s.add_session(&sess.maps, &self.path)?;
        }
        self.add_dlopens(&mut s, None)?;
        Ok(s)
    }

    /// A symbolizer for the session `sid` only.
    pub fn session_symbolizer(&self, sid: &str) -> Result<Symbolizer, FormatError> {
        let mut s = Symbolizer::new();
        if let Some(sess) = self.sessions.iter().find(|s| s.sid == sid) {
            s.add_session(&sess.maps, &self.path)?;
        }
        self.add_dlopens(&mut s, Some(sid))?;
        Ok(s)
    }

    fn add_dlopens(&self, s: &mut Symbolizer, only: Option<&str>) -> Result<(), FormatError> {
        for l in &self.tasks {
            if let TaskLine::Dlopen {
                sid, base, libname, ..
            } = l
            {
                if only.is_none_or(|o| o == sid) {
                    s.add_dlopen(*base, libname, &self.path)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordType;

    fn tmpdir(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("vftrace-dir-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn big_batches_and_drop_keep_every_record() {
        let p = tmpdir("big");
        let recs: Vec<Record> = (0..200_000u64)
            .map(|i| Record::new(i, RecordType::Entry, 0, i))
            .collect();
        {
            let mut w = TraceDirWriter::create(&p).unwrap();
            w.write_records(5, recs.iter().copied()).unwrap();
            // Part of it is already on disk: one batch never buffers more than FLUSH_PER_TID.
            assert!(fs::metadata(p.join("5.dat")).unwrap().len() >= FLUSH_PER_TID as u64);
            w.write_records(6, recs[..10].iter().copied()).unwrap();
            assert_eq!(w.record_count(5), 200_000);
            assert_eq!(w.first_record_time(6), Some(0));
            // Dropped without finish(): buffered records are still written.
        }
        let read = |tid: u32| -> Vec<Record> {
            let f = File::open(p.join(data_file_name(tid))).unwrap();
            RecordReader::new(f, "x").map(Result::unwrap).collect()
        };
        assert_eq!(read(5), recs);
        assert_eq!(read(6), recs[..10]);
        fs::remove_dir_all(&p).unwrap();
    }

    #[test]
    fn session_ids_are_distinct_hex() {
        let a = make_session_id(1);
        assert_eq!(a.len(), SESSION_ID_LEN);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, make_session_id(2));
    }
}
