//! Counters of one traced thread: what the backend reports through its C ABI, what a guest's
//! stream carries and what a dump sums up. `no_std`.

/// Counters of one traced thread (C layout: the backend's `vftrace_backend_thread_stats` fills it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ThreadStats {
    /// Thread id (the frontend's `thread_id` callback).
    pub tid: u64,
    /// Records the thread holds now (what a reader gets; what a stream carries).
    pub records: u64,
    /// Records dropped because the buffer was full (stop-when-full mode).
    pub lost: u64,
    /// Records overwritten by newer ones (ring mode).
    pub overwritten: u64,
    /// Calls not hooked because the shadow stack was full (their subtree is not traced).
    pub unhooked: u64,
}
