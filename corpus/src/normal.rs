//! The normal form of a trace: the call trees `uftrace replay` prints, without durations, with
//! threads named by order of appearance, and with repetition folded so that a 3000-deep
//! recursion or 10,000 threads stay a few lines. Expected files are written in it by hand
//! (expected/README.md describes it for their readers); traces are converted to it.
//!
//! Structure comes from the braces uftrace prints, never from indentation: `f() {` opens a call,
//! `}` closes the innermost open one (its `/* g */` comment names the function that really
//! returned, which for coroutines is not always the innermost), `f();` is a call without
//! traced callees.
use std::fmt::Write as _;

/// A call, or a line that is not one (an exit without an entry, an event).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Call {
        name: String,
        children: Vec<Node>,
        /// The function named by the exit that closed it; None if it never returned.
        closed_by: Option<String>,
        /// How many nested calls of the same function this node stands for (1 = itself).
        nested: u32,
        /// How many identical consecutive siblings this node stands for.
        repeat: u32,
    },
    Text {
        text: String,
        repeat: u32,
    },
}

impl Node {
    fn repeat_mut(&mut self) -> &mut u32 {
        match self {
            Node::Call { repeat, .. } | Node::Text { repeat, .. } => repeat,
        }
    }

    /// Equal apart from the repeat count.
    fn same_as(&self, other: &Node) -> bool {
        let (mut a, mut b) = (self.clone(), other.clone());
        *a.repeat_mut() = 1;
        *b.repeat_mut() = 1;
        a == b
    }
}

/// One thread's calls and what it lost.
#[derive(Default, Debug)]
struct Thread {
    tid: u32,
    roots: Vec<Node>,
    /// Open calls while parsing, innermost last.
    open: Vec<Node>,
    lost: u64,
    lost_unknown: bool,
}

impl Thread {
    fn push(&mut self, node: Node) {
        match self.open.last_mut() {
            Some(Node::Call { children, .. }) => children.push(node),
            _ => self.roots.push(node),
        }
    }

    fn close(&mut self, by: String) {
        match self.open.pop() {
            Some(Node::Call {
                name,
                children,
                nested,
                repeat,
                ..
            }) => self.push(Node::Call {
                name,
                children,
                closed_by: Some(by),
                nested,
                repeat,
            }),
            _ => self.push(Node::Text {
                text: format!("}} /* {by} */"),
                repeat: 1,
            }),
        }
    }

    fn finish(&mut self) {
        while let Some(call) = self.open.pop() {
            self.push(call);
        }
    }
}

/// How a trace is turned into the normal form.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Calls of functions whose name starts with one of these are left out, their callees
    /// shown in their place (what `uftrace replay -H` does, applied after demangling so that
    /// it works on uftrace's own undemangled Rust names too).
    pub hide: Vec<String>,
    /// Every top-level call of a task but the first task becomes a task of its own (a tid
    /// reused by a later thread).
    pub task_per_call: bool,
}

/// The normal form of `uftrace replay -f tid` output.
pub fn normal_form(replay: &str, view: &View) -> String {
    let mut threads = parse(replay);
    let mut bodies = Vec::new();
    for (k, t) in threads.iter_mut().enumerate() {
        t.finish();
        let roots = hide(std::mem::take(&mut t.roots), &view.hide);
        if view.task_per_call && k > 0 {
            for root in roots {
                bodies.push(render_thread(&fold(vec![root]), 0, false));
            }
            if t.lost > 0 || t.lost_unknown {
                bodies.push(render_thread(&[], t.lost, t.lost_unknown));
            }
            continue;
        }
        bodies.push(render_thread(&fold(roots), t.lost, t.lost_unknown));
    }
    let mut out = String::new();
    let mut i = 0;
    while i < bodies.len() {
        let mut j = i + 1;
        while j < bodies.len() && bodies[j] == bodies[i] {
            j += 1;
        }
        if j - i == 1 {
            let _ = writeln!(out, "== T{i}");
        } else {
            let _ = writeln!(out, "== T{i}..T{} ({} tasks)", j - 1, j - i);
        }
        out.push_str(&bodies[i]);
        i = j;
    }
    out
}

fn parse(replay: &str) -> Vec<Thread> {
    let mut threads: Vec<Thread> = Vec::new();
    for line in replay.lines() {
        if line.starts_with("uftrace stopped tracing with remaining functions") {
            // What follows lists the open calls again; the trees already show them.
            break;
        }
        let Some((tid, content)) = split_tid(line) else {
            continue;
        };
        let content = content.trim();
        if content.is_empty() {
            continue;
        }
        let index = match threads.iter().position(|t| t.tid == tid) {
            Some(i) => i,
            None => {
                threads.push(Thread {
                    tid,
                    ..Thread::default()
                });
                threads.len() - 1
            }
        };
        let t = &mut threads[index];
        if let Some(rest) = content.strip_prefix("/* LOST ") {
            match rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
            {
                Some(n) => t.lost += n,
                None => t.lost_unknown = true,
            }
        } else if let Some(rest) = content.strip_prefix('}') {
            let by = rest
                .trim()
                .strip_prefix("/*")
                .and_then(|r| r.strip_suffix("*/"))
                .map_or(String::new(), |n| readable(n.trim()));
            t.close(by);
        } else if let Some(label) = content.strip_suffix(" {") {
            t.open.push(call(label, None));
        } else if let Some(label) = content.strip_suffix(';') {
            let name = readable(function_name(label));
            t.push(call(label, Some(name)));
        } else {
            t.push(Node::Text {
                text: content.to_string(),
                repeat: 1,
            });
        }
    }
    threads
}

/// ` [ 1234] | text` -> (1234, "text"); a duration before the tid is skipped.
fn split_tid(line: &str) -> Option<(u32, &str)> {
    let rest = &line[line.find('[')? + 1..];
    let (tid, rest) = rest.split_once(']')?;
    let tid = tid.trim().parse().ok()?;
    let content = rest.trim_start().strip_prefix('|')?;
    Some((tid, content))
}

fn call(label: &str, closed_by: Option<String>) -> Node {
    Node::Call {
        name: readable(function_name(label)),
        children: Vec::new(),
        closed_by,
        nested: 1,
        repeat: 1,
    }
}

/// `name()` (uftrace's label of a call without arguments) -> `name`.
fn function_name(label: &str) -> &str {
    label.strip_suffix("()").unwrap_or(label)
}

/// Names as vftrace writes them: uftrace 0.13 prints Rust v0 names (`_R...`) undemangled, and
/// unresolved addresses (`<55d0c0ffee00>`) differ from run to run.
fn readable(name: &str) -> String {
    let hex = name
        .strip_prefix('<')
        .and_then(|n| n.strip_suffix('>'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_hexdigit()));
    if hex {
        return "<unresolved address>".to_string();
    }
    vftrace_symbols::readable_name(name)
}

fn hide(nodes: Vec<Node>, prefixes: &[String]) -> Vec<Node> {
    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        match node {
            Node::Call {
                name,
                children,
                closed_by,
                nested,
                repeat,
            } => {
                let children = hide(children, prefixes);
                if prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                    out.extend(children);
                } else {
                    out.push(Node::Call {
                        name,
                        children,
                        closed_by,
                        nested,
                        repeat,
                    });
                }
            }
            text => out.push(text),
        }
    }
    out
}

/// Folds bottom-up: a call whose only callee is the same function, returning the same way,
/// absorbs it (`nested`); identical consecutive siblings become one (`repeat`).
fn fold(nodes: Vec<Node>) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::with_capacity(nodes.len());
    for node in nodes {
        let node = match node {
            Node::Call {
                name,
                children,
                closed_by,
                nested,
                repeat,
            } => {
                let mut children = fold(children);
                let mut nested = nested;
                if let [Node::Call {
                    name: inner_name,
                    closed_by: inner_closed_by,
                    repeat: 1,
                    ..
                }] = children.as_slice()
                {
                    if *inner_name == name && *inner_closed_by == closed_by {
                        let Some(Node::Call {
                            children: inner_children,
                            nested: inner_nested,
                            ..
                        }) = children.pop()
                        else {
                            unreachable!()
                        };
                        nested += inner_nested;
                        children = inner_children;
                    }
                }
                Node::Call {
                    name,
                    children,
                    closed_by,
                    nested,
                    repeat,
                }
            }
            text => text,
        };
        match out.last_mut() {
            Some(last) if last.same_as(&node) => *last.repeat_mut() += 1,
            _ => out.push(node),
        }
    }
    out
}

fn render_thread(roots: &[Node], lost: u64, lost_unknown: bool) -> String {
    let mut out = String::new();
    render(roots, 0, &mut out);
    if lost > 0 {
        let _ = writeln!(out, "/* LOST {lost} records!! */");
    }
    if lost_unknown {
        out.push_str("/* LOST some records!! */\n");
    }
    let mut open = Vec::new();
    let mut level = roots;
    while let Some(Node::Call {
        name,
        children,
        closed_by: None,
        nested,
        ..
    }) = level.last()
    {
        open.push(if *nested > 1 {
            format!("{name} (nested ×{nested})")
        } else {
            name.clone()
        });
        level = children;
    }
    if !open.is_empty() {
        let _ = writeln!(out, "(still open at the end: {})", open.join(" > "));
    }
    out
}

fn render(nodes: &[Node], depth: usize, out: &mut String) {
    for node in nodes {
        let indent = "  ".repeat(depth);
        match node {
            Node::Call {
                name,
                children,
                closed_by,
                nested,
                repeat,
            } => {
                let nested = if *nested > 1 {
                    format!(" nested ×{nested}")
                } else {
                    String::new()
                };
                let repeat = if *repeat > 1 {
                    format!(" ×{repeat}")
                } else {
                    String::new()
                };
                if children.is_empty() && closed_by.as_deref() == Some(name.as_str()) {
                    let _ = writeln!(out, "{indent}{name}();{nested}{repeat}");
                    continue;
                }
                let _ = writeln!(out, "{indent}{name}() {{{nested}{repeat}");
                render(children, depth + 1, out);
                if let Some(by) = closed_by {
                    let _ = writeln!(out, "{indent}}} /* {by} */{nested}");
                }
            }
            Node::Text { text, repeat } => {
                let repeat = if *repeat > 1 {
                    format!(" ×{repeat}")
                } else {
                    String::new()
                };
                let _ = writeln!(out, "{indent}{text}{repeat}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nf(text: &str) -> String {
        normal_form(text, &View::default())
    }

    #[test]
    fn durations_and_indentation_do_not_matter() {
        let replay = "\
# DURATION     TID     FUNCTION
            [ 2001] | main() {
   0.050 us [ 2001] |   a();
   1.000 us [ 2001] |      b() {
   2.000 us [ 2001] | c();
            [ 2001] |   } /* b */
   9.000 us [ 2001] | } /* main */
";
        assert_eq!(
            nf(replay),
            "== T0\nmain() {\n  a();\n  b() {\n    c();\n  } /* b */\n} /* main */\n"
        );
    }

    #[test]
    fn a_call_with_an_empty_body_is_a_leaf() {
        let replay = " [1] | f() {\n [1] | } /* f */\n";
        assert_eq!(nf(replay), "== T0\nf();\n");
    }

    #[test]
    fn recursion_and_repetition_fold() {
        let mut replay = String::from(" [7] | main() {\n");
        for _ in 0..5 {
            replay.push_str(" [7] | r() {\n");
        }
        replay.push_str(" [7] | /* LOST 20 records!! */\n");
        for _ in 0..5 {
            replay.push_str(" [7] | } /* r */\n");
        }
        for _ in 0..3 {
            replay.push_str(" [7] | leaf();\n");
        }
        for _ in 0..2 {
            replay.push_str(" [7] | w() {\n [7] | leaf();\n [7] | } /* w */\n");
        }
        replay.push_str(" [7] | } /* main */\n");
        assert_eq!(
            nf(&replay),
            "== T0\nmain() {\n  r(); nested ×5\n  leaf(); ×3\n  w() { ×2\n    leaf();\n  } /* w */\n} /* main */\n/* LOST 20 records!! */\n"
        );
    }

    #[test]
    fn nested_calls_with_bodies_fold_around_the_body() {
        let replay =
            " [1] | r() {\n [1] | r() {\n [1] | x();\n [1] | } /* r */\n [1] | } /* r */\n";
        assert_eq!(
            nf(replay),
            "== T0\nr() { nested ×2\n  x();\n} /* r */ nested ×2\n"
        );
    }

    #[test]
    fn threads_are_numbered_by_appearance_and_identical_ones_fold() {
        let replay = "\
 [30] | main() {
 [31] | worker() {
 [31] |   leaf();
 [31] | } /* worker */
 [32] | worker() {
 [32] |   leaf();
 [32] | } /* worker */
 [30] | } /* main */
";
        assert_eq!(
            nf(replay),
            "== T0\nmain();\n== T1..T2 (2 tasks)\nworker() {\n  leaf();\n} /* worker */\n"
        );
    }

    #[test]
    fn calls_that_never_return_are_reported() {
        let replay = " [5] | main() {\n [5] |   finish() {\n [5] |     quit() {\n\nuftrace stopped tracing with remaining functions\n====\ntask: 5\n[2] quit\n";
        assert_eq!(
            nf(replay),
            "== T0\nmain() {\n  finish() {\n    quit() {\n(still open at the end: main > finish > quit)\n"
        );
    }

    #[test]
    fn an_exit_of_another_function_keeps_its_name() {
        // Coroutines: coro_a returns while coro_b, entered later on another stack, is open.
        let replay =
            " [1] | a() {\n [1] | b() {\n [1] | step();\n [1] | } /* a */\n [1] | } /* b */\n";
        assert_eq!(
            nf(replay),
            "== T0\na() {\n  b() {\n    step();\n  } /* a */\n} /* b */\n"
        );
    }

    #[test]
    fn exits_without_entries_are_kept() {
        let replay = " [9] | a();\n [9] | } /* main */\n";
        assert_eq!(nf(replay), "== T0\na();\n} /* main */\n");
    }

    #[test]
    fn hidden_functions_leave_their_callees() {
        let replay = " [1] | main() {\n [1] | std::rt::x() {\n [1] | work();\n [1] | } /* std::rt::x */\n [1] | } /* main */\n";
        let view = View {
            hide: vec!["std::".into()],
            task_per_call: false,
        };
        assert_eq!(
            normal_form(replay, &view),
            "== T0\nmain() {\n  work();\n} /* main */\n"
        );
    }

    #[test]
    fn rust_v0_names_and_addresses_are_made_readable() {
        let replay = " [1] | _RNvCs12jkoC9p3aE_1p4main() {\n [1] | <7f0012345678>();\n [1] | } /* _RNvCs12jkoC9p3aE_1p4main */\n";
        assert_eq!(
            nf(replay),
            "== T0\np::main() {\n  <unresolved address>();\n} /* p::main */\n"
        );
    }
}
