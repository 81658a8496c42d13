//! Draining a running guest's trace pool through its RAM file: `vftrace capture --live` and
//! `vftrace demo`.
//!
//! The guest (see examples/unikernel) creates its pool for a consumer (`vftrace::init_drained`),
//! posts its stream header into it and announces it once on its debug console:
//! `vftrace-pool addr=0x... len=N`. The address is guest-physical, which is the offset in the
//! RAM file of QEMU's `memory-backend-file,share=on` (below 2 GiB on every QEMU x86 machine).
//! The host maps that part of the file shared and runs the pool's consumer
//! (`vftrace_format::pool::drain::Drain`, the one `vftrace record` uses): full chunks go to
//! `TID.dat` and back onto the guest's free list, with no VM exit. When the guest is gone
//! (exited, crashed, or hung and killed), a last pass reads the chunks it had not published as
//! far as their write cursors (complete records only), and the end-of-run stream, if the guest
//! got to write one, gives the markers.
//!
//! Guest memory is hostile: the announcement is checked against the file, the pool against the
//! geometry the host computes itself, and the drain cuts the trace where the pool's control
//! words are overwritten. Host memory is the mapping (at most [`MAX_POOL_BYTES`]), the console
//! line being read and the drain's bounded tables.
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vftrace_format::clock::{ClockMap, ClockSource};
use vftrace_format::dir::TraceDirWriter;
use vftrace_format::output::OutputDir;
use vftrace_format::pool::drain::Drain;
use vftrace_format::pool::Pool;
use vftrace_format::stream::{Marker, OwnedHeader, Payload, StreamReader};
use vftrace_symbols::ElfSymbols;

use crate::capture::{read_elf, GuestFiles};
use crate::extract::{extract_stream, Announcement, POOL_LINE, STREAM_LINE};

/// The largest pool the host maps.
pub const MAX_POOL_BYTES: u64 = 4 << 30;
/// The smallest pool a guest can have (tables and a chunk).
const MIN_POOL_BYTES: u64 = 64 << 10;
/// Console lines longer than this are not announcements (and are not kept).
const MAX_LINE: usize = 256;
/// Console bytes read per step, so that a guest printing without end cannot stall the drain.
const CONSOLE_PER_STEP: usize = 1 << 20;
/// Console bytes read at the end in search of the stream announcement.
const CONSOLE_AT_END: usize = 64 << 20;

/// What to drain and where to.
#[derive(Clone, Copy, Debug)]
pub struct LiveOptions<'a> {
    /// The guest's RAM file (QEMU `memory-backend-file,share=on`).
    pub ram: &'a Path,
    /// The file the guest's debug console writes (QEMU `-chardev file,path=...` behind
    /// `-device isa-debugcon`). Removed first if it exists: QEMU creates it afresh, and an old
    /// one would announce an old pool.
    pub console: &'a Path,
    pub output: &'a Path,
    pub elf: Option<&'a Path>,
    /// The guest's TSC frequency, overriding what it reports.
    pub tsc_hz: Option<f64>,
    /// The host's TSC frequency, for a guest that reports none (under KVM a guest's TSC runs
    /// at the host's rate).
    pub host_tsc_hz: f64,
}

/// What a live capture found.
#[derive(Debug, Default)]
pub struct LiveReport {
    pub header: Option<OwnedHeader>,
    pub pool: Option<Announcement>,
    /// Records written to the directory (LOST records included).
    pub records: u64,
    pub chunks: u64,
    pub bytes: u64,
    /// Records the guest dropped (pool full) and calls it could not record.
    pub lost: u64,
    pub unrecorded: u64,
    /// Threads with records.
    pub tids: Vec<u32>,
    pub symbols: usize,
    /// The markers of the end-of-run stream (none if the guest did not get that far).
    pub marker_port: Option<u16>,
    pub markers: Vec<Marker>,
    pub tsc_hz: f64,
    /// Time spent in passes that drained something, and since the capture started.
    pub busy: Duration,
    pub elapsed: Duration,
    /// Why the trace ends before the guest did (its pool was overwritten): what came before is
    /// in the directory.
    pub cut: Option<String>,
    pub warnings: Vec<String>,
}

impl LiveReport {
    /// MB (10^6 bytes) of records per second of drain work.
    pub fn drain_rate_mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.busy.as_secs_f64().max(1e-9)
    }
}

/// A live capture in progress: [`LiveCapture::step`] while the guest runs, then
/// [`LiveCapture::finish`].
pub struct LiveCapture {
    // Fields drop in order: the writer (which flushes) before the temporary directory, the
    // drain before the mapping it reads.
    writer: TraceDirWriter,
    attached: Option<Attached>,
    out: OutputDir,
    ram: PathBuf,
    console: ConsoleWatch,
    elf: Option<ElfSymbols>,
    tsc_hz: Option<f64>,
    host_tsc_hz: f64,
    /// Why the announced pool cannot be used.
    refused: Option<String>,
    started: Instant,
    busy: Duration,
}

struct Attached {
    drain: Drain,
    _map: RamMap,
    announced: Announcement,
}

impl LiveCapture {
    /// Reads the ELF (a wrong one costs nothing), prepares the output beside its target and
    /// removes a leftover console file. Call before the guest boots.
    pub fn new(opts: &LiveOptions<'_>) -> io::Result<LiveCapture> {
        let inputs: Vec<&Path> = [opts.ram, opts.console]
            .into_iter()
            .chain(opts.elf)
            .collect();
        let out = OutputDir::create(opts.output, &inputs)?;
        let elf = read_elf(opts.elf)?;
        match std::fs::remove_file(opts.console) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "cannot remove the old console file {}: {e}",
                        opts.console.display()
                    ),
                ))
            }
            _ => {}
        }
        Ok(LiveCapture {
            writer: TraceDirWriter::create(out.path())?,
            attached: None,
            out,
            ram: opts.ram.to_path_buf(),
            console: ConsoleWatch::new(opts.console),
            elf,
            tsc_hz: opts.tsc_hz,
            host_tsc_hz: opts.host_tsc_hz,
            refused: None,
            started: Instant::now(),
            busy: Duration::ZERO,
        })
    }

    /// One step while the guest runs: looks for the announcement, then drains what is full.
    /// Returns how many chunks were drained.
    pub fn step(&mut self) -> io::Result<u64> {
        self.console.poll(CONSOLE_PER_STEP)?;
        self.attach_if_announced();
        let Some(at) = self.attached.as_mut() else {
            return Ok(0);
        };
        let started = Instant::now();
        let mut drained = at.drain.pass(&mut self.writer, false)?;
        if at.drain.clock().is_none() {
            if let Some(clock) = at
                .drain
                .kernel
                .as_ref()
                .map(|h| clock(h, self.tsc_hz, self.host_tsc_hz))
            {
                at.drain.set_clock(clock);
                drained += at.drain.pass(&mut self.writer, false)?;
            }
        }
        if drained > 0 {
            self.busy += started.elapsed();
        }
        Ok(drained)
    }

    /// Bytes of records drained so far.
    pub fn drained_bytes(&self) -> u64 {
        self.attached.as_ref().map_or(0, |a| a.drain.totals.bytes)
    }

    /// Whether the guest has announced its pool and the host took it.
    pub fn attached(&self) -> bool {
        self.attached.is_some()
    }

    fn attach_if_announced(&mut self) {
        if self.attached.is_some() || self.refused.is_some() {
            return;
        }
        let Some(a) = self.console.pool else {
            return;
        };
        let attached = RamMap::open(&self.ram, a).and_then(|map| {
            // SAFETY: the mapping is `a.len` bytes, readable and writable, and stays mapped as
            // long as the drain that uses it (both in `Attached`, the drain dropped first).
            match unsafe { Pool::attach(map.ptr, map.len) } {
                Ok(pool) => Ok((map, pool)),
                Err(e) => Err(e.to_string()),
            }
        });
        match attached {
            Ok((map, pool)) => {
                self.attached = Some(Attached {
                    drain: Drain::new(pool),
                    _map: map,
                    announced: a,
                })
            }
            Err(e) => {
                self.refused = Some(format!(
                    "the guest announced a trace pool at {:#x} ({} bytes) in {}, but {e}",
                    a.addr,
                    a.len,
                    self.ram.display()
                ))
            }
        }
    }

    /// After the guest is gone: what it did not publish (as far as it is complete), the final
    /// counters, the markers of its end-of-run stream, the metadata; then the directory is put
    /// in place. An error when there is nothing to keep (the previous output stays as it was).
    pub fn finish(mut self) -> io::Result<LiveReport> {
        self.console.poll(CONSOLE_AT_END)?;
        // The guest may have announced its pool and ended before a step saw it.
        self.attach_if_announced();
        let LiveCapture {
            mut writer,
            mut attached,
            out,
            ram,
            console,
            elf,
            tsc_hz,
            host_tsc_hz,
            refused,
            started,
            busy,
        } = self;
        let Some(at) = attached.as_mut() else {
            let why = refused.unwrap_or_else(|| format!(
                "the guest never announced a trace pool on its console ({}); boot it with `live` (or `wait`) on its command line, its debug console going to that file",
                console.path.display()
            ));
            return Err(io::Error::new(io::ErrorKind::InvalidData, why));
        };
        let drain = &mut at.drain;
        if drain.clock().is_none() {
            // Its messages, if they came after the last step.
            drain.pass(&mut writer, false)?;
        }
        let Some(header) = drain.kernel.clone() else {
            let why = drain
                .cut
                .clone()
                .unwrap_or_else(|| "nothing overwrote it".into());
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the guest announced its trace pool at {:#x} but never said what it runs (no header message in the pool; {why})", at.announced.addr),
            ));
        };
        let clock = drain
            .clock()
            .cloned()
            .unwrap_or_else(|| clock(&header, tsc_hz, host_tsc_hz));
        drain.set_clock(clock);
        drain.pass(&mut writer, true)?;
        drain.finish_threads(&mut writer)?;

        let mut report = LiveReport {
            pool: Some(at.announced),
            chunks: drain.totals.chunks,
            bytes: drain.totals.bytes,
            tsc_hz: clock.tsc_hz,
            busy,
            cut: drain.cut.clone(),
            warnings: drain
                .warnings
                .iter()
                .filter(|w| Some(*w) != drain.cut.as_ref())
                .cloned()
                .collect(),
            lost: drain.skipped_records,
            ..LiveReport::default()
        };
        for t in drain.threads.values() {
            report.records += t.written;
            report.lost = report
                .lost
                .saturating_add(t.info.lost)
                .saturating_add(t.info.overwritten);
            report.unrecorded = report.unrecorded.saturating_add(t.info.unrecorded);
            if let Some(cut) = &t.cut {
                report.warnings.push(format!(
                    "thread {}: its trace ends early: {cut}",
                    t.info.tid
                ));
            }
        }
        let (marker_port, markers) = match console.stream {
            Some(a) => end_of_run_markers(&ram, a, &mut report.warnings),
            None => {
                report.warnings.push("the guest wrote no end-of-run stream (it did not get that far): the trace has no markers".into());
                (None, Vec::new())
            }
        };
        report.tids = writer
            .record_tids()
            .into_iter()
            .filter(|&t| writer.record_count(t) > 0)
            .collect();
        if report.tids.is_empty() {
            let why = report
                .cut
                .clone()
                .unwrap_or_else(|| "the guest recorded nothing".into());
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no records came from the guest's pool: {why}"),
            ));
        }
        let files = GuestFiles {
            header: &header,
            tids: &report.tids,
            elf: elf.as_ref(),
            marker_port,
            markers: &markers,
        };
        report.symbols = files.write(&mut writer)?;
        writer.write_clock(&clock)?;
        writer.finish()?;
        drop(attached);
        out.commit()?;
        report.header = Some(header);
        (report.marker_port, report.markers) = (marker_port, markers);
        report.elapsed = started.elapsed();
        Ok(report)
    }
}

/// Drains `capture` while `running()` says the guest runs, pausing `interval` after each pass,
/// then finishes it.
pub fn drain_while(
    mut capture: LiveCapture,
    interval: Duration,
    mut running: impl FnMut() -> bool,
) -> io::Result<LiveReport> {
    while running() {
        capture.step()?;
        std::thread::sleep(interval);
    }
    capture.finish()
}

/// The guest's clock: its TSC from its start, at the frequency given, or reported (if it is
/// one a CPU could have), or the host's.
fn clock(header: &OwnedHeader, given: Option<f64>, host: f64) -> ClockMap {
    let reported = (header.tsc_hz as f64 >= 1e6 && header.tsc_hz as f64 <= 1e11)
        .then_some(header.tsc_hz as f64);
    let hz = given.or(reported).unwrap_or(host);
    ClockMap::new(hz, header.start_tsc, 0, ClockSource::Guest)
}

/// The markers frame of the guest's end-of-run stream (problems become warnings: the trace is
/// whole without them).
fn end_of_run_markers(
    ram: &Path,
    a: Announcement,
    warnings: &mut Vec<String>,
) -> (Option<u16>, Vec<Marker>) {
    let bytes = match extract_stream(ram, a) {
        Ok(b) => b,
        Err(e) => {
            warnings.push(format!(
                "the end-of-run stream cannot be read ({e}): the trace has no markers"
            ));
            return (None, Vec::new());
        }
    };
    for frame in StreamReader::new(bytes.as_slice()) {
        match frame {
            Ok(f) => {
                if let Payload::Markers { port, markers } = f.payload {
                    return (Some(port), markers);
                }
            }
            Err(e) => {
                warnings.push(format!(
                    "the end-of-run stream is damaged ({e}): the trace has no markers"
                ));
                break;
            }
        }
    }
    (None, Vec::new())
}

/// Incremental reader of the guest's console file: finds the announcement lines as they come.
struct ConsoleWatch {
    path: PathBuf,
    offset: u64,
    line: Vec<u8>,
    overlong: bool,
    buf: Vec<u8>,
    /// The first pool announcement, the last stream announcement.
    pool: Option<Announcement>,
    stream: Option<Announcement>,
}

impl ConsoleWatch {
    fn new(path: &Path) -> ConsoleWatch {
        ConsoleWatch {
            path: path.to_path_buf(),
            offset: 0,
            line: Vec::with_capacity(MAX_LINE),
            overlong: false,
            buf: vec![0; 64 << 10],
            pool: None,
            stream: None,
        }
    }

    /// Reads at most `budget` new bytes (none if the file is not there yet).
    fn poll(&mut self, mut budget: usize) -> io::Result<()> {
        let path = self.path.clone();
        let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(named(e)),
        };
        let len = file.metadata().map_err(named)?.len();
        if len < self.offset {
            // Made afresh (a new QEMU): start over.
            self.offset = 0;
            self.line.clear();
        }
        file.seek(SeekFrom::Start(self.offset)).map_err(named)?;
        while budget > 0 {
            let want = self.buf.len().min(budget);
            let n = file.read(&mut self.buf[..want]).map_err(named)?;
            if n == 0 {
                break;
            }
            self.offset += n as u64;
            budget -= n;
            for i in 0..n {
                self.byte(self.buf[i]);
            }
        }
        Ok(())
    }

    fn byte(&mut self, b: u8) {
        if b != b'\n' {
            if self.line.len() < MAX_LINE {
                self.line.push(b);
            } else {
                self.overlong = true;
            }
            return;
        }
        if !self.overlong {
            let text = String::from_utf8_lossy(&self.line);
            if self.pool.is_none() {
                self.pool = Announcement::parse_line(&text, POOL_LINE);
            }
            if let Some(a) = Announcement::parse_line(&text, STREAM_LINE) {
                self.stream = Some(a);
            }
        }
        self.line.clear();
        self.overlong = false;
    }
}

/// The guest's pool, mapped shared from its RAM file.
struct RamMap {
    ptr: *mut u8,
    len: usize,
}

impl RamMap {
    /// Maps the announced bytes, after checking them against the file.
    fn open(ram: &Path, a: Announcement) -> Result<RamMap, String> {
        if !a.addr.is_multiple_of(4096) {
            return Err("its address is not page-aligned".into());
        }
        if !(MIN_POOL_BYTES..=MAX_POOL_BYTES).contains(&a.len) {
            return Err(format!(
                "its size is not between {MIN_POOL_BYTES} bytes and {MAX_POOL_BYTES} bytes"
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(ram)
            .map_err(|e| format!("the RAM file cannot be opened: {e}"))?;
        let size = file.metadata().map_err(|e| e.to_string())?.len();
        if a.addr.checked_add(a.len).is_none_or(|end| end > size) {
            return Err(format!("the RAM file has only {size} bytes"));
        }
        let len = a.len as usize;
        // SAFETY: a shared mapping of a file we opened, at a page-aligned offset inside it;
        // unmapped in Drop. QEMU maps the same file, and the guest writes it while we read:
        // everything read through it is treated as hostile (`Pool::attach`, `Drain`).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                a.addr as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "it cannot be mapped: {}",
                io::Error::last_os_error()
            ));
        }
        Ok(RamMap {
            ptr: ptr as *mut u8,
            len,
        })
    }
}

impl Drop for RamMap {
    fn drop(&mut self) {
        // SAFETY: our own mapping; the drain that used it is gone.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

// SAFETY: the mapping is plain memory whose concurrent use the pool protocol orders; the
// capture moves to the thread that drains it.
unsafe impl Send for RamMap {}
