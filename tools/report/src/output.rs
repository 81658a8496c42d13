//! Output files: written to a temporary file beside the target and renamed on success, never
//! over an input.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::ViewError;

/// The absolute form of `path`, resolving its parent (the file itself need not exist).
fn absolute(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (parent.canonicalize(), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// Creates `path` with what `write` writes: into `.NAME.tmp-PID` beside it, renamed over
/// `path` only when everything was written. Refuses a `path` that is one of `inputs` or lies
/// inside an input directory (a trace directory's files are inputs too).
pub fn write_file(
    path: &Path,
    inputs: &[&Path],
    write: impl FnOnce(&mut dyn Write) -> Result<(), ViewError>,
) -> Result<(), ViewError> {
    let target = absolute(path);
    for input in inputs {
        let input = absolute(input);
        if target == input || (input.is_dir() && target.starts_with(&input)) {
            return Err(ViewError::Usage(format!(
                "{} would overwrite the input {}; choose another output file",
                path.display(),
                input.display()
            )));
        }
    }
    let name = path
        .file_name()
        .ok_or_else(|| ViewError::Usage(format!("{}: not a file name", path.display())))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let file =
            File::create(&tmp).map_err(|e| ViewError::output(path.display().to_string(), e))?;
        let mut out = BufWriter::new(file);
        write(&mut out)?;
        let file = out
            .into_inner()
            .map_err(|e| ViewError::output(path.display().to_string(), e.into_error()))?;
        file.sync_all()
            .map_err(|e| ViewError::output(path.display().to_string(), e))?;
        fs::rename(&tmp, path).map_err(|e| ViewError::output(path.display().to_string(), e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
