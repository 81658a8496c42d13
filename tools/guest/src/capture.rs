//! A guest's byte stream -> a uftrace directory.
//!
//! The directory is built beside the output ([`OutputDir`]) and put in place at the end, so a
//! stream that yields nothing leaves a previous output as it was. A stream damaged part-way
//! still gives a complete directory of everything before the damage; the damage (cause and
//! stream offset) is in [`CaptureReport::error`].
use std::io::{self, Read};
use std::path::Path;

use vftrace_format::clock::{ClockMap, ClockSource, TscToNs};
use vftrace_format::dir::{make_session_id, TraceDirWriter};
use vftrace_format::info::Info;
use vftrace_format::maps::guest_map;
use vftrace_format::markers::{write_guest_markers, GUEST_MARKERS_FILE};
use vftrace_format::output::OutputDir;
use vftrace_format::record::{Record, ThreadRepair, RECORD_SIZE};
use vftrace_format::stream::{
    Marker, OwnedHeader, Payload, StreamError, StreamErrorKind, StreamReader, ThreadStats,
    FRAME_HEADER_SIZE, MAX_THREADS, RECORDS_PREFIX,
};
use vftrace_format::task::TaskLine;
use vftrace_symbols::ElfSymbols;

#[derive(Clone, Debug, Default)]
pub struct CaptureOptions<'a> {
    /// The guest's ELF image, for function names. Read before the stream, so a wrong one
    /// costs nothing (a stream on standard input cannot be read twice).
    pub elf: Option<&'a Path>,
    /// TSC frequency to use when the guest did not report one (or to override it).
    pub tsc_hz: Option<f64>,
    /// The file the stream comes from, if it is one: an output that is it, or a directory
    /// holding it, is refused.
    pub stream_file: Option<&'a Path>,
}

/// What a capture found. `error` is set when the stream was damaged: everything before it was
/// still written.
#[derive(Debug, Default)]
pub struct CaptureReport {
    pub header: Option<OwnedHeader>,
    /// Frames used (those before the damage, if any).
    pub frames: u64,
    pub records: u64,
    /// Threads with records, in the order they first appeared.
    pub tids: Vec<u32>,
    /// The guest's counters, one per thread that sent them.
    pub threads: Vec<ThreadStats>,
    pub markers: Vec<Marker>,
    pub marker_port: Option<u16>,
    pub tsc_hz: f64,
    pub symbols: usize,
    pub error: Option<StreamError>,
}

impl CaptureReport {
    /// Records lost or overwritten in the guest.
    pub fn lost(&self) -> u64 {
        // Guest numbers: saturate rather than overflow.
        self.threads.iter().fold(0u64, |sum, t| {
            sum.saturating_add(t.lost.saturating_add(t.overwritten))
        })
    }
}

/// Per-thread state while converting.
#[derive(Default)]
struct ThreadState {
    last_time: u64,
    repair: ThreadRepair,
}

/// Decodes `input` and writes the uftrace directory `output`. Returns an `Err` when the
/// directory cannot be written, or when nothing usable came before the stream's damage (the
/// error then carries the damage's cause and offset); otherwise damage is in the report.
pub fn capture(
    input: impl Read,
    output: &Path,
    opts: &CaptureOptions,
) -> io::Result<CaptureReport> {
    let inputs: Vec<&Path> = opts.elf.into_iter().chain(opts.stream_file).collect();
    let out = OutputDir::create(output, &inputs)?;
    let elf = read_elf(opts.elf)?;
    let mut report = CaptureReport::default();
    // Declared after `out`, so dropped (flushed) before the temporary directory is removed.
    let mut writer: Option<(TraceDirWriter, TscToNs)> = None;
    let mut threads: std::collections::HashMap<u32, ThreadState> = Default::default();
    for item in StreamReader::new(io::BufReader::with_capacity(1 << 20, input)) {
        let frame = match item {
            Ok(f) => f,
            Err(e) => {
                report.error = Some(e);
                break;
            }
        };
        let damage = match frame.payload {
            Payload::Header(h) => {
                let hz = opts.tsc_hz.unwrap_or(h.tsc_hz as f64);
                // 1 MHz to 100 GHz: anything else is not a CPU's TSC.
                if !(1e6..=1e11).contains(&hz) {
                    let what = match opts.tsc_hz {
                        Some(given) => format!("the given TSC frequency {given} Hz is implausible"),
                        None if h.tsc_hz == 0 => {
                            "the guest did not report its TSC frequency".into()
                        }
                        None => format!(
                            "the guest reported an implausible TSC frequency ({} Hz)",
                            h.tsc_hz
                        ),
                    };
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{what}; pass it with --tsc-hz (under KVM it equals the host's, see `grep MHz /proc/cpuinfo` or the kernel log \"tsc: Detected\")"),
                    ));
                }
                report.tsc_hz = hz;
                let clock = ClockMap::new(hz, h.start_tsc, 0, ClockSource::Guest);
                let mut w = TraceDirWriter::create(out.path())?;
                w.write_clock(&clock)?;
                writer = Some((w, clock.converter()));
                report.header = Some(h);
                None
            }
            Payload::Records { tid, records, .. } => {
                // The reader checked that a header came first.
                let (w, to_ns) = writer.as_mut().expect("header frame first");
                match u32::try_from(tid) {
                    Ok(0) => Some(malformed(frame.offset, "thread id 0 (uftrace reserves it)")),
                    Err(_) => Some(malformed(frame.offset, "thread id does not fit 32 bits")),
                    Ok(tid) => {
                        if !report.tids.contains(&tid) {
                            report.tids.push(tid);
                        }
                        let state = threads.entry(tid).or_default();
                        let mut converted = Vec::with_capacity(records.len());
                        let mut bad = None;
                        for (i, bytes) in records.iter().enumerate() {
                            let mut r = match Record::from_bytes(bytes) {
                                Ok(r) if !r.more => r,
                                // The guest's backend writes neither: the data is damaged.
                                Ok(_) => {
                                    bad = Some((i, "a record with the `more` bit set (argument payloads are not supported)"));
                                    break;
                                }
                                Err(_) => {
                                    bad = Some((
                                        i,
                                        "a record with a bad magic (not a uftrace record)",
                                    ));
                                    break;
                                }
                            };
                            // The backend keeps each thread's times monotonic; a hostile stream
                            // might not, and uftrace stops at inverted time.
                            r.time = to_ns.convert(r.time).max(state.last_time);
                            state.last_time = r.time;
                            // A ring buffer's oldest records may be gone (see ThreadRepair).
                            if state.repair.accept(&mut r) {
                                converted.push(r);
                            }
                        }
                        report.records += converted.len() as u64;
                        w.write_records(tid, converted)?;
                        bad.map(|(i, what)| {
                            let at = FRAME_HEADER_SIZE + RECORDS_PREFIX + i * RECORD_SIZE;
                            malformed(frame.offset + at as u64, what)
                        })
                    }
                }
            }
            Payload::ThreadStats(s) => {
                // The reader bounds the threads and refuses a second stats frame per thread.
                debug_assert!(report.threads.len() < MAX_THREADS);
                report.threads.push(s);
                None
            }
            Payload::Markers { port, markers } => {
                report.marker_port = Some(port);
                report.markers = markers;
                None
            }
            Payload::End(_) => None,
        };
        if let Some(e) = damage {
            report.error = Some(e);
            break;
        }
        report.frames += 1;
    }
    let writer = writer.filter(|(w, _)| !w.record_tids().is_empty());
    let Some((mut w, _)) = writer else {
        let why = match &report.error {
            Some(e) => format!("{e}; no records came before it, so there is nothing to keep"),
            None => "the stream has a header but no records".into(),
        };
        return Err(io::Error::new(io::ErrorKind::InvalidData, why));
    };
    report.tids.retain(|t| w.record_count(*t) > 0);
    finish_directory(&mut w, &mut report, &threads, elf.as_ref())?;
    w.finish()?;
    out.commit()?;
    Ok(report)
}

fn malformed(offset: u64, what: &'static str) -> StreamError {
    StreamError {
        offset,
        kind: StreamErrorKind::Malformed(what),
    }
}

/// A name safe to use as a file name: the guest's image name reduced to [A-Za-z0-9._-].
fn safe_image_name(header: &OwnedHeader) -> String {
    let name: String = header
        .display_name()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect();
    if name.is_empty() || name.starts_with('.') {
        "guest".into()
    } else {
        name
    }
}

fn finish_directory(
    w: &mut TraceDirWriter,
    report: &mut CaptureReport,
    threads: &std::collections::HashMap<u32, ThreadState>,
    elf: Option<&ElfSymbols>,
) -> io::Result<()> {
    let header = report
        .header
        .as_ref()
        .expect("a writer exists only after a header");
    // LOST records at the end of threads that dropped records, as uftrace expects.
    for s in &report.threads {
        let lost = s.lost.saturating_add(s.overwritten);
        if let (Ok(tid), true) = (u32::try_from(s.tid), lost > 0) {
            if let (true, Some(state)) = (report.tids.contains(&tid), threads.get(&tid)) {
                w.write_records(tid, [Record::lost(state.last_time, 0, lost)])?;
            }
        }
    }
    let files = GuestFiles {
        header,
        tids: &report.tids,
        elf,
        marker_port: report.marker_port,
        markers: &report.markers,
    };
    report.symbols = files.write(w)?;
    Ok(())
}

/// What a guest trace directory holds besides the records and the clock: info, task.txt, the
/// map and symbols of the guest image (placed where the guest said it is loaded) and the
/// guest's markers. Shared by the stream capture and the live drain ([`crate::live`]).
pub(crate) struct GuestFiles<'a> {
    pub header: &'a OwnedHeader,
    /// Threads with records.
    pub tids: &'a [u32],
    pub elf: Option<&'a ElfSymbols>,
    pub marker_port: Option<u16>,
    pub markers: &'a [Marker],
}

impl GuestFiles<'_> {
    /// Writes them; returns how many symbols the image had.
    pub fn write(&self, w: &mut TraceDirWriter) -> io::Result<usize> {
        let header = self.header;
        let module_path = format!("/guest/{}", safe_image_name(header));
        let pid = if header.pid == 0 { 1 } else { header.pid };
        let sid = make_session_id(header.session_id);
        let mut info = Info::new(module_path.clone(), header.display_cmdline());
        info.tids = self.tids.to_vec();
        w.write_info(&info)?;
        let mut tasks = vec![TaskLine::Session {
            timestamp_ns: 0,
            pid,
            sid: sid.clone(),
            exename: module_path.clone(),
        }];
        tasks.extend(self.tids.iter().map(|&tid| TaskLine::Task {
            timestamp_ns: 0,
            tid,
            pid,
        }));
        w.write_tasks(&tasks)?;
        let end = header.load_end.max(header.load_address.saturating_add(1));
        w.write_map(&sid, &guest_map(header.load_address, end, &module_path))?;
        let mut symbols = 0;
        if let Some(elf) = self.elf {
            let placement = vftrace_symbols::Placement {
                load_address: None,
                map_start: Some(header.load_address),
                path_name: Some(module_path.clone()),
            };
            let (path, syms) = vftrace_symbols::sym_symbols(elf, &placement)
                .map_err(|e| io::Error::other(e.to_string()))?;
            symbols = syms.len();
            w.write_symbols(&path, &syms)?;
        }
        let file = std::fs::File::create(w.path().join(GUEST_MARKERS_FILE))?;
        write_guest_markers(io::BufWriter::new(file), self.marker_port, self.markers)?;
        Ok(symbols)
    }
}

/// Reads the guest's ELF image for function names (before anything else, so that a wrong one
/// costs nothing).
pub(crate) fn read_elf(elf: Option<&Path>) -> io::Result<Option<ElfSymbols>> {
    elf.map(|path| {
        vftrace_symbols::elf_functions(path)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vftrace_format::record::RecordType;
    use vftrace_format::stream::{Header, StreamWriter, TscHzSource};

    /// Hostile numbers in the header and thread stats must give a report, not an overflow.
    #[test]
    fn hostile_counts_and_load_address_do_not_overflow() {
        let mut stream = Vec::new();
        let mut w = StreamWriter::new(|b: &[u8]| stream.extend_from_slice(b));
        w.header(&Header {
            start_tsc: 0,
            tsc_hz: 2_000_000_000,
            tsc_hz_source: TscHzSource::Cpuid15,
            load_address: u64::MAX,
            load_end: 0,
            pid: 1,
            session_id: 1,
            image_name: b"../../evil",
            cmdline: b"",
        })
        .unwrap();
        let records = [
            Record::new(10, RecordType::Entry, 0, 0x1000).to_bytes(),
            Record::new(20, RecordType::Exit, 0, 0x1000).to_bytes(),
        ];
        w.records(1, 0, &records).unwrap();
        w.thread_stats(&ThreadStats {
            tid: 1,
            records: 2,
            lost: u64::MAX,
            overwritten: u64::MAX,
            unhooked: 0,
        })
        .unwrap();
        w.end(30, 1).unwrap();
        let out =
            std::env::temp_dir().join(format!("vftrace-guest-hostile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let report = capture(&stream[..], &out, &CaptureOptions::default()).unwrap();
        assert!(report.error.is_none(), "{:?}", report.error);
        assert_eq!(report.records, 2);
        assert_eq!(report.lost(), u64::MAX);
        let _ = std::fs::remove_dir_all(&out);
    }
}
