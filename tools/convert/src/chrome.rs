//! Chrome trace event JSON, streamed: `{"displayTimeUnit":"ns","traceEvents":[...]}`.
//!
//! Timestamps are microseconds with three decimals, so nanoseconds survive exactly.

use std::io::{self, Write};

use crate::{drain, ArgValue, TimelineSink, FLUSH_THRESHOLD};

/// Writes Chrome trace event JSON: `B`/`E` events for slices, `i` for instants, `M` metadata
/// events for process and thread names. The output is valid JSON once [`finish`] ran.
///
/// [`finish`]: TimelineSink::finish
pub struct ChromeJsonWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    /// No event written yet: the next one needs no leading comma.
    first: bool,
    finished: bool,
}

impl<W: Write> ChromeJsonWriter<W> {
    /// Starts the JSON document on `out`.
    pub fn new(out: W) -> io::Result<Self> {
        let mut buf = Vec::with_capacity(FLUSH_THRESHOLD + 4096);
        buf.extend_from_slice(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
        Ok(ChromeJsonWriter {
            out,
            buf,
            first: true,
            finished: false,
        })
    }

    /// Gives back the underlying writer (after [`TimelineSink::finish`]).
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Starts one event object with its phase, pid and tid.
    fn open_event(&mut self, phase: &str, pid: u32, tid: u32) {
        if self.first {
            self.first = false;
        } else {
            self.buf.extend_from_slice(b",\n");
        }
        self.buf.extend_from_slice(b"{\"ph\":\"");
        self.buf.extend_from_slice(phase.as_bytes());
        self.buf.extend_from_slice(b"\",\"pid\":");
        push_u64(&mut self.buf, pid as u64);
        self.buf.extend_from_slice(b",\"tid\":");
        push_u64(&mut self.buf, tid as u64);
    }

    fn push_ts(&mut self, ts_ns: u64) {
        self.buf.extend_from_slice(b",\"ts\":");
        push_u64(&mut self.buf, ts_ns / 1000);
        let frac = (ts_ns % 1000) as usize;
        let digits = [
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        self.buf.extend_from_slice(&digits);
    }

    fn push_name(&mut self, name: &str) {
        self.buf.extend_from_slice(b",\"name\":");
        push_json_string(&mut self.buf, name);
    }

    fn close_event(&mut self) -> io::Result<()> {
        self.buf.push(b'}');
        if self.buf.len() >= FLUSH_THRESHOLD {
            drain(&mut self.buf, &mut self.out)?;
        }
        Ok(())
    }

    fn metadata(&mut self, pid: u32, tid: u32, kind: &str, name: &str) -> io::Result<()> {
        self.open_event("M", pid, tid);
        self.push_name(kind);
        self.buf.extend_from_slice(b",\"args\":{\"name\":");
        push_json_string(&mut self.buf, name);
        self.buf.push(b'}');
        self.close_event()
    }
}

impl<W: Write> TimelineSink for ChromeJsonWriter<W> {
    fn process(&mut self, pid: u32, name: &str) -> io::Result<()> {
        self.metadata(pid, 0, "process_name", name)
    }

    fn thread(&mut self, pid: u32, tid: u32, name: &str) -> io::Result<()> {
        self.metadata(pid, tid, "thread_name", name)
    }

    fn begin(&mut self, pid: u32, tid: u32, ts_ns: u64, name: &str) -> io::Result<()> {
        self.open_event("B", pid, tid);
        self.push_ts(ts_ns);
        self.push_name(name);
        self.close_event()
    }

    fn end(&mut self, pid: u32, tid: u32, ts_ns: u64) -> io::Result<()> {
        self.open_event("E", pid, tid);
        self.push_ts(ts_ns);
        self.close_event()
    }

    fn instant(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        name: &str,
        args: &[(&str, ArgValue)],
    ) -> io::Result<()> {
        self.open_event("i", pid, tid);
        // Thread-scoped: drawn on the track it belongs to.
        self.buf.extend_from_slice(b",\"s\":\"t\"");
        self.push_ts(ts_ns);
        self.push_name(name);
        if !args.is_empty() {
            self.buf.extend_from_slice(b",\"args\":{");
            for (i, (key, value)) in args.iter().enumerate() {
                if i > 0 {
                    self.buf.push(b',');
                }
                push_json_string(&mut self.buf, key);
                self.buf.push(b':');
                match value {
                    ArgValue::U64(v) => push_u64(&mut self.buf, *v),
                    ArgValue::I64(v) => self
                        .buf
                        .extend_from_slice(itoa::Buffer::new().format(*v).as_bytes()),
                    ArgValue::Str(s) => push_json_string(&mut self.buf, s),
                }
            }
            self.buf.push(b'}');
        }
        self.close_event()
    }

    fn finish(&mut self) -> io::Result<()> {
        if !self.finished {
            self.finished = true;
            self.buf.extend_from_slice(b"\n]}\n");
        }
        drain(&mut self.buf, &mut self.out)?;
        self.out.flush()
    }
}

fn push_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends `s` as a JSON string literal. `s` is UTF-8 already, so only quotes, backslashes and
/// control characters need escaping.
fn push_json_string(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut clean_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                buf.extend_from_slice(&bytes[clean_from..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                buf.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 15) as usize],
                ]);
                clean_from = i + 1;
                continue;
            }
            _ => continue,
        };
        buf.extend_from_slice(&bytes[clean_from..i]);
        buf.extend_from_slice(escape);
        clean_from = i + 1;
    }
    buf.extend_from_slice(&bytes[clean_from..]);
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_make_valid_json() {
        let mut w = ChromeJsonWriter::new(Vec::new()).unwrap();
        let nasty = "a\"b\\c\nd\u{1}e\u{7f}é\u{2028}";
        w.process(1, nasty).unwrap();
        w.thread(1, 2, "t").unwrap();
        w.begin(1, 2, 1_234_567, nasty).unwrap();
        w.instant(
            1,
            2,
            1_234_600,
            "lost",
            &[
                ("count", ArgValue::U64(3)),
                ("k\"", ArgValue::I64(-4)),
                ("s", ArgValue::Str(nasty)),
            ],
        )
        .unwrap();
        w.end(1, 2, 2_000_001).unwrap();
        w.finish().unwrap();
        let text = String::from_utf8(w.into_inner()).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let events = doc["traceEvents"].as_array().unwrap();
        assert_eq!(events.len(), 5);
        assert_eq!(events[0]["args"]["name"], nasty);
        assert_eq!(events[2]["name"], nasty);
        assert_eq!(events[2]["ts"].as_f64().unwrap(), 1234.567);
        assert_eq!(events[3]["args"]["k\""], -4);
        assert_eq!(events[3]["args"]["s"], nasty);
        assert_eq!(events[4]["ts"].as_f64().unwrap(), 2000.001);
    }

    #[test]
    fn empty_trace_is_valid_json() {
        let mut w = ChromeJsonWriter::new(Vec::new()).unwrap();
        w.finish().unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&w.into_inner()).unwrap();
        assert!(doc["traceEvents"].as_array().unwrap().is_empty());
    }
}
