//! What the harness needs to know about a program: how to build and run it, how it ends, and
//! under which tracing modes it runs.
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    C,
    Cxx,
    Rust,
}

/// A way of tracing the unmodified program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The program's objects linked with libvftrace.a and a shim (shim/inprocess.c) whose
    /// constructor calls vftrace_init/vftrace_enable and whose destructor calls vftrace_dump
    /// into $VFTRACE_CORPUS_DIR.
    InProcess,
    /// `uftrace record` on the untraced binary: the reference.
    Uftrace,
    /// `vftrace record -d DIR -- PROG ARGS` on the untraced binary.
    Record,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::InProcess => "inprocess",
            Mode::Uftrace => "uftrace",
            Mode::Record => "record",
        })
    }
}

/// How a process ended, in the words of `uftrace info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

impl Ended {
    pub fn from_status(status: std::process::ExitStatus) -> Ended {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Ended::Exited(code),
            (None, Some(sig)) => Ended::Signaled(sig),
            (None, None) => unreachable!("a process that neither exited nor was killed"),
        }
    }

    /// The exit code a shell (or `time`, or `vftrace record`) reports: 128+N for signal N.
    pub fn shell_code(self) -> i32 {
        match self {
            Ended::Exited(code) => code,
            Ended::Signaled(sig) => 128 + sig,
        }
    }
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Exited(code) => write!(f, "exited with code: {code}"),
            Ended::Signaled(sig) => write!(f, "terminated by signal: {sig}"),
        }
    }
}

/// One program of the corpus; its test has the same name, its expected trees are
/// `expected/NAME.tree`.
#[derive(Clone, Copy, Debug)]
pub struct Program {
    pub name: &'static str,
    /// The source, in programs/.
    pub source: &'static str,
    pub lang: Lang,
    /// Compiler flags after the defaults (C, C++: `-pg -O0 -g`; Rust: `-O -Zinstrument-mcount
    /// -Cforce-frame-pointers=yes`); later flags win, so `-O2` here overrides `-O0`.
    pub flags: &'static [&'static str],
    /// Linker flags (C, C++), e.g. `-static`.
    pub link: &'static [&'static str],
    /// Arguments. `{dir}` is replaced by the directory holding the program's build.
    pub args: &'static [&'static str],
    /// A C source in programs/ built with `-pg -fPIC -shared` as `lib{stem}.so` beside the
    /// program and linked to it.
    pub library: Option<&'static str>,
    /// A C source in programs/ built as an instrumented `{stem}.so` beside the program but not
    /// linked (the program loads it with dlopen).
    pub plugin: Option<&'static str>,
    /// (caller, callee): the build must have compiled the call as a jump (a sibling call),
    /// checked in the disassembly.
    pub sibling_calls: &'static [(&'static str, &'static str)],
    /// How the untraced program ends; every traced run must end the same way.
    pub ends: Ended,
    /// The process ends without running destructors (abort, _exit, a fatal signal): the
    /// in-process shim never dumps, and that mode checks only the output and exit status.
    pub no_destructors: bool,
    pub modes: &'static [Mode],
    /// The program calls the C API itself (vftrace_init/enable/dump, tracing when
    /// $VFTRACE_CORPUS_DIR is set) instead of getting the shim: it is linked with libvftrace.a
    /// only, and runs untraced without the variable.
    pub traces_itself: bool,
    /// Options of `vftrace record` before `--` (record mode).
    pub record_options: &'static [&'static str],
}

const ALL_MODES: &[Mode] = &[Mode::InProcess, Mode::Uftrace, Mode::Record];
/// For what only makes sense with a recorder outside the process (fork, exec, dlopen).
pub const RECORDER_MODES: &[Mode] = &[Mode::Uftrace, Mode::Record];

impl Program {
    const fn base(lang: Lang) -> Program {
        Program {
            name: "",
            source: "",
            lang,
            flags: &[],
            link: &[],
            args: &[],
            library: None,
            plugin: None,
            sibling_calls: &[],
            ends: Ended::Exited(0),
            no_destructors: false,
            modes: ALL_MODES,
            traces_itself: false,
            record_options: &[],
        }
    }
    pub const C: Program = Program::base(Lang::C);
    pub const CXX: Program = Program::base(Lang::Cxx);
    pub const RUST: Program = Program::base(Lang::Rust);
}
