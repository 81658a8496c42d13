//! Safe outputs and capped reads: the one way every vftrace command writes its results and
//! reads whole files.
//!
//! - [`OutputFile`] and [`OutputDir`] write under a temporary name beside the target
//!   (`.NAME.vftrace-tmp-PID-N`, same file system) and rename it into place on
//!   [`commit`](OutputFile::commit). A run that fails (error, panic, early return) drops the
//!   guard, which removes the temporary: the previous output is untouched and nothing is left.
//! - Both refuse, before anything is created, an output that is an input, lies inside an input
//!   directory, or would replace a directory that holds an input ([`check_output`]). Paths
//!   are compared canonicalized (symlinks resolved; an output that does not exist yet by its
//!   nearest existing ancestor), and existing files also by device and inode (hard links).
//! - [`read_capped`] reads a whole file, failing with the limit named when the file is larger,
//!   without reading it first when its size is known (a 3 GB sparse file costs nothing) and
//!   after at most `limit + 1` bytes when it is not (`/dev/zero`, a pipe).
//!
//! ```no_run
//! use std::io::Write;
//! use std::path::Path;
//! use vftrace_format::output::{OutputDir, OutputFile};
//!
//! # fn main() -> std::io::Result<()> {
//! let input = Path::new("uftrace.data");
//! let mut out = OutputFile::create(Path::new("trace.json"), &[input])?;
//! out.write_all(b"{}")?;
//! out.commit()?; // trace.json replaced only now
//!
//! let dir = OutputDir::create(Path::new("guest.uftrace"), &[Path::new("stream.bin")])?;
//! std::fs::write(dir.path().join("info"), b"...")?; // write into the temporary directory
//! dir.commit()?; // guest.uftrace replaced as a whole
//! # Ok(())
//! # }
//! ```

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes the temporaries of one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `dir/.NAME.vftrace-TAG-PID-N`: hidden, beside `target`, unique in this process.
fn sibling(target: &Path, tag: &str) -> io::Result<PathBuf> {
    let name = target.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: an output needs a file name", target.display()),
        )
    })?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let hidden = format!(
        ".{}.vftrace-{tag}-{}-{n}",
        name.to_string_lossy(),
        std::process::id()
    );
    Ok(parent_of(target).join(hidden))
}

/// The directory holding `path` (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// `path` made absolute with symlinks resolved, also when it does not exist yet: its nearest
/// existing ancestor is canonicalized and the rest appended (`..` after a missing component is
/// resolved textually, as the kernel would once the component existed).
pub fn resolve(path: &Path) -> io::Result<PathBuf> {
    let absolute = std::path::absolute(path).map_err(|e| with_path(e, path))?;
    let mut existing = absolute.as_path();
    let mut rest: Vec<Component> = Vec::new();
    loop {
        match fs::canonicalize(existing) {
            Ok(mut resolved) => {
                for c in rest.iter().rev() {
                    match c {
                        Component::ParentDir => {
                            resolved.pop();
                        }
                        Component::CurDir => {}
                        c => resolved.push(c),
                    }
                }
                return Ok(resolved);
            }
            Err(_) => {
                let (Some(parent), Some(last)) =
                    (existing.parent(), existing.components().next_back())
                else {
                    return Ok(absolute);
                };
                rest.push(last);
                existing = parent;
            }
        }
    }
}

/// Refuses `output` when it is one of `inputs`, lies inside one (an input directory), or
/// contains one (writing the output directory would replace the input). Call it before
/// creating anything; [`OutputFile::create`] and [`OutputDir::create`] do.
pub fn check_output(output: &Path, inputs: &[&Path]) -> io::Result<()> {
    let out = resolve(output)?;
    for input in inputs {
        let Ok(inp) = resolve(input) else { continue };
        let why = if out == inp || same_file(output, input) {
            "is the input"
        } else if out.starts_with(&inp) {
            "lies inside the input"
        } else if inp.starts_with(&out) {
            "would replace the directory holding the input"
        } else {
            continue;
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the output {} {why} {}; refusing to overwrite it (choose another output path)",
                output.display(),
                input.display()
            ),
        ));
    }
    Ok(())
}

/// Both paths exist and are one file (hard links).
#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Hard links are not told apart where there are no inode numbers (Hermit).
#[cfg(not(unix))]
fn same_file(_: &Path, _: &Path) -> bool {
    false
}

/// A file written under a temporary name beside its target and renamed onto it by
/// [`commit`](Self::commit); dropped uncommitted, the temporary is removed. Writes go to the
/// file ([`Write`] is implemented, or clone the handle with [`writer`](Self::writer) for
/// another thread).
#[derive(Debug)]
pub struct OutputFile {
    target: PathBuf,
    temp: PathBuf,
    file: File,
    /// The temporary has been renamed onto the target (by `publish` or `commit`).
    published: bool,
}

impl OutputFile {
    /// Checks `target` against `inputs` ([`check_output`]) and that it is not a directory,
    /// then creates the temporary file. Nothing else is touched.
    pub fn create(target: &Path, inputs: &[&Path]) -> io::Result<OutputFile> {
        check_output(target, inputs)?;
        if target.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!(
                    "the output {} is a directory; give a file name",
                    target.display()
                ),
            ));
        }
        let temp = sibling(target, "tmp")?;
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| with_path(e, target))?;
        Ok(OutputFile {
            target: target.to_path_buf(),
            temp,
            file,
            published: false,
        })
    }

    /// The path the output will have.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Where the file is now (the temporary until published).
    pub fn path(&self) -> &Path {
        if self.published {
            &self.target
        } else {
            &self.temp
        }
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Another handle to the file (for a writer thread); it stays valid across the rename.
    pub fn writer(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Renames the file onto the target now, while it is still being written: for a
    /// recording, once it has begun, a partial output is worth more than the previous one
    /// (it survives the recorder being killed). [`commit`](Self::commit) then only flushes.
    pub fn publish(&mut self) -> io::Result<()> {
        if !self.published {
            fs::rename(&self.temp, &self.target).map_err(|e| with_path(e, &self.target))?;
            self.published = true;
        }
        Ok(())
    }

    /// Flushes the file and renames it onto the target (replacing the previous output).
    pub fn commit(mut self) -> io::Result<()> {
        self.file.flush().map_err(|e| with_path(e, &self.target))?;
        self.publish()
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// A directory built under a temporary name beside its target (write into
/// [`path`](Self::path)) and put in place of the target by [`commit`](Self::commit); dropped
/// uncommitted, the temporary directory is removed with everything in it.
#[derive(Debug)]
pub struct OutputDir {
    target: PathBuf,
    temp: PathBuf,
    committed: bool,
}

impl OutputDir {
    /// Checks `target` against `inputs` ([`check_output`]); an existing target must be a
    /// directory that is empty or a trace directory (it has `info`), so a wrong path never
    /// replaces unrelated files. Then creates the parents and the empty temporary directory.
    pub fn create(target: &Path, inputs: &[&Path]) -> io::Result<OutputDir> {
        check_output(target, inputs)?;
        match existing_trace_dir(target) {
            // Those errors name the path already.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
            Err(e) => return Err(with_path(e, target)),
            Ok(_) => {}
        }
        fs::create_dir_all(parent_of(target)).map_err(|e| with_path(e, target))?;
        let temp = sibling(target, "tmp")?;
        fs::create_dir(&temp).map_err(|e| with_path(e, target))?;
        Ok(OutputDir {
            target: target.to_path_buf(),
            temp,
            committed: false,
        })
    }

    /// The temporary directory to write into.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// The path the output will have.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Puts the directory in place of the target. An existing target is first renamed aside
    /// and removed only once the new one is in place.
    pub fn commit(mut self) -> io::Result<()> {
        let old = match fs::symlink_metadata(&self.target) {
            Ok(_) => {
                let old = sibling(&self.target, "old")?;
                fs::rename(&self.target, &old).map_err(|e| with_path(e, &self.target))?;
                Some(old)
            }
            Err(_) => None,
        };
        if let Err(e) = fs::rename(&self.temp, &self.target) {
            if let Some(old) = &old {
                let _ = fs::rename(old, &self.target);
            }
            return Err(with_path(e, &self.target));
        }
        self.committed = true;
        if let Some(old) = old {
            fs::remove_dir_all(&old).map_err(|e| with_path(e, &old))?;
        }
        Ok(())
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.temp);
        }
    }
}

/// The entries of the directory `path` if a trace directory may be written there (it is empty,
/// or a trace directory: it has `info`), `None` if nothing is there. A file, or a non-empty
/// directory without `info`, is refused, so a wrong path never costs unrelated files. Other
/// errors come back as the system gave them.
pub(crate) fn existing_trace_dir(path: &Path) -> io::Result<Option<Vec<String>>> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a directory; choose another output path",
                path.display()
            ),
        ));
    }
    let names: Vec<String> = fs::read_dir(path)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !names.is_empty() && !names.iter().any(|n| n == "info") {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} is a non-empty directory without an `info` file, so not a trace directory; \
                 refusing to write there (choose an empty or new directory)",
                path.display()
            ),
        ));
    }
    Ok(Some(names))
}

/// Reads all of `path` if it holds at most `limit` bytes. A larger file is an error of kind
/// `FileTooLarge` whose message names the limit; its contents are never read when its size is
/// known, and at most `limit + 1` bytes are when it is not (devices, pipes, /proc). The error
/// does not name the path: callers add it as they do for their other I/O errors.
pub fn read_capped(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    let too_large = |size: String| {
        io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!(
                "{size}: over the limit of {} for this file (not the file it should be?)",
                human_bytes(limit)
            ),
        )
    };
    if meta.is_file() && meta.len() > limit {
        return Err(too_large(format!("it is {} bytes", meta.len())));
    }
    let mut bytes = Vec::with_capacity(if meta.is_file() {
        meta.len() as usize
    } else {
        0
    });
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large("it holds more data than that".into()));
    }
    Ok(bytes)
}

/// `16 MiB`, `64 KiB`, `1000 bytes`.
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("vftrace-output-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn file_replaces_target_only_on_commit() {
        let d = scratch("file");
        let target = d.join("out.json");
        fs::write(&target, "old").unwrap();
        {
            let mut out = OutputFile::create(&target, &[]).unwrap();
            out.write_all(b"half").unwrap();
            // Dropped without commit: a failed run.
        }
        assert_eq!(fs::read_to_string(&target).unwrap(), "old");
        assert_eq!(names(&d), ["out.json"], "no temporary left");
        let mut out = OutputFile::create(&target, &[]).unwrap();
        out.write_all(b"new").unwrap();
        out.commit().unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(names(&d), ["out.json"]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn published_file_survives_its_guard() {
        let d = scratch("publish");
        let target = d.join("host.kvm");
        let mut out = OutputFile::create(&target, &[]).unwrap();
        let mut w = out.writer().unwrap();
        out.publish().unwrap();
        w.write_all(b"recording").unwrap();
        drop(out);
        assert_eq!(fs::read_to_string(&target).unwrap(), "recording");
        assert_eq!(names(&d), ["host.kvm"]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn dir_replaces_a_trace_dir_and_refuses_others() {
        let d = scratch("dir");
        let target = d.join("trace");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("info"), "old").unwrap();
        fs::write(target.join("1.dat"), "old").unwrap();
        {
            let out = OutputDir::create(&target, &[]).unwrap();
            fs::write(out.path().join("info"), "half").unwrap();
        }
        assert_eq!(names(&target), ["1.dat", "info"]);
        assert_eq!(names(&d), ["trace"]);
        let out = OutputDir::create(&target, &[]).unwrap();
        fs::write(out.path().join("info"), "new").unwrap();
        out.commit().unwrap();
        assert_eq!(names(&target), ["info"]);
        assert_eq!(fs::read_to_string(target.join("info")).unwrap(), "new");
        assert_eq!(names(&d), ["trace"]);

        let other = d.join("photos");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("cat.jpg"), "").unwrap();
        let err = OutputDir::create(&other, &[]).unwrap_err().to_string();
        assert!(err.contains("not a trace directory"), "{err}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn outputs_overlapping_inputs_are_refused() {
        let d = scratch("overlap");
        let trace = d.join("T");
        fs::create_dir(&trace).unwrap();
        fs::write(trace.join("info"), "").unwrap();
        fs::write(trace.join("5318.dat"), "data").unwrap();
        let elf = d.join("g.elf");
        fs::write(&elf, "elf").unwrap();
        std::os::unix::fs::symlink(&elf, d.join("link.elf")).unwrap();
        fs::hard_link(&elf, d.join("hard.elf")).unwrap();
        let refused = |out: PathBuf, input: &Path| {
            let err = check_output(&out, &[input]).unwrap_err().to_string();
            assert!(err.contains("refusing"), "{err}");
        };
        refused(trace.join("5318.dat"), &trace);
        refused(trace.join("new/sub.json"), &trace);
        refused(trace.join("../T/x"), &trace);
        refused(elf.clone(), &elf);
        refused(d.join("link.elf"), &elf);
        refused(d.join("hard.elf"), &elf);
        refused(trace.clone(), &trace.join("5318.dat"));
        check_output(&d.join("out.json"), &[&trace, &elf]).unwrap();
        check_output(&d.join("T2"), &[&trace]).unwrap();
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn capped_reads_name_the_limit() {
        let d = scratch("cap");
        let f = d.join("big");
        let file = File::create(&f).unwrap();
        file.set_len(3 << 30).unwrap(); // sparse: costs nothing
        let err = read_capped(&f, 1 << 20).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        assert!(err.to_string().contains("1 MiB"), "{err}");
        let err = read_capped(Path::new("/dev/zero"), 4096).unwrap_err();
        assert!(err.to_string().contains("4 KiB"), "{err}");
        fs::write(&f, "small").unwrap();
        assert_eq!(read_capped(&f, 5).unwrap(), b"small");
        fs::remove_dir_all(&d).unwrap();
    }
}
