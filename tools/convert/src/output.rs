//! A file writer that does its `write` system calls on a thread of its own.
//!
//! Copying hundreds of megabytes into the page cache costs about as much CPU as encoding them;
//! on a second core the two overlap.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Bytes collected before a chunk is handed to the writing thread.
const CHUNK: usize = 1 << 20;
/// Chunks in flight: bounds memory to about (QUEUE + 2) * CHUNK.
const QUEUE: usize = 4;

enum Job {
    Data(Vec<u8>),
    /// Flush the file and answer on the channel.
    Flush(SyncSender<io::Result<()>>),
}

/// Buffers writes and hands them in 1 MiB chunks to a thread that writes them to the file.
/// Errors of the writing thread come back from a later `write` or `flush`, naming the file.
pub struct BackgroundFileWriter {
    path: PathBuf,
    current: Vec<u8>,
    jobs: Option<SyncSender<Job>>,
    /// Emptied buffers coming back for reuse.
    spare: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl BackgroundFileWriter {
    /// Writes to `file`; `path` names it in errors.
    pub fn new(file: File, path: &Path) -> io::Result<Self> {
        let (jobs, job_rx) = sync_channel::<Job>(QUEUE);
        let (spare_tx, spare) = sync_channel::<Vec<u8>>(QUEUE + 2);
        let thread = std::thread::Builder::new()
            .name("vftrace-writer".into())
            .spawn(move || {
                let mut file = file;
                for job in job_rx {
                    match job {
                        Job::Data(mut chunk) => {
                            file.write_all(&chunk)?;
                            chunk.clear();
                            // The producer may have gone; then the buffer is simply dropped.
                            let _ = spare_tx.try_send(chunk);
                        }
                        Job::Flush(answer) => {
                            let _ = answer.send(file.flush());
                        }
                    }
                }
                file.flush()
            })?;
        Ok(BackgroundFileWriter {
            path: path.to_path_buf(),
            current: Vec::with_capacity(CHUNK),
            jobs: Some(jobs),
            spare,
            thread: Some(thread),
        })
    }

    /// The error of the writing thread once it stopped, naming the file.
    fn thread_error(&mut self) -> io::Error {
        self.jobs = None;
        let result = match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the writing thread panicked"))),
            None => Err(io::Error::other(
                "the file was already closed after an error",
            )),
        };
        let e = result
            .err()
            .unwrap_or_else(|| io::Error::other("the writing thread stopped"));
        io::Error::new(e.kind(), format!("{}: {e}", self.path.display()))
    }

    fn send(&mut self, job: Job) -> io::Result<()> {
        let sent = match &self.jobs {
            Some(jobs) => jobs.send(job).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.thread_error())
        }
    }

    fn send_current(&mut self) -> io::Result<()> {
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let chunk = std::mem::replace(&mut self.current, next);
        self.send(Job::Data(chunk))
    }

    /// Writes everything out, waits for the thread and reports its first error.
    pub fn close(mut self) -> io::Result<()> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> io::Result<()> {
        if !self.current.is_empty() {
            self.send_current()?;
        }
        self.jobs = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the writing thread panicked")))
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display()))),
            None => Ok(()),
        }
    }
}

impl BackgroundFileWriter {
    /// Takes the bytes of `chunk` without copying them: the vector itself goes to the writing
    /// thread and `chunk` becomes an empty one of the same capacity (a recycled one if any).
    pub fn write_chunk(&mut self, chunk: &mut Vec<u8>) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        // Bytes given to `write` before go first.
        if !self.current.is_empty() {
            self.send_current()?;
        }
        let capacity = chunk.capacity();
        let mut next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(capacity));
        next.reserve(capacity);
        let full = std::mem::replace(chunk, next);
        self.send(Job::Data(full))
    }
}

/// [`crate::drain`] for a [`BackgroundFileWriter`]: hands the buffer over instead of copying it.
pub(crate) fn hand_over(buf: &mut Vec<u8>, out: &mut BackgroundFileWriter) -> io::Result<()> {
    out.write_chunk(buf)
}

impl Write for BackgroundFileWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.current.extend_from_slice(data);
        if self.current.len() >= CHUNK {
            self.send_current()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.current.is_empty() {
            self.send_current()?;
        }
        let (answer, result) = sync_channel(1);
        self.send(Job::Flush(answer))?;
        match result.recv() {
            Ok(r) => {
                r.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
            }
            Err(_) => Err(self.thread_error()),
        }
    }
}

impl Drop for BackgroundFileWriter {
    fn drop(&mut self) {
        // Whatever was written reaches the file even without an explicit close.
        let _ = self.close_inner();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_everything_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let mut w = BackgroundFileWriter::new(File::create(&path).unwrap(), &path).unwrap();
        let mut expected = Vec::new();
        for i in 0..20_000u32 {
            let piece = i.to_le_bytes().repeat((i % 97) as usize);
            w.write_all(&piece).unwrap();
            expected.extend_from_slice(&piece);
        }
        w.flush().unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), expected.len());
        w.write_all(b"tail").unwrap();
        expected.extend_from_slice(b"tail");
        w.close().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    #[test]
    fn chunks_and_writes_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let mut w = BackgroundFileWriter::new(File::create(&path).unwrap(), &path).unwrap();
        let mut expected = Vec::new();
        let mut chunk = Vec::with_capacity(1000);
        for i in 0..5_000u32 {
            let piece = i.to_le_bytes().repeat((i % 37) as usize);
            if i % 3 == 0 {
                w.write_all(&piece).unwrap();
            } else {
                chunk.extend_from_slice(&piece);
                w.write_chunk(&mut chunk).unwrap();
                assert!(chunk.is_empty() && chunk.capacity() >= 1000);
            }
            expected.extend_from_slice(&piece);
        }
        w.close().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    #[test]
    fn errors_name_the_file() {
        // /dev/full fails every write with ENOSPC.
        let path = Path::new("/dev/full");
        let Ok(file) = File::options().write(true).open(path) else {
            return;
        };
        let mut w = BackgroundFileWriter::new(file, path).unwrap();
        let big = vec![0u8; 3 * CHUNK];
        let result = w.write_all(&big).and_then(|_| w.flush());
        let err = result.expect_err("writing to /dev/full must fail");
        assert!(err.to_string().contains("/dev/full"), "{err}");
    }
}
