//! Running a program (or a tracer running it) to completion, with a time limit.
use crate::program::Ended;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A traced program that hangs must fail its test, not the whole run.
const TIME_LIMIT: Duration = Duration::from_secs(180);

pub struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub ended: Ended,
}

/// Runs `cmd` in a process group of its own (killed as a whole at the time limit).
pub fn run_to_end(cmd: &mut Command) -> Result<Outcome, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + TIME_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on the process group this function created.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            return Err(format!(
                "{what} did not end within {} s (killed)",
                TIME_LIMIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Outcome {
        stdout: out.join().unwrap(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
        ended: Ended::from_status(status),
    })
}

/// The end of a long text, for failure messages.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    let mut out = String::new();
    if from > 0 {
        out.push_str(&format!("[... {from} lines before]\n"));
    }
    for l in &all[from..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}
