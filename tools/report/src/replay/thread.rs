//! One thread's lines of the call tree: its balanced calls pass the time filter (`-t`),
//! which holds the entries still open until one of them proves long enough (uftrace's
//! read-ahead in `get_task_ustack`), then the filters (`-F`, `-N`, `-D`) with uftrace's rules
//! (`fstack_entry`, `fstack_exit`). What comes out is ready to print, with its display depth.

use std::collections::VecDeque;

use regex::Regex;

use super::ReplayOptions;
use crate::calls::{CallEvent, ThreadCalls};
use crate::functions::FunctionTable;
use crate::time::sgr;
use crate::ViewError;

/// A function name pattern as uftrace takes it: a regular expression if it has one of
/// `.?*+-^$|()[]{}`, else the exact name.
#[derive(Clone, Debug)]
pub enum NamePattern {
    Exact(String),
    Regex(Regex),
}

impl NamePattern {
    pub fn new(text: &str) -> Result<NamePattern, ViewError> {
        if !text.contains([
            '.', '?', '*', '+', '-', '^', '$', '|', '(', ')', '[', ']', '{', '}',
        ]) {
            return Ok(NamePattern::Exact(text.to_string()));
        }
        Regex::new(text)
            .map(NamePattern::Regex)
            .map_err(|e| ViewError::Usage(format!("bad function pattern {text:?}: {e}")))
    }

    /// The pattern as given.
    pub fn text(&self) -> &str {
        match self {
            NamePattern::Exact(n) => n,
            NamePattern::Regex(r) => r.as_str(),
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Exact(n) => n == name,
            NamePattern::Regex(r) => r.is_match(name),
        }
    }
}

/// What the filters decided for a function.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Match {
    Neither,
    In,
    Out,
}

/// One line to print.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shown {
    pub(super) time: u64,
    pub(super) depth: u16,
    pub(super) kind: ShownKind,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum ShownKind {
    Enter { fid: u32 },
    Exit { fid: u32, duration: u64 },
    Lost { count: u64 },
    Event { id: u64 },
}

/// Filter state of an open call (uftrace's fstack flags).
#[derive(Clone, Copy)]
struct OpenCall {
    fid: u32,
    shown: bool,
    filtered_in: bool,
    notrace: bool,
    depth_before: i64,
}

/// The functions of the trace and the filters' verdict on each.
pub(super) struct Functions<'s> {
    pub(super) table: FunctionTable<'s>,
    /// By function id, once seen: the verdict and the text of its lines.
    known: Vec<Option<Known>>,
    /// Whether each `-N` pattern, then each `-F` pattern, matched a function.
    matched: Vec<bool>,
}

/// What the replay knows of a function it has seen.
pub(super) struct Known {
    verdict: Match,
    /// `name();`, `name() {` and `} /* name */` (grey comment on a terminal).
    pub(super) leaf: Box<[u8]>,
    pub(super) open: Box<[u8]>,
    pub(super) close: Box<[u8]>,
}

impl<'s> Functions<'s> {
    pub(super) fn new(table: FunctionTable<'s>, opts: &ReplayOptions) -> Self {
        Functions {
            table,
            known: Vec::new(),
            matched: vec![false; opts.notrace.len() + opts.filters.len()],
        }
    }

    /// The `-N`, then `-F` patterns that matched no function so far.
    pub(super) fn unmatched(&self, opts: &ReplayOptions) -> Vec<String> {
        let patterns = opts.notrace.iter().chain(&opts.filters);
        patterns
            .zip(&self.matched)
            .filter(|(_, &m)| !m)
            .map(|(p, _)| p.text().to_string())
            .collect()
    }

    fn verdict(&mut self, fid: u32, opts: &ReplayOptions) -> Match {
        self.known(fid, opts).verdict
    }

    /// What is known of function `fid`, found out the first time.
    #[inline]
    pub(super) fn known(&mut self, fid: u32, opts: &ReplayOptions) -> &Known {
        let i = fid as usize;
        if i >= self.known.len() {
            self.known.resize_with(i + 1, || None);
        }
        if self.known[i].is_none() {
            self.known[i] = Some(self.find_out(fid, opts));
        }
        self.known[i].as_ref().expect("just set")
    }

    #[cold]
    fn find_out(&mut self, fid: u32, opts: &ReplayOptions) -> Known {
        let f = self.table.function(fid);
        let name = self.table.name_of(fid);
        let mut verdict = Match::Neither;
        // Patterns match symbol names; an unresolved address has none. -N wins over -F.
        let patterns = opts.notrace.iter().map(|p| (p, Match::Out));
        let patterns = patterns.chain(opts.filters.iter().map(|p| (p, Match::In)));
        for (k, (pattern, on_match)) in patterns.enumerate() {
            if f.resolved && pattern.matches(name) {
                self.matched[k] = true;
                if verdict == Match::Neither {
                    verdict = on_match;
                }
            }
        }
        // uftrace adds no parentheses to a name that ends with one (C++ signatures).
        let parens = if name.ends_with(')') { "" } else { "()" };
        let (gray, reset) = if opts.color {
            (sgr::GRAY, sgr::RESET)
        } else {
            ("", "")
        };
        Known {
            verdict,
            leaf: format!("{name}{parens};").into_bytes().into(),
            open: format!("{name}{parens} {{").into_bytes().into(),
            close: format!("}}{gray} /* {name} */{reset}").into_bytes().into(),
        }
    }
}

/// Lines a thread prepares at a time (plus at most its open calls, which the time filter
/// may release at once).
const READY_LINES: usize = 256;

/// One thread's pipeline: balanced calls -> time filter -> filters -> lines.
pub(super) struct ThreadLines {
    pub(super) tid: u32,
    /// ` [   TID] | `, the same on every line of the thread.
    pub(super) tid_column: Box<[u8]>,
    pub(super) calls: ThreadCalls,
    lines: LineFilter,
    done: bool,
}

/// What decides the lines of a thread: the time filter, then `-F`, `-N`, `-D`.
struct LineFilter {
    /// Entries the time filter has not decided on yet, outermost first.
    undecided: Vec<CallEvent>,
    ready: VecDeque<Shown>,
    open: Vec<OpenCall>,
    in_count: u32,
    out_count: u32,
    depth_left: i64,
    shown_depth: u16,
}

/// Records read between two looks at the lines they made.
const RECORDS_PER_STEP: usize = 64;

impl ThreadLines {
    pub(super) fn new(calls: ThreadCalls, opts: &ReplayOptions) -> Self {
        ThreadLines {
            tid: calls.tid(),
            tid_column: format!(" [{:>6}] | ", calls.tid()).into_bytes().into(),
            calls,
            lines: LineFilter {
                undecided: Vec::new(),
                ready: VecDeque::new(),
                open: Vec::with_capacity(64),
                in_count: 0,
                out_count: 0,
                depth_left: max_depth(opts),
                shown_depth: 0,
            },
            done: false,
        }
    }

    /// Reads until lines are ready or the thread ended.
    pub(super) fn fill(
        &mut self,
        funcs: &mut Functions,
        opts: &ReplayOptions,
    ) -> Result<(), ViewError> {
        if !self.lines.ready.is_empty() {
            return Ok(());
        }
        // Many lines per call: the merge asks for the next one often.
        let lines = &mut self.lines;
        while lines.ready.len() < READY_LINES && !self.done {
            let more = self.calls.next_records(RECORDS_PER_STEP, &mut |event| {
                lines.time_filter(event, funcs, opts)
            })?;
            if !more {
                // uftrace releases what it still holds when the data ends.
                lines.release(funcs, opts);
                self.done = true;
            }
        }
        Ok(())
    }

    /// The next line, if one is ready.
    pub(super) fn pop(&mut self) -> Option<Shown> {
        self.lines.ready.pop_front()
    }

    pub(super) fn head(&self) -> Option<&Shown> {
        self.lines.ready.front()
    }
}

impl LineFilter {
    fn time_filter(&mut self, event: CallEvent, funcs: &mut Functions, opts: &ReplayOptions) {
        if opts.time_filter == 0 {
            return self.filter(event, funcs, opts);
        }
        match event {
            CallEvent::Enter { .. } => self.undecided.push(event),
            CallEvent::Exit(call) => {
                // The innermost undecided entry, if any, is this call's: shorter calls inside
                // it were dropped, and a long one would have released it.
                if !self.undecided.is_empty() {
                    if call.total() < opts.time_filter {
                        // Hidden with everything inside: its entry never reached the filters.
                        self.undecided.pop();
                        return;
                    }
                    self.release(funcs, opts);
                }
                self.filter(event, funcs, opts);
            }
            CallEvent::Lost { .. } | CallEvent::Event { .. } => {
                self.release(funcs, opts);
                self.filter(event, funcs, opts);
            }
        }
    }

    fn release(&mut self, funcs: &mut Functions, opts: &ReplayOptions) {
        for e in std::mem::take(&mut self.undecided) {
            self.filter(e, funcs, opts);
        }
    }

    /// `-F`, `-N` and `-D` as uftrace's `fstack_entry`/`fstack_exit` apply them.
    fn filter(&mut self, event: CallEvent, funcs: &mut Functions, opts: &ReplayOptions) {
        match event {
            CallEvent::Enter { time, addr } => {
                let fid = funcs.table.id(addr);
                let mut call = OpenCall {
                    fid,
                    shown: false,
                    filtered_in: false,
                    notrace: false,
                    depth_before: self.depth_left,
                };
                if self.out_count == 0 {
                    let no_patterns = opts.filters.is_empty() && opts.notrace.is_empty();
                    let verdict = if no_patterns {
                        Match::Neither
                    } else {
                        funcs.verdict(fid, opts)
                    };
                    match verdict {
                        Match::Out => {
                            self.out_count += 1;
                            call.notrace = true;
                        }
                        verdict => {
                            if verdict == Match::In {
                                self.in_count += 1;
                                call.filtered_in = true;
                                self.depth_left = max_depth(opts);
                            }
                            let filtered_out = !opts.filters.is_empty() && self.in_count == 0;
                            if !filtered_out && self.depth_left > 0 {
                                self.depth_left -= 1;
                                call.shown = true;
                                self.ready.push_back(Shown {
                                    time,
                                    depth: self.shown_depth,
                                    kind: ShownKind::Enter { fid },
                                });
                                self.shown_depth += 1;
                            }
                        }
                    }
                }
                self.open.push(call);
            }
            CallEvent::Exit(c) => {
                let Some(call) = self.open.pop() else {
                    return;
                };
                if call.filtered_in {
                    self.in_count -= 1;
                }
                if call.notrace {
                    self.out_count -= 1;
                }
                self.depth_left = call.depth_before;
                if call.shown {
                    self.shown_depth -= 1;
                    self.ready.push_back(Shown {
                        time: c.end,
                        depth: self.shown_depth,
                        kind: ShownKind::Exit {
                            fid: call.fid,
                            duration: c.total(),
                        },
                    });
                }
            }
            CallEvent::Lost { time, count } => self.ready.push_back(Shown {
                time,
                depth: self.shown_depth + 1,
                kind: ShownKind::Lost { count },
            }),
            CallEvent::Event { time, id } => {
                let hidden = self.out_count > 0
                    || self.depth_left <= 0
                    || (!opts.filters.is_empty() && self.in_count == 0);
                if !hidden {
                    self.ready.push_back(Shown {
                        time,
                        depth: self.shown_depth,
                        kind: ShownKind::Event { id },
                    });
                }
            }
        }
    }
}

pub(super) fn max_depth(opts: &ReplayOptions) -> i64 {
    opts.depth.map_or(i64::MAX, i64::from)
}
