//! The corpus of issue 8: one small program per control flow real programs have (programs/),
//! each with its hand-checked call trees (expected/), run untraced and traced. A tracer must
//! never change what a program prints or how it ends, and must record what really ran.
//!
//! tests/corpus.rs lists the programs, one test each; [`check`] is what each test does.
mod check;
mod compile;
mod diff;
mod expected;
mod normal;
mod outcome;
mod program;

pub use check::check;
pub use compile::corpus_dir;
pub use program::{Ended, Lang, Mode, Program, RECORDER_MODES};
