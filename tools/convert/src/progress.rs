//! A progress line on stderr for long conversions, drawn only when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Redraws `label  42% 123.4/300.0 MB  512 MB/s` at most ten times a second.
pub struct TerminalProgress {
    label: String,
    enabled: bool,
    started: Instant,
    last_draw: Option<Instant>,
    drawn: bool,
}

impl TerminalProgress {
    /// A progress line that shows itself only if stderr is a terminal.
    pub fn new(label: impl Into<String>) -> Self {
        TerminalProgress {
            label: label.into(),
            enabled: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_draw: None,
            drawn: false,
        }
    }

    /// Shows `done` of `total` bytes.
    pub fn update(&mut self, done: u64, total: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if done < total
            && self
                .last_draw
                .is_some_and(|t| now - t < Duration::from_millis(100))
        {
            return;
        }
        self.last_draw = Some(now);
        self.drawn = true;
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        let secs = (now - self.started).as_secs_f64().max(1e-6);
        let mb = |b: u64| b as f64 / 1e6;
        let bar_width = 30;
        let filled = (percent as usize * bar_width / 100).min(bar_width);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{} [{}{}] {:3}% {:.1}/{:.1} MB {:.0} MB/s ",
            self.label,
            "#".repeat(filled),
            " ".repeat(bar_width - filled),
            percent,
            mb(done),
            mb(total),
            mb(done) / secs
        );
        let _ = err.flush();
    }

    /// Ends the line so later output starts on a fresh one.
    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

impl Drop for TerminalProgress {
    fn drop(&mut self) {
        self.finish();
    }
}
