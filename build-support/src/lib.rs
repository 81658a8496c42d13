//! For build scripts that build a part of vftrace with a nested cargo: the static backend (for
//! the frontend) and the preload library (for `vftrace record`). What the outer build is made
//! with (`-Z instrument-mcount` above all) must not reach those: an instrumented mcount would
//! call itself.
use std::path::Path;
use std::process::Command;

/// `cargo build --release --offline --manifest-path MANIFEST --target TARGET --target-dir DIR`
/// with every variable that carries the outer build's flags removed.
pub fn nested_cargo(manifest: &Path, target: &str, target_dir: &Path) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--offline")
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target")
        .arg(target)
        .arg("--target-dir")
        .arg(target_dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_TARGET_") && k.ends_with("_RUSTFLAGS")
            || k.starts_with("CARGO_PROFILE_")
        {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs `cmd`, failing the build with what to do if it fails.
pub fn run(cmd: &mut Command, what: &str) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("could not run {cmd:?} ({what}): {e}"));
    assert!(status.success(), "{what} failed: {cmd:?}");
}

/// Reruns the build script when anything under these paths (relative to `root`) changes.
pub fn rerun_if_changed(root: &Path, paths: &[&str]) {
    for p in paths {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
}
