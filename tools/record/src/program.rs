//! What is about to be run: found on PATH like a shell would, checked to be an instrumented
//! executable that can be traced (before anything is created), and the preload library.
use anyhow::{bail, Context};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// How the program will be traced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// Absolute path of the executable.
    pub path: PathBuf,
    /// It links vftrace itself (libvftrace.a or the `vftrace` crate): it joins the recorder
    /// with its own copy of the tracer.
    pub links_vftrace: bool,
}

/// Resolves `name` (a path, or a command name looked up on PATH) and checks it.
pub fn find(name: &str) -> anyhow::Result<Program> {
    let path = resolve(name)?;
    let facts = vftrace_symbols::image_facts(&path).with_context(|| {
        format!(
            "{} is not an ELF executable vftrace can read",
            path.display()
        )
    })?;
    let links_vftrace = facts.links_vftrace;
    if !facts.instrumented {
        bail!(
            "no mcount calls found in {}; build with -pg (gcc/clang), -pg -mfentry, or -Z instrument-mcount (rustc)",
            path.display()
        );
    }
    if !facts.has_interpreter && !links_vftrace {
        bail!(
            "{} is statically linked, so vftrace's mcount cannot be preloaded into it; link it dynamically, or link it with libvftrace.a",
            path.display()
        );
    }
    Ok(Program {
        path,
        links_vftrace,
    })
}

fn resolve(name: &str) -> anyhow::Result<PathBuf> {
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let absolute = |p: &Path| std::fs::canonicalize(p).with_context(|| p.display().to_string());
    if name.contains('/') {
        let p = Path::new(name);
        if !p.exists() {
            bail!("{name}: no such file");
        }
        if !executable(p) {
            bail!("{name}: not an executable file");
        }
        return absolute(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if executable(&candidate) {
            return absolute(&candidate);
        }
    }
    bail!("{name}: command not found on PATH")
}

/// The preload library: `VFTRACE_PRELOAD` if set, else the one this build made
/// (tools/record/build.rs), else `libvftrace_preload.so` beside the `vftrace` binary (an
/// installed copy, whose build directory is gone).
pub fn preload_library() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("VFTRACE_PRELOAD") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("VFTRACE_PRELOAD={} does not exist", p.display());
        }
        return Ok(std::fs::canonicalize(&p)?);
    }
    let built = PathBuf::from(env!("VFTRACE_PRELOAD_LIBRARY"));
    if built.is_file() {
        return Ok(built);
    }
    let exe = std::env::current_exe().context("where is the vftrace binary?")?;
    let beside = exe
        .parent()
        .unwrap_or(Path::new("."))
        .join("libvftrace_preload.so");
    if beside.is_file() {
        return Ok(beside);
    }
    bail!(
        "libvftrace_preload.so is neither beside {} nor at {}; rebuild vftrace (cargo build --release -p vftrace-cli) or set VFTRACE_PRELOAD",
        exe.display(),
        built.display()
    )
}
