//! Flame graphs of inclusive time: folded stacks (`frame;frame;frame COUNT`, as
//! stackcollapse and `uftrace dump --flame-graph` write them) from a trace, or from a file of
//! them (what `vftrace profile` writes), drawn as SVG by `inferno`.
//!
//! From a trace each stack's count is the self time (ns) of the calls at that stack, so the
//! width of a frame is the inclusive time of its calls. Stacks are kept as a tree of distinct
//! call paths (all threads together, as uftrace folds them): memory grows with the program's
//! distinct paths, not with its calls, and is capped at [`MAX_STACKS`].

use std::io::Write;
use std::path::Path;

use rustc_hash::FxHashMap;
use vftrace_format::dir::TraceDir;
use vftrace_format::FormatError;

use crate::calls::{visit_threads, AtEnd, CallEvent, CallVisitor};
use crate::functions::FunctionTable;
use crate::stats::threads_to_read;
use crate::ViewError;

/// Distinct call paths kept; deeper new paths beyond it are counted in their parent's frame.
pub const MAX_STACKS: usize = 1 << 20;

/// Folded stacks, sorted by stack, each stack once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Folded {
    pub stacks: Vec<(String, u64)>,
    /// What the counts are ("ns" for a trace).
    pub unit: String,
    /// Call paths merged into their parent because of [`MAX_STACKS`].
    pub truncated: u64,
}

impl Folded {
    /// The sum of the counts whose stack starts with `root` (a frame name).
    pub fn total_under(&self, root: &str) -> u64 {
        self.stacks
            .iter()
            .filter(|(s, _)| s.split(';').next() == Some(root))
            .map(|(_, c)| c)
            .sum()
    }
}

#[derive(Clone, Copy)]
struct Node {
    parent: u32,
    name: u32,
    self_ns: u64,
}

/// The tree of distinct call paths and the self time at each.
struct Folder<'s> {
    functions: FunctionTable<'s>,
    /// Node 0 is the root above every thread's outermost calls.
    nodes: Vec<Node>,
    children: FxHashMap<(u32, u32), u32>,
    /// Node of each open call of the thread being read, above the root.
    stack: Vec<u32>,
    truncated: u64,
}

impl CallVisitor for Folder<'_> {
    fn thread_start(&mut self, _tid: u32) {
        self.stack.clear();
        self.stack.push(0);
    }

    #[inline]
    fn event(&mut self, event: CallEvent) {
        match event {
            CallEvent::Enter { addr, .. } => {
                let fid = self.functions.id(addr);
                let name = self.functions.function(fid).name;
                let parent = *self.stack.last().expect("the root is never popped");
                let node = match self.children.get(&(parent, name)) {
                    Some(&n) => n,
                    None if self.nodes.len() < MAX_STACKS => {
                        let n = self.nodes.len() as u32;
                        self.nodes.push(Node {
                            parent,
                            name,
                            self_ns: 0,
                        });
                        self.children.insert((parent, name), n);
                        n
                    }
                    None => {
                        self.truncated += 1;
                        parent
                    }
                };
                self.stack.push(node);
            }
            CallEvent::Exit(call) => {
                let node = self.stack.pop().expect("exits match entries");
                self.nodes[node as usize].self_ns += call.self_time();
            }
            CallEvent::Lost { .. } | CallEvent::Event { .. } => {}
        }
    }
}

/// Folds the calls of the trace at `dir` (or of `tids` only).
pub fn fold_trace(
    dir: &Path,
    tids: Option<&[u32]>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Folded, ViewError> {
    let trace = TraceDir::open(dir)?;
    let symbolizer = trace.symbolizer()?;
    let (tids, _missing) = threads_to_read(&trace, tids);
    let mut folder = Folder {
        functions: FunctionTable::new(&symbolizer),
        nodes: vec![Node {
            parent: 0,
            name: u32::MAX,
            self_ns: 0,
        }],
        children: FxHashMap::default(),
        stack: Vec::with_capacity(64),
        truncated: 0,
    };
    visit_threads(&trace, &tids, AtEnd::Close, &mut folder, progress)?;
    let Folder {
        functions,
        nodes,
        truncated,
        ..
    } = folder;
    let names = functions.names();
    let mut stacks = Vec::new();
    let mut path: Vec<&str> = Vec::new();
    for node in nodes.iter().skip(1).filter(|n| n.self_ns > 0) {
        path.clear();
        let mut n = *node;
        loop {
            path.push(&names[n.name as usize]);
            if n.parent == 0 {
                break;
            }
            n = nodes[n.parent as usize];
        }
        path.reverse();
        stacks.push((path.join(";"), node.self_ns));
    }
    stacks.sort();
    Ok(Folded {
        stacks,
        unit: "ns".into(),
        truncated,
    })
}

/// Reads a file of folded stacks, one `frame;frame COUNT` a line (blank lines allowed). A line
/// that is not one is an error naming the file and line.
pub fn read_folded(path: &Path) -> Result<Folded, ViewError> {
    let bytes = std::fs::read(path).map_err(|e| FormatError::io(path, &e))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        FormatError::at_line(path, line, "not UTF-8 text: is this a folded-stacks file?")
    })?;
    let mut sums: FxHashMap<&str, u64> = FxHashMap::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let parsed = line
            .rsplit_once(char::is_whitespace)
            .and_then(|(stack, count)| Some((stack.trim_end(), count.parse::<u64>().ok()?)))
            .filter(|(stack, _)| !stack.is_empty());
        let Some((stack, count)) = parsed else {
            let shown: String = line.chars().take(60).collect();
            return Err(FormatError::at_line(
                path,
                i + 1,
                format!("{shown:?} is not a folded stack (expected `frame;frame;frame COUNT`)"),
            )
            .into());
        };
        let sum = sums.entry(stack).or_default();
        *sum = sum.saturating_add(count);
    }
    let mut stacks: Vec<(String, u64)> =
        sums.into_iter().map(|(s, c)| (s.to_string(), c)).collect();
    stacks.sort();
    Ok(Folded {
        stacks,
        unit: "samples".into(),
        truncated: 0,
    })
}

/// Writes the stacks as folded text.
pub fn write_folded(folded: &Folded, out: &mut dyn Write) -> Result<(), ViewError> {
    let mut text = String::with_capacity(folded.stacks.len() * 64);
    for (stack, count) in &folded.stacks {
        text.push_str(stack);
        text.push(' ');
        text.push_str(&count.to_string());
        text.push('\n');
    }
    out.write_all(text.as_bytes())
        .map_err(|e| ViewError::output("the folded stacks", e))
}

/// Draws the stacks as an SVG flame graph titled `title`.
pub fn write_svg(folded: &Folded, title: &str, out: &mut dyn Write) -> Result<(), ViewError> {
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_string();
    opts.count_name = folded.unit.clone();
    let lines: Vec<String> = folded
        .stacks
        .iter()
        .map(|(s, c)| format!("{s} {c}"))
        .collect();
    if lines.is_empty() {
        return Err(ViewError::Usage(
            "nothing to draw: no call took any time (or the input has no stacks)".into(),
        ));
    }
    inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)
        .map_err(|e| ViewError::output("the flame graph", e))
}
