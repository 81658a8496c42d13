//! The line structure of tracefs text (`trace`, `trace_pipe`) and `trace-cmd report` output:
//!
//! ```text
//!  qemu-system-x86-7884    [001] d..1. 1006569921692: kvm_write_tsc_offset: vcpu=0 prev=0 next=1
//!  qemu-system-x86-12333 [001]  1349.940954051: kvm_pio: pio_write at 0x6a0 size 4 count 1 val 0x1
//! ```
//!
//! `COMM-PID [(TGID)] [CPU] [FLAGS] TIMESTAMP: EVENT: FIELDS`. The comm may itself contain
//! dashes and spaces, so the pid is what follows the last dash before the `[CPU]` column.

/// How a timestamp was printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimestampStyle {
    /// A plain integer: tracefs with the x86-tsc clock.
    Integer,
    /// `SECONDS.NNNNNNNNN`: trace-cmd report, which prints every clock as if it counted ns.
    NineDecimals,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct EventLine<'a> {
    pub comm: &'a str,
    pub pid: u32,
    /// The process (thread group) of the task, when the `record-tgid` option printed it.
    pub tgid: Option<u32>,
    pub cpu: u32,
    pub tsc: u64,
    pub style: TimestampStyle,
    pub name: &'a str,
    pub fields: &'a str,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    Event(EventLine<'a>),
    /// The kernel (or trace-cmd) says events were lost on a CPU; `count` when it says how many.
    Lost {
        count: Option<u64>,
    },
    /// Header, comment, blank line or trace-cmd's per-file notes.
    Ignored,
}

/// Parses one line (without its newline). The error says what is wrong with it.
pub(crate) fn parse_line(line: &str) -> Result<Line<'_>, String> {
    let line = line.trim_end();
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') || is_trace_cmd_note(trimmed) {
        return Ok(Line::Ignored);
    }
    if let Some(rest) = trimmed.strip_prefix("CPU:") {
        return parse_lost(rest).map(|count| Line::Lost { count });
    }
    parse_event(line).map(Line::Event)
}

/// trace-cmd report's lines about the file rather than events.
fn is_trace_cmd_note(line: &str) -> bool {
    let digits_after = |prefix: &str| {
        line.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    digits_after("cpus=")
        || line.strip_prefix("version").is_some_and(digits_after_eq)
        || (line.starts_with("CPU ") && line.ends_with(" is empty"))
}

fn digits_after_eq(rest: &str) -> bool {
    rest.trim_start()
        .strip_prefix('=')
        .is_some_and(|n| !n.trim().is_empty() && n.trim().bytes().all(|b| b.is_ascii_digit()))
}

/// `1 [LOST 123 EVENTS]` (tracefs), `1 [123 EVENTS DROPPED]` or `1 [EVENTS DROPPED]`
/// (trace-cmd), after the `CPU:` prefix.
fn parse_lost(rest: &str) -> Result<Option<u64>, String> {
    let words: Vec<&str> = rest
        .split(|c: char| c.is_whitespace() || c == '[' || c == ']')
        .filter(|w| !w.is_empty())
        .collect();
    let bad = || format!("unrecognized lost-events line `CPU:{rest}`");
    match words.as_slice() {
        [cpu, "LOST", n, "EVENTS"] | [cpu, n, "EVENTS", "DROPPED"] if is_number(cpu) => {
            n.parse().map(Some).map_err(|_| bad())
        }
        [cpu, "EVENTS", "DROPPED"] if is_number(cpu) => Ok(None),
        _ => Err(bad()),
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Finds the `[CPU]` column: the first `[digits]` preceded by whitespace and followed by
/// whitespace. Returns (start of `[`, cpu, index after `]`).
fn find_cpu_column(line: &str) -> Option<(usize, u32, usize)> {
    let bytes = line.as_bytes();
    let mut search = 0;
    while let Some(found) = line[search..].find('[') {
        let open = search + found;
        search = open + 1;
        if open == 0 || !bytes[open - 1].is_ascii_whitespace() {
            continue;
        }
        let close_rel = line[open + 1..].find(']')?;
        let close = open + 1 + close_rel;
        let digits = &line[open + 1..close];
        let after_ok = bytes.get(close + 1).is_none_or(|b| b.is_ascii_whitespace());
        if is_number(digits) && after_ok {
            let cpu = digits.parse().ok()?;
            return Some((open, cpu, close + 1));
        }
    }
    None
}

fn parse_event(line: &str) -> Result<EventLine<'_>, String> {
    let (open, cpu, after_cpu) = find_cpu_column(line)
        .ok_or_else(|| "not a trace event line: no `[CPU]` column (expected `COMM-PID [CPU] TIMESTAMP: EVENT: FIELDS`)".to_string())?;
    let mut task = line[..open].trim();
    // Optional tgid column, `(  123)` or `(-------)` (not known), printed with the
    // record-tgid option.
    let mut tgid = None;
    if task.ends_with(')') {
        if let Some(paren) = task.rfind('(') {
            tgid = task[paren + 1..task.len() - 1].trim().parse().ok();
            task = task[..paren].trim_end();
        }
    }
    let (comm, pid) = task
        .rsplit_once('-')
        .ok_or_else(|| format!("task `{task}` is not COMM-PID"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("task `{task}` is not COMM-PID (pid `{pid}`)"))?;

    let mut rest = line[after_cpu..].trim_start();
    let first_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if !rest[..first_len].ends_with(':') {
        // The irq-flags/preempt column (`d..1.`, `....`); only ever a few characters.
        let flags = &rest[..first_len];
        if flags.len() > 8
            || !flags
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.')
        {
            return Err(format!(
                "unexpected `{flags}` after the CPU column (expected flags or TIMESTAMP:)"
            ));
        }
        rest = rest[first_len..].trim_start();
    }
    let ts_len = rest
        .find(": ")
        .map(|i| i + 1)
        .or_else(|| rest.ends_with(':').then_some(rest.len()));
    let ts_len = ts_len.ok_or("missing `TIMESTAMP:`")?;
    let (tsc, style) = parse_timestamp(&rest[..ts_len - 1])?;
    rest = rest[ts_len..].trim_start();

    let name_len = rest
        .find(':')
        .ok_or("missing `EVENT:` after the timestamp")?;
    let name = &rest[..name_len];
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("bad event name `{name}`"));
    }
    let fields = rest[name_len + 1..].trim();
    Ok(EventLine {
        comm,
        pid,
        tgid,
        cpu,
        tsc,
        style,
        name,
        fields,
    })
}

fn parse_timestamp(text: &str) -> Result<(u64, TimestampStyle), String> {
    let overflow = || format!("timestamp `{text}` does not fit in 64 bits");
    match text.split_once('.') {
        None if is_number(text) => Ok((text.parse().map_err(|_| overflow())?, TimestampStyle::Integer)),
        Some((high, low)) if is_number(high) && is_number(low) && low.len() == 9 => {
            let high: u64 = high.parse().map_err(|_| overflow())?;
            let low: u64 = low.parse().map_err(|_| overflow())?;
            let tsc = high.checked_mul(1_000_000_000).and_then(|h| h.checked_add(low)).ok_or_else(overflow)?;
            Ok((tsc, TimestampStyle::NineDecimals))
        }
        Some((_, low)) if is_number(low) => Err(format!(
            "timestamp `{text}` has {} decimals: this was not recorded with the x86-tsc trace clock \
             (tracefs prints raw TSC counts as integers, trace-cmd report with 9 decimals); \
             record with `vftrace kvm` or set trace_clock to x86-tsc",
            low.len()
        )),
        _ => Err(format!("bad timestamp `{text}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(line: &str) -> EventLine<'_> {
        match parse_line(line) {
            Ok(Line::Event(e)) => e,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn tracefs_and_trace_cmd_shapes() {
        let e = event(" qemu-system-x86-7884    [001] d..1. 1006569921692: kvm_write_tsc_offset: vcpu=0 prev=0 next=5");
        assert_eq!(
            (e.comm, e.pid, e.cpu, e.tsc),
            ("qemu-system-x86", 7884, 1, 1006569921692)
        );
        assert_eq!(
            (e.name, e.fields, e.style),
            (
                "kvm_write_tsc_offset",
                "vcpu=0 prev=0 next=5",
                TimestampStyle::Integer
            )
        );

        let e = event("qemu-system-x86-12333 [001]  1349.940954051: kvm_pio: pio_write at 0x6a0 size 4 count 1 val 0x4ebfff1b ");
        assert_eq!(
            (e.pid, e.tsc, e.style),
            (12333, 1349940954051, TimestampStyle::NineDecimals)
        );
        assert_eq!(e.fields, "pio_write at 0x6a0 size 4 count 1 val 0x4ebfff1b");

        let e = event("   kworker/0:1 H-42 (   42) [000] .... 17: sched_x: a [b]");
        assert_eq!(
            (e.comm, e.pid, e.cpu, e.tsc, e.name),
            ("kworker/0:1 H", 42, 0, 17, "sched_x")
        );
        assert_eq!(e.tgid, Some(42));
        let e =
            event(" qemu-system-x86-25975   (  25973) [001] ..... 12787143511416: kvm_fpu: unload");
        assert_eq!((e.pid, e.tgid, e.name), (25975, Some(25973), "kvm_fpu"));
        let e = event("     ksoftirqd/0-14      (-------) [000] d..2. 5: sched_switch: x");
        assert_eq!((e.pid, e.tgid), (14, None));

        let e = event("<idle>-0 [3] 0.000000001: ev:");
        assert_eq!((e.comm, e.tsc, e.fields), ("<idle>", 1, ""));
    }

    #[test]
    fn headers_and_lost_lines() {
        for l in [
            "",
            "# tracer: nop",
            "#   TASK-PID",
            "cpus=2",
            "version = 6",
            "CPU 1 is empty",
            "##### CPU 2 buffer started ####",
        ] {
            assert_eq!(parse_line(l), Ok(Line::Ignored), "{l}");
        }
        assert_eq!(
            parse_line("CPU:1 [LOST 123 EVENTS]"),
            Ok(Line::Lost { count: Some(123) })
        );
        assert_eq!(
            parse_line("CPU:0 [77 EVENTS DROPPED]"),
            Ok(Line::Lost { count: Some(77) })
        );
        assert_eq!(
            parse_line("CPU:0 [EVENTS DROPPED]"),
            Ok(Line::Lost { count: None })
        );
    }

    #[test]
    fn bad_lines_are_errors() {
        for l in [
            "hello world",
            "a-1 [0] 12.5: x: y",
            "a-b [0] 12: x: y",
            "a-1 [0] 99999999999999999999: x: y",
            "a-1 [0] 99999999999999.999999999: x: y",
            "a-1 [0] 12 x y",
            "a-1 [0] 12: : y",
            "a-1 [0] verylongflags 12: x: y",
            "CPU:x [LOST 1 EVENTS]",
        ] {
            assert!(parse_line(l).is_err(), "{l}");
        }
    }
}
