//! Perfetto's native protobuf trace format, encoded by hand.
//!
//! The file is a `Trace { repeated TracePacket packet = 1; }`. Track descriptors go on one
//! packet sequence; each thread track gets a sequence of its own whose defaults name the track
//! and whose timestamps are deltas on an incremental clock, and event names are interned per
//! sequence (`InternedData.event_names`). So a slice begin costs about 16 bytes and an end 12. Field numbers come from Perfetto's public protos
//! (protos/perfetto/trace/trace_packet.proto, clock_snapshot.proto, trace_packet_defaults.proto,
//! track_event/*.proto). tests/perfetto_judge.rs has Perfetto's own trace processor read it.

use std::io::{self, Write};

use rustc_hash::FxHashMap;

use crate::output::hand_over;
use crate::{
    drain, ArgValue, BackgroundFileWriter, EventExtras, TimelineSink, DEFAULT_CATEGORY,
    FLUSH_THRESHOLD,
};

/// Field numbers of the messages written here.
mod field {
    /// `Trace.packet`.
    pub const TRACE_PACKET: u32 = 1;

    pub const PACKET_CLOCK_SNAPSHOT: u32 = 6;
    pub const PACKET_TIMESTAMP: u32 = 8;
    pub const PACKET_SEQUENCE_ID: u32 = 10;
    pub const PACKET_TRACK_EVENT: u32 = 11;
    pub const PACKET_INTERNED_DATA: u32 = 12;
    pub const PACKET_SEQUENCE_FLAGS: u32 = 13;
    pub const PACKET_INCREMENTAL_STATE_CLEARED: u32 = 41;
    pub const PACKET_TIMESTAMP_CLOCK_ID: u32 = 58;
    pub const PACKET_DEFAULTS: u32 = 59;
    pub const PACKET_TRACK_DESCRIPTOR: u32 = 60;

    pub const DEFAULTS_TIMESTAMP_CLOCK_ID: u32 = 58;
    pub const DEFAULTS_TRACK_EVENT: u32 = 11;
    pub const TRACK_EVENT_DEFAULTS_TRACK_UUID: u32 = 11;

    pub const CLOCK_SNAPSHOT_CLOCKS: u32 = 1;
    pub const CLOCK_ID: u32 = 1;
    pub const CLOCK_TIMESTAMP: u32 = 2;
    pub const CLOCK_IS_INCREMENTAL: u32 = 3;

    pub const TRACK_UUID: u32 = 1;
    pub const TRACK_NAME: u32 = 2;
    pub const TRACK_PROCESS: u32 = 3;
    pub const TRACK_THREAD: u32 = 4;

    pub const PROCESS_PID: u32 = 1;
    pub const PROCESS_NAME: u32 = 6;

    pub const THREAD_PID: u32 = 1;
    pub const THREAD_TID: u32 = 2;
    pub const THREAD_NAME: u32 = 5;

    pub const EVENT_CATEGORY_IIDS: u32 = 3;
    pub const EVENT_DEBUG_ANNOTATIONS: u32 = 4;
    pub const EVENT_TYPE: u32 = 9;
    pub const EVENT_NAME_IID: u32 = 10;
    pub const EVENT_FLOW_IDS: u32 = 47;
    pub const EVENT_TERMINATING_FLOW_IDS: u32 = 48;

    pub const ANNOTATION_BOOL: u32 = 2;
    pub const ANNOTATION_UINT: u32 = 3;
    pub const ANNOTATION_INT: u32 = 4;
    pub const ANNOTATION_STRING: u32 = 6;
    pub const ANNOTATION_NAME: u32 = 10;
    pub const ANNOTATION_DICT_ENTRIES: u32 = 11;

    pub const INTERNED_EVENT_CATEGORIES: u32 = 1;
    pub const INTERNED_EVENT_NAMES: u32 = 2;
    /// `EventName` and `EventCategory` share these.
    pub const INTERNED_NAME_IID: u32 = 1;
    pub const INTERNED_NAME_NAME: u32 = 2;
}

/// `TrackEvent.Type`.
#[derive(Clone, Copy)]
enum EventType {
    SliceBegin = 1,
    SliceEnd = 2,
    Instant = 3,
}

/// `TracePacket.SequenceFlags`.
const SEQ_INCREMENTAL_STATE_CLEARED: u64 = 1;

/// `BuiltinClock.BOOTTIME`: the trace's clock when nothing else is said.
const CLOCK_BOOTTIME: u64 = 6;
/// A sequence-scoped clock (ids 64..127 are) declared incremental: each packet's timestamp is
/// the delta from the previous one on its sequence, one or two bytes instead of seven.
const CLOCK_INCREMENTAL: u64 = 64;

/// The sequence that carries track descriptors (no incremental state). Thread tracks get one
/// sequence each, numbered from 2.
const DESCRIPTOR_SEQUENCE_ID: u64 = 1;

/// The interned id of [`DEFAULT_CATEGORY`], sent with every clearing of a sequence's state.
/// Perfetto's own JSON export (traceconv json, the UI's "convert to JSON") leaves out slices
/// without a category, so every begin and instant carries one. Other categories are interned
/// on their sequence when first used, with the ids after it.
const CATEGORY_IID: u64 = 1;
/// Interned ids of event names start here (categories below; the two tables are separate,
/// this only keeps the ids apart for people reading a dump).
const FIRST_NAME_IID: u64 = 64;

/// Interned names (over all sequences) are dropped and re-sent once they add up to this many
/// bytes, so hostile input with endless distinct names cannot grow memory without bound.
const MAX_INTERNED_BYTES: usize = 32 << 20;

/// The packet sequence of one thread track: its events take the track from the sequence's
/// defaults, times are deltas on the sequence's incremental clock, names are interned on it.
struct Sequence {
    id: u64,
    track_uuid: u64,
    /// Event name -> interned id on this sequence.
    names: FxHashMap<Box<str>, u64>,
    /// Categories other than the default interned on this sequence, with their ids.
    categories: Vec<&'static str>,
    /// The clearing packet (defaults, clock snapshot) has been written since the last reset.
    state_valid: bool,
    /// Current value of the incremental clock.
    clock_ns: u64,
}

/// Writes a Perfetto protobuf trace. Processes become process tracks, threads become thread
/// tracks (created on first use if [`TimelineSink::thread`] was not called), slices become
/// `TYPE_SLICE_BEGIN`/`TYPE_SLICE_END` track events. A slice costs about 28 bytes.
pub struct PerfettoWriter<W: Write> {
    out: W,
    /// Sends the encoded bytes to `out` and empties them.
    drain: fn(&mut Vec<u8>, &mut W) -> io::Result<()>,
    /// Encoded packets waiting to go to `out`; packets are encoded in place.
    buf: ProtoBuf,
    /// Track uuid of each process (`tid == None`).
    process_tracks: FxHashMap<u32, u64>,
    /// Index in `sequences` of each thread track.
    thread_tracks: FxHashMap<(u32, u32), usize>,
    sequences: Vec<Sequence>,
    /// The thread track of the previous event: most events go to the same track as the last.
    last_thread: Option<((u32, u32), usize)>,
    next_uuid: u64,
    interned_bytes: usize,
}

impl PerfettoWriter<BackgroundFileWriter> {
    /// Hands each full buffer to the file's writing thread as it is instead of copying it.
    pub(crate) fn hand_over_buffers(mut self) -> Self {
        self.drain = hand_over;
        self
    }
}

impl<W: Write> PerfettoWriter<W> {
    /// Starts the trace on `out`.
    pub fn new(out: W) -> io::Result<Self> {
        Ok(PerfettoWriter {
            out,
            drain: drain::<W>,
            buf: ProtoBuf {
                bytes: Vec::with_capacity(FLUSH_THRESHOLD + 4096),
            },
            process_tracks: FxHashMap::default(),
            thread_tracks: FxHashMap::default(),
            sequences: Vec::new(),
            last_thread: None,
            next_uuid: 1,
            interned_bytes: 0,
        })
    }

    /// Gives back the underlying writer (after [`TimelineSink::finish`]).
    pub fn into_inner(self) -> W {
        self.out
    }

    fn flush_if_full(&mut self) -> io::Result<()> {
        if self.buf.bytes.len() >= FLUSH_THRESHOLD {
            (self.drain)(&mut self.buf.bytes, &mut self.out)?;
        }
        Ok(())
    }

    fn new_uuid(&mut self) -> u64 {
        let uuid = self.next_uuid;
        self.next_uuid += 1;
        uuid
    }

    /// Writes the descriptor of the process track of `pid`, with a name if there is one.
    fn describe_process(&mut self, pid: u32, name: Option<&str>) {
        let uuid = match self.process_tracks.get(&pid) {
            Some(&uuid) => uuid,
            None => {
                let uuid = self.new_uuid();
                self.process_tracks.insert(pid, uuid);
                uuid
            }
        };
        let p = &mut self.buf;
        let packet = p.begin_message(field::TRACE_PACKET);
        p.varint_field(field::PACKET_SEQUENCE_ID, DESCRIPTOR_SEQUENCE_ID);
        let track = p.begin_message(field::PACKET_TRACK_DESCRIPTOR);
        p.varint_field(field::TRACK_UUID, uuid);
        let process = p.begin_message(field::TRACK_PROCESS);
        p.varint_field(field::PROCESS_PID, pid as u64);
        if let Some(name) = name {
            p.string_field(field::PROCESS_NAME, name);
        }
        p.end_message(process);
        p.end_message(track);
        p.end_message(packet);
    }

    /// Writes the descriptor of the thread track (pid, tid), with a name if there is one, and
    /// returns its sequence index.
    fn describe_thread(&mut self, pid: u32, tid: u32, name: Option<&str>) -> usize {
        if !self.process_tracks.contains_key(&pid) {
            // Perfetto groups thread tracks under their process only if the process is known.
            self.describe_process(pid, None);
        }
        let index = match self.thread_tracks.get(&(pid, tid)) {
            Some(&index) => index,
            None => {
                let index = self.sequences.len();
                let track_uuid = self.new_uuid();
                self.sequences.push(Sequence {
                    id: DESCRIPTOR_SEQUENCE_ID + 1 + index as u64,
                    track_uuid,
                    names: FxHashMap::default(),
                    categories: Vec::new(),
                    state_valid: false,
                    clock_ns: 0,
                });
                self.thread_tracks.insert((pid, tid), index);
                index
            }
        };
        let uuid = self.sequences[index].track_uuid;
        let p = &mut self.buf;
        let packet = p.begin_message(field::TRACE_PACKET);
        p.varint_field(field::PACKET_SEQUENCE_ID, DESCRIPTOR_SEQUENCE_ID);
        let track = p.begin_message(field::PACKET_TRACK_DESCRIPTOR);
        p.varint_field(field::TRACK_UUID, uuid);
        if let Some(name) = name {
            p.string_field(field::TRACK_NAME, name);
        }
        let thread = p.begin_message(field::TRACK_THREAD);
        p.varint_field(field::THREAD_PID, pid as u64);
        p.varint_field(field::THREAD_TID, tid as u64);
        if let Some(name) = name {
            p.string_field(field::THREAD_NAME, name);
        }
        p.end_message(thread);
        p.end_message(track);
        p.end_message(packet);
        index
    }

    #[inline]
    fn thread_sequence(&mut self, pid: u32, tid: u32) -> usize {
        if let Some((key, index)) = self.last_thread {
            if key == (pid, tid) {
                return index;
            }
        }
        let index = match self.thread_tracks.get(&(pid, tid)) {
            Some(&index) => index,
            None => self.describe_thread(pid, tid, None),
        };
        self.last_thread = Some(((pid, tid), index));
        index
    }

    /// Starts the incremental state of a sequence afresh at time `ts_ns`: its defaults (track,
    /// clock), the incremental clock's base and the interned category.
    fn clear_sequence(&mut self, index: usize, ts_ns: u64) {
        let seq = &mut self.sequences[index];
        self.interned_bytes -= seq.names.keys().map(|n| n.len() + 32).sum::<usize>();
        seq.names.clear();
        seq.categories.clear();
        seq.state_valid = true;
        seq.clock_ns = ts_ns;
        let p = &mut self.buf;
        let packet = p.begin_message(field::TRACE_PACKET);
        p.varint_field(field::PACKET_SEQUENCE_ID, seq.id);
        p.varint_field(field::PACKET_SEQUENCE_FLAGS, SEQ_INCREMENTAL_STATE_CLEARED);
        // The older spelling of the same flag, for older readers.
        p.varint_field(field::PACKET_INCREMENTAL_STATE_CLEARED, 1);
        let defaults = p.begin_message(field::PACKET_DEFAULTS);
        p.varint_field(field::DEFAULTS_TIMESTAMP_CLOCK_ID, CLOCK_INCREMENTAL);
        let event_defaults = p.begin_message(field::DEFAULTS_TRACK_EVENT);
        p.varint_field(field::TRACK_EVENT_DEFAULTS_TRACK_UUID, seq.track_uuid);
        p.end_message(event_defaults);
        p.end_message(defaults);
        let snapshot = p.begin_message(field::PACKET_CLOCK_SNAPSHOT);
        for (clock, incremental) in [(CLOCK_INCREMENTAL, true), (CLOCK_BOOTTIME, false)] {
            let c = p.begin_message(field::CLOCK_SNAPSHOT_CLOCKS);
            p.varint_field(field::CLOCK_ID, clock);
            p.varint_field(field::CLOCK_TIMESTAMP, ts_ns);
            if incremental {
                p.varint_field(field::CLOCK_IS_INCREMENTAL, 1);
            }
            p.end_message(c);
        }
        p.end_message(snapshot);
        let interned = p.begin_message(field::PACKET_INTERNED_DATA);
        let category = p.begin_message(field::INTERNED_EVENT_CATEGORIES);
        p.varint_field(field::INTERNED_NAME_IID, CATEGORY_IID);
        p.string_field(field::INTERNED_NAME_NAME, DEFAULT_CATEGORY);
        p.end_message(category);
        p.end_message(interned);
        p.end_message(packet);
    }

    /// Encodes one track event packet on the sequence of (pid, tid). `name` and the category
    /// are interned; `args` become debug annotations.
    fn track_event(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        kind: EventType,
        name: Option<&str>,
        extras: &EventExtras,
    ) -> io::Result<()> {
        let index = self.thread_sequence(pid, tid);
        if !self.sequences[index].state_valid {
            self.clear_sequence(index, ts_ns);
        }
        // The interned id of the name, and whether this packet must define it.
        let mut name_iid = None;
        if let Some(name) = name {
            name_iid = Some(match self.sequences[index].names.get(name) {
                Some(&iid) => (iid, false),
                None => {
                    if self.interned_bytes + name.len() + 32 > MAX_INTERNED_BYTES {
                        self.forget_interned_names();
                        self.clear_sequence(index, ts_ns.max(self.sequences[index].clock_ns));
                    }
                    let names = &mut self.sequences[index].names;
                    let iid = FIRST_NAME_IID + names.len() as u64;
                    names.insert(name.into(), iid);
                    self.interned_bytes += name.len() + 32;
                    (iid, true)
                }
            });
        }
        // The category's interned id, and whether this packet must define it.
        let category = extras.category_name();
        let category_iid = if category == DEFAULT_CATEGORY {
            (CATEGORY_IID, false)
        } else {
            let cats = &mut self.sequences[index].categories;
            match cats.iter().position(|c| *c == category) {
                Some(i) => (CATEGORY_IID + 1 + i as u64, false),
                None => {
                    cats.push(category);
                    (CATEGORY_IID + cats.len() as u64, true)
                }
            }
        };
        let seq = &mut self.sequences[index];
        let p = &mut self.buf;
        let packet = p.begin_message(field::TRACE_PACKET);
        if ts_ns >= seq.clock_ns {
            p.varint_field(field::PACKET_TIMESTAMP, ts_ns - seq.clock_ns);
            seq.clock_ns = ts_ns;
        } else {
            // Deltas cannot be negative: an out-of-order event gets an absolute time.
            p.varint_field(field::PACKET_TIMESTAMP, ts_ns);
            p.varint_field(field::PACKET_TIMESTAMP_CLOCK_ID, CLOCK_BOOTTIME);
        }
        // No SEQ_NEEDS_INCREMENTAL_STATE flag: it only lets a reader drop packets after data
        // loss, which a file written in one piece has none of, and costs 2 of ~15 bytes.
        p.varint_field(field::PACKET_SEQUENCE_ID, seq.id);
        let new_name = matches!(name_iid, Some((_, true)));
        if new_name || (name.is_some() && category_iid.1) {
            let interned = p.begin_message(field::PACKET_INTERNED_DATA);
            if category_iid.1 && name.is_some() {
                let c = p.begin_message(field::INTERNED_EVENT_CATEGORIES);
                p.varint_field(field::INTERNED_NAME_IID, category_iid.0);
                p.string_field(field::INTERNED_NAME_NAME, category);
                p.end_message(c);
            }
            if let (Some((iid, true)), Some(name)) = (name_iid, name) {
                let event_name = p.begin_message(field::INTERNED_EVENT_NAMES);
                p.varint_field(field::INTERNED_NAME_IID, iid);
                p.string_field(field::INTERNED_NAME_NAME, name);
                p.end_message(event_name);
            }
            p.end_message(interned);
        }
        let event = p.begin_message(field::PACKET_TRACK_EVENT);
        p.varint_field(field::EVENT_TYPE, kind as u64);
        if let Some((iid, _)) = name_iid {
            p.varint_field(field::EVENT_CATEGORY_IIDS, category_iid.0);
            p.varint_field(field::EVENT_NAME_IID, iid);
        }
        // One dictionary named "args": the trace processor files it as `debug.args.*`, which
        // its JSON export (and the UI's argument tree) shows as the `args.*` the JSON
        // importer makes of our JSON files' arguments.
        let dict = (!extras.args.is_empty()).then(|| {
            let d = p.begin_message(field::EVENT_DEBUG_ANNOTATIONS);
            p.string_field(field::ANNOTATION_NAME, "args");
            d
        });
        for (key, value) in extras.args {
            let annotation = p.begin_message(field::ANNOTATION_DICT_ENTRIES);
            p.string_field(field::ANNOTATION_NAME, key);
            match value {
                ArgValue::U64(v) => p.varint_field(field::ANNOTATION_UINT, *v),
                // int64 is encoded as the two's complement u64 varint.
                ArgValue::I64(v) => p.varint_field(field::ANNOTATION_INT, *v as u64),
                ArgValue::Str(s) => p.string_field(field::ANNOTATION_STRING, s),
                ArgValue::Hex(v) => p.string_field(field::ANNOTATION_STRING, &format!("{v:#x}")),
                ArgValue::Bool(b) => p.varint_field(field::ANNOTATION_BOOL, *b as u64),
            }
            p.end_message(annotation);
        }
        if let Some(d) = dict {
            p.end_message(d);
        }
        if let Some(id) = extras.flow_out {
            p.fixed64_field(field::EVENT_FLOW_IDS, id);
        }
        if let Some(id) = extras.flow_in {
            p.fixed64_field(field::EVENT_TERMINATING_FLOW_IDS, id);
        }
        p.end_message(event);
        p.end_message(packet);
        self.flush_if_full()
    }

    /// Drops the interned names of every sequence; each is cleared again on its next event.
    fn forget_interned_names(&mut self) {
        for seq in &mut self.sequences {
            seq.names = FxHashMap::default();
            seq.state_valid = false;
        }
        self.interned_bytes = 0;
    }
}

impl<W: Write> TimelineSink for PerfettoWriter<W> {
    fn process(&mut self, pid: u32, name: &str) -> io::Result<()> {
        self.describe_process(pid, Some(name));
        self.flush_if_full()
    }

    fn thread(&mut self, pid: u32, tid: u32, name: &str) -> io::Result<()> {
        self.describe_thread(pid, tid, Some(name));
        self.flush_if_full()
    }

    fn begin_with(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        name: &str,
        extras: &EventExtras,
    ) -> io::Result<()> {
        self.track_event(pid, tid, ts_ns, EventType::SliceBegin, Some(name), extras)
    }

    fn end_with(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        args: &[(&str, ArgValue)],
    ) -> io::Result<()> {
        // The trace processor adds an end's annotations to the slice's arguments.
        let extras = EventExtras::default().with_args(args);
        self.track_event(pid, tid, ts_ns, EventType::SliceEnd, None, &extras)
    }

    fn instant_with(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        name: &str,
        extras: &EventExtras,
    ) -> io::Result<()> {
        self.track_event(pid, tid, ts_ns, EventType::Instant, Some(name), extras)
    }

    fn finish(&mut self) -> io::Result<()> {
        (self.drain)(&mut self.buf.bytes, &mut self.out)?;
        self.out.flush()
    }
}

const WIRE_VARINT: u32 = 0;
const WIRE_FIXED64: u32 = 1;
const WIRE_LEN: u32 = 2;

const fn tag(field: u32, wire_type: u32) -> u64 {
    ((field << 3) | wire_type) as u64
}

#[inline]
fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// A protobuf message being encoded. Nested messages reserve one length byte and widen it in
/// the rare case their body is 128 bytes or longer.
#[derive(Default)]
struct ProtoBuf {
    bytes: Vec<u8>,
}

impl ProtoBuf {
    #[inline]
    fn varint_field(&mut self, field: u32, value: u64) {
        put_varint(&mut self.bytes, tag(field, WIRE_VARINT));
        put_varint(&mut self.bytes, value);
    }

    fn fixed64_field(&mut self, field: u32, value: u64) {
        put_varint(&mut self.bytes, tag(field, WIRE_FIXED64));
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    fn string_field(&mut self, field: u32, value: &str) {
        put_varint(&mut self.bytes, tag(field, WIRE_LEN));
        put_varint(&mut self.bytes, value.len() as u64);
        self.bytes.extend_from_slice(value.as_bytes());
    }

    /// Starts a nested message; returns where its body starts, for [`end_message`](Self::end_message).
    #[inline]
    fn begin_message(&mut self, field: u32) -> usize {
        put_varint(&mut self.bytes, tag(field, WIRE_LEN));
        self.bytes.push(0);
        self.bytes.len()
    }

    #[inline]
    fn end_message(&mut self, body_start: usize) {
        let len = self.bytes.len() - body_start;
        if len < 0x80 {
            self.bytes[body_start - 1] = len as u8;
        } else {
            self.widen_length(body_start, len as u64);
        }
    }

    /// Replaces the one reserved length byte before `body_start` by the varint of `len`.
    #[cold]
    fn widen_length(&mut self, body_start: usize, len: u64) {
        let mut prefix = Vec::with_capacity(10);
        put_varint(&mut prefix, len);
        self.bytes.splice(body_start - 1..body_start, prefix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        let mut b = Vec::new();
        put_varint(&mut b, 0);
        put_varint(&mut b, 127);
        put_varint(&mut b, 128);
        put_varint(&mut b, 300);
        assert_eq!(b, [0, 127, 0x80, 1, 0xac, 2]);
    }

    #[test]
    fn long_nested_message_gets_a_wide_length() {
        let mut p = ProtoBuf::default();
        let m = p.begin_message(2);
        p.string_field(1, &"x".repeat(200));
        p.end_message(m);
        // tag, 2-byte length (203 = 0xcb 0x01), then the body: tag, 2-byte length, 200 bytes.
        assert_eq!(&p.bytes[..3], &[0x12, 0xcb, 0x01]);
        assert_eq!(p.bytes.len(), 3 + 203);
    }
}
