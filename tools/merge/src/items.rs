//! What a track shows besides traced functions (host events, spans made of them, markers),
//! as owned items, and the cursor that writes them in time order between a trace's records.
//!
//! Spans on a track must nest with the functions traced on it. A host span (a vCPU not
//! running) lies between two guest records when the clocks are right, so it nests as a child
//! of the guest's innermost function; where an alignment error puts a guest record inside
//! one, the span is cut at that record.
use std::io;

use vftrace_convert::{ArgValue, EventExtras, TimelineSink};

/// An owned argument value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Arg {
    U64(u64),
    I64(i64),
    Str(String),
    Hex(u64),
    Bool(bool),
}

impl Arg {
    fn value(&self) -> ArgValue<'_> {
        match self {
            Arg::U64(v) => ArgValue::U64(*v),
            Arg::I64(v) => ArgValue::I64(*v),
            Arg::Str(s) => ArgValue::Str(s),
            Arg::Hex(v) => ArgValue::Hex(*v),
            Arg::Bool(b) => ArgValue::Bool(*b),
        }
    }
}

pub(crate) type Args = Vec<(&'static str, Arg)>;

fn values(args: &Args) -> Vec<(&str, ArgValue<'_>)> {
    args.iter().map(|(k, v)| (*k, v.value())).collect()
}

#[derive(Clone, Debug)]
pub(crate) struct Instant {
    pub ts: u64,
    pub name: String,
    pub category: &'static str,
    pub args: Args,
    pub flow_out: Option<u64>,
    pub flow_in: Option<u64>,
}

/// A part of a [`Span`].
#[derive(Clone, Debug)]
pub(crate) struct Part {
    pub start: u64,
    pub end: u64,
    pub name: String,
    pub category: &'static str,
}

#[derive(Clone, Debug)]
pub(crate) struct Span {
    pub start: u64,
    pub end: u64,
    pub name: String,
    pub category: &'static str,
    pub args: Args,
    /// Consecutive parts inside it, in time order.
    pub parts: Vec<Part>,
}

/// What became of a span written by [`Cursor::advance`]: it ended at `end` (earlier than
/// planned when cut), its parts clipped to that.
pub(crate) struct Written<'a> {
    pub span: &'a Span,
    pub end: u64,
}

impl Written<'_> {
    /// (part name, ns inside the written span) of each part.
    pub fn parts(&self) -> impl Iterator<Item = (&str, u64)> {
        self.span.parts.iter().filter_map(move |p| {
            let end = p.end.min(self.end);
            (end > p.start).then(|| (p.name.as_str(), end - p.start))
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    // At one time: ends before begins, the span before its parts, instants last (inside).
    PartEnd(usize, usize),
    SpanEnd(usize),
    SpanBegin(usize),
    PartBegin(usize, usize),
    Instant(usize),
}

impl Op {
    fn rank(&self) -> u8 {
        match self {
            Op::PartEnd(..) => 0,
            Op::SpanEnd(_) => 1,
            Op::SpanBegin(_) => 2,
            Op::PartBegin(..) => 3,
            Op::Instant(_) => 4,
        }
    }
}

/// The items of one track, written in time order as the track's records go by.
pub(crate) struct Cursor {
    pub pid: u32,
    pub tid: u32,
    spans: Vec<Span>,
    instants: Vec<Instant>,
    ops: Vec<(u64, Op)>,
    next: usize,
    /// The span written and not ended yet, and its part.
    open: Option<(usize, Option<usize>)>,
    /// Spans cut short: their later ops are skipped.
    cut: Vec<bool>,
}

impl Cursor {
    /// `spans` must not overlap one another; instants may lie anywhere.
    pub fn new(pid: u32, tid: u32, spans: Vec<Span>, instants: Vec<Instant>) -> Cursor {
        let mut ops = Vec::new();
        for (i, s) in spans.iter().enumerate() {
            ops.push((s.start, Op::SpanBegin(i)));
            ops.push((s.end.max(s.start), Op::SpanEnd(i)));
            for (k, p) in s.parts.iter().enumerate() {
                ops.push((p.start, Op::PartBegin(i, k)));
                ops.push((p.end.max(p.start), Op::PartEnd(i, k)));
            }
        }
        for (j, inst) in instants.iter().enumerate() {
            ops.push((inst.ts, Op::Instant(j)));
        }
        ops.sort_by_key(|(ts, op)| (*ts, op.rank(), *op));
        Cursor {
            pid,
            tid,
            cut: vec![false; spans.len()],
            spans,
            instants,
            ops,
            next: 0,
            open: None,
        }
    }

    /// Writes what comes before `until` (everything for `u64::MAX`); a span still open at
    /// `until` is cut there. `on_end` hears of every span ended.
    pub fn advance(
        &mut self,
        sink: &mut dyn TimelineSink,
        until: u64,
        on_end: &mut dyn FnMut(Written),
    ) -> io::Result<()> {
        while let Some(&(ts, op)) = self.ops.get(self.next) {
            if until != u64::MAX && ts >= until {
                break;
            }
            self.next += 1;
            let (pid, tid) = (self.pid, self.tid);
            match op {
                Op::Instant(j) => {
                    let inst = &self.instants[j];
                    let args = values(&inst.args);
                    let extras = EventExtras {
                        category: Some(inst.category),
                        args: &args,
                        flow_out: inst.flow_out,
                        flow_in: inst.flow_in,
                    };
                    sink.instant_with(pid, tid, ts, &inst.name, &extras)?;
                }
                Op::SpanBegin(i) => {
                    let s = &self.spans[i];
                    let args = values(&s.args);
                    let extras = EventExtras::category(s.category).with_args(&args);
                    sink.begin_with(pid, tid, ts, &s.name, &extras)?;
                    self.open = Some((i, None));
                }
                Op::PartBegin(i, k) if !self.cut[i] => {
                    let p = &self.spans[i].parts[k];
                    sink.begin_with(pid, tid, ts, &p.name, &EventExtras::category(p.category))?;
                    self.open = Some((i, Some(k)));
                }
                Op::PartEnd(i, _) if !self.cut[i] => {
                    sink.end(pid, tid, ts)?;
                    self.open = Some((i, None));
                }
                Op::SpanEnd(i) if !self.cut[i] => {
                    sink.end(pid, tid, ts)?;
                    self.open = None;
                    on_end(Written {
                        span: &self.spans[i],
                        end: ts,
                    });
                }
                _ => {}
            }
        }
        if let Some((i, part)) = self.open.take() {
            if until == u64::MAX {
                self.open = Some((i, part));
                return Ok(());
            }
            let at = until.max(self.spans[i].start);
            if part.is_some() {
                sink.end(self.pid, self.tid, at)?;
            }
            sink.end(self.pid, self.tid, at)?;
            self.cut[i] = true;
            on_end(Written {
                span: &self.spans[i],
                end: at,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vftrace_convert::ChromeJsonWriter;

    #[test]
    fn spans_nest_and_are_cut_at_a_record_inside() {
        let span = |start, end| Span {
            start,
            end,
            name: "vCPU not running".into(),
            category: "host",
            args: vec![("reason", Arg::Str("x".into()))],
            parts: vec![
                Part {
                    start,
                    end: (start + end) / 2,
                    name: "a".into(),
                    category: "kvm",
                },
                Part {
                    start: (start + end) / 2,
                    end,
                    name: "b".into(),
                    category: "sched",
                },
            ],
        };
        let instant = Instant {
            ts: 1000,
            name: "pio".into(),
            category: "kvm",
            args: vec![("port", Arg::Hex(0x6a0))],
            flow_out: None,
            flow_in: Some(3),
        };
        let mut c = Cursor::new(
            1,
            2,
            vec![span(1000, 2000), span(3000, 5000)],
            vec![instant],
        );
        let mut sink = ChromeJsonWriter::new(Vec::new()).unwrap();
        let mut ended = Vec::new();
        let mut on_end = |w: Written| ended.push((w.span.start, w.end, w.parts().count()));
        c.advance(&mut sink, 2500, &mut on_end).unwrap();
        // A record at 3500 falls inside the second span: it ends there, and so does its part.
        c.advance(&mut sink, 3500, &mut on_end).unwrap();
        c.advance(&mut sink, u64::MAX, &mut on_end).unwrap();
        sink.finish().unwrap();
        assert_eq!(ended, [(1000, 2000, 2), (3000, 3500, 1)]);
        let doc: serde_json::Value = serde_json::from_slice(&sink.into_inner()).unwrap();
        let phases: Vec<String> = doc["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{}{}", e["ph"].as_str().unwrap(), e["ts"]))
            .collect();
        assert_eq!(
            phases,
            [
                "B1.0", "B1.0", "i1.0", "f1.0", "E1.5", "B1.5", "E2.0", "E2.0", "B3.0", "B3.0",
                "E3.5", "E3.5"
            ]
        );
    }
}
