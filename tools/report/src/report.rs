//! The `report` table (uftrace's `report`): fields, sort keys (`-s`), averages
//! (`--avg-total`, `--avg-self`), the per-thread table (`--task`) and `--diff`.

use std::cmp::Ordering;
use std::io::Write;

use crate::stats::{FunctionStats, ThreadStats, TraceStats};
use crate::time::{push_padded, write_count_change, write_duration, write_duration_change};
use crate::ViewError;

/// One number of a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Total,
    TotalAvg,
    TotalMin,
    TotalMax,
    SelfTime,
    SelfAvg,
    SelfMin,
    SelfMax,
    Calls,
    Size,
}

impl Field {
    /// Names as uftrace's `-f` takes them, in its order.
    const ALL: [(&'static str, Field, &'static str); 10] = [
        ("total", Field::Total, "Total time"),
        ("total-avg", Field::TotalAvg, "Total avg"),
        ("total-min", Field::TotalMin, "Total min"),
        ("total-max", Field::TotalMax, "Total max"),
        ("self", Field::SelfTime, "Self time"),
        ("self-avg", Field::SelfAvg, "Self avg"),
        ("self-min", Field::SelfMin, "Self min"),
        ("self-max", Field::SelfMax, "Self max"),
        ("call", Field::Calls, "Calls"),
        ("size", Field::Size, "Size"),
    ];

    fn header(self) -> &'static str {
        Field::ALL.iter().find(|f| f.1 == self).unwrap().2
    }

    fn is_count(self) -> bool {
        matches!(self, Field::Calls | Field::Size)
    }

    /// The field's value for `f`.
    pub fn value(self, f: &FunctionStats) -> u64 {
        match self {
            Field::Total => f.total.sum,
            Field::TotalAvg => f.total.avg(f.calls),
            Field::TotalMin => f.total.min_or_zero(),
            Field::TotalMax => f.total.max,
            Field::SelfTime => f.self_time.sum,
            Field::SelfAvg => f.self_time.avg(f.calls),
            Field::SelfMin => f.self_time.min_or_zero(),
            Field::SelfMax => f.self_time.max,
            Field::Calls => f.calls,
            Field::Size => f.size,
        }
    }
}

/// Which averages the default columns show (uftrace's `--avg-total`, `--avg-self`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AvgMode {
    #[default]
    None,
    Total,
    SelfTime,
}

impl AvgMode {
    fn default_fields(self) -> Vec<Field> {
        match self {
            AvgMode::None => vec![Field::Total, Field::SelfTime, Field::Calls],
            AvgMode::Total => vec![Field::TotalAvg, Field::TotalMin, Field::TotalMax],
            AvgMode::SelfTime => vec![Field::SelfAvg, Field::SelfMin, Field::SelfMax],
        }
    }
}

/// What to sort by: a field (descending) or the function name (ascending).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Field(Field),
    Name,
}

/// Parses uftrace's `-s KEY[,KEY...]`: total, total_avg, total_min, total_max, self, self_avg,
/// self_min, self_max, call, size, func (`-` or `_`); with an average mode, avg/min/max mean
/// that mode's. No keys: total (or the average of the mode).
pub fn parse_sort_keys(text: Option<&str>, avg: AvgMode) -> Result<Vec<SortKey>, ViewError> {
    let text = match (text, avg) {
        (Some(t), _) => t,
        (None, AvgMode::None) => "total",
        (None, AvgMode::Total) => "total_avg",
        (None, AvgMode::SelfTime) => "self_avg",
    };
    text.split(',')
        .map(|key| {
            let key = key.trim().replace('_', "-");
            let prefix = match avg {
                AvgMode::Total => "total-",
                AvgMode::SelfTime => "self-",
                AvgMode::None => "",
            };
            let key = match key.as_str() {
                "avg" | "min" | "max" if !prefix.is_empty() => format!("{prefix}{key}"),
                _ => key,
            };
            if key == "func" {
                return Ok(SortKey::Name);
            }
            Field::ALL
                .iter()
                .find(|f| f.0 == key)
                .map(|f| SortKey::Field(f.1))
                .ok_or_else(|| {
                    ViewError::Usage(format!(
                        "unknown sort key {key:?}; use total, total_avg, total_min, total_max, self, self_avg, self_min, self_max, call, size or func"
                    ))
                })
        })
        .collect()
}

/// Parses uftrace's `-f FIELD[,FIELD...]` (`+FIELD,...` adds to the defaults; `all`, `none`).
pub fn parse_fields(text: Option<&str>, avg: AvgMode) -> Result<Vec<Field>, ViewError> {
    let Some(text) = text else {
        return Ok(avg.default_fields());
    };
    if text == "none" {
        return Ok(Vec::new());
    }
    let (mut chosen, list) = match text.strip_prefix('+') {
        Some(rest) => (avg.default_fields(), rest),
        None => (Vec::new(), text),
    };
    for name in list.split(',') {
        if name == "all" {
            return Ok(Field::ALL.iter().map(|f| f.1).collect());
        }
        let field = Field::ALL.iter().find(|f| f.0 == name).ok_or_else(|| {
            let names: Vec<&str> = Field::ALL.iter().map(|f| f.0).collect();
            ViewError::Usage(format!(
                "unknown field {name:?}; possible fields are: {}",
                names.join(" ")
            ))
        })?;
        if !chosen.contains(&field.1) {
            chosen.push(field.1);
        }
    }
    // uftrace shows the chosen fields in its own order.
    chosen.sort_by_key(|f| Field::ALL.iter().position(|a| a.1 == *f));
    Ok(chosen)
}

/// How to print a report.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    pub fields: Vec<Field>,
    pub sort: Vec<SortKey>,
    pub color: bool,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            fields: AvgMode::None.default_fields(),
            sort: vec![SortKey::Field(Field::Total)],
            color: false,
        }
    }
}

fn compare(keys: &[SortKey], a: &FunctionStats, b: &FunctionStats) -> Ordering {
    for key in keys {
        let o = match key {
            SortKey::Field(f) => f.value(b).cmp(&f.value(a)),
            SortKey::Name => a.name.as_bytes().cmp(b.name.as_bytes()),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

const RULE: &str = "=================================================";

/// `  Total time   Self time       Calls  Function` and its rule, for columns `widths`.
fn write_header(out: &mut Vec<u8>, columns: &[(&str, usize)], space: usize, last: &str) {
    for (header, width) in columns {
        out.extend(std::iter::repeat_n(b' ', space));
        let _ = write!(out, "{header:>width$}");
    }
    if !columns.is_empty() {
        out.extend(std::iter::repeat_n(b' ', space));
        let _ = writeln!(out, "{last}");
    }
    for (_, width) in columns {
        out.extend(std::iter::repeat_n(b' ', space));
        out.extend_from_slice(&RULE.as_bytes()[..*width]);
    }
    if !columns.is_empty() {
        out.extend(std::iter::repeat_n(b' ', space));
        out.extend_from_slice(&RULE.as_bytes()[..20]);
        out.push(b'\n');
    }
}

fn write_value(out: &mut Vec<u8>, field: Field, value: u64, color: bool) {
    if field.is_count() {
        push_padded(out, value, 10);
    } else {
        write_duration(out, value, color);
    }
}

/// Prints the per-function table, sorted.
pub fn write_report(
    out: &mut dyn Write,
    stats: &TraceStats,
    opts: &ReportOptions,
) -> Result<(), ViewError> {
    let mut rows: Vec<&FunctionStats> = stats.functions.iter().collect();
    // Stable: ties keep the name order, as in uftrace.
    rows.sort_by(|a, b| compare(&opts.sort, a, b));
    let mut text = Vec::with_capacity(4096);
    let columns: Vec<(&str, usize)> = opts.fields.iter().map(|f| (f.header(), 10)).collect();
    write_header(&mut text, &columns, 2, "Function");
    for f in rows {
        for &field in &opts.fields {
            text.extend_from_slice(b"  ");
            write_value(&mut text, field, field.value(f), opts.color);
        }
        if !opts.fields.is_empty() {
            text.extend_from_slice(b"  ");
        }
        text.extend_from_slice(f.name.as_bytes());
        text.push(b'\n');
    }
    out.write_all(&text)
        .map_err(|e| ViewError::output("the report", e))
}

/// Prints the per-thread table (uftrace's `report --task`), by run time.
pub fn write_thread_report(
    out: &mut dyn Write,
    stats: &TraceStats,
    color: bool,
) -> Result<(), ViewError> {
    let mut rows: Vec<&ThreadStats> = stats.threads.iter().filter(|t| t.calls > 0).collect();
    // uftrace keys tasks by the tid as text: ties go in that order.
    rows.sort_by_key(|t| t.tid.to_string());
    rows.sort_by_key(|t| std::cmp::Reverse(t.run_time));
    let mut text = Vec::with_capacity(1024);
    write_header(
        &mut text,
        &[
            ("Total time", 10),
            ("Self time", 10),
            ("TID", 6),
            ("Num funcs", 10),
        ],
        2,
        "Task name",
    );
    for t in rows {
        text.extend_from_slice(b"  ");
        write_duration(&mut text, t.run_time, color);
        text.extend_from_slice(b"  ");
        // Without scheduling events the time on CPU is the run time.
        write_duration(&mut text, t.run_time, color);
        text.extend_from_slice(b"  ");
        push_padded(&mut text, u64::from(t.tid), 6);
        text.extend_from_slice(b"  ");
        push_padded(&mut text, t.calls, 10);
        let _ = writeln!(text, "  {:<16}", t.name);
    }
    out.write_all(&text)
        .map_err(|e| ViewError::output("the report", e))
}

/// A function of a diff: its numbers in the base trace and in the other one (zero if absent).
struct DiffRow<'a> {
    name: &'a str,
    base: &'a FunctionStats,
    pair: &'a FunctionStats,
}

/// Prints `--diff`: per function and field, the signed change from `base` to `pair`, sorted by
/// the size of the change of the sort keys (uftrace's default `abs,compact` policy).
pub fn write_diff(
    out: &mut dyn Write,
    base: &TraceStats,
    pair: &TraceStats,
    opts: &ReportOptions,
) -> Result<(), ViewError> {
    let absent = FunctionStats::default();
    let mut rows: Vec<DiffRow> = Vec::new();
    for f in &base.functions {
        let other = pair
            .functions
            .binary_search_by(|p| p.name.as_bytes().cmp(f.name.as_bytes()))
            .map_or(&absent, |i| &pair.functions[i]);
        rows.push(DiffRow {
            name: &f.name,
            base: f,
            pair: other,
        });
    }
    for p in &pair.functions {
        let in_base = base
            .functions
            .binary_search_by(|f| f.name.as_bytes().cmp(p.name.as_bytes()))
            .is_ok();
        if !in_base {
            rows.push(DiffRow {
                name: &p.name,
                base: &absent,
                pair: p,
            });
        }
    }
    let change = |f: Field, r: &DiffRow| Field::value(f, r.pair).abs_diff(Field::value(f, r.base));
    rows.sort_by(|a, b| {
        for key in &opts.sort {
            let o = match key {
                SortKey::Field(f) => change(*f, b).cmp(&change(*f, a)),
                SortKey::Name => a.name.as_bytes().cmp(b.name.as_bytes()),
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
    let mut text = Vec::with_capacity(4096);
    let _ = writeln!(text, "#\n# vftrace diff");
    let _ = writeln!(
        text,
        "#  [0] base: {}\t(from {})",
        base.dir.display(),
        base.cmdline
    );
    let _ = writeln!(
        text,
        "#  [1] diff: {}\t(from {})",
        pair.dir.display(),
        pair.cmdline
    );
    text.extend_from_slice(b"#\n");
    let columns: Vec<(&str, usize)> = opts.fields.iter().map(|f| (f.header(), 11)).collect();
    write_header(&mut text, &columns, 3, "Function");
    for r in rows {
        for &field in &opts.fields {
            text.extend_from_slice(b"   ");
            let (a, b) = (field.value(r.base), field.value(r.pair));
            if field.is_count() {
                text.extend_from_slice(b"  ");
                write_count_change(&mut text, a, b, opts.color);
            } else {
                write_duration_change(&mut text, a, b, opts.color);
            }
        }
        if !opts.fields.is_empty() {
            text.extend_from_slice(b"   ");
        }
        text.extend_from_slice(r.name.as_bytes());
        text.push(b'\n');
    }
    out.write_all(&text)
        .map_err(|e| ViewError::output("the report", e))
}
