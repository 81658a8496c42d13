//! A tracefs instance of our own: found or mounted tracefs, created with a unique name and
//! always removed again ([`Instance`] removes itself when dropped, also while unwinding).

use anyhow::{bail, Context, Result};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Where tracefs lives; the debugfs path is the fallback of kernels and setups that only
/// mount debugfs (which automounts tracefs under it).
const TRACEFS_MOUNT: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Instance names start with this, then the recorder's pid.
pub const INSTANCE_PREFIX: &str = "vftrace-kvm-";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Turns a permission error into advice.
fn explain(e: std::io::Error, what: String) -> anyhow::Error {
    if matches!(e.kind(), ErrorKind::PermissionDenied) || e.raw_os_error() == Some(libc::EPERM) {
        let who = if is_root() {
            "even as root (is tracefs locked down, e.g. by lockdown=confidentiality?)"
        } else {
            "run as root: `sudo vftrace kvm ...`"
        };
        anyhow::anyhow!("{what}: {e}; tracing needs privileges: {who}")
    } else {
        anyhow::Error::new(e).context(what)
    }
}

/// A tracefs mount.
#[derive(Clone, Debug)]
pub struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    /// Uses tracefs at /sys/kernel/tracing, mounting it there if it is not mounted, else
    /// /sys/kernel/debug/tracing.
    pub fn locate_or_mount() -> Result<Tracefs> {
        let standard = Path::new(TRACEFS_MOUNT);
        if standard.join("instances").is_dir() {
            return Ok(Tracefs {
                root: standard.into(),
            });
        }
        if !is_root() && is_tracefs_mounted_at(standard) {
            bail!(
                "tracefs at {TRACEFS_MOUNT} is only accessible to root: run as root \
                 (`sudo vftrace kvm ...`)"
            );
        }
        let mount_error = match mount_tracefs(standard) {
            Ok(()) if standard.join("instances").is_dir() => {
                return Ok(Tracefs {
                    root: standard.into(),
                })
            }
            Ok(()) => "mounted, but it has no instances directory".to_string(),
            Err(e) => e.to_string(),
        };
        let debug = Path::new(DEBUGFS_TRACING);
        if debug.join("instances").is_dir() {
            return Ok(Tracefs { root: debug.into() });
        }
        let advice = if is_root() {
            "the kernel needs CONFIG_FTRACE/tracefs; try `mount -t tracefs nodev /sys/kernel/tracing`"
        } else {
            "run as root (`sudo vftrace kvm ...`), or have root run `mount -t tracefs nodev /sys/kernel/tracing`"
        };
        bail!("tracefs is not available: mounting it at {TRACEFS_MOUNT} failed ({mount_error}) and {DEBUGFS_TRACING} does not exist; {advice}")
    }

    /// A tracefs mounted somewhere else (for tests and unusual setups).
    pub fn at(root: impl Into<PathBuf>) -> Tracefs {
        Tracefs { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates an instance named `vftrace-kvm-PID-SEQ-NANOS` (unique among concurrent
    /// recorders and across runs).
    pub fn create_instance(&self) -> Result<Instance> {
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{INSTANCE_PREFIX}{}-{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed),
            crate::monotonic_ns()
        );
        let path = self.root.join("instances").join(&name);
        std::fs::create_dir(&path).map_err(|e| {
            explain(
                e,
                format!("cannot create tracefs instance {}", path.display()),
            )
        })?;
        Ok(Instance {
            path,
            name,
            removed: false,
        })
    }

    /// Removes instances left by vftrace recorders that no longer run (killed with SIGKILL,
    /// the one case the guard cannot handle). Returns the names removed.
    pub fn remove_stale_instances(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.root.join("instances")) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(INSTANCE_PREFIX)
                .and_then(|r| r.split('-').next())
            else {
                continue;
            };
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            if pid != std::process::id()
                && !Path::new(&format!("/proc/{pid}")).exists()
                && std::fs::remove_dir(entry.path()).is_ok()
            {
                removed.push(name);
            }
        }
        removed
    }
}

/// Whether /proc/self/mounts lists a tracefs at `target`.
fn is_tracefs_mounted_at(target: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_, mount_point, fs_type) = (fields.next(), fields.next(), fields.next());
        fs_type == Some("tracefs") && mount_point.is_some_and(|m| Path::new(m) == target)
    })
}

fn mount_tracefs(target: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    let target =
        CString::new(target.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    let fstype = c"tracefs";
    let source = c"nodev";
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call;
    // tracefs takes no mount data.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A tracefs instance directory, removed on drop. Files of the instance that are open (a
/// trace_pipe reader) make removal fail with EBUSY, so close them first; removal retries for
/// a while to allow for readers that are just finishing.
#[derive(Debug)]
pub struct Instance {
    path: PathBuf,
    name: String,
    removed: bool,
}

impl Instance {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `value` to the instance file `file` (relative path).
    pub fn write(&self, file: &str, value: &str) -> Result<()> {
        let path = self.path.join(file);
        std::fs::write(&path, value)
            .map_err(|e| explain(e, format!("cannot write `{value}` to {}", path.display())))
    }

    pub fn read(&self, file: &str) -> Result<String> {
        let path = self.path.join(file);
        std::fs::read_to_string(&path)
            .map_err(|e| explain(e, format!("cannot read {}", path.display())))
    }

    /// Selects the trace clock, failing with the offered list when it is missing.
    pub fn set_clock(&self, clock: &str) -> Result<()> {
        let offered = self.read("trace_clock")?;
        if !offered
            .split_whitespace()
            .any(|c| c.trim_matches(['[', ']']) == clock)
        {
            bail!(
                "this kernel's tracefs offers no `{clock}` trace clock (it offers: {})",
                offered.trim()
            );
        }
        self.write("trace_clock", clock)
    }

    /// Enables `event` (`name` in the kvm system, or `system:name`); returns false when the
    /// kernel has no such event.
    pub fn enable_event(&self, event: &str) -> Result<bool> {
        let (system, name) = event.split_once(':').unwrap_or(("kvm", event));
        let valid =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid(system) || !valid(name) {
            bail!("bad event name `{event}` (expected NAME or SYSTEM:NAME, e.g. kvm_pio or kvm:kvm_pio)");
        }
        let file = format!("events/{system}/{name}/enable");
        if !self.path.join(&file).exists() {
            return Ok(false);
        }
        self.write(&file, "1").map(|()| true)
    }

    pub fn set_tracing_on(&self, on: bool) -> Result<()> {
        self.write("tracing_on", if on { "1" } else { "0" })
    }

    /// Per-CPU ring buffer size.
    pub fn set_buffer_kb(&self, kb: u32) -> Result<()> {
        self.write("buffer_size_kb", &kb.to_string())
    }

    /// Events lost per CPU so far: `overrun` (overwritten when the buffer was full),
    /// `commit overrun` and `dropped events` (not written when overwrite is off).
    pub fn lost_events_per_cpu(&self) -> Result<Vec<(u32, u64)>> {
        let mut lost = Vec::new();
        let per_cpu = self.path.join("per_cpu");
        for entry in std::fs::read_dir(&per_cpu)
            .with_context(|| format!("cannot list {}", per_cpu.display()))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(cpu) = name.strip_prefix("cpu").and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stats = std::fs::read_to_string(entry.path().join("stats"))
                .with_context(|| format!("cannot read {name}/stats"))?;
            let count = stats
                .lines()
                .filter_map(|l| l.split_once(':'))
                .filter(|(k, _)| {
                    matches!(k.trim(), "overrun" | "commit overrun" | "dropped events")
                })
                .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
                .sum();
            lost.push((cpu, count));
        }
        lost.sort_unstable();
        Ok(lost)
    }

    /// Removes the instance now, reporting failure (dropping removes it silently).
    pub fn remove(mut self) -> Result<()> {
        self.removed = true;
        remove_instance_dir(&self.path)
    }
}

fn remove_instance_dir(path: &Path) -> Result<()> {
    // EBUSY while a reader still has a file open; give it up to 2 s.
    let mut last = None;
    for _ in 0..40 {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let e = last.expect("the loop ran");
    bail!(
        "cannot remove tracefs instance {}: {e}; remove it with `rmdir {}`",
        path.display(),
        path.display()
    )
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.removed {
            // Stop the events first so a busy instance does not fill memory while we retry.
            let _ = std::fs::write(self.path.join("tracing_on"), "0");
            if let Err(e) = remove_instance_dir(&self.path) {
                eprintln!("vftrace kvm: {e:#}");
            }
        }
    }
}
