//! Host-timestamped probes (as HyperTrace does with hypercalls): [`probe`] is one port write,
//! which the host stamps with its own TSC (`kvm:kvm_pio`) and `vftrace merge` shows as a named
//! instant on the guest's vCPU track, at host time. Guests name their ids with
//! [`probe_names!`](crate::probe_names), a table in the image (ELF notes) that the host reads.
//! See `vftrace_format::probes` for the encoding.
//!
//! ```ignore
//! vftrace::probe_names! { 1 => "request begins", 2 => "request ends" }
//! vftrace::probe(1, request_id);
//! ```
//!
//! For guests only (a kernel, or code at CPL3 that may do port I/O): in a program under an
//! operating system with the `std` feature (Linux) the port write would fault, so there
//! [`probe`] does nothing.

pub use vftrace_format::probes::{ProbeNameNote, MAX_PROBE_VALUE, PROBE_PORT};

/// Probe `id` with `value` (its low 24 bits; see [`MAX_PROBE_VALUE`]): one 32-bit `out` to
/// [`PROBE_PORT`], so one VM exit.
#[inline(always)]
pub fn probe(id: u8, value: u32) {
    #[cfg(all(
        target_arch = "x86_64",
        any(not(feature = "std"), target_os = "hermit")
    ))]
    // SAFETY: a port write touches no memory; the probe port belongs to no device (QEMU
    // ignores writes to unassigned ports), so only the host's KVM sees it.
    unsafe {
        core::arch::asm!(
            "out dx, eax",
            in("dx") PROBE_PORT,
            in("eax") vftrace_format::probes::encode(id, value),
            options(nomem, nostack, preserves_flags)
        )
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        any(not(feature = "std"), target_os = "hermit")
    )))]
    let _ = (id, value);
}

/// Names probe ids: `vftrace::probe_names! { 1 => "request begins", 2 => "request ends" }`
/// puts one ELF note per id (section `.note.vftrace`) in the image, which `vftrace capture`
/// and `vftrace demo` copy into the trace (`vftrace.probes`). Names are cut at 47 bytes. Use it
/// once per image.
#[macro_export]
macro_rules! probe_names {
    ($($id:expr => $name:expr),* $(,)?) => {
        const _: () = {
            const NAMES: &[(u8, &str)] = &[$(($id, $name)),*];
            // Notes are kept by the linker even though nothing refers to them.
            #[used]
            #[link_section = ".note.vftrace"]
            static PROBE_NAMES: [$crate::probe::ProbeNameNote; NAMES.len()] =
                $crate::probe::ProbeNameNote::table(NAMES);
        };
    };
}
