//! The one error type of every parser in this crate: it always names the file and where in it.

use std::fmt;
use std::path::{Path, PathBuf};

/// A parse or read error that names the file and the byte offset or line it happened at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    pub file: PathBuf,
    /// Byte offset in `file`, for binary data (records, the info header).
    pub offset: Option<u64>,
    /// 1-based line number, for text files.
    pub line: Option<usize>,
    pub message: String,
}

impl FormatError {
    /// An error at byte `offset` of `file`.
    pub fn at_offset(file: &Path, offset: u64, message: impl Into<String>) -> Self {
        FormatError {
            file: file.to_path_buf(),
            offset: Some(offset),
            line: None,
            message: message.into(),
        }
    }

    /// An error at 1-based `line` of `file`.
    pub fn at_line(file: &Path, line: usize, message: impl Into<String>) -> Self {
        FormatError {
            file: file.to_path_buf(),
            offset: None,
            line: Some(line),
            message: message.into(),
        }
    }

    /// An error about `file` as a whole (it cannot be opened, it is missing, ...).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        FormatError {
            file: file.to_path_buf(),
            offset: None,
            line: None,
            message: message.into(),
        }
    }

    /// An I/O error while reading `file`.
    pub fn io(file: &Path, err: &std::io::Error) -> Self {
        Self::whole_file(file, err.to_string())
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match (self.line, self.offset) {
            (Some(line), _) => write!(f, "{file}:{line}: {}", self.message),
            (None, Some(offset)) => write!(f, "{file}: offset {offset}: {}", self.message),
            (None, None) => write!(f, "{file}: {}", self.message),
        }
    }
}

impl std::error::Error for FormatError {}

impl From<FormatError> for std::io::Error {
    fn from(e: FormatError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// Splits text into lines with their 1-based numbers, accepting a missing final newline.
/// Each line is returned without its `\n` (and without a `\r` before it).
pub(crate) fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split_inclusive('\n').enumerate().map(|(i, l)| {
        let l = l.strip_suffix('\n').unwrap_or(l);
        (i + 1, l.strip_suffix('\r').unwrap_or(l))
    })
}

/// Decodes a text file's bytes as UTF-8, naming the line of the first invalid byte.
pub(crate) fn text_of<'a>(bytes: &'a [u8], file: &Path) -> Result<&'a str, FormatError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        FormatError::at_line(
            file,
            line,
            format!("invalid UTF-8 at byte offset {}", e.valid_up_to()),
        )
    })
}
