//! Streaming conversion of a uftrace trace directory (ours or one `uftrace record` made) to a
//! [`TimelineSink`].
//!
//! One thread's `TID.dat` is read at a time, block by block; memory holds the open slices of
//! that thread (at most 1024), the function names seen so far (bounded) and the symbol tables.

use std::io;
use std::path::Path;

use rustc_hash::FxHashMap;
use vftrace_format::dir::TraceDir;
use vftrace_format::reader::BATCH_MAX;
use vftrace_format::record::{Record, RecordType, RECORD_SIZE};
use vftrace_format::symbolizer::Symbolizer;
use vftrace_format::task::TaskLine;
use vftrace_format::FormatError;

use crate::thread::{Repairs, ThreadTimeline};
use crate::TimelineSink;

/// How to place a trace directory on the timeline.
#[derive(Clone, Debug, Default)]
pub struct ConvertOptions {
    /// Put every thread under this process id instead of the pid `task.txt` gives (e.g. one
    /// "guest" group in a merged timeline).
    pub pid: Option<u32>,
    /// Name of the process group(s). Default: the program's file name, as uftrace shows it.
    pub process_name: Option<String>,
    /// Added to every record time (ns), e.g. to put a guest trace on the host's time scale.
    pub time_offset_ns: i64,
    /// Convert only these threads (default: all that `info` lists); each must be listed.
    pub tids: Option<Vec<u32>>,
    /// Read a damaged or cut-short `TID.dat` up to the damage and go on (the damage is in
    /// [`ConvertSummary::damaged`]) instead of failing.
    pub lenient: bool,
}

/// What a conversion read and wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConvertSummary {
    pub threads: usize,
    /// Records read.
    pub records: u64,
    /// Size of the `.dat` files read, in bytes.
    pub dat_bytes: u64,
    /// Slices written (function calls).
    pub slices: u64,
    /// Threads listed in `info` whose data file does not exist (uftrace skips them too).
    pub missing_threads: Vec<u32>,
    /// Damage in the records that the output repairs (lost records, unbalanced entry/exit).
    pub repairs: Repairs,
    /// Record files read only up to their damage (lenient mode), with what is wrong where.
    pub damaged: Vec<FormatError>,
}

/// Why a conversion stopped. Slices of the thread being read are closed first, so a sink that
/// is finished afterwards still holds valid output up to the error.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A trace directory that cannot be opened (its info, task.txt, maps or symbols); names the
    /// file and offset or line.
    #[error(transparent)]
    Trace(#[from] FormatError),
    /// A record file damaged or cut short (what lenient mode reads up to the damage).
    #[error(transparent)]
    Records(FormatError),
    /// Threads asked for that the trace does not have.
    #[error("{}: the trace has no thread {} (its info lists {})", dir.display(), list(asked), list(listed))]
    NoSuchThreads {
        dir: std::path::PathBuf,
        asked: Vec<u32>,
        listed: Vec<u32>,
    },
    /// The sink could not write.
    #[error("writing the timeline: {0}")]
    Write(io::Error),
}

fn list(tids: &[u32]) -> String {
    let shown: Vec<String> = tids.iter().take(20).map(u32::to_string).collect();
    let more = if tids.len() > 20 { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}

impl From<io::Error> for ConvertError {
    fn from(e: io::Error) -> Self {
        ConvertError::Write(e)
    }
}

/// Records decoded between two progress reports.
const PROGRESS_EVERY: u64 = 1 << 20;

/// Distinct addresses whose names are remembered before the cache starts over, so a hostile
/// trace with endless distinct addresses cannot grow memory without bound.
const MAX_CACHED_NAMES: usize = 1 << 18;

/// Slots of the direct-mapped cache in front of [`NameCache`]'s hash map (a power of two).
const NAME_SLOTS: usize = 256;

/// Function names by address: a symbol lookup (binary searches) once per address, not per call,
/// and for the addresses called most, not even a hash lookup.
struct NameCache<'s> {
    symbolizer: &'s Symbolizer,
    /// (address, index in `names`) by a hash of the address; `u32::MAX` marks an empty slot.
    slots: Box<[(u64, u32); NAME_SLOTS]>,
    index: FxHashMap<u64, u32>,
    names: Vec<Box<str>>,
}

impl<'s> NameCache<'s> {
    fn new(symbolizer: &'s Symbolizer) -> Self {
        NameCache {
            symbolizer,
            slots: Box::new([(0, u32::MAX); NAME_SLOTS]),
            index: FxHashMap::default(),
            names: Vec::new(),
        }
    }

    #[inline]
    fn get(&mut self, addr: u64) -> &str {
        // Fibonacci hashing: the top bits of the product mix all bits of the address.
        let slot = (addr.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - NAME_SLOTS.ilog2())) as usize;
        let (cached_addr, i) = self.slots[slot];
        if cached_addr == addr && i != u32::MAX {
            return &self.names[i as usize];
        }
        let i = self.lookup(addr);
        self.slots[slot] = (addr, i);
        &self.names[i as usize]
    }

    #[cold]
    fn lookup(&mut self, addr: u64) -> u32 {
        if let Some(&i) = self.index.get(&addr) {
            return i;
        }
        if self.names.len() >= MAX_CACHED_NAMES {
            self.index.clear();
            self.names.clear();
            self.slots.fill((0, u32::MAX));
        }
        let i = self.names.len() as u32;
        self.names.push(self.symbolizer.name_or_hex(addr).into());
        self.index.insert(addr, i);
        i
    }
}

/// Adds the records of one batch to the thread's timeline.
#[inline]
fn convert_batch(
    batch: &[Record],
    timeline: &mut ThreadTimeline,
    sink: &mut dyn TimelineSink,
    names: &mut NameCache,
) -> io::Result<()> {
    for record in batch {
        if record.kind == RecordType::Entry {
            timeline.record(sink, record, |addr| names.get(addr))?;
        } else {
            timeline.record(sink, record, |_| "")?;
        }
    }
    Ok(())
}

/// The file name of a program path, as process names show it.
fn program_name(exename: &str) -> &str {
    exename
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or(exename)
}

/// Converts the trace directory `dir` into `sink`: one process per traced process (named by
/// its program), one thread track per tid, one slice per function call. Does not call
/// [`TimelineSink::finish`], so more can be added to the same sink (the merge tool does).
///
/// `progress(done, total)` is called now and then with `.dat` bytes read so far and in all.
pub fn convert_dir(
    dir: &Path,
    sink: &mut dyn TimelineSink,
    opts: &ConvertOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ConvertSummary, ConvertError> {
    let trace = TraceDir::open(dir)?;
    let symbolizer = trace.symbolizer()?;
    let mut names = NameCache::new(&symbolizer);
    let mut summary = ConvertSummary::default();

    let tids = match &opts.tids {
        Some(tids) => {
            let unknown: Vec<u32> = tids
                .iter()
                .copied()
                .filter(|t| !trace.info.tids.contains(t))
                .collect();
            if !unknown.is_empty() {
                return Err(ConvertError::NoSuchThreads {
                    dir: dir.to_path_buf(),
                    asked: unknown,
                    listed: trace.tids(),
                });
            }
            tids.clone()
        }
        None => trace.tids(),
    };
    let mut threads: Vec<(u32, u32, u64)> = Vec::new(); // (pid, tid, .dat bytes)
    for &tid in &tids {
        let path = trace.data_path(tid);
        let Ok(meta) = std::fs::metadata(&path) else {
            summary.missing_threads.push(tid);
            continue;
        };
        let task_pid = match trace.task(tid) {
            Some(TaskLine::Task { pid, .. }) => *pid,
            _ => tid,
        };
        threads.push((opts.pid.unwrap_or(task_pid), tid, meta.len()));
    }
    let total: u64 = threads.iter().map(|t| t.2).sum();

    // Name each process once, before its threads; threads are named like their process (as
    // /proc/PID/comm would), Perfetto and Chrome show the tid beside it.
    let mut process_names: Vec<(u32, String)> = Vec::new();
    for &(pid, ..) in &threads {
        if process_names.iter().any(|(p, _)| *p == pid) {
            continue;
        }
        let name = match &opts.process_name {
            Some(name) => name.clone(),
            None => {
                let exename = trace
                    .sessions
                    .iter()
                    .find(|s| s.pid == pid)
                    .map_or(trace.info.exename.as_str(), |s| s.exename.as_str());
                program_name(exename).to_string()
            }
        };
        sink.process(pid, &name)?;
        process_names.push((pid, name));
    }

    progress(0, total);
    let mut done_bytes = 0u64;
    for (pid, tid, bytes) in threads {
        let thread_name = process_names
            .iter()
            .find(|(p, _)| *p == pid)
            .map_or("", |(_, n)| n.as_str());
        sink.thread(pid, tid, thread_name)?;
        let mut timeline = ThreadTimeline::new(pid, tid, opts.time_offset_ns);
        let mut records = trace.records(tid).map_err(ConvertError::Records)?;
        let mut batch = Vec::with_capacity(BATCH_MAX);
        let mut count = 0u64;
        let result = loop {
            batch.clear();
            // Records read before a bad one are converted before its error is reported.
            let read = records.read_batch(&mut batch);
            if let Err(e) = convert_batch(&batch, &mut timeline, sink, &mut names) {
                break Err(ConvertError::Write(e));
            }
            count += batch.len() as u64;
            match read {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(ConvertError::Records(e)),
            }
            if count % PROGRESS_EVERY < batch.len() as u64 {
                progress(done_bytes + count * RECORD_SIZE as u64, total);
            }
        };
        // Close what is open even after an error, so the output up to here stays valid.
        let closed = timeline.finish(sink);
        summary.threads += 1;
        summary.records += count;
        summary.slices += timeline.slices;
        summary.repairs.add(timeline.repairs());
        match result {
            Err(ConvertError::Records(e)) if opts.lenient => summary.damaged.push(e),
            r => r?,
        }
        closed?;
        summary.dat_bytes += bytes;
        done_bytes += bytes;
        progress(done_bytes, total);
    }
    Ok(summary)
}
