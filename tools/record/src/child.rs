//! The traced program as a child process: started with the preload library and the
//! recorder's variables, with this process as the subreaper of its whole family (so that every
//! descendant's end is seen), and signals handled as `time(1)` does: the terminal's Ctrl-C
//! goes to the program, not to the recording.
use anyhow::{bail, Context};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering::*};

/// How a process ended, as `wait` said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ended {
    /// The raw wait status (uftrace keeps it in `info`).
    pub status: i32,
}

impl Ended {
    /// The exit code a shell would report: the code, or 128 + the signal.
    pub fn code(&self) -> i32 {
        if libc::WIFEXITED(self.status) {
            libc::WEXITSTATUS(self.status)
        } else if libc::WIFSIGNALED(self.status) {
            128 + libc::WTERMSIG(self.status)
        } else {
            1
        }
    }

    pub fn describe(&self) -> String {
        if libc::WIFEXITED(self.status) {
            format!("exited with code {}", libc::WEXITSTATUS(self.status))
        } else if libc::WIFSIGNALED(self.status) {
            let sig = libc::WTERMSIG(self.status);
            // SAFETY: strsignal returns a static or thread-local string for any number.
            let name = unsafe { std::ffi::CStr::from_ptr(libc::strsignal(sig)) };
            format!("terminated by signal {sig} ({})", name.to_string_lossy())
        } else {
            format!("ended with wait status {:#x}", self.status)
        }
    }
}

/// Signals the recorder got, one bit each (set by the handler, taken by the drain loop).
static PENDING: AtomicU32 = AtomicU32::new(0);

extern "C" fn note_signal(sig: libc::c_int) {
    if (1..32).contains(&sig) {
        PENDING.fetch_or(1 << sig, Relaxed);
    }
}

/// Signals received since the last call, as a bit set.
pub fn take_signals() -> u32 {
    PENDING.swap(0, Relaxed)
}

/// Catches `signals` (the handler only notes them) for the whole recording.
pub fn catch(signals: &[libc::c_int]) {
    for &sig in signals {
        // SAFETY: a handler that only does an atomic or; SA_RESTART keeps system calls going.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = note_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Starts the program. Returns its pid.
pub fn spawn(
    program: &Path,
    argv0: &str,
    args: &[OsString],
    env: &[(String, OsString)],
) -> anyhow::Result<u32> {
    // SAFETY: prctl with these arguments only changes how orphans are reparented.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        bail!(
            "cannot become the subreaper of the program's processes: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut cmd = Command::new(program);
    cmd.arg0(argv0).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SAFETY: between fork and exec only async-signal-safe calls: restoring default signal
    // dispositions the recorder changed, so the program starts as it would without it.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [
                libc::SIGINT,
                libc::SIGQUIT,
                libc::SIGTERM,
                libc::SIGHUP,
                libc::SIGUSR1,
                libc::SIGUSR2,
            ] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", program.display()))?;
    Ok(child.id())
}

/// Reaps every child that has ended (without waiting). Returns (pid, how it ended) pairs and
/// whether any child is left.
pub fn reap() -> (Vec<(u32, Ended, libc::rusage)>, bool) {
    let mut ended = Vec::new();
    loop {
        let mut status = 0;
        // SAFETY: wait4 with valid out-pointers.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, &mut usage) };
        match pid {
            0 => return (ended, true),
            p if p > 0 => ended.push((p as u32, Ended { status }, usage)),
            _ => return (ended, false), // ECHILD: nobody left
        }
    }
}

/// Sends `sig` to `pid` (if it still exists).
pub fn kill(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}
