//! Capture files: vftrace's own format (written by [`CaptureWriter`]) and the text of other
//! tools, told apart by their first line.
//!
//! # The vftrace capture format, version 2
//!
//! UTF-8 text, one item per line, `#` lines are comments:
//!
//! ```text
//! # vftrace kvm capture v2
//! clock x86-tsc
//! instance vftrace-kvm-4242-0-1732255812
//! events kvm_write_tsc_offset kvm_pio
//! missing kvm_exit kvm_entry
//! command qemu-system-x86_64 -accel kvm ...
//! sync 1006500000000 5123456789012 31
//! task 7884 7880
//! ev 1006569921692 1 7884 qemu-system-x86 kvm_write_tsc_offset vcpu=0 prev=0 next=184467
//! ev 1006599657710 1 7884 qemu-system-x86 kvm_pio pio_write at 0x6a0 size 4 count 1 val 0x4e
//! sync 1006800000000 5123572345678 29
//! tsc_hz 2596130412.7 sync
//! lost_cpu 0 0
//! lost 0
//! status exit 67
//! end 2
//! ```
//!
//! - `sync TSC MONO_NS [WIDTH_TICKS]`: a (host TSC, CLOCK_MONOTONIC ns) pair, the tightest of
//!   several samples; WIDTH_TICKS is the TSC span bracketing the clock read (its uncertainty).
//!   The first pair is taken before tracing starts, the last after it stops.
//! - `ev TSC CPU PID COMM EVENT FIELDS`: one event, host TSC from the x86-tsc trace clock.
//!   COMM and EVENT are percent-escaped (whitespace, `%`, control and non-ASCII bytes as
//!   `%XX`; an empty one as `%-`), FIELDS is the rest of the line in the kernel's print shape with `%`, CR and LF
//!   escaped. Interpreted events are written in one canonical shape.
//! - `task TID TGID`: thread TID belongs to process TGID (from tracefs's `record-tgid`
//!   column), written before the thread's first event. New in version 2; version 1 files
//!   (without it) are read as well.
//! - `tsc_hz HZ METHOD`: TSC frequency; METHOD `sync` = from the first and last pair.
//! - `lost N`: events the kernel dropped: the sum of the per-CPU `overrun`, `commit overrun`
//!   and `dropped events` counters (`lost_cpu CPU N`), or the sum of the `[LOST N EVENTS]`
//!   lines seen in trace_pipe (`lost_reported_in_trace_pipe N`) if that is larger.
//! - `end N`: the number of `ev` lines; a file without it was cut short.
//! - `clock`, `instance`, `events`, `missing`, `command`, `filter`, `status`, `lost_cpu`,
//!   `lost_reported_in_trace_pipe`, `note`:
//!   information for people; readers check `clock` is x86-tsc and ignore the rest.
//!
//! # Other formats
//!
//! `trace-cmd report` output (x86-tsc timestamps printed as `SSSS.NNNNNNNNN`, which are
//! integers with a dot put in, not seconds) and tracefs text (`trace`, `trace_pipe`; with or
//! without the header and the irq-flags column) are read as well; they carry no clock pairs.
//!
//! # Error policy
//!
//! By default any line that cannot be read is an error naming file and line: a capture with
//! garbage in it is more likely a wrong file than a slightly damaged one. With
//! [`ParseOptions::lenient`] such lines are skipped and reported in [`Parsed::skipped`], and a
//! vftrace capture without its `end` line (a recording that was killed) is accepted. Lines
//! longer than [`MAX_LINE`] are errors in both modes (they bound memory per line).

use crate::event_text::{format_fields, parse_kind};
use crate::trace_line::{parse_line, Line, TimestampStyle};
use crate::{Capture, CaptureError, ClockSync, KvmEvent};
use std::io::{self, BufRead, Read, Write};
use std::path::Path;
use vftrace_format::output::OutputFile;

/// First line of a vftrace capture.
pub const CAPTURE_MAGIC: &str = "# vftrace kvm capture v2";
/// First line of the previous version (no `task` lines), still read.
const CAPTURE_MAGIC_V1: &str = "# vftrace kvm capture v1";

/// Longest line accepted (tracefs lines are a few hundred bytes at most).
pub const MAX_LINE: usize = 64 * 1024;

/// trace-cmd's binary trace.dat starts with these bytes.
const TRACE_DAT_MAGIC: &[u8] = b"\x17\x08\x44tracing";

/// How strictly to read.
#[derive(Clone, Debug, Default)]
pub struct ParseOptions {
    /// Skip unreadable lines (counting them) instead of failing on the first one.
    pub lenient: bool,
}

/// A capture and what was skipped to read it (always empty unless lenient).
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    pub capture: Capture,
    /// Number of lines skipped.
    pub skipped_lines: u64,
    /// The first few skipped lines' errors, for showing to the user.
    pub skipped: Vec<CaptureError>,
    /// A vftrace capture without its `end` line (the recorder was killed), accepted leniently.
    pub cut_short: bool,
}

const KEEP_SKIPPED: usize = 20;

/// Reads a capture file of any supported format, strictly.
pub fn read_capture(path: &Path) -> Result<Capture, CaptureError> {
    read_capture_with(path, &ParseOptions::default()).map(|p| p.capture)
}

/// Reads a capture file with options. The file is read line by line (memory holds the
/// events, not the file), each line bounded by [`MAX_LINE`].
pub fn read_capture_with(path: &Path, options: &ParseOptions) -> Result<Parsed, CaptureError> {
    let file = std::fs::File::open(path).map_err(|e| CaptureError {
        file: path.to_path_buf(),
        line: 0,
        message: format!("cannot read: {e}"),
    })?;
    parse_capture_from(io::BufReader::with_capacity(1 << 20, file), path, options)
}

/// Parses capture bytes strictly; `file` is only used in errors.
pub fn parse_capture(bytes: &[u8], file: &Path) -> Result<Capture, CaptureError> {
    parse_capture_with(bytes, file, &ParseOptions::default()).map(|p| p.capture)
}

/// Parses capture bytes with options; `file` is only used in errors.
pub fn parse_capture_with(
    bytes: &[u8],
    file: &Path,
    options: &ParseOptions,
) -> Result<Parsed, CaptureError> {
    parse_capture_from(bytes, file, options)
}

fn parse_capture_from(
    mut input: impl BufRead,
    file: &Path,
    options: &ParseOptions,
) -> Result<Parsed, CaptureError> {
    let err = |line: usize, message: String| CaptureError {
        file: file.to_path_buf(),
        line,
        message,
    };
    let start = input
        .fill_buf()
        .map_err(|e| err(0, format!("cannot read: {e}")))?;
    if start.is_empty() {
        return Err(err(0, "empty file: not a capture".into()));
    }
    if start.starts_with(TRACE_DAT_MAGIC) {
        return Err(err(
            0,
            "this is a binary trace-cmd trace.dat; convert it with `trace-cmd report -i FILE > FILE.txt` \
             and read the text"
                .into(),
        ));
    }
    let mut parser = Parser {
        file,
        options,
        parsed: Parsed::default(),
    };
    let mut lines = Lines {
        input,
        file,
        buf: Vec::new(),
        number: 0,
        again: false,
    };
    let vftrace_format = match lines.next()? {
        None => return Err(err(0, "empty file: not a capture".into())),
        Some((_, Ok(line))) if line == CAPTURE_MAGIC || line == CAPTURE_MAGIC_V1 => true,
        Some((_, Ok(line))) if line.starts_with("# vftrace kvm capture") => {
            return Err(err(
                1,
                format!("unsupported capture version `{line}` (this vftrace reads v1 and v2)"),
            ))
        }
        Some(_) => false,
    };
    if vftrace_format {
        parser.parsed.capture.source = "vftrace".into();
        parser.vftrace(lines)?;
    } else {
        // The first line was read to tell the format; it is the first to parse.
        lines.again = true;
        parser.text(lines)?;
    }
    Ok(parser.parsed)
}

struct BadText {
    fatal: bool,
    message: String,
}

struct Parser<'a> {
    file: &'a Path,
    options: &'a ParseOptions,
    parsed: Parsed,
}

/// Reads (1-based line number, line) with the length bound, CR stripped. An over-long line is
/// an error even when lenient, so the error says whether it is fatal.
struct Lines<'f, R: BufRead> {
    input: R,
    file: &'f Path,
    buf: Vec<u8>,
    number: usize,
    /// Return the current line once more.
    again: bool,
}

/// A line's number and its text (or why it has none).
type NumberedLine<'a> = (usize, Result<&'a str, BadText>);

impl<R: BufRead> Lines<'_, R> {
    fn next(&mut self) -> Result<Option<NumberedLine<'_>>, CaptureError> {
        if std::mem::take(&mut self.again) {
            return Ok(Some((self.number, self.decode())));
        }
        self.buf.clear();
        // The line, its CR and LF, and one more byte to tell an over-long line.
        let limit = MAX_LINE as u64 + 3;
        let n = (&mut self.input)
            .take(limit)
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| CaptureError {
                file: self.file.to_path_buf(),
                line: self.number + 1,
                message: format!("cannot read: {e}"),
            })?;
        if n == 0 {
            return Ok(None);
        }
        self.number += 1;
        Ok(Some((self.number, self.decode())))
    }

    fn decode(&self) -> Result<&str, BadText> {
        let raw = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.len() > MAX_LINE {
            Err(BadText {
                fatal: true,
                message: format!("line is over the {MAX_LINE}-byte limit: not a capture?"),
            })
        } else {
            std::str::from_utf8(raw).map_err(|e| BadText {
                fatal: false,
                message: format!("not UTF-8 text ({e})"),
            })
        }
    }
}

impl Parser<'_> {
    fn error(&self, line: usize, message: String) -> CaptureError {
        CaptureError {
            file: self.file.to_path_buf(),
            line,
            message,
        }
    }

    /// The text of a line, or None for a bad line skipped in lenient mode.
    fn usable<'t>(
        &mut self,
        number: usize,
        text: Result<&'t str, BadText>,
    ) -> Result<Option<&'t str>, CaptureError> {
        match text {
            Ok(t) => Ok(Some(t)),
            Err(BadText {
                fatal: true,
                message,
            }) => Err(self.error(number, message)),
            Err(BadText {
                fatal: false,
                message,
            }) => self.bad_line(number, message).map(|()| None),
        }
    }

    /// In lenient mode, records a bad line and carries on; otherwise fails.
    fn bad_line(&mut self, line: usize, message: String) -> Result<(), CaptureError> {
        let e = self.error(line, message);
        if !self.options.lenient {
            return Err(e);
        }
        self.parsed.skipped_lines += 1;
        if self.parsed.skipped.len() < KEEP_SKIPPED {
            self.parsed.skipped.push(e);
        }
        Ok(())
    }

    /// tracefs text or trace-cmd report; the source is decided by the header or the first
    /// event's timestamp style.
    fn text<R: BufRead>(&mut self, mut lines: Lines<R>) -> Result<(), CaptureError> {
        let mut source: Option<&str> = None;
        while let Some((number, text)) = lines.next()? {
            let Some(text) = self.usable(number, text)? else {
                continue;
            };
            if source.is_none() {
                let t = text.trim_start();
                if t.starts_with("cpus=") || t.starts_with("version =") || t.starts_with("version=")
                {
                    source = Some("trace-cmd report");
                }
            }
            match parse_line(text) {
                Ok(Line::Ignored) => {}
                Ok(Line::Lost { count }) => {
                    // trace-cmd's `[EVENTS DROPPED]` does not say how many; at least one.
                    self.parsed.capture.lost_events = self
                        .parsed
                        .capture
                        .lost_events
                        .saturating_add(count.unwrap_or(1));
                }
                Ok(Line::Event(e)) => {
                    source.get_or_insert(match e.style {
                        TimestampStyle::Integer => "tracefs text",
                        TimestampStyle::NineDecimals => "trace-cmd report",
                    });
                    if let Some(tgid) = e.tgid {
                        self.parsed.capture.tgids.insert(e.pid, tgid);
                    }
                    self.parsed.capture.events.push(KvmEvent {
                        tsc: e.tsc,
                        cpu: e.cpu,
                        pid: e.pid,
                        comm: e.comm.to_string(),
                        kind: parse_kind(e.name, e.fields),
                    });
                }
                Err(m) => self.bad_line(number, m)?,
            }
        }
        if self.parsed.capture.events.is_empty()
            && source.is_none()
            && self.parsed.skipped_lines > 0
        {
            return Err(self.error(0, "no line could be read: not a capture".into()));
        }
        self.parsed.capture.source = source.unwrap_or("tracefs text").to_string();
        Ok(())
    }

    fn vftrace<R: BufRead>(&mut self, mut lines: Lines<R>) -> Result<(), CaptureError> {
        let mut end: Option<(usize, u64)> = None;
        let mut last_line = 0;
        while let Some((number, text)) = lines.next()? {
            last_line = number;
            let Some(text) = self.usable(number, text)? else {
                continue;
            };
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            if let Some((end_line, _)) = end {
                self.bad_line(
                    number,
                    format!("data after the `end` line (line {end_line})"),
                )?;
                continue;
            }
            match self.vftrace_item(text) {
                Ok(Some(count)) => end = Some((number, count)),
                Ok(None) => {}
                Err(m) => self.bad_line(number, m)?,
            }
        }
        match end {
            Some((line, count)) if count != self.parsed.capture.events.len() as u64 => {
                let m = format!("`end {count}` but {} events were read", self.parsed.capture.events.len());
                self.bad_line(line, m)?;
            }
            Some(_) => {}
            None if self.options.lenient => self.parsed.cut_short = true,
            None => {
                return Err(self.error(
                    last_line.max(1),
                    "capture ends without its `end` line: it was cut short (recorder killed or file truncated); \
                     read it leniently to use what is there"
                        .into(),
                ))
            }
        }
        Ok(())
    }

    /// One non-comment line of a vftrace capture; returns the count of an `end` line.
    fn vftrace_item(&mut self, text: &str) -> Result<Option<u64>, String> {
        let (keyword, rest) = text.split_once(' ').unwrap_or((text, ""));
        let capture = &mut self.parsed.capture;
        match keyword {
            "ev" => capture.events.push(parse_event_item(rest)?),
            "sync" => {
                let words: Vec<&str> = rest.split(' ').collect();
                let [tsc, mono_ns, ..] = words.as_slice() else {
                    return Err("`sync` needs TSC and MONO_NS".into());
                };
                if words.len() > 3 {
                    return Err("`sync` has too many values".into());
                }
                capture.syncs.push(ClockSync {
                    tsc: number(tsc, "sync TSC")?,
                    mono_ns: number(mono_ns, "sync MONO_NS")?,
                });
            }
            "tsc_hz" => {
                let hz_text = rest.split(' ').next().unwrap_or_default();
                let hz: f64 = hz_text
                    .parse()
                    .map_err(|_| format!("bad tsc_hz `{hz_text}`"))?;
                // From 1 MHz to 100 GHz: anything else is a corrupt file, not a CPU.
                if !(1e6..=1e11).contains(&hz) {
                    return Err(format!("implausible tsc_hz {hz_text}"));
                }
                capture.tsc_hz = Some(hz);
            }
            "lost" => capture.lost_events = number(rest, "lost")?,
            "task" => {
                let (tid, tgid) = rest.split_once(' ').ok_or("`task` needs TID and TGID")?;
                let tid =
                    u32::try_from(number(tid, "task TID")?).map_err(|_| "task TID out of range")?;
                let tgid = u32::try_from(number(tgid, "task TGID")?)
                    .map_err(|_| "task TGID out of range")?;
                capture.tgids.insert(tid, tgid);
            }
            "end" => return number(rest, "end").map(Some),
            "clock" if rest != "x86-tsc" => {
                return Err(format!(
                    "clock `{rest}`: only x86-tsc captures can be placed on the TSC timeline"
                ))
            }
            "clock"
            | "instance"
            | "events"
            | "missing"
            | "command"
            | "status"
            | "lost_cpu"
            | "lost_reported_in_trace_pipe"
            | "filter"
            | "note" => {}
            _ => return Err(format!("unknown item `{keyword}`")),
        }
        Ok(None)
    }
}

fn number(text: &str, what: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("bad {what} value `{text}`"))
}

/// `TSC CPU PID COMM EVENT FIELDS...`
fn parse_event_item(rest: &str) -> Result<KvmEvent, String> {
    let mut parts = rest.splitn(6, ' ');
    let mut next = |what: &str| {
        parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or(format!("`ev` line lacks {what}"))
    };
    let tsc = number(next("TSC")?, "TSC")?;
    let cpu = next("CPU")?
        .parse()
        .map_err(|_| "bad CPU number".to_string())?;
    let pid = next("PID")?.parse().map_err(|_| "bad PID".to_string())?;
    let comm = unescape(next("COMM")?)?;
    let name = unescape(next("EVENT")?)?;
    let fields = unescape(parts.next().unwrap_or(""))?;
    let kind = parse_kind(&name, &fields);
    Ok(KvmEvent {
        tsc,
        cpu,
        pid,
        comm,
        kind,
    })
}

/// How an empty COMM or EVENT is written (a space-separated field cannot be empty).
const EMPTY_TOKEN: &str = "%-";

/// Percent-escapes whitespace, `%`, control and non-ASCII bytes (all of them when `all`, else
/// only `%`, CR and LF).
fn escape(text: &str, all: bool, out: &mut String) {
    if all && text.is_empty() {
        out.push_str(EMPTY_TOKEN);
        return;
    }
    for c in text.chars() {
        let special = matches!(c, '%' | '\n' | '\r');
        let unusual = !('\x21'..='\x7e').contains(&c);
        if special || (all && unusual) {
            let mut utf8 = [0u8; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
}

fn unescape(text: &str) -> Result<String, String> {
    if text == EMPTY_TOKEN {
        return Ok(String::new());
    }
    if !text.contains('%') {
        return Ok(text.to_string());
    }
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail.get(..2).and_then(|h| std::str::from_utf8(h).ok());
            let value = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad %-escape")?;
            bytes.push(value);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).map_err(|_| "escaped text is not UTF-8".to_string())
}

/// Writes a vftrace capture item by item (events can be streamed while recording).
pub struct CaptureWriter<W: Write> {
    out: W,
    events: u64,
    line: String,
}

impl<W: Write> CaptureWriter<W> {
    /// Starts a capture: the magic line and `clock x86-tsc`.
    pub fn new(mut out: W) -> io::Result<Self> {
        writeln!(out, "{CAPTURE_MAGIC}")?;
        writeln!(out, "clock x86-tsc")?;
        Ok(CaptureWriter {
            out,
            events: 0,
            line: String::new(),
        })
    }

    /// An informational item (`instance`, `events`, `missing`, `command`, `status`,
    /// `lost_cpu`, `note`); line breaks in `value` become spaces.
    pub fn info(&mut self, key: &str, value: &str) -> io::Result<()> {
        let value = value.replace(['\n', '\r'], " ");
        writeln!(self.out, "{key} {value}")
    }

    /// Thread `tid` belongs to process `tgid`; write it before the thread's first event.
    pub fn task(&mut self, tid: u32, tgid: u32) -> io::Result<()> {
        writeln!(self.out, "task {tid} {tgid}")
    }

    /// A clock pair, with its uncertainty in TSC ticks when known.
    pub fn sync(&mut self, sync: ClockSync, width_ticks: Option<u64>) -> io::Result<()> {
        match width_ticks {
            Some(w) => writeln!(self.out, "sync {} {} {w}", sync.tsc, sync.mono_ns),
            None => writeln!(self.out, "sync {} {}", sync.tsc, sync.mono_ns),
        }
    }

    pub fn event(&mut self, event: &KvmEvent) -> io::Result<()> {
        self.line.clear();
        self.line
            .push_str(&format!("ev {} {} {} ", event.tsc, event.cpu, event.pid));
        escape(&event.comm, true, &mut self.line);
        self.line.push(' ');
        escape(event.kind.name(), true, &mut self.line);
        let fields = format_fields(&event.kind);
        if !fields.is_empty() {
            self.line.push(' ');
            escape(&fields, false, &mut self.line);
        }
        self.line.push('\n');
        self.events += 1;
        self.out.write_all(self.line.as_bytes())
    }

    /// Writes what is buffered to the file (a recorder does so regularly).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Events written so far.
    pub fn event_count(&self) -> u64 {
        self.events
    }

    /// Writes frequency, lost count and the `end` line, flushes and returns the writer.
    pub fn finish(mut self, tsc_hz: Option<(f64, &str)>, lost_events: u64) -> io::Result<W> {
        if let Some((hz, method)) = tsc_hz {
            writeln!(self.out, "tsc_hz {hz:.1} {method}")?;
        }
        writeln!(self.out, "lost {lost_events}")?;
        writeln!(self.out, "end {}", self.events)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes a whole capture in vftrace format (syncs go first, in order; `source` is not kept),
/// through a temporary renamed onto `path` when complete.
pub fn write_capture(path: &Path, capture: &Capture) -> io::Result<()> {
    let file = OutputFile::create(path, &[])?;
    let mut writer = CaptureWriter::new(io::BufWriter::new(file))?;
    if capture.source != "vftrace" && !capture.source.is_empty() {
        writer.info("note", &format!("converted from {}", capture.source))?;
    }
    for sync in &capture.syncs {
        writer.sync(*sync, None)?;
    }
    for (tid, tgid) in &capture.tgids {
        writer.task(*tid, *tgid)?;
    }
    for event in &capture.events {
        writer.event(event)?;
    }
    let hz = capture.tsc_hz.map(|hz| (hz, "sync"));
    writer
        .finish(hz, capture.lost_events)?
        .into_inner()
        .map_err(|e| e.into_error())?
        .commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KvmEventKind;

    #[test]
    fn escapes_round_trip() {
        for text in [
            "",
            "plain",
            "with space",
            "100%",
            "tab\there",
            "new\nline",
            "ünï",
            "",
        ] {
            let mut all = String::new();
            escape(text, true, &mut all);
            assert!(!all.contains([' ', '\n']), "{all}");
            assert_eq!(unescape(&all).unwrap(), text);
            let mut some = String::new();
            escape(text, false, &mut some);
            assert_eq!(unescape(&some).unwrap(), text);
        }
        assert!(unescape("%4").is_err());
        assert!(unescape("%zz").is_err());
        assert!(unescape("%ff").is_err());
    }

    #[test]
    fn written_capture_reads_back() {
        let capture = Capture {
            events: vec![
                KvmEvent {
                    tsc: 10,
                    cpu: 1,
                    pid: 7,
                    comm: "qemu system".into(),
                    kind: KvmEventKind::Other {
                        name: "odd event".into(),
                        fields: "a%b\nc ".into(),
                    },
                },
                KvmEvent {
                    tsc: u64::MAX,
                    cpu: 0,
                    pid: 0,
                    comm: "<idle>".into(),
                    kind: KvmEventKind::Pio {
                        write: true,
                        port: 0xf4,
                        size: 4,
                        count: 1,
                        val: Some(0x21),
                    },
                },
            ],
            syncs: vec![
                ClockSync { tsc: 1, mono_ns: 2 },
                ClockSync { tsc: 3, mono_ns: 4 },
            ],
            tsc_hz: Some(2596130000.5),
            lost_events: 3,
            source: "vftrace".into(),
            tgids: [(7, 5)].into_iter().collect(),
        };
        let mut bytes = Vec::new();
        let mut writer = CaptureWriter::new(&mut bytes).unwrap();
        writer.sync(capture.syncs[0], Some(30)).unwrap();
        writer.task(7, 5).unwrap();
        for e in &capture.events {
            writer.event(e).unwrap();
        }
        writer.sync(capture.syncs[1], None).unwrap();
        writer
            .finish(capture.tsc_hz.map(|hz| (hz, "sync")), 3)
            .unwrap();
        let read = parse_capture(&bytes, Path::new("mem")).unwrap();
        assert_eq!(read, capture);
    }

    #[test]
    fn huge_lost_counts_saturate() {
        let text = "CPU:0 [LOST 18446744073709551615 EVENTS]\nCPU:1 [LOST 5 EVENTS]\n                     qemu-7 [001] 100: kvm_exit: reason HLT rip 0x1\n";
        let read = parse_capture(text.as_bytes(), Path::new("mem")).unwrap();
        assert_eq!(read.lost_events, u64::MAX);
        assert_eq!(read.events.len(), 1);
    }
}
