//! Per-function and per-thread numbers of a trace, computed as uftrace 0.13 computes them
//! (`utils/report.c`): a call's total time is exit minus entry, its self time is the total
//! minus its callees' totals, and a recursive call (one whose function is already on the
//! stack) adds to min/max/avg but not to the total time, so a recursive function's total
//! counts each outermost call once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vftrace_format::balance::Repairs;
use vftrace_format::dir::TraceDir;
use vftrace_format::task::TaskLine;

use crate::calls::{visit_threads, AtEnd, CallEvent, CallVisitor, ThreadCalls};
use crate::functions::FunctionTable;
use crate::ViewError;

/// Sum, min and max of one kind of time over the calls of a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeStat {
    /// Sum over the calls that count (for total time: the non-recursive ones).
    pub sum: u64,
    /// Sum over recursive calls (total time only), kept apart as uftrace does.
    pub recursive: u64,
    pub min: u64,
    pub max: u64,
}

impl Default for TimeStat {
    fn default() -> Self {
        TimeStat {
            sum: 0,
            recursive: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

impl TimeStat {
    #[inline]
    fn add(&mut self, ns: u64, recursive: bool) {
        if recursive {
            self.recursive += ns;
        } else {
            self.sum += ns;
        }
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    fn merge(&mut self, other: &TimeStat) {
        self.sum += other.sum;
        self.recursive += other.recursive;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// uftrace's average: every call counts, recursive ones too.
    pub fn avg(&self, calls: u64) -> u64 {
        (self.sum + self.recursive).checked_div(calls).unwrap_or(0)
    }

    /// The minimum, 0 when there were no calls.
    pub fn min_or_zero(&self) -> u64 {
        if self.min == u64::MAX {
            0
        } else {
            self.min
        }
    }
}

/// The numbers of one function (all addresses of one name, as uftrace reports by name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionStats {
    pub name: String,
    pub calls: u64,
    pub total: TimeStat,
    pub self_time: TimeStat,
    /// Size of its symbol in bytes.
    pub size: u64,
}

/// The numbers of one thread, as `uftrace report --task` shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadStats {
    pub tid: u32,
    /// The task name (the program's file name, cut to 15 characters as Linux's comm).
    pub name: String,
    /// Calls made.
    pub calls: u64,
    /// Time spent in traced functions (the sum of every call's self time).
    pub run_time: u64,
    pub records: u64,
}

/// Everything `vftrace report` shows of one trace.
#[derive(Clone, Debug, Default)]
pub struct TraceStats {
    pub dir: PathBuf,
    pub cmdline: String,
    /// By name, ascending.
    pub functions: Vec<FunctionStats>,
    /// In the order `info` lists the threads.
    pub threads: Vec<ThreadStats>,
    pub records: u64,
    /// Threads listed in `info` without a data file (skipped, as uftrace does).
    pub missing_threads: Vec<u32>,
    pub repairs: Repairs,
}

/// Per-address accumulator.
#[derive(Clone, Copy, Default)]
struct Acc {
    calls: u64,
    total: TimeStat,
    self_time: TimeStat,
    /// Calls of this address open now on the thread being read (recursion test).
    open: u32,
}

/// The task name uftrace gives `tid`: its process's program file name, cut to 15 bytes.
pub fn task_name(trace: &TraceDir, tid: u32) -> String {
    let pid = match trace.task(tid) {
        Some(TaskLine::Task { pid, .. }) => Some(*pid),
        _ => None,
    };
    let exe = pid
        .and_then(|pid| trace.sessions.iter().find(|s| s.pid == pid))
        .map_or(trace.info.exename.as_str(), |s| s.exename.as_str());
    let base = exe.rsplit('/').next().unwrap_or(exe);
    let mut end = base.len().min(15);
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    base[..end].to_string()
}

/// The threads to read: `only` (in that order) or all that `info` lists; and those of them
/// without a data file.
pub(crate) fn threads_to_read(trace: &TraceDir, only: Option<&[u32]>) -> (Vec<u32>, Vec<u32>) {
    let wanted = only.map_or_else(|| trace.tids(), <[u32]>::to_vec);
    wanted
        .into_iter()
        .partition(|&tid| trace.data_path(tid).is_file())
}

/// Adds up the calls of each thread.
struct Adder<'t, 's> {
    trace: &'t TraceDir,
    functions: FunctionTable<'s>,
    accs: Vec<Acc>,
    /// Function ids of the open calls of the thread being read.
    open_ids: Vec<u32>,
    thread: ThreadStats,
    stats: TraceStats,
}

impl CallVisitor for Adder<'_, '_> {
    fn thread_start(&mut self, tid: u32) {
        self.open_ids.clear();
        self.thread = ThreadStats {
            tid,
            name: task_name(self.trace, tid),
            ..ThreadStats::default()
        };
    }

    #[inline]
    fn event(&mut self, event: CallEvent) {
        match event {
            CallEvent::Enter { addr, .. } => {
                let id = self.functions.id(addr) as usize;
                if id == self.accs.len() {
                    self.accs.push(Acc::default());
                }
                self.accs[id].open += 1;
                self.open_ids.push(id as u32);
            }
            CallEvent::Exit(call) => {
                let id = self.open_ids.pop().expect("exits match entries") as usize;
                let acc = &mut self.accs[id];
                acc.open -= 1;
                let self_time = call.self_time();
                acc.calls += 1;
                acc.total.add(call.total(), acc.open > 0);
                acc.self_time.add(self_time, false);
                self.thread.calls += 1;
                self.thread.run_time += self_time;
            }
            CallEvent::Lost { .. } | CallEvent::Event { .. } => {}
        }
    }

    fn thread_end(&mut self, calls: &ThreadCalls) {
        let mut thread = std::mem::take(&mut self.thread);
        thread.records = calls.records();
        self.stats.records += calls.records();
        self.stats.repairs.add(calls.repairs());
        self.stats.threads.push(thread);
    }
}

/// Reads every thread of the trace at `dir` (or only `tids`) and adds up its calls.
/// `progress(done, total)` gets the bytes of `.dat` read so far and in all.
pub fn collect(
    dir: &Path,
    tids: Option<&[u32]>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<TraceStats, ViewError> {
    let trace = TraceDir::open(dir)?;
    let symbolizer = trace.symbolizer()?;
    let (tids, missing_threads) = threads_to_read(&trace, tids);
    let mut adder = Adder {
        trace: &trace,
        functions: FunctionTable::new(&symbolizer),
        accs: Vec::new(),
        open_ids: Vec::with_capacity(64),
        thread: ThreadStats::default(),
        stats: TraceStats {
            dir: dir.to_path_buf(),
            cmdline: trace.info.cmdline.clone(),
            missing_threads,
            ..TraceStats::default()
        },
    };
    visit_threads(&trace, &tids, AtEnd::Close, &mut adder, progress)?;
    let Adder {
        functions,
        accs,
        mut stats,
        ..
    } = adder;
    // By name: addresses of one name are one function, as uftrace reports them.
    let mut by_name: BTreeMap<&str, FunctionStats> = BTreeMap::new();
    for (id, acc) in accs.iter().enumerate() {
        if acc.calls == 0 {
            continue;
        }
        let f = functions.function(id as u32);
        let name = functions.name_of(id as u32);
        let entry = by_name.entry(name).or_insert_with(|| FunctionStats {
            name: name.to_string(),
            ..FunctionStats::default()
        });
        entry.calls += acc.calls;
        entry.total.merge(&acc.total);
        entry.self_time.merge(&acc.self_time);
        entry.size = entry.size.max(f.size);
    }
    stats.functions = by_name.into_values().collect();
    Ok(stats)
}
