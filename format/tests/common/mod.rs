//! Test helpers shared by this crate's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether an external tool a test needs runs (`tool ARGS` succeeds); otherwise the
/// project's policy for missing judges applies (`vftrace_testsupport::missing`).
pub fn require_tool(tool: &str, version_args: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(version_args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        vftrace_testsupport::missing(tool, "this test needs it as a judge");
    }
    ok
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
