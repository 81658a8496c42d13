//! Reading a trace without uftrace: what `vftrace report`, `replay`, `info` and `flame` show.
//!
//! Every view streams the records of a trace directory (ours or one `uftrace record` made)
//! through the format crate's reader and call balancer, one block of records at a time:
//! memory holds the open calls of the threads being read, one entry per distinct function and
//! the symbol tables, never the records. The layouts follow uftrace 0.13 (`cmds/report.c`,
//! `cmds/replay.c`, `cmds/info.c`), so a uftrace user feels at home and the tests can have
//! uftrace judge the numbers.
//!
//! - [`calls`]: one thread's records as balanced calls (entry, exit with total and child time).
//! - [`functions`]: addresses to functions (names, sizes), resolved once per address.
//! - [`stats`]: per-function and per-thread aggregation (uftrace's rules for recursion).
//! - [`report`]: the `report` table, its sort keys and fields, and `--diff`.
//! - [`replay`]: the call tree with `-D`, `-F`/`-N`, `-t` and `--tid`.
//! - [`info`]: what was recorded.
//! - [`flame`]: folded stacks of inclusive time and flame graphs drawn by `inferno`.

pub mod calls;
pub mod flame;
pub mod functions;
pub mod info;
pub mod output;
pub mod replay;
pub mod report;
pub mod stats;
pub mod time;

use std::io;

use vftrace_format::FormatError;

/// Why a view could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// Unreadable or corrupt trace data; names the file and offset or line.
    #[error(transparent)]
    Trace(#[from] FormatError),
    /// An option that cannot be used as given (bad regex, unknown sort key, ...).
    #[error("{0}")]
    Usage(String),
    /// The output could not be written (a closed pipe is one: see [`ViewError::is_closed_pipe`]).
    #[error("writing {what}: {err}")]
    Output { what: String, err: io::Error },
}

impl ViewError {
    /// An output error on `what` (e.g. "standard output", a file name).
    pub fn output(what: impl Into<String>, err: io::Error) -> Self {
        ViewError::Output {
            what: what.into(),
            err,
        }
    }

    /// True when the output went to a pipe whose reader is gone (`vftrace replay | head`):
    /// not an error for the user.
    pub fn is_closed_pipe(&self) -> bool {
        matches!(self, ViewError::Output { err, .. } if err.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// `result`, with a closed output pipe taken as the end the reader wanted (`None`).
pub fn unless_closed_pipe<T>(result: Result<T, ViewError>) -> Result<Option<T>, ViewError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_closed_pipe() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether to colour the output (uftrace's `--color`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Color {
    /// Colour only when the output is a terminal.
    #[default]
    Auto,
    Always,
    Never,
}

impl Color {
    /// Parses uftrace's `--color` values: auto, always/yes, never/no.
    pub fn parse(text: &str) -> Result<Color, String> {
        match text {
            "auto" => Ok(Color::Auto),
            "always" | "yes" | "on" => Ok(Color::Always),
            "never" | "no" | "off" => Ok(Color::Never),
            _ => Err(format!("{text:?}: use auto, always or never")),
        }
    }

    /// Resolves `Auto` with whether the output is a terminal.
    pub fn enabled(self, is_terminal: bool) -> bool {
        match self {
            Color::Auto => is_terminal,
            Color::Always => true,
            Color::Never => false,
        }
    }
}
