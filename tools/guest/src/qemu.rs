//! Running the example unikernel under QEMU/KVM with a time limit, its RAM in a file so the
//! trace stream can be read back, and nothing left behind afterwards.
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::extract::{extract_stream, parse_announcement};

/// How to boot the guest.
#[derive(Clone, Debug)]
pub struct GuestRun {
    pub kernel: PathBuf,
    pub cmdline: String,
    /// Where the session's scratch files (RAM, console, serial log) go; they are removed after.
    pub work_dir: PathBuf,
    pub timeout: Duration,
    pub memory_mb: u32,
}

impl GuestRun {
    pub fn new(kernel: impl Into<PathBuf>) -> GuestRun {
        GuestRun {
            kernel: kernel.into(),
            cmdline: String::new(),
            work_dir: std::env::temp_dir(),
            timeout: Duration::from_secs(20),
            memory_mb: 64,
        }
    }
}

/// How the run ended.
#[derive(Debug)]
pub struct GuestOutcome {
    /// QEMU's exit status; None when it was stopped at the timeout or by a signal.
    pub status: Option<i32>,
    pub timed_out: bool,
    /// What the guest printed on its serial console.
    pub serial: String,
    /// The stream bytes, when the guest announced one.
    pub stream: Option<Vec<u8>>,
    pub wall: Duration,
}

impl GuestOutcome {
    /// One sentence on how the guest ended, for errors.
    pub fn describe(&self) -> String {
        match (self.timed_out, self.status) {
            (true, _) => "did not finish before the timeout and was stopped".into(),
            (false, Some(SUCCESS_STATUS)) => "exited normally".into(),
            (false, Some(0)) => "triple-faulted (QEMU exit status 0)".into(),
            (false, Some(5)) => "panicked (QEMU exit status 5)".into(),
            (false, Some(7)) => "took a CPU exception (QEMU exit status 7)".into(),
            (false, Some(s)) => format!("failed (QEMU exit status {s})"),
            (false, None) => "was killed by a signal".into(),
        }
    }
}

/// isa-debug-exit status of a successful run (guest code 0).
pub const SUCCESS_STATUS: i32 = 1;
/// Exit status of `timeout(1)` when it had to stop the command.
const TIMEOUT_STATUS: i32 = 124;

/// The scratch files of one boot. Dropping the session removes them.
pub struct GuestSession {
    run: GuestRun,
    ram: PathBuf,
    console: PathBuf,
    serial: PathBuf,
}

impl GuestSession {
    pub fn new(run: &GuestRun) -> GuestSession {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "vftrace-guest-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let file = |ext: &str| run.work_dir.join(format!("{unique}.{ext}"));
        GuestSession {
            run: run.clone(),
            ram: file("ram"),
            console: file("console"),
            serial: file("serial"),
        }
    }

    /// The full command: `timeout` (so QEMU is stopped even if this process dies) around QEMU
    /// on microvm with PVH, KVM, isa-debug-exit, the debug console to a file, the serial port
    /// to a file and the RAM in a shared file.
    pub fn command(&self) -> Vec<OsString> {
        let run = &self.run;
        let secs = run.timeout.as_secs_f64().max(0.1);
        let mut argv: Vec<OsString> = Vec::new();
        let mut push = |s: &dyn AsRef<std::ffi::OsStr>| argv.push(s.as_ref().to_os_string());
        for a in ["timeout", "--kill-after=2"] {
            push(&a);
        }
        push(&format!("{secs:.1}"));
        for a in [
            "qemu-system-x86_64",
            "-accel",
            "kvm",
            "-cpu",
            "host,-arch-capabilities",
        ] {
            push(&a);
        }
        push(&"-machine");
        push(&"microvm,memory-backend=ram");
        push(&"-object");
        push(&format!(
            "memory-backend-file,id=ram,size={}M,mem-path={},share=on",
            run.memory_mb,
            self.ram.display()
        ));
        push(&"-m");
        push(&format!("{}", run.memory_mb));
        for a in [
            "-nographic",
            "-no-reboot",
            "-monitor",
            "none",
            "-display",
            "none",
            "-serial",
        ] {
            push(&a);
        }
        push(&format!("file:{}", self.serial.display()));
        push(&"-device");
        push(&"isa-debug-exit,iobase=0xf4,iosize=0x04");
        push(&"-chardev");
        push(&format!("file,id=vftrace,path={}", self.console.display()));
        push(&"-device");
        push(&"isa-debugcon,iobase=0x402,chardev=vftrace");
        push(&"-kernel");
        push(&run.kernel);
        push(&"-append");
        push(&run.cmdline);
        argv
    }

    /// The guest's RAM file while QEMU runs (a sampling profiler reads stacks from it, a live
    /// capture drains the trace pool in it).
    pub fn ram_path(&self) -> &Path {
        &self.ram
    }

    /// The file the guest's debug console writes (its announcements).
    pub fn console_path(&self) -> &Path {
        &self.console
    }

    /// Reads what the run left (serial log, stream) after QEMU ended with `status`.
    pub fn collect(
        &self,
        status: Option<ExitStatus>,
        wall: Duration,
    ) -> std::io::Result<GuestOutcome> {
        let code = status.and_then(|s| s.code());
        let timed_out = code == Some(TIMEOUT_STATUS) || code == Some(128 + 9);
        let serial =
            String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned();
        let announced = std::fs::read(&self.console)
            .ok()
            .and_then(|c| parse_announcement(&c));
        let stream = match announced {
            Some(a) if !timed_out => Some(extract_stream(&self.ram, a)?),
            _ => None,
        };
        Ok(GuestOutcome {
            status: if timed_out { None } else { code },
            timed_out,
            serial,
            stream,
            wall,
        })
    }
}

impl Drop for GuestSession {
    fn drop(&mut self) {
        for f in [&self.ram, &self.console, &self.serial] {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Boots the guest and waits for it (at most `timeout`, then `timeout(1)` stops QEMU).
pub fn run_guest(run: &GuestRun) -> std::io::Result<GuestOutcome> {
    let session = GuestSession::new(run);
    let argv = session.command();
    let start = Instant::now();
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot start timeout/qemu-system-x86_64: {e} (apt-get install qemu-system-x86 coreutils)")))?;
    session.collect(Some(status), start.elapsed())
}

/// Is `path` a QEMU RAM/console file of a session? (For tests checking nothing is left.)
pub fn is_session_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("vftrace-guest-"))
}
