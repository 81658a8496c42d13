//! Timeline writers (Chrome trace JSON, Perfetto protobuf) and streaming conversion of uftrace
//! directories.
//!
//! Everything that produces a timeline (the uftrace-directory converter here, the guest/host
//! merge tool) talks to a [`TimelineSink`]; [`TimelineOutput`] picks the writer from the output
//! file's extension and writes the file safely (a temporary renamed when complete).

use std::io::{self, Write};
use std::path::Path;

use vftrace_format::output::OutputFile;

mod chrome;
mod convert;
mod output;
mod perfetto;
mod progress;
mod thread;

pub use chrome::ChromeJsonWriter;
pub use convert::{convert_dir, ConvertError, ConvertOptions, ConvertSummary};
pub use output::BackgroundFileWriter;
pub use perfetto::PerfettoWriter;
pub use progress::TerminalProgress;
pub use thread::{Repairs, ThreadTimeline};

/// The value of one argument of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgValue<'a> {
    U64(u64),
    I64(i64),
    Str(&'a str),
    /// Shown as `0x...` (a port, an address, a raw value): a string in both formats, so that
    /// JSON and Perfetto show the same text.
    Hex(u64),
    Bool(bool),
}

/// The category of events that name none.
pub const DEFAULT_CATEGORY: &str = "vftrace";

/// What an event may carry besides its track, time and name.
#[derive(Clone, Copy, Debug, Default)]
pub struct EventExtras<'a> {
    /// `None`: [`DEFAULT_CATEGORY`].
    pub category: Option<&'static str>,
    pub args: &'a [(&'a str, ArgValue<'a>)],
    /// A flow (an arrow between two events, Perfetto's flow events) starts at this event.
    pub flow_out: Option<u64>,
    /// The flow with this id ends at this event.
    pub flow_in: Option<u64>,
}

impl<'a> EventExtras<'a> {
    pub fn category(category: &'static str) -> Self {
        EventExtras {
            category: Some(category),
            ..Default::default()
        }
    }

    pub fn with_args(self, args: &'a [(&'a str, ArgValue<'a>)]) -> Self {
        EventExtras { args, ..self }
    }

    pub(crate) fn category_name(&self) -> &'static str {
        self.category.unwrap_or(DEFAULT_CATEGORY)
    }
}

/// A consumer of timeline events: processes containing thread tracks, nested slices on each
/// track and instant events. Timestamps are nanoseconds on one scale shared by all tracks.
///
/// Slices on one track must nest (`end` closes the most recent open `begin` of that track).
/// Events need not be in time order across tracks; within one track they should be.
///
/// Both writers give every event a category, and the same arguments (slices: those of the
/// begin and the end together) and flows, so that Perfetto shows the same thing for either
/// file.
pub trait TimelineSink {
    /// Names a process-level group (e.g. "guest vCPUs", "host: qemu-system-x86 1234", "KVM").
    fn process(&mut self, pid: u32, name: &str) -> io::Result<()>;
    /// Names a track inside a process (a thread / vCPU / event lane).
    fn thread(&mut self, pid: u32, tid: u32, name: &str) -> io::Result<()>;
    /// A slice begins (no arguments; the sink's category, else [`DEFAULT_CATEGORY`]).
    fn begin(&mut self, pid: u32, tid: u32, ts_ns: u64, name: &str) -> io::Result<()> {
        self.begin_with(pid, tid, ts_ns, name, &EventExtras::default())
    }
    /// The slice ends, with no arguments of its own.
    fn end(&mut self, pid: u32, tid: u32, ts_ns: u64) -> io::Result<()> {
        self.end_with(pid, tid, ts_ns, &[])
    }
    fn begin_with(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        name: &str,
        extras: &EventExtras,
    ) -> io::Result<()>;
    /// Ends the slice, adding `args` to those it began with.
    fn end_with(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        args: &[(&str, ArgValue)],
    ) -> io::Result<()>;
    fn instant_with(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        name: &str,
        extras: &EventExtras,
    ) -> io::Result<()>;
    /// An instant of the default category.
    fn instant(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        name: &str,
        args: &[(&str, ArgValue)],
    ) -> io::Result<()> {
        self.instant_with(
            pid,
            tid,
            ts_ns,
            name,
            &EventExtras::default().with_args(args),
        )
    }
    /// Completes the output (closing brackets, buffered data) and flushes it. Call it once, last;
    /// without it the output is incomplete.
    fn finish(&mut self) -> io::Result<()>;
}

/// The timeline file formats this crate writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Chrome trace event JSON (`{"traceEvents":[...]}`), read by Perfetto UI, chrome://tracing,
    /// speedscope and many scripts.
    ChromeJson,
    /// Perfetto's native protobuf trace: several times smaller, loads fastest in Perfetto UI.
    Perfetto,
}

impl OutputFormat {
    /// The format an output file name implies: `.json` is Chrome JSON; `.pftrace`,
    /// `.perfetto-trace` and `.pb` are Perfetto.
    pub fn from_path(path: &Path) -> Option<OutputFormat> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        if name.ends_with(".json") {
            Some(OutputFormat::ChromeJson)
        } else if [".pftrace", ".perfetto-trace", ".pb"]
            .iter()
            .any(|ext| name.ends_with(ext))
        {
            Some(OutputFormat::Perfetto)
        } else {
            None
        }
    }
}

/// A timeline file being written: events go to [`sink`](Self::sink), whose file is a
/// temporary beside the target (see `vftrace_format::output`); [`commit`](Self::commit) after
/// [`TimelineSink::finish`] puts it in place. Dropped uncommitted (an error), it leaves the
/// previous file as it was and no temporary.
pub struct TimelineOutput {
    pub sink: Box<dyn TimelineSink>,
    file: OutputFile,
}

impl TimelineOutput {
    /// Checks the output against `inputs` (refusing one that would overwrite an input) and
    /// its format (`format`, or the one its extension implies, see
    /// [`OutputFormat::from_path`]), before anything is created; then creates the temporary.
    pub fn create(
        path: &Path,
        format: Option<OutputFormat>,
        inputs: &[&Path],
    ) -> io::Result<TimelineOutput> {
        let format = match format.or_else(|| OutputFormat::from_path(path)) {
            Some(f) => f,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{}: cannot tell the output format from the file name; name it *.json (Chrome trace JSON) \
                         or *.pftrace (Perfetto), or give the format explicitly",
                        path.display()
                    ),
                ))
            }
        };
        let file = OutputFile::create(path, inputs)?;
        let out = BackgroundFileWriter::new(file.writer()?, path)?;
        let sink: Box<dyn TimelineSink> = match format {
            OutputFormat::ChromeJson => {
                Box::new(ChromeJsonWriter::complete(out)?.hand_over_buffers())
            }
            OutputFormat::Perfetto => Box::new(PerfettoWriter::new(out)?.hand_over_buffers()),
        };
        Ok(TimelineOutput { sink, file })
    }

    /// The file being written (the temporary).
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Puts the finished file in place; call after `sink.finish()` succeeded.
    pub fn commit(self) -> io::Result<()> {
        // Joins the writing thread: everything is in the file before it is renamed.
        drop(self.sink);
        self.file.commit()
    }
}

/// Writes `buf` to `out` once it holds at least this many bytes: both writers format events
/// into a `Vec` first, which is much cheaper than many small `write` calls. Handed whole to a
/// [`BackgroundFileWriter`], a buffer this big costs its thread one wake-up and one `write`.
const FLUSH_THRESHOLD: usize = 1 << 20;

/// Sends the collected bytes to `out` and empties `buf`.
fn drain<W: Write>(buf: &mut Vec<u8>, out: &mut W) -> io::Result<()> {
    out.write_all(buf)?;
    buf.clear();
    Ok(())
}
