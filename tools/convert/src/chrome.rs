//! Chrome trace event JSON, streamed: `{"displayTimeUnit":"ns","traceEvents":[...]}`.
//!
//! Timestamps are microseconds with three decimals, so nanoseconds survive exactly. The text is
//! as short as valid JSON allows (no spaces, one event per line) and formatted by hand: the last
//! eight digits of a number at once in one register, the leading ones once per 10 ms of trace
//! time, each track's `"pid":P,"tid":T` once, each name escaped once per call.

use std::io::{self, Write};

use rustc_hash::FxHashMap;

use crate::output::hand_over;
use crate::{
    drain, ArgValue, BackgroundFileWriter, EventExtras, TimelineSink, DEFAULT_CATEGORY,
    FLUSH_THRESHOLD,
};

/// Slices a track holds back for their "X" event at most; one more `begin` writes them out as
/// "B" events first (they end with "E"). uftrace depths are 10-bit, so a converted trace never
/// has more open slices than this and never needs the fallback.
const MAX_DEFERRED_SLICES: usize = 1024;
/// Bytes of names a track holds for its deferred slices at most (same fallback).
const MAX_DEFERRED_NAME_BYTES: usize = 1 << 20;

/// How a slice is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SliceEvents {
    /// A "B" event at its begin, an "E" event at its end.
    BeginEnd,
    /// One "X" (complete) event with `ts` and `dur` at its end.
    Complete,
}

/// Writes Chrome trace event JSON: slices as `X` events (see [`ChromeJsonWriter::complete`]) or
/// `B`/`E` pairs ([`ChromeJsonWriter::new`]), `i` for instants, `M` metadata events for process
/// and thread names. The output is valid JSON once [`finish`] ran.
///
/// [`finish`]: TimelineSink::finish
pub struct ChromeJsonWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    /// Sends `buf` to `out` and empties it.
    drain: fn(&mut Vec<u8>, &mut W) -> io::Result<()>,
    /// No event written yet: the next one needs no leading comma.
    first: bool,
    finished: bool,
    slice_events: SliceEvents,
    /// Index in `tracks` of each (pid, tid).
    track_index: FxHashMap<(u32, u32), usize>,
    tracks: Vec<Track>,
    /// The track of the previous event: most events go to the same track as the last.
    last_track: Option<((u32, u32), usize)>,
    /// Formats the timestamps of slices.
    ts_text: MicrosFormatter,
    /// Formats the durations of "X" events.
    dur_text: MicrosFormatter,
}

/// One (pid, tid) track.
struct Track {
    /// `"pid":P,"tid":T`, the same in every event of the track.
    ids: PaddedBytes<IDS_MAX>,
    /// Open slices, outermost first (in complete-event mode; empty otherwise).
    open: Vec<OpenSlice>,
    /// The names of the open slices as JSON string literals, one after another, then
    /// `COPY_CHUNK` bytes of padding, so that a short name can be copied out as one
    /// fixed-size chunk.
    names: Vec<u8>,
    /// Open slices below everything in `open` whose "B" is written, waiting for their "E".
    begun_below: u64,
    /// The arguments the open slices began with, as JSON members (`"k":v,"k2":v2`), one
    /// after another (most slices have none).
    args: Vec<u8>,
}

#[derive(Clone, Copy)]
struct OpenSlice {
    ts_ns: u64,
    /// Where its name starts in `Track::names`.
    name_at: usize,
    /// Where its arguments start in `Track::args` (they end where the next slice's start).
    args_at: usize,
    category: &'static str,
}

impl<W: Write> ChromeJsonWriter<W> {
    /// Starts the JSON document on `out`; slices become a "B" event at their begin and an "E"
    /// event at their end, so the file lists events in time order per track.
    pub fn new(out: W) -> io::Result<Self> {
        Self::with_slice_events(out, SliceEvents::BeginEnd)
    }

    /// Starts the JSON document on `out`; each slice becomes one "X" (complete) event with its
    /// begin and duration, written when it ends (so children precede their parent in the file;
    /// Perfetto and chrome://tracing order events by time). That is a third less text than
    /// [`ChromeJsonWriter::new`] and faster to write; [`crate::TimelineOutput`] uses it. Slices
    /// never ended stay "B" events, as they would in the other mode.
    pub fn complete(out: W) -> io::Result<Self> {
        Self::with_slice_events(out, SliceEvents::Complete)
    }

    fn with_slice_events(out: W, slice_events: SliceEvents) -> io::Result<Self> {
        let mut buf = Vec::with_capacity(FLUSH_THRESHOLD + 4096);
        buf.extend_from_slice(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
        Ok(ChromeJsonWriter {
            out,
            buf,
            drain: drain::<W>,
            first: true,
            finished: false,
            slice_events,
            track_index: FxHashMap::default(),
            tracks: Vec::new(),
            last_track: None,
            ts_text: MicrosFormatter::new(),
            dur_text: MicrosFormatter::new(),
        })
    }

    /// Gives back the underlying writer (after [`TimelineSink::finish`]).
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Sends `buf` to `out` if it is full.
    #[inline]
    fn flush_if_full(&mut self) -> io::Result<()> {
        if self.buf.len() >= FLUSH_THRESHOLD {
            (self.drain)(&mut self.buf, &mut self.out)?;
        }
        Ok(())
    }

    /// The index of the track (pid, tid) in `tracks`, created on first use.
    #[inline]
    fn track(&mut self, pid: u32, tid: u32) -> usize {
        match self.last_track {
            Some((key, index)) if key == (pid, tid) => index,
            _ => self.find_track(pid, tid),
        }
    }

    #[cold]
    fn find_track(&mut self, pid: u32, tid: u32) -> usize {
        let index = match self.track_index.get(&(pid, tid)) {
            Some(&index) => index,
            None => {
                let mut ids = b"\"pid\":".to_vec();
                push_u64(&mut ids, pid as u64);
                ids.extend_from_slice(b",\"tid\":");
                push_u64(&mut ids, tid as u64);
                self.tracks.push(Track {
                    ids: PaddedBytes::new(&ids),
                    open: Vec::new(),
                    names: vec![0; COPY_CHUNK],
                    begun_below: 0,
                    args: Vec::new(),
                });
                self.track_index.insert((pid, tid), self.tracks.len() - 1);
                self.tracks.len() - 1
            }
        };
        self.last_track = Some(((pid, tid), index));
        index
    }

    fn close_event(&mut self) -> io::Result<()> {
        self.buf.push(b'}');
        self.flush_if_full()
    }

    #[inline]
    fn begin_slice(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        name: &str,
        category: &'static str,
        args: &[(&str, ArgValue)],
    ) -> io::Result<()> {
        let index = self.track(pid, tid);
        let track = &mut self.tracks[index];
        if self.slice_events == SliceEvents::BeginEnd {
            start_event(&mut self.buf, &mut self.first, b'B', &track.ids);
            push_ts(&mut self.buf, &mut self.ts_text, ts_ns);
            push_category(&mut self.buf, category);
            push_name(&mut self.buf, name);
            push_args(&mut self.buf, &[], args);
            return self.close_event();
        }
        if track.open.len() >= MAX_DEFERRED_SLICES
            || track.names.len() >= MAX_DEFERRED_NAME_BYTES
            || track.args.len() >= MAX_DEFERRED_NAME_BYTES
        {
            // Too much held back: write the open slices as "B" events (bounded memory).
            track.write_begins(&mut self.buf, &mut self.first, &mut self.ts_text);
            track.begun_below += track.open.len() as u64;
            track.open.clear();
            track.names.truncate(COPY_CHUNK);
            track.args.clear();
        }
        let name_at = track.names.len() - COPY_CHUNK;
        track.names.truncate(name_at);
        push_json_string(&mut track.names, name);
        track.names.extend_from_slice(&[0; COPY_CHUNK]);
        let args_at = track.args.len();
        push_members(&mut track.args, args);
        track.open.push(OpenSlice {
            ts_ns,
            name_at,
            args_at,
            category,
        });
        self.flush_if_full()
    }

    #[inline]
    fn end_slice(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        args: &[(&str, ArgValue)],
    ) -> io::Result<()> {
        let index = self.track(pid, tid);
        let track = &mut self.tracks[index];
        let Some(slice) = track.open.pop() else {
            // A slice written as "B" (in complete mode: one held back too long), or a caller's
            // unmatched end, which viewers ignore.
            track.begun_below = track.begun_below.saturating_sub(1);
            start_event(&mut self.buf, &mut self.first, b'E', &track.ids);
            push_ts(&mut self.buf, &mut self.ts_text, ts_ns);
            push_args(&mut self.buf, &[], args);
            return self.close_event();
        };
        // Slices that begin at the same time as their parent need nothing special: Perfetto
        // orders "X" events of equal begin longest first. (Turning such a pair into "B"
        // events would be worse: Perfetto puts an "X" before a "B", and an "E" before a "B",
        // of equal time.)
        start_event(&mut self.buf, &mut self.first, b'X', &track.ids);
        self.buf.extend_from_slice(b",\"ts\":");
        self.ts_text.push(&mut self.buf, slice.ts_ns);
        self.buf.extend_from_slice(b",\"dur\":");
        self.dur_text
            .push(&mut self.buf, ts_ns.saturating_sub(slice.ts_ns));
        push_category(&mut self.buf, slice.category);
        self.buf.extend_from_slice(b",\"name\":");
        let name_end = track.names.len() - COPY_CHUNK;
        push_padded(&mut self.buf, &track.names, slice.name_at, name_end);
        // What stays of the name is padding now.
        track.names.truncate(slice.name_at + COPY_CHUNK);
        push_args(&mut self.buf, &track.args[slice.args_at..], args);
        track.args.truncate(slice.args_at);
        self.close_event()
    }

    /// The flow events of `extras` at `ts_ns` (Perfetto's JSON flows, version 1: a flow
    /// starts ("s") or ends ("f", bound to the enclosing slice) where the event is; both ends
    /// share an id, a name and a category).
    fn flows(&mut self, pid: u32, tid: u32, ts_ns: u64, extras: &EventExtras) -> io::Result<()> {
        for (phase, id) in [(b's', extras.flow_out), (b'f', extras.flow_in)] {
            let Some(id) = id else { continue };
            let track = self.track(pid, tid);
            start_event(
                &mut self.buf,
                &mut self.first,
                phase,
                &self.tracks[track].ids,
            );
            push_ts(&mut self.buf, &mut self.ts_text, ts_ns);
            self.buf
                .extend_from_slice(b",\"cat\":\"flow\",\"name\":\"flow\",\"id\":");
            push_u64(&mut self.buf, id);
            if phase == b'f' {
                self.buf.extend_from_slice(b",\"bp\":\"e\"");
            }
            self.close_event()?;
        }
        Ok(())
    }

    fn metadata(&mut self, pid: u32, tid: u32, kind: &str, name: &str) -> io::Result<()> {
        let track = self.track(pid, tid);
        start_event(
            &mut self.buf,
            &mut self.first,
            b'M',
            &self.tracks[track].ids,
        );
        push_name(&mut self.buf, kind);
        self.buf.extend_from_slice(b",\"args\":{\"name\":");
        push_json_string(&mut self.buf, name);
        self.buf.push(b'}');
        self.close_event()
    }
}

/// Longest `"pid":P,"tid":T`: two 10-digit numbers.
const IDS_MAX: usize = 40;
/// Copies of at most this many bytes of variable length are done as one fixed-size copy: a few
/// vector moves instead of a call to `memcpy`, which costs more than the copy for short text.
const COPY_CHUNK: usize = 32;

/// Up to `N` bytes in an array of exactly `N`, appended to a `Vec` by one fixed-size copy.
#[derive(Clone, Copy)]
struct PaddedBytes<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> PaddedBytes<N> {
    fn new(text: &[u8]) -> Self {
        let mut bytes = [0; N];
        bytes[..text.len()].copy_from_slice(text);
        PaddedBytes {
            bytes,
            len: text.len(),
        }
    }

    #[inline]
    fn push_to(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.bytes);
        buf.truncate(buf.len() - (N - self.len));
    }
}

/// Appends `src[at..end]` to `buf` where `src` has at least `COPY_CHUNK` bytes from `at`.
#[inline]
fn push_padded(buf: &mut Vec<u8>, src: &[u8], at: usize, end: usize) {
    let len = end - at;
    if len <= COPY_CHUNK {
        let chunk: &[u8; COPY_CHUNK] = src[at..at + COPY_CHUNK].try_into().unwrap();
        buf.extend_from_slice(chunk);
        buf.truncate(buf.len() - (COPY_CHUNK - len));
    } else {
        buf.extend_from_slice(&src[at..end]);
    }
}

/// Starts one event object with its phase and the track's `"pid":P,"tid":T`.
#[inline]
fn start_event(buf: &mut Vec<u8>, first: &mut bool, phase: u8, ids: &PaddedBytes<IDS_MAX>) {
    if *first {
        *first = false;
        buf.extend_from_slice(b"{\"ph\":\"");
    } else {
        buf.extend_from_slice(b",\n{\"ph\":\"");
    }
    buf.extend_from_slice(&[phase, b'"', b',']);
    ids.push_to(buf);
}

#[inline]
fn push_ts(buf: &mut Vec<u8>, text: &mut MicrosFormatter, ts_ns: u64) {
    buf.extend_from_slice(b",\"ts\":");
    text.push(buf, ts_ns);
}

#[inline]
fn push_name(buf: &mut Vec<u8>, name: &str) {
    buf.extend_from_slice(b",\"name\":");
    push_json_string(buf, name);
}

#[inline]
fn push_category(buf: &mut Vec<u8>, category: &str) {
    if category == DEFAULT_CATEGORY {
        buf.extend_from_slice(b",\"cat\":\"vftrace\"");
    } else {
        buf.extend_from_slice(b",\"cat\":");
        push_json_string(buf, category);
    }
}

/// `"key":value` members, comma-separated (no braces).
fn push_members(buf: &mut Vec<u8>, args: &[(&str, ArgValue)]) {
    for (i, (key, value)) in args.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        push_json_string(buf, key);
        buf.push(b':');
        match value {
            ArgValue::U64(v) => push_u64(buf, *v),
            ArgValue::I64(v) => buf.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes()),
            ArgValue::Str(s) => push_json_string(buf, s),
            ArgValue::Hex(v) => {
                buf.extend_from_slice(format!("\"{v:#x}\"").as_bytes());
            }
            ArgValue::Bool(b) => buf.extend_from_slice(if *b { b"true" } else { b"false" }),
        }
    }
}

/// `,"args":{...}` of the members `first` (JSON text) and `more`, if there are any.
fn push_args(buf: &mut Vec<u8>, first: &[u8], more: &[(&str, ArgValue)]) {
    if first.is_empty() && more.is_empty() {
        return;
    }
    buf.extend_from_slice(b",\"args\":{");
    buf.extend_from_slice(first);
    if !first.is_empty() && !more.is_empty() {
        buf.push(b',');
    }
    push_members(buf, more);
    buf.push(b'}');
}

/// A "B" event whose name is a JSON string literal already.
#[allow(clippy::too_many_arguments)]
fn push_begin(
    buf: &mut Vec<u8>,
    first: &mut bool,
    ids: &PaddedBytes<IDS_MAX>,
    ts_text: &mut MicrosFormatter,
    ts_ns: u64,
    name_literal: &[u8],
    category: &str,
    args: &[u8],
) {
    start_event(buf, first, b'B', ids);
    push_ts(buf, ts_text, ts_ns);
    push_category(buf, category);
    buf.extend_from_slice(b",\"name\":");
    buf.extend_from_slice(name_literal);
    push_args(buf, args, &[]);
    buf.push(b'}');
}

impl ChromeJsonWriter<BackgroundFileWriter> {
    /// Hands each full buffer to the file's writing thread as it is instead of copying it.
    pub(crate) fn hand_over_buffers(mut self) -> Self {
        self.drain = hand_over;
        self
    }
}

impl Track {
    /// Writes "B" events for the open slices, outermost first; they will end with "E" events.
    fn write_begins(&self, buf: &mut Vec<u8>, first: &mut bool, ts_text: &mut MicrosFormatter) {
        for (i, slice) in self.open.iter().enumerate() {
            let next = self.open.get(i + 1);
            let name_end = next.map_or(self.names.len() - COPY_CHUNK, |s| s.name_at);
            let args_end = next.map_or(self.args.len(), |s| s.args_at);
            push_begin(
                buf,
                first,
                &self.ids,
                ts_text,
                slice.ts_ns,
                &self.names[slice.name_at..name_end],
                slice.category,
                &self.args[slice.args_at..args_end],
            );
        }
    }
}

impl<W: Write> TimelineSink for ChromeJsonWriter<W> {
    fn process(&mut self, pid: u32, name: &str) -> io::Result<()> {
        self.metadata(pid, 0, "process_name", name)
    }

    fn thread(&mut self, pid: u32, tid: u32, name: &str) -> io::Result<()> {
        self.metadata(pid, tid, "thread_name", name)
    }

    #[inline]
    fn begin(&mut self, pid: u32, tid: u32, ts_ns: u64, name: &str) -> io::Result<()> {
        self.begin_slice(pid, tid, ts_ns, name, DEFAULT_CATEGORY, &[])
    }

    #[inline]
    fn end(&mut self, pid: u32, tid: u32, ts_ns: u64) -> io::Result<()> {
        self.end_slice(pid, tid, ts_ns, &[])
    }

    fn begin_with(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        name: &str,
        extras: &EventExtras,
    ) -> io::Result<()> {
        self.flows(pid, tid, ts_ns, extras)?;
        self.begin_slice(pid, tid, ts_ns, name, extras.category_name(), extras.args)
    }

    fn end_with(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        args: &[(&str, ArgValue)],
    ) -> io::Result<()> {
        self.end_slice(pid, tid, ts_ns, args)
    }

    fn instant_with(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        name: &str,
        extras: &EventExtras,
    ) -> io::Result<()> {
        let track = self.track(pid, tid);
        start_event(
            &mut self.buf,
            &mut self.first,
            b'i',
            &self.tracks[track].ids,
        );
        // Thread-scoped: drawn on the track it belongs to.
        self.buf.extend_from_slice(b",\"s\":\"t\"");
        push_ts(&mut self.buf, &mut self.ts_text, ts_ns);
        push_category(&mut self.buf, extras.category_name());
        push_name(&mut self.buf, name);
        push_args(&mut self.buf, &[], extras.args);
        self.close_event()?;
        // After the instant: a flow event binds to the slice that begins at its time.
        self.flows(pid, tid, ts_ns, extras)
    }

    fn finish(&mut self) -> io::Result<()> {
        if !self.finished {
            self.finished = true;
            // Slices never ended stay open, as "B" events.
            for track in &self.tracks {
                track.write_begins(&mut self.buf, &mut self.first, &mut self.ts_text);
            }
            self.buf.extend_from_slice(b"\n]}\n");
        }
        (self.drain)(&mut self.buf, &mut self.out)?;
        self.out.flush()
    }
}

fn push_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Formats nanoseconds as microseconds with three decimals ("1234.567"). The last four digits
/// of the integer part, the point and the decimals are built in one 8-byte word and stored at
/// once. Timestamps that follow each other share the digits before those: they are formatted
/// once per 10 ms of trace time and kept.
struct MicrosFormatter {
    /// A multiple of 10 ms (10^7 ns): the values from here to 10 ms later share `high_text`,
    /// the digits of the microseconds before the last four (empty below 10 ms).
    base_ns: u64,
    high_text: PaddedBytes<24>,
}

impl MicrosFormatter {
    fn new() -> Self {
        MicrosFormatter {
            base_ns: 0,
            high_text: PaddedBytes::new(b""),
        }
    }

    #[inline]
    fn push(&mut self, buf: &mut Vec<u8>, ns: u64) {
        let below_10ms = match ns.checked_sub(self.base_ns) {
            Some(offset) if offset < 10_000_000 => offset,
            _ => self.rebase(ns),
        };
        // The last 4 digits of the microseconds and the 3 of the nanoseconds.
        let digits = eight_digits(below_10ms as u32) >> 8;
        // "LLLL.FFF", first character in the lowest byte.
        let word = (digits & 0xffff_ffff) | (b'.' as u64) << 32 | (digits >> 32) << 40;
        if self.high_text.len == 0 {
            // Leading zeros go (one integer digit stays): shift them out of the word's low end.
            let zeros = ((word ^ 0x3030_3030) as u32).trailing_zeros().min(24) as usize / 8;
            buf.extend_from_slice(&(word >> (8 * zeros)).to_le_bytes());
            buf.truncate(buf.len() - zeros);
        } else {
            self.high_text.push_to(buf);
            buf.extend_from_slice(&word.to_le_bytes());
        }
    }

    /// Moves to the 10 ms that hold `ns`; returns `ns` minus their start.
    #[cold]
    fn rebase(&mut self, ns: u64) -> u64 {
        let high = ns / 10_000_000;
        self.base_ns = high * 10_000_000;
        self.high_text = if high == 0 {
            PaddedBytes::new(b"")
        } else {
            PaddedBytes::new(itoa::Buffer::new().format(high).as_bytes())
        };
        ns - self.base_ns
    }
}

/// The eight decimal digits of `n` (below 10^8, with leading zeros) as ASCII, the first in
/// the lowest byte: split into halves, quarters and digits in parallel lanes of one register.
#[inline]
fn eight_digits(n: u32) -> u64 {
    // Two lanes of 32 bits: the first four digits, the last four.
    let halves = (n / 10_000) as u64 | ((n % 10_000) as u64) << 32;
    // x * 10486 >> 20 is x / 100 for x < 10^4; four lanes of 16 bits.
    let hundreds = ((halves * 10486) >> 20) & 0x0000_007f_0000_007f;
    let quarters = ((halves - hundreds * 100) << 16) | hundreds;
    // x * 103 >> 10 is x / 10 for x < 100; eight lanes of 8 bits.
    let tens = ((quarters * 103) >> 10) & 0x000f_000f_000f_000f;
    let digits = ((quarters - tens * 10) << 8) | tens;
    digits + 0x3030_3030_3030_3030
}

/// Appends `s` as a JSON string literal. `s` is UTF-8 already, so only quotes, backslashes and
/// control characters need escaping.
fn push_json_string(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        buf.extend_from_slice(bytes);
        buf.push(b'"');
        return;
    }
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

    fn parse(w: ChromeJsonWriter<Vec<u8>>) -> Vec<serde_json::Value> {
        let text = String::from_utf8(w.into_inner()).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        doc["traceEvents"].as_array().unwrap().clone()
    }

    /// The slices of a track as (name, begin ns, end ns or None if never ended, depth), sorted
    /// by begin then outermost first, from B/E and X events alike; checks they nest.
    fn slices(events: &[serde_json::Value]) -> Vec<(String, u64, Option<u64>, usize)> {
        let ns = |v: &serde_json::Value| (v.as_f64().unwrap() * 1000.0).round() as u64;
        let mut open: Vec<(String, u64)> = Vec::new();
        let mut all = Vec::new();
        for e in events {
            let name = || e["name"].as_str().unwrap().to_string();
            match e["ph"].as_str().unwrap() {
                "B" => open.push((name(), ns(&e["ts"]))),
                "X" => all.push((name(), ns(&e["ts"]), Some(ns(&e["ts"]) + ns(&e["dur"])))),
                "E" => {
                    // File order of B/E among X events is not time order: the E closes the
                    // latest-begun open B.
                    let (name, begin) = open.pop().expect("E without B");
                    all.push((name, begin, Some(ns(&e["ts"]))));
                }
                _ => {}
            }
        }
        all.extend(open.into_iter().map(|(n, b)| (n, b, None)));
        all.sort_by(|a, b| {
            a.1.cmp(&b.1)
                .then(b.2.unwrap_or(u64::MAX).cmp(&a.2.unwrap_or(u64::MAX)))
        });
        let mut stack: Vec<u64> = Vec::new();
        let mut out = Vec::new();
        for (name, begin, end) in all {
            while stack.last().is_some_and(|&e| e <= begin) {
                stack.pop();
            }
            let end_or_max = end.unwrap_or(u64::MAX);
            if let Some(&outer) = stack.last() {
                assert!(
                    end_or_max <= outer,
                    "{name} [{begin}, {end:?}] crosses its parent's end {outer}"
                );
            }
            out.push((name, begin, end, stack.len()));
            stack.push(end_or_max);
        }
        out
    }

    #[test]
    fn escapes_make_valid_json() {
        for mut w in [
            ChromeJsonWriter::new(Vec::new()).unwrap(),
            ChromeJsonWriter::complete(Vec::new()).unwrap(),
        ] {
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
            let complete = w.slice_events == SliceEvents::Complete;
            let events = parse(w);
            assert_eq!(events[0]["args"]["name"], nasty);
            let instant = events.iter().find(|e| e["ph"] == "i").unwrap();
            assert_eq!(instant["args"]["k\""], -4);
            assert_eq!(instant["args"]["s"], nasty);
            if complete {
                assert_eq!(events.len(), 4);
                assert_eq!(events[3]["ph"], "X");
                assert_eq!(events[3]["name"], nasty);
                assert_eq!(events[3]["ts"].as_f64().unwrap(), 1234.567);
                assert_eq!(events[3]["dur"].as_f64().unwrap(), 765.434);
            } else {
                assert_eq!(events.len(), 5);
                assert_eq!(events[2]["name"], nasty);
                assert_eq!(events[2]["ts"].as_f64().unwrap(), 1234.567);
                assert_eq!(events[4]["ts"].as_f64().unwrap(), 2000.001);
            }
        }
    }

    #[test]
    fn empty_trace_is_valid_json() {
        for mut w in [
            ChromeJsonWriter::new(Vec::new()).unwrap(),
            ChromeJsonWriter::complete(Vec::new()).unwrap(),
        ] {
            w.finish().unwrap();
            assert!(parse(w).is_empty());
        }
    }

    #[test]
    fn eight_digits_in_lanes() {
        for n in (0..100_000_000u32)
            .step_by(997)
            .chain([0, 1, 9, 10, 9999, 10000, 99_999_999])
        {
            assert_eq!(eight_digits(n).to_le_bytes(), *format!("{n:08}").as_bytes());
        }
    }

    #[test]
    fn microseconds_keep_every_nanosecond() {
        let values = [
            0,
            1,
            9,
            10,
            99,
            100,
            999,
            1000,
            1001,
            99_999,
            9_999_999,
            10_000_000,
            10_000_001,
            10_001_000,
            123_456_789,
            123_456_789,
            123_450_000,
            3_083_155_664_043,
            3_083_155_669_611,
            3_083_942_902_819,
            u64::MAX,
            5,
        ];
        // One formatter for all, as the writer uses it (kept leading digits), and a fresh one.
        let mut shared = MicrosFormatter::new();
        for ns in values {
            let expected = format!("{}.{:03}", ns / 1000, ns % 1000);
            let mut text = Vec::new();
            shared.push(&mut text, ns);
            assert_eq!(String::from_utf8(text).unwrap(), expected);
            let mut text = b"prefix".to_vec();
            MicrosFormatter::new().push(&mut text, ns);
            assert_eq!(
                String::from_utf8(text).unwrap(),
                format!("prefix{expected}")
            );
        }
    }

    #[test]
    fn complete_events_nest_like_begin_end_pairs() {
        let calls = |w: &mut dyn TimelineSink| {
            w.begin(1, 2, 1000, "main").unwrap();
            w.begin(1, 2, 2000, "a").unwrap();
            w.begin(1, 2, 2500, "b").unwrap();
            w.end(1, 2, 2600).unwrap();
            w.end(1, 2, 3000).unwrap();
            w.begin(1, 3, 1500, "other thread").unwrap();
            w.begin(1, 2, 3000, "c").unwrap();
            w.end(1, 3, 1600).unwrap();
            w.end(1, 2, 3000).unwrap();
            w.end(1, 2, 9000).unwrap();
            w.finish().unwrap();
        };
        let mut pairs = ChromeJsonWriter::new(Vec::new()).unwrap();
        calls(&mut pairs);
        let mut complete = ChromeJsonWriter::complete(Vec::new()).unwrap();
        calls(&mut complete);
        let complete = parse(complete);
        assert!(complete.iter().all(|e| e["ph"] == "X"), "{complete:?}");
        let track = |events: &[serde_json::Value], tid: u64| {
            let mine: Vec<_> = events.iter().filter(|e| e["tid"] == tid).cloned().collect();
            slices(&mine)
        };
        let pairs = parse(pairs);
        assert_eq!(track(&complete, 2), track(&pairs, 2));
        assert_eq!(track(&complete, 3), track(&pairs, 3));
        assert_eq!(
            track(&complete, 2),
            [
                ("main".into(), 1000, Some(9000), 0),
                ("a".into(), 2000, Some(3000), 1),
                ("b".into(), 2500, Some(2600), 2),
                ("c".into(), 3000, Some(3000), 1),
            ]
        );
    }

    #[test]
    fn parents_beginning_with_their_child_follow_it() {
        let mut w = ChromeJsonWriter::complete(Vec::new()).unwrap();
        w.begin(1, 2, 500, "outer").unwrap();
        w.begin(1, 2, 1000, "parent").unwrap();
        w.begin(1, 2, 1000, "child").unwrap();
        w.begin(1, 2, 1000, "no time").unwrap();
        w.end(1, 2, 1000).unwrap();
        w.end(1, 2, 1200).unwrap();
        w.begin(1, 2, 1300, "second child").unwrap();
        w.end(1, 2, 1400).unwrap();
        w.end(1, 2, 2000).unwrap();
        w.end(1, 2, 3000).unwrap();
        w.finish().unwrap();
        let events = parse(w);
        let phases: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e["ph"].as_str().unwrap(), e["name"].as_str().unwrap()))
            .collect();
        // In the order they end; the begin and the duration tell the nesting.
        assert_eq!(
            phases,
            [
                ("X", "no time"),
                ("X", "child"),
                ("X", "second child"),
                ("X", "parent"),
                ("X", "outer")
            ]
        );
        assert_eq!(
            slices(&events),
            [
                ("outer".into(), 500, Some(3000), 0),
                ("parent".into(), 1000, Some(2000), 1),
                ("child".into(), 1000, Some(1200), 2),
                ("no time".into(), 1000, Some(1000), 3),
                ("second child".into(), 1300, Some(1400), 2),
            ]
        );
    }

    #[test]
    fn deep_or_unended_slices_fall_back_to_begin_events() {
        let depth = MAX_DEFERRED_SLICES as u64 * 3 + 7;
        let mut w = ChromeJsonWriter::complete(Vec::new()).unwrap();
        for i in 0..depth {
            w.begin(1, 2, 1000 + i, &format!("f{i}")).unwrap();
            assert!(w.tracks[0].open.len() <= MAX_DEFERRED_SLICES);
        }
        // The innermost half ends, the rest never does.
        for i in (depth / 2..depth).rev() {
            w.end(1, 2, 10_000_000 - i).unwrap();
        }
        w.finish().unwrap();
        let s = slices(&parse(w));
        assert_eq!(s.len() as u64, depth);
        for (i, (name, begin, end, level)) in s.into_iter().enumerate() {
            let i = i as u64;
            assert_eq!((name, begin, level as u64), (format!("f{i}"), 1000 + i, i));
            assert_eq!(end, (i >= depth / 2).then(|| 10_000_000 - i));
        }
    }
}
