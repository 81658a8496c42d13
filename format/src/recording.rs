//! What `vftrace record` tells the programs it runs, through their environment: where its pool
//! is, where the trace goes, and the tracing options. Read by the traced side (the preload
//! library, or a program that links vftrace), written by the recorder.

/// Path of the pool (shared memory) to record into.
pub const POOL_VAR: &str = "VFTRACE_POOL";
/// The trace directory; a process writes its own `sid-SID.map` there when it starts.
pub const DIR_VAR: &str = "VFTRACE_DIR";
/// `-D N`: deepest recorded level.
pub const DEPTH_VAR: &str = "VFTRACE_DEPTH";
/// `-t DUR`, in TSC ticks (the recorder knows the frequency).
pub const TIME_FILTER_VAR: &str = "VFTRACE_TIME_FILTER_TSC";
/// `-F RE` (several, separated by newlines).
pub const FILTER_VAR: &str = "VFTRACE_FILTER";
/// `-N RE` (several, separated by newlines).
pub const NOTRACE_VAR: &str = "VFTRACE_NOTRACE";
/// Every variable above: what a traced program's `exec` must pass on.
pub const ALL_VARS: [&str; 6] = [
    POOL_VAR,
    DIR_VAR,
    DEPTH_VAR,
    TIME_FILTER_VAR,
    FILTER_VAR,
    NOTRACE_VAR,
];
