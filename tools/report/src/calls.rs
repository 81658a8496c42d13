//! One thread's records as balanced calls, read block by block.
//!
//! [`ThreadCalls`] reads `TID.dat` with the format crate's [`RecordReader`] and repairs it with
//! its [`CallBalancer`] (the converter does the same): every exit it yields closes the call
//! its entry opened, and every call's total and child time are known at its exit, as uftrace
//! computes them (`fstack_account_time`). Memory: one block of records and the open calls.

use std::fs::File;
use std::io::BufReader;

use vftrace_format::balance::{CallBalancer, Repairs, Then};
use vftrace_format::dir::TraceDir;
use vftrace_format::reader::{RecordReader, BATCH_MAX};
use vftrace_format::record::Record;
use vftrace_format::FormatError;

/// An open call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub addr: u64,
    /// Time of its entry.
    pub begin: u64,
    /// Total time of the calls it made that have ended.
    pub child: u64,
}

/// A finished call, as its exit shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    pub addr: u64,
    pub begin: u64,
    pub end: u64,
    /// Total time of the calls it made, never more than its own total.
    pub child: u64,
}

impl Call {
    pub fn total(&self) -> u64 {
        self.end - self.begin
    }
    /// Total minus the time of its callees (uftrace's self time).
    pub fn self_time(&self) -> u64 {
        self.total() - self.child
    }
}

/// What happened next on the thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallEvent {
    /// A call of `addr` began (it is now the top of [`ThreadCalls::frames`]).
    Enter { time: u64, addr: u64 },
    /// The innermost open call ended.
    Exit(Call),
    /// `count` records were lost here.
    Lost { time: u64, count: u64 },
    /// Event `id` happened here.
    Event { time: u64, id: u64 },
}

impl CallEvent {
    pub fn time(&self) -> u64 {
        match *self {
            CallEvent::Enter { time, .. }
            | CallEvent::Lost { time, .. }
            | CallEvent::Event { time, .. } => time,
            CallEvent::Exit(call) => call.end,
        }
    }
}

/// What to do at the end of the thread with calls that never exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtEnd {
    /// Close them at the thread's last record time, as uftrace `report` counts them.
    Close,
    /// Leave them in [`ThreadCalls::frames`], as uftrace `replay` lists them at the end.
    Keep,
}

/// The open calls of a thread, kept right by the balancer.
struct OpenCalls {
    balancer: CallBalancer,
    frames: Vec<Frame>,
}

impl OpenCalls {
    #[inline]
    fn exit(&mut self, end: u64) -> CallEvent {
        let frame = self
            .frames
            .pop()
            .expect("the balancer only closes open calls");
        // Times never go backwards (the balancer clamps them), so end >= begin.
        let total = end - frame.begin;
        let child = frame.child.min(total);
        if let Some(parent) = self.frames.last_mut() {
            parent.child += total;
        }
        CallEvent::Exit(Call {
            addr: frame.addr,
            begin: frame.begin,
            end,
            child,
        })
    }

    /// Takes one record and gives what it means, in order, to `emit`.
    #[inline]
    fn push(&mut self, record: &Record, emit: &mut impl FnMut(CallEvent)) {
        let step = self.balancer.step(record);
        let time = step.time;
        for _ in 0..step.close_first {
            emit(self.exit(time));
        }
        match step.then {
            Then::Enter => {
                self.frames.push(Frame {
                    addr: record.addr,
                    begin: time,
                    child: 0,
                });
                emit(CallEvent::Enter {
                    time,
                    addr: record.addr,
                });
            }
            Then::Exit => emit(self.exit(time)),
            Then::Skip => {}
            Then::Lost { count } => emit(CallEvent::Lost { time, count }),
            Then::Event { id } => emit(CallEvent::Event { time, id }),
        }
    }
}

/// The balanced calls of one thread, given a few records' worth at a time.
pub struct ThreadCalls {
    tid: u32,
    reader: RecordReader<BufReader<File>>,
    batch: Vec<Record>,
    pos: usize,
    open: OpenCalls,
    /// An error met after the current batch; given once the batch is used up.
    error: Option<FormatError>,
    at_end: AtEnd,
    ended: bool,
    records: u64,
}

impl ThreadCalls {
    /// Opens `TID.dat` of `trace`.
    pub fn open(trace: &TraceDir, tid: u32, at_end: AtEnd) -> Result<Self, FormatError> {
        Ok(ThreadCalls {
            tid,
            reader: trace.records(tid)?,
            batch: Vec::with_capacity(BATCH_MAX),
            pos: 0,
            open: OpenCalls {
                balancer: CallBalancer::default(),
                frames: Vec::with_capacity(64),
            },
            error: None,
            at_end,
            ended: false,
            records: 0,
        })
    }

    pub fn tid(&self) -> u32 {
        self.tid
    }

    /// The calls open now, outermost first.
    pub fn frames(&self) -> &[Frame] {
        &self.open.frames
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// What had to be repaired so far.
    pub fn repairs(&self) -> &Repairs {
        &self.open.balancer.repairs
    }

    /// Gives the events of up to `max` more records to `emit`, in order; false once the
    /// thread ended (its calls still open closed first if `at_end` says so). After an error
    /// (which names the file and offset) nothing more is given.
    #[inline]
    pub fn next_records(
        &mut self,
        max: usize,
        emit: &mut impl FnMut(CallEvent),
    ) -> Result<bool, FormatError> {
        if self.pos == self.batch.len() && !self.refill(emit)? {
            return Ok(false);
        }
        let end = self.batch.len().min(self.pos.saturating_add(max));
        for record in &self.batch[self.pos..end] {
            self.open.push(record, emit);
        }
        self.pos = end;
        Ok(true)
    }

    /// Reads the next block; false at the end of the thread.
    #[cold]
    fn refill(&mut self, emit: &mut impl FnMut(CallEvent)) -> Result<bool, FormatError> {
        if let Some(e) = self.error.take() {
            self.ended = true;
            return Err(e);
        }
        if self.ended {
            return Ok(false);
        }
        self.batch.clear();
        self.pos = 0;
        // Records before a bad one are used before its error is reported.
        if let Err(e) = self.reader.read_batch(&mut self.batch) {
            self.error = Some(e);
        }
        self.records += self.batch.len() as u64;
        if !self.batch.is_empty() {
            return Ok(true);
        }
        self.ended = true;
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let (last, open) = self.open.balancer.finish();
        if self.at_end == AtEnd::Close {
            // Innermost first, at the thread's last record time.
            for _ in 0..open {
                emit(self.open.exit(last));
            }
        }
        Ok(false)
    }
}

/// What a view does with the calls of the threads it reads.
pub trait CallVisitor {
    /// A thread's calls begin.
    fn thread_start(&mut self, _tid: u32) {}
    fn event(&mut self, event: CallEvent);
    /// A thread's calls ended; `calls` says what it read and repaired.
    fn thread_end(&mut self, _calls: &ThreadCalls) {}
}

/// Records between two progress reports.
const PROGRESS_EVERY: u64 = 1 << 20;

/// Reads the threads `tids` of `trace` one after another, giving their calls to `visitor`.
/// `progress(done, total)` gets the bytes of `.dat` read so far and in all.
pub fn visit_threads(
    trace: &TraceDir,
    tids: &[u32],
    at_end: AtEnd,
    visitor: &mut impl CallVisitor,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), FormatError> {
    let total: u64 = tids.iter().map(|&t| trace.record_count_hint(t) * 16).sum();
    let mut done = 0;
    progress(0, total);
    for &tid in tids {
        let mut calls = ThreadCalls::open(trace, tid, at_end)?;
        visitor.thread_start(tid);
        let mut reported = 0;
        while calls.next_records(usize::MAX, &mut |event| visitor.event(event))? {
            if calls.records() - reported >= PROGRESS_EVERY {
                reported = calls.records();
                progress(done + reported * 16, total);
            }
        }
        visitor.thread_end(&calls);
        done += calls.records() * 16;
        progress(done, total);
    }
    Ok(())
}
