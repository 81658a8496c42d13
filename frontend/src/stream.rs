//! Writing the trace as vftrace's guest byte stream (see `vftrace_format::stream` for the
//! frame layout), for kernels and other programs without a file system.
//!
//! No allocation: records are copied out of the pool through a chunk buffer the caller lends,
//! and every frame is handed to the sink as a few slices (a kernel sends each with one string
//! I/O instruction).

pub use vftrace_format::stream::{Header, Marker, TscHzSource, WriteError, DEFAULT_MARKER_PORT};
use vftrace_format::stream::{StreamWriter, MAX_RECORDS_PER_FRAME};

use crate::setup::pool;
use vftrace_format::stats::ThreadStats;

/// What [`write_trace`] sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamSummary {
    pub threads: u32,
    pub records: u64,
    /// Records lost, overwritten, or not written for calls that could not be recorded.
    pub lost: u64,
    pub frames: u64,
    pub bytes: u64,
}

/// Sends the whole trace: `header`, every thread's records (oldest first, raw TSC times) in
/// chunks of at most `chunk.len()` records, every thread's statistics, the markers written to
/// `marker_port`, and the end frame stamped with `end_tsc`.
///
/// Call it with tracing disabled (records added while it runs may or may not be included).
///
/// A pool a host drains ([`crate::init_drained`]) has no trace left to send: the host has
/// the records and reads the threads' counters from the pool. Its stream carries the header,
/// the markers and the end frame only.
pub fn write_trace(
    sink: &mut dyn FnMut(&[u8]),
    header: &Header<'_>,
    marker_port: u16,
    markers: &[Marker],
    chunk: &mut [[u8; 16]],
    end_tsc: u64,
) -> Result<StreamSummary, WriteError> {
    let mut writer = StreamWriter::new(|bytes: &[u8]| sink(bytes));
    writer.header(header)?;
    let chunk_len = chunk.len().min(MAX_RECORDS_PER_FRAME);
    let chunk = &mut chunk[..chunk_len];
    let mut summary = StreamSummary::default();
    if let Some(pool) = pool().filter(|p| !p.has_consumer()) {
        for slot in 0..pool.slot_count() {
            let s = pool.slot(slot);
            if s.state.load(core::sync::atomic::Ordering::Acquire) == 0 {
                continue;
            }
            let tid = s.tid.load(core::sync::atomic::Ordering::Relaxed);
            let mut first = 0u64;
            let mut n = 0;
            for index in pool.thread_chunks(slot) {
                let Ok((data, count)) = pool.readable(index) else {
                    continue;
                };
                for k in 0..count {
                    // SAFETY: `readable` bounded `count` by the chunk; tracing is off.
                    let [t, w] = unsafe { core::ptr::read_volatile(data.add(k)) };
                    chunk[n][..8].copy_from_slice(&t.to_le_bytes());
                    chunk[n][8..].copy_from_slice(&w.to_le_bytes());
                    n += 1;
                    if n == chunk.len() {
                        writer.records(tid, first, chunk)?;
                        first += n as u64;
                        n = 0;
                    }
                }
            }
            if n > 0 {
                writer.records(tid, first, &chunk[..n])?;
                first += n as u64;
            }
            let load =
                |c: &core::sync::atomic::AtomicU64| c.load(core::sync::atomic::Ordering::Relaxed);
            let stats = ThreadStats {
                tid,
                records: first,
                lost: load(&s.lost),
                overwritten: load(&s.overwritten),
                unhooked: load(&s.unrecorded),
            };
            writer.thread_stats(&stats)?;
            summary.threads += 1;
            summary.records += first;
            summary.lost += stats.lost + stats.overwritten + 2 * stats.unhooked;
        }
    }
    if !markers.is_empty() {
        writer.markers(marker_port, markers)?;
    }
    writer.end(end_tsc, summary.threads)?;
    summary.frames = writer.frames();
    summary.bytes = writer.bytes();
    Ok(summary)
}

/// Tells a host that drains the pool ([`crate::init_drained`]) what runs, before the first
/// record: `header` in a pool message ([`vftrace_format::pool::HeaderMessage`]). Costs no VM
/// exit. False if there is no pool or no free message cell.
pub fn post_header(header: &Header<'_>) -> bool {
    use vftrace_format::pool::{message_kind, HeaderMessage, MESSAGE_PAYLOAD};
    let Some(pool) = pool() else {
        return false;
    };
    let mut buf = [0u8; MESSAGE_PAYLOAD];
    let len = HeaderMessage::encode(header, &mut buf);
    len > 0 && pool.post_message(message_kind::STREAM_HEADER, &buf[..len]) != 0
}
