//! Sampling a running guest's vCPU stacks from the host, with no help from the guest: the
//! practical route on Linux/KVM to DTrace's `vm_profile_guest`.
//!
//! Only the VMM can read a vCPU's registers, so the sampler talks to its gdb stub (QEMU's
//! `-gdb tcp:HOST:PORT`, uhyve's `--gdb-port`). At a fixed rate it stops the VM, reads every
//! vCPU's rip, rsp, rbp, CR3, CPL and FS.base in one round trip, walks each frame-pointer
//! chain in guest memory while the VM is stopped, and lets it run. Guest memory comes from the
//! VM's RAM file with a page-table walk from CR3 (fast: no round trip) or from the stub.
//! Addresses are named from the guest's ELF images; an instrumented guest's return addresses
//! (vftrace's trampoline) are resolved through its shadow stack.
//!
//! One module per job:
//! - [`rsp`]: the gdb remote protocol (framing, checksums, acks, timeouts);
//! - [`stub`]: the session (handshake, threads, stop + registers, memory, continue, detach);
//! - [`regs`]: the registers' place in the `g` reply, from the target description;
//! - [`memory`], [`paging`]: guest-virtual memory from the RAM file or the stub;
//! - [`unwind`]: the frame-pointer walk; [`shadow`]: vftrace's shadow stack;
//! - [`images`]: ELF images at load addresses, names, and the check against the guest;
//! - [`aggregate`], [`output`]: folded stacks, flame graph, the (vCPU, CR3, CPL) table;
//! - [`compare`]: inclusive time shares from a trace, to set beside the samples' ones;
//! - [`sampler`]: the session that ties them together.
pub mod aggregate;
pub mod compare;
pub mod images;
pub mod memory;
pub mod output;
pub mod paging;
pub mod regs;
pub mod rsp;
pub mod sampler;
pub mod shadow;
pub mod stub;
pub mod unwind;

use std::path::{Path, PathBuf};

pub use images::ImageSpec;
pub use output::Title;
pub use sampler::{ProfileOptions, ProfileSummary, Profiler, Progress, RunEnd};
pub use unwind::WalkLimits;

/// Why a profile could not be taken or written.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Image(#[from] images::ImageError),
    #[error(transparent)]
    Stub(#[from] stub::StubError),
    #[error("{0}")]
    Mismatch(String),
    #[error("{0}")]
    Setup(String),
    #[error("writing {}: {source}", path.display())]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<rsp::RspError> for ProfileError {
    fn from(e: rsp::RspError) -> Self {
        ProfileError::Stub(e.into())
    }
}

impl ProfileError {
    fn output(path: &Path, source: std::io::Error) -> ProfileError {
        ProfileError::Output {
            path: path.to_path_buf(),
            source,
        }
    }
}
