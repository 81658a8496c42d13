//! The process side of recording while a command runs: stop signals caught so that cleanup
//! runs, and the command itself, never left running. Shared by `vftrace kvm` and `vftrace
//! profile`.
use anyhow::{Context, Result};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

// --- signals ---------------------------------------------------------------------------

/// The last SIGINT/SIGTERM/SIGHUP received while recording (0: none).
static RECEIVED_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_signal(signal: libc::c_int) {
    RECEIVED_SIGNAL.store(signal, Ordering::SeqCst);
}

pub fn received_signal() -> Option<i32> {
    match RECEIVED_SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Catches the stop signals while recording so cleanup runs; restores the previous
/// handlers when dropped.
pub struct SignalGuard {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl SignalGuard {
    pub fn install() -> SignalGuard {
        RECEIVED_SIGNAL.store(0, Ordering::SeqCst);
        let mut previous = Vec::new();
        for signal in STOP_SIGNALS {
            // SAFETY: sigaction is plain data; zeroed is a valid empty value.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = note_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            // SA_RESTART: slow system calls elsewhere in the process just continue.
            action.sa_flags = libc::SA_RESTART;
            // SAFETY: see above.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers are valid; the handler only stores to an atomic, which is
            // async-signal-safe.
            if unsafe { libc::sigaction(signal, &action, &mut old) } == 0 {
                previous.push((signal, old));
            }
        }
        SignalGuard { previous }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (signal, old) in &self.previous {
            // SAFETY: restores an action the kernel gave us for this signal.
            unsafe { libc::sigaction(*signal, old, std::ptr::null_mut()) };
        }
    }
}

// --- the recorded command ------------------------------------------------------------------

/// The command being recorded; never left running (dropping it terminates and reaps it).
pub struct ChildGuard {
    child: Option<Child>,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    pub fn spawn(command: &[String]) -> Result<ChildGuard> {
        Self::spawn_with(command, || Ok(()))
    }

    /// Like [`ChildGuard::spawn`], with `before_exec` run in the child just before it execs
    /// the command (after the death signal is set up). It runs between fork and exec, so it
    /// may only call async-signal-safe functions (open, write, close, getpid...) and must not
    /// allocate.
    pub fn spawn_with(
        command: &[String],
        mut before_exec: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Result<ChildGuard> {
        let child = match command.split_first() {
            None => None,
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args);
                let recorder = std::process::id();
                // SAFETY: the closure runs in the forked child before exec and calls only
                // async-signal-safe functions (prctl, getppid).
                unsafe {
                    command.pre_exec(move || {
                        // Ends the command when the recorder dies, even by SIGKILL (no cleanup
                        // of ours runs then). SIGTERM: a wrapper like timeout(1) passes it on.
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        // The recorder may have died before the prctl: then nobody would.
                        if libc::getppid() as u32 != recorder {
                            return Err(std::io::Error::other("the recorder has exited"));
                        }
                        before_exec()
                    })
                };
                Some(command.spawn().with_context(|| {
                    format!("cannot run `{program}` (is it installed and on PATH?)")
                })?)
            }
        };
        Ok(ChildGuard {
            child,
            status: None,
        })
    }

    /// True once the command has exited (never when there is none).
    pub fn exited(&mut self) -> Result<bool> {
        let Some(child) = &mut self.child else {
            return Ok(false);
        };
        if self.status.is_none() {
            self.status = child.try_wait().context("cannot wait for the command")?;
        }
        Ok(self.status.is_some())
    }

    /// Ends the command if it still runs (`signal`, then SIGKILL after 5 s) and returns its
    /// status.
    pub fn finish(&mut self, signal: libc::c_int) -> Result<Option<ExitStatus>> {
        if self.exited()? || self.child.is_none() {
            return Ok(self.status);
        }
        let child = self.child.as_mut().expect("checked above");
        // SAFETY: kill has no memory effects; the pid is our unreaped child, so it cannot
        // have been reused.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                self.status = Some(status);
                return Ok(self.status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("vftrace: the command did not stop within 5 s of signal {signal}; killing it");
        let _ = child.kill();
        self.status = Some(child.wait()?);
        Ok(self.status)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.status.is_none() && self.child.is_some() {
            let _ = self.finish(libc::SIGTERM);
        }
    }
}
