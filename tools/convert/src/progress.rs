//! A progress bar on stderr for long conversions (indicatif), drawn only when stderr is a
//! terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// `label [#####     ] 42% 123.4 MiB/300.0 MiB 512 MiB/s`, redrawn at most 20 times a second.
pub struct TerminalProgress {
    bar: ProgressBar,
}

impl TerminalProgress {
    /// A progress bar that shows itself only if stderr is a terminal.
    pub fn new(label: impl Into<String>) -> Self {
        let bar = if std::io::stderr().is_terminal() {
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {percent:>3}% {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("a valid template")
            .progress_chars("## ");
            ProgressBar::new(0)
                .with_style(style)
                .with_prefix(label.into())
        } else {
            ProgressBar::hidden()
        };
        TerminalProgress { bar }
    }

    /// Shows `done` of `total` bytes.
    pub fn update(&mut self, done: u64, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(done);
    }

    /// Removes the bar so later output starts on a fresh line.
    pub fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for TerminalProgress {
    fn drop(&mut self) {
        self.finish();
    }
}
