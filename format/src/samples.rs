//! `vftrace.samples`: the stack samples `vftrace profile` took of a guest from the host, each
//! with the host TSC of its stop, for `vftrace merge` to place beside the guest's trace and the
//! host's KVM events.
//!
//! ```text
//! # vftrace profile samples 1
//! # source 127.0.0.1:1234
//! # sync 5000000000000 1000000000
//! # host_tsc vcpu cr3 cpl pause_ns stack
//! 5000002596130 0 0x108000 3 95000 guest_main;guest::workload::fib;guest::workload::fib
//! # sync 5002596130000 2000000000
//! # tsc_hz 2596130000
//! ```
//! The stack is the folded form, outermost frame first (names may contain spaces: it is the
//! rest of the line). `cr3` and `cpl` are `-` when the stub did not say. `sync` lines are
//! (host TSC, CLOCK_MONOTONIC ns) pairs. Written by the profiler, so less hostile than guest
//! data, but a file is a file: every line is checked and errors name it.
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::error::FormatError;

pub const SAMPLES_FILE: &str = "vftrace.samples";
const MAGIC: &str = "# vftrace profile samples 1";
const MAX_LINE: usize = 1 << 20;

/// One sample of one vCPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileSample {
    pub host_tsc: u64,
    /// The vCPU's index in the stub's thread list.
    pub vcpu: u32,
    pub cr3: Option<u64>,
    pub cpl: Option<u8>,
    /// How long the VM was stopped for the sample this came from.
    pub pause_ns: u64,
    /// Folded stack, outermost first, `;`-separated.
    pub stack: String,
}

/// What the comment lines say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SamplesInfo {
    pub source: Option<String>,
    /// (host TSC, CLOCK_MONOTONIC ns).
    pub syncs: Vec<(u64, u64)>,
    pub tsc_hz: Option<f64>,
}

/// Writes the first lines of a samples file.
pub fn write_header(mut w: impl Write, source: &str, sync: (u64, u64)) -> io::Result<()> {
    writeln!(w, "{MAGIC}")?;
    writeln!(w, "# source {}", one_line(source))?;
    writeln!(w, "# sync {} {}", sync.0, sync.1)?;
    writeln!(w, "# host_tsc vcpu cr3 cpl pause_ns stack")
}

/// Writes one sample line. Line breaks in frame names become `?`.
pub fn write_sample(mut w: impl Write, s: &ProfileSample) -> io::Result<()> {
    let cr3 = s.cr3.map_or("-".to_string(), |c| format!("{c:#x}"));
    let cpl = s.cpl.map_or("-".to_string(), |c| c.to_string());
    writeln!(
        w,
        "{} {} {cr3} {cpl} {} {}",
        s.host_tsc,
        s.vcpu,
        s.pause_ns,
        one_line(&s.stack)
    )
}

/// Writes the closing lines: the last clock pair and the TSC frequency, if known.
pub fn write_trailer(mut w: impl Write, sync: (u64, u64), tsc_hz: Option<f64>) -> io::Result<()> {
    writeln!(w, "# sync {} {}", sync.0, sync.1)?;
    if let Some(hz) = tsc_hz {
        writeln!(w, "# tsc_hz {hz:.0}")?;
    }
    Ok(())
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], "?")
}

/// Reads a samples file line by line.
pub struct SamplesReader {
    path: PathBuf,
    reader: BufReader<File>,
    line: usize,
    buf: String,
    pub info: SamplesInfo,
}

impl SamplesReader {
    /// Opens `path`, or `path/vftrace.samples` when it is a directory (the profile's output).
    pub fn open(path: &Path) -> Result<SamplesReader, FormatError> {
        let path = if path.is_dir() {
            path.join(SAMPLES_FILE)
        } else {
            path.to_path_buf()
        };
        let file = File::open(&path).map_err(|e| FormatError::io(&path, &e))?;
        let mut reader = SamplesReader {
            reader: BufReader::new(file),
            path,
            line: 0,
            buf: String::new(),
            info: SamplesInfo::default(),
        };
        match reader.next_line()? {
            Some(first) if first.trim_end() == MAGIC => Ok(reader),
            _ => Err(FormatError::at_line(
                &reader.path,
                1,
                format!("not a vftrace samples file (the first line must be {MAGIC:?})"),
            )),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn next_line(&mut self) -> Result<Option<&str>, FormatError> {
        self.buf.clear();
        let n = io::Read::take(&mut self.reader, MAX_LINE as u64 + 1)
            .read_line(&mut self.buf)
            .map_err(|e| FormatError::at_line(&self.path, self.line + 1, e.to_string()))?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        if n > MAX_LINE {
            return Err(FormatError::at_line(
                &self.path,
                self.line,
                "line longer than 1 MiB",
            ));
        }
        Ok(Some(self.buf.trim_end_matches(['\n', '\r'])))
    }

    /// The next sample; `None` at the end of the file. Comment lines update [`Self::info`].
    pub fn next_sample(&mut self) -> Result<Option<ProfileSample>, FormatError> {
        loop {
            let path = self.path.clone();
            let n = self.line + 1;
            let Some(line) = self.next_line()? else {
                return Ok(None);
            };
            let err = |m: &str| FormatError::at_line(&path, n, format!("{m}: {line:?}"));
            if let Some(comment) = line.strip_prefix('#') {
                let comment = comment.trim();
                if let Some(source) = comment.strip_prefix("source ") {
                    self.info.source = Some(source.to_string());
                } else if let Some(pair) = comment.strip_prefix("sync ") {
                    let mut it = pair.split_whitespace().map(str::parse::<u64>);
                    match (it.next(), it.next()) {
                        (Some(Ok(tsc)), Some(Ok(ns))) => self.info.syncs.push((tsc, ns)),
                        _ => return Err(err("expected `# sync TSC NS`")),
                    }
                } else if let Some(hz) = comment.strip_prefix("tsc_hz ") {
                    match hz.trim().parse::<f64>() {
                        Ok(hz) if hz.is_finite() && hz > 0.0 => self.info.tsc_hz = Some(hz),
                        _ => return Err(err("expected `# tsc_hz HZ`")),
                    }
                }
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            let mut fields = line.splitn(6, ' ');
            let mut next = |what: &str| fields.next().ok_or_else(|| err(&format!("no {what}")));
            let host_tsc = next("host_tsc")?
                .parse()
                .map_err(|_| err("host_tsc is not a number"))?;
            let vcpu = next("vcpu")?
                .parse()
                .map_err(|_| err("vcpu is not a number"))?;
            let cr3 = match next("cr3")? {
                "-" => None,
                t => Some(
                    t.strip_prefix("0x")
                        .and_then(|h| u64::from_str_radix(h, 16).ok())
                        .ok_or_else(|| err("cr3 is not 0x-hex or -"))?,
                ),
            };
            let cpl = match next("cpl")? {
                "-" => None,
                t => Some(
                    t.parse::<u8>()
                        .ok()
                        .filter(|c| *c <= 3)
                        .ok_or_else(|| err("cpl is not 0..3 or -"))?,
                ),
            };
            let pause_ns = next("pause_ns")?
                .parse()
                .map_err(|_| err("pause_ns is not a number"))?;
            let stack = next("stack")?.to_string();
            return Ok(Some(ProfileSample {
                host_tsc,
                vcpu,
                cr3,
                cpl,
                pause_ns,
                stack,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vftrace-samples-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn written_samples_read_back() {
        let mut out = Vec::new();
        write_header(&mut out, "127.0.0.1:1234", (100, 200)).unwrap();
        let a = ProfileSample {
            host_tsc: 1000,
            vcpu: 1,
            cr3: Some(0x108000),
            cpl: Some(3),
            pause_ns: 95000,
            stack: "guest_main;<T as core::fmt::Debug>::fmt".into(),
        };
        let b = ProfileSample {
            cr3: None,
            cpl: None,
            stack: "bad\nname".into(),
            ..a.clone()
        };
        write_sample(&mut out, &a).unwrap();
        write_sample(&mut out, &b).unwrap();
        write_trailer(&mut out, (300, 400), Some(2.5e9)).unwrap();
        let p = file("ok", &out);
        let mut r = SamplesReader::open(&p).unwrap();
        assert_eq!(r.next_sample().unwrap().unwrap(), a);
        let b2 = r.next_sample().unwrap().unwrap();
        assert_eq!(
            (b2.cr3, b2.cpl, b2.stack.as_str()),
            (None, None, "bad?name")
        );
        assert_eq!(r.next_sample().unwrap(), None);
        assert_eq!(r.info.syncs, [(100, 200), (300, 400)]);
        assert_eq!(r.info.tsc_hz, Some(2.5e9));
        assert_eq!(r.info.source.as_deref(), Some("127.0.0.1:1234"));
    }

    #[test]
    fn bad_files_name_the_line() {
        let p = file("notours", b"hello\n");
        assert!(SamplesReader::open(&p)
            .err()
            .unwrap()
            .to_string()
            .contains(":1: not a vftrace samples file"));
        let p = file(
            "bad",
            format!("{MAGIC}\n1 0 0x10 3 5 a;b\n1 0 0x10 7 5 a\n").as_bytes(),
        );
        let mut r = SamplesReader::open(&p).unwrap();
        r.next_sample().unwrap();
        let e = r.next_sample().unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("cpl"), "{e}");
        let p = file("short", format!("{MAGIC}\n1 0 0x10\n").as_bytes());
        let e = SamplesReader::open(&p).unwrap().next_sample().unwrap_err();
        assert!(e.message.contains("no cpl"), "{e}");
    }
}
