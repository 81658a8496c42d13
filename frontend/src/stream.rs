//! Writing the trace as vftrace's guest byte stream (see `vftrace_format::stream` for the
//! frame layout), for kernels and other programs without a file system.
//!
//! No allocation: records go through a chunk buffer the caller lends, and every frame is
//! handed to the sink as a few slices (a kernel sends each with one string I/O instruction).

pub use vftrace_format::stream::{Header, Marker, TscHzSource, WriteError, DEFAULT_MARKER_PORT};
use vftrace_format::stream::{StreamWriter, MAX_RECORDS_PER_FRAME};

use crate::{threads, ThreadStats};

/// What [`write_trace`] sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamSummary {
    pub threads: u32,
    pub records: u64,
    /// Records lost or overwritten in all threads.
    pub lost: u64,
    pub frames: u64,
    pub bytes: u64,
}

/// Sends the whole trace: `header`, every thread's records (oldest first, raw TSC times) in
/// chunks of at most `chunk.len()` records, every thread's statistics, the markers written to
/// `marker_port`, and the end frame stamped with `end_tsc`.
///
/// Call it with tracing disabled (records added while it runs may or may not be included).
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
    for thread in threads() {
        let stats: ThreadStats = thread.stats();
        let mut first = 0u64;
        loop {
            let n = thread.read(first, chunk);
            if n == 0 {
                break;
            }
            writer.records(stats.tid, first, &chunk[..n])?;
            first += n as u64;
        }
        writer.thread_stats(&ThreadStats {
            records: first,
            ..stats
        })?;
        summary.threads += 1;
        summary.records += first;
        summary.lost += stats.lost + stats.overwritten;
    }
    if !markers.is_empty() {
        writer.markers(marker_port, markers)?;
    }
    writer.end(end_tsc, summary.threads)?;
    summary.frames = writer.frames();
    summary.bytes = writer.bytes();
    Ok(summary)
}
