//! The files a profile leaves in its directory, each written to a temporary file beside it and
//! renamed when complete:
//! - `stacks.folded`: `frame;frame;frame count` lines (flamegraph.pl, inferno, speedscope);
//! - `flamegraph.svg`: drawn by inferno, outermost frames at the bottom, leaf-most on top;
//! - `vcpus.txt`: samples per (vCPU, CR3, CPL), DTrace's `vmregs` view: which vCPU ran which
//!   address space at which privilege level;
//! - `vftrace.samples` (written while sampling, see [`vftrace_format::samples`]): every sample
//!   with its host TSC, for `vftrace merge --profile`.
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::aggregate::{folded_lines, Aggregate};

pub const FOLDED_FILE: &str = "stacks.folded";
pub const FLAMEGRAPH_FILE: &str = "flamegraph.svg";
pub const TABLE_FILE: &str = "vcpus.txt";
pub use vftrace_format::samples::SAMPLES_FILE;

/// Every file a profile writes, for the check that none overwrites an input.
pub const OUTPUT_FILES: [&str; 4] = [FOLDED_FILE, FLAMEGRAPH_FILE, TABLE_FILE, SAMPLES_FILE];

/// A file written under a temporary name beside its target and renamed over it by
/// [`AtomicFile::commit`]; dropped without commit, the temporary file is removed.
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    out: Option<BufWriter<File>>,
}

impl AtomicFile {
    pub fn create(target: &Path) -> io::Result<AtomicFile> {
        let name = target
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let temp = target.with_file_name(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = File::create(&temp).map_err(|e| with_path(&temp, e))?;
        Ok(AtomicFile {
            target: target.to_path_buf(),
            temp,
            out: Some(BufWriter::new(file)),
        })
    }

    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.out.as_mut().expect("not committed yet")
    }

    pub fn commit(mut self) -> io::Result<PathBuf> {
        let out = self.out.take().expect("committed once");
        let file = out
            .into_inner()
            .map_err(|e| with_path(&self.temp, e.into_error()))?;
        file.sync_all().map_err(|e| with_path(&self.temp, e))?;
        std::fs::rename(&self.temp, &self.target).map_err(|e| with_path(&self.target, e))?;
        Ok(self.target.clone())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

pub(crate) fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Writes `text` as `dir/name`.
fn write_file(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> io::Result<PathBuf> {
    let target = dir.join(name);
    let mut f = AtomicFile::create(&target)?;
    write(f.writer()).map_err(|e| with_path(&target, e))?;
    f.commit()
}

/// What the flame graph's title says was sampled.
pub struct Title {
    pub title: String,
    pub subtitle: String,
}

/// Writes the folded stacks, the flame graph (if there is a sample) and the table; returns the
/// paths written.
pub fn write_profile(dir: &Path, profile: &Aggregate, title: &Title) -> io::Result<Vec<PathBuf>> {
    let lines = folded_lines(&profile.stacks);
    let mut written = vec![write_file(dir, FOLDED_FILE, |w| {
        for line in &lines {
            writeln!(w, "{line}")?;
        }
        Ok(())
    })?];
    if !lines.is_empty() {
        written.push(write_file(dir, FLAMEGRAPH_FILE, |w| {
            let mut options = inferno::flamegraph::Options::default();
            options.title = title.title.clone();
            options.subtitle = Some(title.subtitle.clone());
            options.count_name = "samples".into();
            inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), w)
        })?);
    }
    written.push(write_file(dir, TABLE_FILE, |w| write_table(w, profile))?);
    Ok(written)
}

/// The (vCPU, CR3, CPL) table.
fn write_table(w: &mut impl Write, profile: &Aggregate) -> io::Result<()> {
    let total = profile.samples().max(1) as f64;
    writeln!(
        w,
        "# samples per vCPU, address space (CR3) and privilege level (CPL)"
    )?;
    writeln!(
        w,
        "{:>5}  {:>18}  {:>3}  {:>9}  {:>6}  most frequent leaf",
        "vcpu", "cr3", "cpl", "samples", "share"
    )?;
    let mut rows: Vec<_> = profile.groups.iter().collect();
    rows.sort_by(|a, b| b.1.samples.cmp(&a.1.samples).then(a.0.cmp(b.0)));
    for (key, group) in rows {
        let cr3 = key.cr3.map_or("-".to_string(), |c| format!("{c:#018x}"));
        let cpl = key.cpl.map_or("-".to_string(), |c| c.to_string());
        let leaf = group
            .top_leaf()
            .map(|(name, n)| format!("{name} ({:.1}%)", 100.0 * n as f64 / group.samples as f64))
            .unwrap_or_default();
        writeln!(
            w,
            "{:>5}  {cr3:>18}  {cpl:>3}  {:>9}  {:>5.1}%  {leaf}",
            key.vcpu,
            group.samples,
            100.0 * group.samples as f64 / total
        )?;
    }
    Ok(())
}
