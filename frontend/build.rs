//! Builds the backend as a static library with a nested cargo, for the same target as this
//! crate but without the caller's RUSTFLAGS, so that it is never instrumented (an instrumented
//! mcount would call itself). Then makes every symbol but the C ABI local, so that the copy of
//! `core` inside it cannot clash with the program's own.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Symbols that stay global: what instrumented code and the frontend call.
const EXPORTS: &[&str] = &[
    "mcount",
    "_mcount",
    "__fentry__",
    "vftrace_return_trampoline",
    "vftrace_backend_state_size",
    "vftrace_backend_init",
    "vftrace_backend_enable",
    "vftrace_backend_disable",
    "vftrace_backend_set_session",
    "vftrace_backend_silence",
    "vftrace_backend_thread_exit",
    "vftrace_backend_fork_child",
    "vftrace_backend_unwind_begin",
    "vftrace_backend_unwind_caught",
    "vftrace_backend_walk_end",
    "vftrace_backend_rdtsc",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    let staticlib = root.join("staticlib");
    vftrace_build_support::rerun_if_changed(
        root,
        &[
            "backend/src",
            "backend/Cargo.toml",
            "staticlib/src",
            "staticlib/Cargo.toml",
            "format/src/record.rs",
            "format/src/pool.rs",
            "format/src/abi.rs",
        ],
    );
    println!("cargo:rerun-if-env-changed=VFTRACE_BACKEND_FEATURES");
    // The preload library links the backend crate itself (initial-exec TLS).
    if env::var_os("CARGO_FEATURE_PRELOAD").is_some() {
        return;
    }

    let (target, interruptsafe) = backend_target();
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target_dir = out.join("backend-build");
    let mut cmd =
        vftrace_build_support::nested_cargo(&staticlib.join("Cargo.toml"), &target, &target_dir);
    if interruptsafe {
        cmd.arg("--features").arg("interruptsafe");
    }
    vftrace_build_support::run(&mut cmd, "building the vftrace backend (staticlib/)");

    let built = target_dir
        .join(&target)
        .join("release")
        .join("libvftrace_backend.a");
    let lib_dir = out.join("lib");
    std::fs::create_dir_all(&lib_dir).unwrap();
    localize(&built, &lib_dir.join("libvftrace_backend.a"), &out);
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-lib=static=vftrace_backend");
}

/// The target the backend is built for, and whether it must be interrupt-safe.
///
/// Hermit: the application, std and the kernel are one image, so the backend also traces the
/// kernel's interrupt handlers, which Hermit instruments (`interruptsafe` refuses to hook
/// interrupt frames). Hermit targets (often a JSON soft-float spec) have no prebuilt `core`;
/// the backend is `no_std`, and `x86_64-unknown-none` is soft-float like the Hermit kernel.
fn backend_target() -> (String, bool) {
    let interruptsafe = env::var_os("CARGO_FEATURE_INTERRUPTSAFE").is_some();
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("hermit") {
        ("x86_64-unknown-none".into(), true)
    } else {
        (env::var("TARGET").unwrap(), interruptsafe)
    }
}

/// Links what the exports need into one relocatable object, keeps only `EXPORTS` global, and
/// archives it.
fn localize(input: &Path, output: &Path, work: &Path) {
    let combined = work.join("vftrace_backend.o");
    // Only the members the exports need: the backend and the few parts of core and
    // compiler_builtins it calls.
    let mut ld = Command::new("ld");
    ld.arg("-r");
    for sym in EXPORTS {
        ld.arg("-u").arg(sym);
    }
    run(ld.arg(input).arg("-o").arg(&combined));
    // Prebuilt compiler_builtins for kernel targets carries LLVM bitcode sections; binutils'
    // LLVMgold plugin (if installed) chokes on them when indexing the archive. Not needed here.
    let mut objcopy = Command::new("objcopy");
    objcopy.args(["--remove-section=.llvmbc", "--remove-section=.llvmcmd"]);
    for sym in EXPORTS {
        objcopy.arg(format!("--keep-global-symbol={sym}"));
    }
    run(objcopy.arg(&combined));
    let _ = std::fs::remove_file(output);
    run(Command::new("ar").arg("crs").arg(output).arg(&combined));
}

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("could not run {cmd:?}: {e} (binutils is needed: apt-get install binutils)")
    });
    assert!(status.success(), "{cmd:?} failed");
}
