//! Expected files (`expected/NAME.tree`): a header of `#` lines (what the program checks, why
//! the tree is right, and the keys below), then the expected call trees in the normal form.
//!
//! Keys (`# key: value`; every other `#` line is commentary):
//! - `uftrace: agrees` (uftrace 0.13 records this tree too, and the test checks that it does),
//!   `uftrace: wrong: WHY` or `uftrace: not applicable: WHY` (the test runs only vftrace).
//! - `replay: ARGS`: extra `uftrace replay` options (filters such as `-N spin`).
//! - `hide: PREFIX...`: calls of functions starting with a prefix are left out, their callees
//!   kept in their place (see [`crate::normal::View`]).
//! - `lost: not compared: WHY`: the LOST count varies from run to run and is dropped.
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UftraceVerdict {
    Agrees,
    Wrong(String),
    NotApplicable(String),
}

#[derive(Clone, Debug)]
pub struct Expected {
    pub path: PathBuf,
    pub uftrace: UftraceVerdict,
    pub replay_args: Vec<String>,
    pub hide: Vec<String>,
    /// Why LOST counts are not compared, if they are not.
    pub lost_not_compared: Option<String>,
    /// `# tasks: one per call: WHY`: every top-level call of a task after the first is taken
    /// as a task of its own (threads that end leave their tid to later ones, which uftrace
    /// then shows as one task).
    pub task_per_call: Option<String>,
    /// The call trees in the normal form.
    pub trees: String,
}

impl Expected {
    pub fn load(path: &Path) -> Expected {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (every program has an expected file)",
                path.display()
            )
        });
        Expected::parse(path, &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub fn parse(path: &Path, text: &str) -> Result<Expected, String> {
        let mut uftrace = None;
        let mut replay_args = Vec::new();
        let mut hide = Vec::new();
        let mut lost_not_compared = None;
        let mut task_per_call = None;
        let mut lines = text.lines().enumerate().peekable();
        // A value may go on over lines indented further: `#   more of the reason`.
        let mut header: Vec<(usize, String)> = Vec::new();
        while let Some((n, line)) = lines.next_if(|(_, l)| l.starts_with('#')) {
            let text = line.trim_start_matches('#');
            match header.last_mut() {
                Some((_, value)) if text.starts_with("   ") => {
                    value.push(' ');
                    value.push_str(text.trim());
                }
                _ => header.push((n, text.trim().to_string())),
            }
        }
        for (n, line) in &header {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let reason = |what: &str, v: &str| {
                let why = v.strip_prefix(what)?.trim_start_matches(':').trim();
                (!why.is_empty()).then(|| why.to_string())
            };
            match key.trim() {
                "uftrace" => {
                    uftrace = Some(if value == "agrees" {
                        UftraceVerdict::Agrees
                    } else if let Some(why) = reason("wrong", value) {
                        UftraceVerdict::Wrong(why)
                    } else if let Some(why) = reason("not applicable", value) {
                        UftraceVerdict::NotApplicable(why)
                    } else {
                        return Err(format!(
                            "line {}: `uftrace:` takes `agrees`, `wrong: WHY` or `not applicable: WHY`",
                            n + 1
                        ));
                    })
                }
                "replay" => replay_args.extend(value.split_whitespace().map(String::from)),
                "hide" => hide.extend(value.split_whitespace().map(String::from)),
                "lost" => {
                    lost_not_compared = Some(reason("not compared", value).ok_or_else(|| {
                        format!("line {}: `lost:` takes `not compared: WHY`", n + 1)
                    })?)
                }
                "tasks" => {
                    task_per_call = Some(reason("one per call", value).ok_or_else(|| {
                        format!("line {}: `tasks:` takes `one per call: WHY`", n + 1)
                    })?)
                }
                _ => {}
            }
        }
        let uftrace = uftrace.ok_or("the header has no `# uftrace:` line")?;
        let mut trees = String::new();
        for (_, line) in lines {
            trees.push_str(line.trim_end());
            trees.push('\n');
        }
        let trees = trees.trim_end().to_string() + "\n";
        if !trees.starts_with("== T") {
            return Err("the trees must follow the header, starting with `== T0`".into());
        }
        Ok(Expected {
            path: path.to_path_buf(),
            uftrace,
            replay_args,
            hide,
            lost_not_compared,
            task_per_call,
            trees,
        })
    }

    /// The LOST count the trees expect, summed over threads (threads folded together count
    /// once per thread).
    pub fn lost_total(&self) -> u64 {
        lost_total(&self.trees)
    }
}

/// Sum of the `/* LOST N records!! */` lines of a normal form, counting folded threads.
pub fn lost_total(trees: &str) -> u64 {
    let mut threads = 1;
    let mut total = 0;
    for line in trees.lines() {
        if let Some(header) = line.strip_prefix("== ") {
            threads = header
                .split_once('(')
                .and_then(|(_, n)| n.split_whitespace().next()?.parse().ok())
                .unwrap_or(1);
        } else if let Some(rest) = line.strip_prefix("/* LOST ") {
            if let Some(n) = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
            {
                total += n * threads;
            }
        }
    }
    total
}

/// The normal form without its LOST lines (when they are not compared).
pub fn without_lost(trees: &str) -> String {
    trees
        .lines()
        .filter(|l| !l.starts_with("/* LOST "))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_keys_and_trees() {
        let e = Expected::parse(
            Path::new("x.tree"),
            "# what it is\n# uftrace: wrong: it loses\n#   exits\n# replay: -N spin\n# hide: std:: core::\n== T0\nmain();  \n\n",
        )
        .unwrap();
        assert_eq!(e.uftrace, UftraceVerdict::Wrong("it loses exits".into()));
        assert_eq!(e.replay_args, ["-N", "spin"]);
        assert_eq!(e.hide, ["std::", "core::"]);
        assert_eq!(e.trees, "== T0\nmain();\n");
    }

    #[test]
    fn a_verdict_needs_a_reason() {
        assert!(Expected::parse(Path::new("x"), "# uftrace: wrong\n== T0\n").is_err());
        assert!(Expected::parse(Path::new("x"), "== T0\n").is_err());
    }

    #[test]
    fn lost_counts_every_folded_thread() {
        let trees = "== T0\nmain();\n/* LOST 3 records!! */\n== T1..T4 (4 tasks)\nw();\n/* LOST 2 records!! */\n";
        assert_eq!(lost_total(trees), 11);
        assert_eq!(
            without_lost(trees),
            "== T0\nmain();\n== T1..T4 (4 tasks)\nw();\n"
        );
    }
}
