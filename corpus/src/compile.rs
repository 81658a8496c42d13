//! Building the programs: each once per test run, and again only when its sources, flags or
//! libvftrace.a changed (a stamp file beside the build holds what it was built from).
use crate::program::{Lang, Program};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use vftrace_testsupport::{c_library, run, target_dir, workspace};

/// A program's build.
pub struct Build {
    /// Holds everything below, and `{dir}` in the program's arguments.
    pub dir: PathBuf,
    /// The program as users build it: instrumented, linked normally (glibc's inert mcount).
    /// What runs untraced, under uftrace and under `vftrace record`.
    pub plain: PathBuf,
    /// The same objects linked with libvftrace.a (and the shim, unless the program traces
    /// itself).
    pub inprocess: PathBuf,
}

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn programs_dir() -> PathBuf {
    corpus_dir().join("programs")
}

/// Where a program's build and traces go.
pub fn work_dir(name: &str) -> PathBuf {
    target_dir().join("corpus").join(name)
}

pub fn build(p: &Program) -> Build {
    let dir = work_dir(p.name);
    std::fs::create_dir_all(&dir).unwrap();
    let source = programs_dir().join(p.source);
    let mut libs: Vec<String> = Vec::new();
    let mut inputs = vec![source.clone()];
    if let Some(lib) = p.library {
        let stem = stem(lib);
        let so = dir.join(format!("lib{stem}.so"));
        shared_object(&programs_dir().join(lib), &so);
        inputs.push(so);
        libs.extend([
            format!("-L{}", dir.display()),
            format!("-l{stem}"),
            format!("-Wl,-rpath,{}", dir.display()),
        ]);
    }
    if let Some(plugin) = p.plugin {
        shared_object(
            &programs_dir().join(plugin),
            &dir.join(format!("{}.so", stem(plugin))),
        );
    }
    let plain = dir.join(p.name);
    let inprocess = dir.join(format!("{}.inprocess", p.name));
    let vftrace = c_library();
    inputs.push(vftrace.to_path_buf());
    let shim = if p.traces_itself {
        None
    } else {
        let shim = shim();
        inputs.push(shim.to_path_buf());
        Some(shim)
    };
    let commands = match p.lang {
        Lang::C | Lang::Cxx => {
            let compiler = if p.lang == Lang::C { "gcc" } else { "g++" };
            let object = dir.join(format!("{}.o", p.name));
            let mut compile = Command::new(compiler);
            compile
                .args(["-pg", "-O0", "-g"])
                .args(p.flags)
                .arg("-c")
                .arg(&source)
                .arg("-o")
                .arg(&object);
            // -pg only at compile time: linking with it would bring gprof's start files.
            let link = |out: &Path, traced: bool| {
                let mut cmd = Command::new(compiler);
                cmd.arg(&object);
                if traced {
                    cmd.args(shim).arg(vftrace);
                }
                cmd.args(&libs)
                    .args(p.link)
                    .args(["-lpthread", "-ldl", "-lm", "-o"])
                    .arg(out);
                cmd
            };
            vec![
                compile,
                link(&plain, p.traces_itself),
                link(&inprocess, true),
            ]
        }
        Lang::Rust => {
            let rustc = |out: &Path, traced: bool| {
                let mut cmd = Command::new("rustc");
                // RUSTC_BOOTSTRAP only unlocks -Z instrument-mcount on the stable toolchain.
                cmd.env("RUSTC_BOOTSTRAP", "1")
                    .args(["--edition", "2021", "-O", "-Zinstrument-mcount"])
                    .arg("-Cforce-frame-pointers=yes")
                    .args(p.flags);
                if traced {
                    for input in shim.iter().copied().chain([vftrace]) {
                        cmd.arg(format!("-Clink-arg={}", input.display()));
                    }
                }
                cmd.arg(&source).arg("-o").arg(out);
                cmd
            };
            vec![rustc(&plain, p.traces_itself), rustc(&inprocess, true)]
        }
    };
    cached(
        &dir.join("build.stamp"),
        &inputs,
        commands,
        &[&plain, &inprocess],
    );
    for (caller, callee) in p.sibling_calls {
        assert_sibling_call(&plain, caller, callee);
    }
    Build {
        dir,
        plain,
        inprocess,
    }
}

fn stem(file: &str) -> &str {
    Path::new(file).file_stem().unwrap().to_str().unwrap()
}

/// An instrumented shared library.
fn shared_object(source: &Path, out: &Path) {
    let mut cmd = Command::new("gcc");
    cmd.args(["-pg", "-O0", "-g", "-fPIC", "-shared"])
        .arg(source)
        .arg("-o")
        .arg(out);
    cached(
        &out.with_extension("so.stamp"),
        &[source.to_path_buf()],
        vec![cmd],
        &[out],
    );
}

/// shim/inprocess.c, compiled once (never instrumented).
fn shim() -> &'static Path {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        let source = corpus_dir().join("shim/inprocess.c");
        let dir = target_dir().join("corpus");
        std::fs::create_dir_all(&dir).unwrap();
        let object = dir.join("inprocess-shim.o");
        let mut cmd = Command::new("gcc");
        cmd.args(["-O2", "-c", "-I"])
            .arg(workspace().join("frontend/include"))
            .arg(&source)
            .arg("-o")
            .arg(&object);
        cached(
            &dir.join("inprocess-shim.stamp"),
            &[source, workspace().join("frontend/include/vftrace.h")],
            vec![cmd],
            &[&object],
        );
        object
    })
}

/// Runs `commands` unless the stamp says they already ran on these very inputs.
fn cached(stamp: &Path, inputs: &[PathBuf], mut commands: Vec<Command>, outputs: &[&Path]) {
    let mut hasher = DefaultHasher::new();
    for input in inputs {
        std::fs::read(input)
            .unwrap_or_else(|e| panic!("{}: {e}", input.display()))
            .hash(&mut hasher);
    }
    let key = format!(
        "{:016x}\n{}",
        hasher.finish(),
        commands
            .iter()
            .map(|c| format!("{c:?}\n"))
            .collect::<String>()
    );
    let fresh = std::fs::read_to_string(stamp).is_ok_and(|s| s == key)
        && outputs.iter().all(|o| o.exists());
    if fresh {
        return;
    }
    let _ = std::fs::remove_file(stamp);
    for cmd in &mut commands {
        run(cmd);
    }
    std::fs::write(stamp, key).unwrap();
}

/// Fails unless `caller`'s code in `binary` reaches `callee` by a jump and never calls it:
/// the sibling call the program exists to test really is one. Names are demangled (Rust).
fn assert_sibling_call(binary: &Path, caller: &str, callee: &str) {
    let out = run(Command::new("objdump")
        .args(["-d", "-C", "--no-show-raw-insn"])
        .arg(binary));
    let text = String::from_utf8_lossy(&out.stdout);
    let header = format!("<{caller}>:");
    let code: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.ends_with(&header))
        .take_while(|l| !l.trim().is_empty())
        .collect();
    let target = format!("<{callee}>");
    // `   14018:\tjmp    14020 <b>`: the mnemonic is the first word after the address.
    let reaches = |mnemonic: &str| {
        code.iter().any(|l| {
            let insn = l.split_once(":\t").map_or("", |(_, i)| i);
            insn.split_whitespace().next() == Some(mnemonic) && insn.trim_end().ends_with(&target)
        })
    };
    assert!(
        reaches("jmp") && !reaches("call"),
        "{}: {caller} should reach {callee} by a sibling call (jmp), but its code is:\n{}",
        binary.display(),
        code.join("\n")
    );
}
