//! Builds the preload library (`preload/`, a workspace of its own) with a nested cargo, without
//! the caller's flags (it holds the backend, which must never be instrumented), and tells the
//! recorder where it is.
use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.ancestors().nth(2).unwrap().to_path_buf();
    vftrace_build_support::rerun_if_changed(
        &root,
        &[
            "preload",
            "backend/src",
            "backend/Cargo.toml",
            "frontend/src",
            "frontend/Cargo.toml",
            "format/src",
            "symbols/src",
        ],
    );
    let target = std::env::var("TARGET").unwrap();
    let target_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("preload-build");
    let mut cmd =
        vftrace_build_support::nested_cargo(&root.join("preload/Cargo.toml"), &target, &target_dir);
    vftrace_build_support::run(&mut cmd, "building the preload library (preload/)");
    let lib = target_dir
        .join(&target)
        .join("release/libvftrace_preload.so");
    println!("cargo:rustc-env=VFTRACE_PRELOAD_LIBRARY={}", lib.display());
}
