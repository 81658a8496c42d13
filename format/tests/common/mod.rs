//! Test helpers shared by this crate's integration tests. Other crates may copy
//! `require_tool`: it is the project's policy for tests that need an external judge.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether an external tool a test needs is present.
///
/// Policy: in CI (env `CI=true`) a missing tool is a test failure (this panics); elsewhere the
/// test should skip, and this prints a loud reason to stderr. Use as
/// `if !require_tool("uftrace", &["--version"]) { return; }`.
pub fn require_tool(tool: &str, version_args: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(version_args)
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("`{tool}` is required in CI but is not installed or does not run; install it (scripts/setup)");
    }
    eprintln!();
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("!!! SKIPPING TEST: `{tool}` is not installed; this test needs it as a judge.");
    eprintln!("!!! Install it (e.g. `apt-get install {tool}`) to run this test; in CI it fails.");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    false
}

/// `require_tool("uftrace", ["--version"])`.
pub fn require_uftrace() -> bool {
    require_tool("uftrace", &["--version"])
}

/// A directory under the system temp dir, removed on drop (kept if `KEEP_TEST_DIRS` is set).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "vftrace-format-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs `uftrace ARGS... -d DIR` (the dir goes where each subcommand accepts it) and returns
/// stdout; panics with stderr if uftrace fails or writes nothing.
pub fn uftrace(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("uftrace")
        .args(args)
        .arg("-d")
        .arg(dir)
        .env("LC_ALL", "C")
        .output()
        .expect("run uftrace");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "uftrace {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        !stdout.trim().is_empty(),
        "uftrace {args:?} printed nothing; stderr:\n{stderr}"
    );
    stdout
}
