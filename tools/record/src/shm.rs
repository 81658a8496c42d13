//! The pool in shared memory: a memfd the traced processes map by path
//! (`/proc/<recorder>/fd/<n>`: it survives a program that closes its file descriptors, and
//! disappears with the recorder).
use anyhow::{bail, Context};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use vftrace_format::pool::{Pool, PoolParams};

pub struct SharedPool {
    _fd: OwnedFd,
    mem: *mut u8,
    len: usize,
    pub pool: Pool,
    /// What the traced processes open.
    pub path: String,
}

impl SharedPool {
    pub fn create(len: usize, params: &PoolParams) -> anyhow::Result<SharedPool> {
        // SAFETY: memfd_create with a NUL-terminated name; the fd is owned below.
        let fd = unsafe { libc::memfd_create(c"vftrace-pool".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            bail!("memfd_create: {}", std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate/mmap on our own fd; the mapping is unmapped in Drop.
        let mem = unsafe {
            if libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) != 0 {
                bail!(
                    "cannot size the {} MiB trace pool: {}",
                    len >> 20,
                    std::io::Error::last_os_error()
                );
            }
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            bail!(
                "cannot map the trace pool: {}",
                std::io::Error::last_os_error()
            );
        }
        let mem = mem as *mut u8;
        // SAFETY: fresh, zero-filled, page-aligned shared memory of `len` bytes, ours.
        let pool = unsafe { Pool::create(mem, len, params) }
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("a pool of {len} bytes (--buffer)"))?;
        let path = format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd());
        Ok(SharedPool {
            _fd: fd,
            mem,
            len,
            pool,
            path,
        })
    }
}

impl Drop for SharedPool {
    fn drop(&mut self) {
        // SAFETY: our own mapping, not used after this.
        unsafe { libc::munmap(self.mem.cast(), self.len) };
    }
}
