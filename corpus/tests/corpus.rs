//! Every program of the corpus, one test each (the test's name is the program's): built, run
//! untraced, then traced in every mode that applies, and compared with expected/NAME.tree.
//! See README.md for what the modes are and how to run one test.
use vftrace_corpus::{check, Ended, Mode, Program, RECORDER_MODES};

macro_rules! corpus {
    ($($name:ident: $spec:expr;)*) => {
        $(
            #[test]
            fn $name() {
                check(&Program { name: stringify!($name), ..$spec });
            }
        )*

        fn all_programs() -> Vec<Program> {
            vec![$(Program { name: stringify!($name), ..$spec }),*]
        }
    };
}

/// A static binary cannot preload a tracer, and a program that traces itself needs none.
const IN_PROCESS_ONLY: &[Mode] = &[Mode::InProcess];

corpus! {
    // Control flow that did not survive tracing (issue 8, in its order).
    exception_caught_by_caller: Program { source: "exception_caught_by_caller.cpp", ..Program::CXX };
    exception_rethrown: Program { source: "exception_rethrown.cpp", ..Program::CXX };
    exception_caught_far_up: Program { source: "exception_caught_far_up.cpp", ..Program::CXX };
    exception_uncaught: Program { source: "exception_uncaught.cpp", ends: Ended::Signaled(6), no_destructors: true, ..Program::CXX };
    tail_calls: Program { source: "tail_calls.c", flags: &["-O2"], sibling_calls: &[("a", "b"), ("b", "c")], ..Program::C };
    rust_tail_calls: Program { source: "rust_tail_calls.rs", sibling_calls: &[("rust_tail_calls::a", "rust_tail_calls::b"), ("rust_tail_calls::b", "rust_tail_calls::c")], ..Program::RUST };
    longjmp_deep: Program { source: "longjmp_deep.c", ..Program::C };
    longjmp_loop: Program { source: "longjmp_loop.c", ..Program::C };
    siglongjmp_handler: Program { source: "signal_handler.c", args: &["jump", "stack"], ..Program::C };
    siglongjmp_altstack: Program { source: "signal_handler.c", args: &["jump", "altstack"], ..Program::C };
    siglongjmp_busy: Program { source: "siglongjmp_busy.c", ..Program::C };
    ucontext_coroutines: Program { source: "ucontext_coroutines.c", ..Program::C };
    fentry: Program { source: "fentry.c", flags: &["-mfentry"], ..Program::C };
    panic_catch_unwind: Program { source: "panic_catch_unwind.rs", ..Program::RUST };
    threads_2000: Program { source: "threads_short_lived.c", args: &["2000"], ..Program::C };
    // Each thread holds a chunk until the recorder drains it: a recorder starved of CPU (a
    // loaded CI machine) falls behind a storm of 10,000 threads and the default drops (and
    // counts) what finds the pool full; --block makes them wait, so every thread must arrive.
    threads_10000: Program { source: "threads_short_lived.c", args: &["10000"], record_options: &["--block"], ..Program::C };
    recursion_3000: Program { source: "recursion.c", args: &["3000"], ..Program::C };
    capi_in_rust: Program { source: "capi_in_rust.rs", traces_itself: true, modes: IN_PROCESS_ONLY, ..Program::RUST };
    exit_3: Program { source: "ends.c", args: &["exit3"], ends: Ended::Exited(3), ..Program::C };
    abort: Program { source: "ends.c", args: &["abort"], ends: Ended::Signaled(6), no_destructors: true, ..Program::C };

    // Not in the list: a frame realigned through a DRAP register (main with a 32-byte
    // vector local) hides its real return address from mcount.
    stack_realign: Program { source: "stack_realign.c", ..Program::C };

    // What already worked, so that it stays so.
    exception_same_function: Program { source: "exception_same_function.cpp", ..Program::CXX };
    threads: Program { source: "threads.c", ..Program::C };
    recursion_500: Program { source: "recursion.c", args: &["500"], ..Program::C };
    returns: Program { source: "returns.c", ..Program::C };
    variadic: Program { source: "variadic.c", ..Program::C };
    alloca: Program { source: "alloca.c", ..Program::C };
    sigaltstack_return: Program { source: "signal_handler.c", args: &["return", "altstack"], ..Program::C };
    static_binary: Program { source: "threads.c", link: &["-static"], modes: IN_PROCESS_ONLY, ..Program::C };
    shared_library: Program { source: "shared_library.c", library: Some("shared_library_lib.c"), ..Program::C };
    cxx_static_ctors: Program { source: "cxx_static_ctors.cpp", ..Program::CXX };
    rust_v0_names: Program { source: "rust_names.rs", flags: &["-Csymbol-mangling-version=v0"], ..Program::RUST };

    // How processes end and multiply, for a recorder outside the process (issue 9). Where the
    // process dies, the in-process mode checks only its output and exit status.
    underscore_exit: Program { source: "ends.c", args: &["_exit"], ends: Ended::Exited(5), no_destructors: true, ..Program::C };
    sigsegv: Program { source: "ends.c", args: &["segv"], ends: Ended::Signaled(11), no_destructors: true, ..Program::C };
    sigkill_self: Program { source: "ends.c", args: &["kill"], ends: Ended::Signaled(9), no_destructors: true, ..Program::C };
    fork: Program { source: "forks.c", args: &["fork"], modes: RECORDER_MODES, ..Program::C };
    fork_exec: Program { source: "forks.c", args: &["fork_exec"], modes: RECORDER_MODES, ..Program::C };
    vfork_exec: Program { source: "forks.c", args: &["vfork_exec"], modes: RECORDER_MODES, ..Program::C };
    fork_8_children: Program { source: "fork_8_children.c", modes: RECORDER_MODES, ..Program::C };
    dlopen_dlclose: Program { source: "dlopen_dlclose.c", plugin: Some("dlopen_plugin.c"), args: &["{dir}/dlopen_plugin.so"], modes: RECORDER_MODES, ..Program::C };
}

/// Every source is some program's (or library's), every expected file some program's.
#[test]
fn every_file_belongs_to_a_program() {
    let corpus = vftrace_corpus::corpus_dir();
    let programs = all_programs();
    let mut sources: Vec<&str> = Vec::new();
    for p in &programs {
        for file in [Some(p.source), p.library, p.plugin].into_iter().flatten() {
            assert!(
                corpus.join("programs").join(file).exists(),
                "{}: no programs/{file}",
                p.name
            );
            sources.push(file);
        }
        assert!(
            corpus
                .join("expected")
                .join(format!("{}.tree", p.name))
                .exists(),
            "{} has no expected/{}.tree",
            p.name,
            p.name
        );
    }
    for entry in std::fs::read_dir(corpus.join("programs")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            sources.contains(&file.as_str()),
            "programs/{file} is no program's"
        );
    }
    for entry in std::fs::read_dir(corpus.join("expected")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        if let Some(name) = file.strip_suffix(".tree") {
            assert!(
                programs.iter().any(|p| p.name == name),
                "expected/{file} is no program's"
            );
        }
    }
}
