//! The call tree (uftrace's `replay`): one line per entry and exit, `name();` for a call with
//! nothing shown inside, durations on the line that ends a call, threads interleaved in time
//! order (or one after another).
//!
//! Each thread is a pipeline fed by [`ThreadCalls`]: the time filter (`-t`) holds the entries
//! still open until one of them proves long enough (uftrace's read-ahead in
//! `get_task_ustack`), then the filters (`-F`, `-N`, `-D`) decide what is shown with uftrace's
//! rules (`fstack_entry`). Threads are merged by time, ties in `info` order. Memory: per thread
//! one block of records and at most its open calls.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::path::Path;

use vftrace_format::balance::Repairs;
use vftrace_format::dir::TraceDir;

use crate::calls::{AtEnd, ThreadCalls};
use crate::functions::FunctionTable;
use crate::stats::threads_to_read;
use crate::time::{plain_microseconds, sgr, write_duration};
use crate::ViewError;

mod thread;

pub use thread::NamePattern;
use thread::{Functions, Shown, ShownKind, ThreadLines};

/// What `replay` shows.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// `-D`: calls nested at most this deep are shown (counted from the thread's root, or from
    /// the innermost `-F` function).
    pub depth: Option<u32>,
    /// `-F`: only these functions and what they call.
    pub filters: Vec<NamePattern>,
    /// `-N`: not these functions nor what they call.
    pub notrace: Vec<NamePattern>,
    /// `-t`: hide calls shorter than this (ns); 0 shows all.
    pub time_filter: u64,
    /// `--tid`: only these threads.
    pub tids: Option<Vec<u32>>,
    /// One thread after another instead of interleaved in time order.
    pub per_thread: bool,
    pub color: bool,
}

/// What a replay read.
#[derive(Clone, Debug, Default)]
pub struct ReplaySummary {
    pub records: u64,
    pub lines: u64,
    pub missing_threads: Vec<u32>,
    pub repairs: Repairs,
    /// `-F`/`-N` patterns that matched no function the threads read called.
    pub unmatched_patterns: Vec<String>,
}

/// Writes lines in blocks.
struct Lines<'o> {
    out: &'o mut dyn Write,
    buf: Vec<u8>,
    color: bool,
    count: u64,
}

const FLUSH_AT: usize = 1 << 16;

const SPACES: [u8; 64] = [b' '; 64];

impl Lines<'_> {
    fn flush(&mut self) -> Result<(), ViewError> {
        self.out
            .write_all(&self.buf)
            .map_err(|e| ViewError::output("the call tree", e))?;
        self.buf.clear();
        Ok(())
    }

    /// ` DURATION [   TID] | ` then the indentation; `tid_column` is ` [   TID] | `.
    #[inline]
    fn start(&mut self, duration: u64, tid_column: &[u8], depth: u16) {
        match plain_microseconds(duration).filter(|_| !self.color) {
            // The usual line: its start (indentation too) in one copy.
            Some(text) if tid_column.len() <= 16 && depth <= 16 => {
                let mut head = [b' '; 59];
                head[1..11].copy_from_slice(&text);
                head[11..11 + tid_column.len()].copy_from_slice(tid_column);
                let len = 11 + tid_column.len() + usize::from(depth) * 2;
                self.buf.extend_from_slice(&head[..len]);
                return;
            }
            _ => {
                self.buf.push(b' ');
                write_duration(&mut self.buf, duration, self.color);
                self.buf.extend_from_slice(tid_column);
            }
        }
        let mut indent = usize::from(depth) * 2;
        while indent > 0 {
            let n = indent.min(SPACES.len());
            self.buf.extend_from_slice(&SPACES[..n]);
            indent -= n;
        }
    }

    #[inline]
    fn end(&mut self) -> Result<(), ViewError> {
        self.buf.push(b'\n');
        self.count += 1;
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    fn paint(&mut self, color: &str, text: &str) {
        if self.color {
            self.buf.extend_from_slice(color.as_bytes());
            self.buf.extend_from_slice(text.as_bytes());
            self.buf.extend_from_slice(sgr::RESET.as_bytes());
        } else {
            self.buf.extend_from_slice(text.as_bytes());
        }
    }
}

/// Prints the call tree of the trace at `dir`.
pub fn replay(
    dir: &Path,
    opts: &ReplayOptions,
    out: &mut dyn Write,
) -> Result<ReplaySummary, ViewError> {
    let trace = TraceDir::open(dir)?;
    let symbolizer = trace.symbolizer()?;
    let mut funcs = Functions::new(FunctionTable::new(&symbolizer), opts);
    let (tids, missing_threads) = threads_to_read(&trace, opts.tids.as_deref());
    let mut lines = Lines {
        out,
        buf: Vec::with_capacity(FLUSH_AT + 4096),
        color: opts.color,
        count: 0,
    };
    let mut threads = Vec::with_capacity(tids.len());
    for &tid in &tids {
        let calls = ThreadCalls::open(&trace, tid, AtEnd::Keep)?;
        threads.push(ThreadLines::new(calls, opts));
    }
    // uftrace prints the header when there is any record, shown or not.
    let mut header = tids.iter().any(|&t| trace.record_count_hint(t) > 0);
    let result = if opts.per_thread {
        let mut result = Ok(());
        for i in 0..threads.len() {
            result = print_merged(
                &mut threads[i..i + 1],
                &mut funcs,
                opts,
                &mut lines,
                &mut header,
            );
            if result.is_err() {
                break;
            }
        }
        result
    } else {
        print_merged(&mut threads, &mut funcs, opts, &mut lines, &mut header)
    };
    // What was printed before an error stays printed.
    let flushed = lines.flush();
    result?;
    flushed?;
    print_still_open(&threads, &mut funcs, &mut lines)?;
    lines.flush()?;
    let mut summary = ReplaySummary {
        lines: lines.count,
        missing_threads,
        ..ReplaySummary::default()
    };
    summary.unmatched_patterns = funcs.unmatched(opts);
    for t in &threads {
        summary.records += t.calls.records();
        summary.repairs.add(t.calls.repairs());
    }
    Ok(summary)
}

/// Prints the lines of `threads` merged by time (ties: the earlier thread first).
fn print_merged(
    threads: &mut [ThreadLines],
    funcs: &mut Functions,
    opts: &ReplayOptions,
    lines: &mut Lines,
    header: &mut bool,
) -> Result<(), ViewError> {
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::with_capacity(threads.len());
    for (i, t) in threads.iter_mut().enumerate() {
        t.fill(funcs, opts)?;
        if let Some(h) = t.head() {
            heap.push(Reverse((h.time, i)));
        }
    }
    if *header {
        lines
            .buf
            .extend_from_slice(b"# DURATION     TID     FUNCTION\n");
        *header = false;
    }
    while let Some(Reverse((_, i))) = heap.pop() {
        let t = &mut threads[i];
        // Lines of one thread in a row cost no heap operation.
        loop {
            let line = t.pop().expect("a thread in the heap has a line");
            t.fill(funcs, opts)?;
            let tid = &t.tid_column;
            match line.kind {
                ShownKind::Enter { fid } => {
                    // A call with nothing shown inside is one line, if no other thread's line
                    // comes between its entry and exit (as uftrace merges leaves).
                    let leaf = match t.head() {
                        Some(&Shown {
                            kind: ShownKind::Exit { duration, .. },
                            time,
                            ..
                        }) if heap.peek().is_none_or(|Reverse(top)| (time, i) < *top) => {
                            Some(duration)
                        }
                        _ => None,
                    };
                    match leaf {
                        Some(duration) => {
                            lines.start(duration, tid, line.depth);
                            lines.buf.extend_from_slice(&funcs.known(fid, opts).leaf);
                            t.pop();
                            t.fill(funcs, opts)?;
                        }
                        None => {
                            lines.start(0, tid, line.depth);
                            lines.buf.extend_from_slice(&funcs.known(fid, opts).open);
                        }
                    }
                }
                ShownKind::Exit { fid, duration } => {
                    lines.start(duration, tid, line.depth);
                    lines.buf.extend_from_slice(&funcs.known(fid, opts).close);
                }
                ShownKind::Lost { count } => {
                    lines.start(0, tid, line.depth);
                    lines.paint(sgr::RED, &format!("/* LOST {count} records!! */"));
                }
                ShownKind::Event { id } => {
                    lines.start(0, tid, line.depth);
                    lines
                        .buf
                        .extend_from_slice(format!("/* event {id:#x} */").as_bytes());
                }
            }
            lines.end()?;
            match t.head() {
                Some(h) if heap.peek().is_none_or(|Reverse(top)| (h.time, i) < *top) => {}
                Some(h) => {
                    heap.push(Reverse((h.time, i)));
                    break;
                }
                None => break,
            }
        }
    }
    Ok(())
}

/// Lists the calls that never ended, innermost first, as uftrace does after a replay.
fn print_still_open(
    threads: &[ThreadLines],
    funcs: &mut Functions,
    lines: &mut Lines,
) -> Result<(), ViewError> {
    if threads.iter().all(|t| t.calls.frames().is_empty()) {
        return Ok(());
    }
    let buf = &mut lines.buf;
    buf.extend_from_slice(
        b"\nthe trace ended with functions still running\n=============================================\n",
    );
    for t in threads.iter().filter(|t| !t.calls.frames().is_empty()) {
        let _ = writeln!(buf, "task: {}", t.tid);
        for (depth, frame) in t.calls.frames().iter().enumerate().rev() {
            let fid = funcs.table.id(frame.addr);
            let _ = writeln!(buf, "[{depth}] {}", funcs.table.name_of(fid));
        }
        buf.push(b'\n');
    }
    Ok(())
}
