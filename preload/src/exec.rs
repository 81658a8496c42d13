//! A traced program that starts another program with an environment of its own (`execve` with
//! a new `envp`, `posix_spawn`) would start it untraced: these wrappers add back what the
//! recorder set (`LD_PRELOAD` and the `VFTRACE_*` variables). They may run in a `vfork` child,
//! so they do not allocate: the new environment goes into memory mapped for it (a page or two,
//! left behind if the exec fails).
use libc::{c_char, c_int, pid_t};
use std::ffi::{CStr, CString};
use std::sync::OnceLock;
use vftrace::os_linux::Next;
use vftrace_format::recording::ALL_VARS;

/// `NAME=value` of every variable the recorder set, as this process started.
struct Saved {
    entries: Vec<CString>,
    /// `LD_PRELOAD`'s value.
    preload: Option<CString>,
}

static SAVED: OnceLock<Saved> = OnceLock::new();

/// Called once, from the library's constructor (allocating is fine there).
pub fn remember_environment() {
    let mut entries = Vec::new();
    for name in ALL_VARS {
        if let Some(v) = std::env::var_os(name) {
            let mut e = name.as_bytes().to_vec();
            e.push(b'=');
            e.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()));
            entries.extend(CString::new(e));
        }
    }
    let preload = std::env::var_os("LD_PRELOAD")
        .and_then(|v| CString::new(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str())).ok());
    let _ = SAVED.set(Saved { entries, preload });
}

fn name_of(entry: &[u8]) -> &[u8] {
    entry.split(|&b| b == b'=').next().unwrap_or(entry)
}

/// `envp` with the recorder's variables put back, or `envp` itself if nothing is missing.
///
/// # Safety
/// `envp` is null or a NULL-terminated array of NUL-terminated strings.
unsafe fn with_recorder_env(envp: *const *const c_char) -> *const *const c_char {
    let Some(saved) = SAVED.get().filter(|s| !s.entries.is_empty()) else {
        return envp;
    };
    let old: &[*const c_char] = if envp.is_null() {
        &[]
    } else {
        let mut n = 0;
        // SAFETY: NULL-terminated (the caller's contract).
        while unsafe { !(*envp.add(n)).is_null() } {
            n += 1;
        }
        // SAFETY: n entries before the NULL.
        unsafe { std::slice::from_raw_parts(envp, n) }
    };
    // SAFETY: entries are NUL-terminated strings.
    let bytes = |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_bytes();
    let ours = |e: &[u8]| ALL_VARS.iter().any(|v| name_of(e) == v.as_bytes());
    let preload_entry = old.iter().map(|&p| bytes(p)).find(|e| name_of(e) == b"LD_PRELOAD");
    let our_preload = saved.preload.as_ref().map(|c| c.to_bytes());
    let preload_ok = match (our_preload, preload_entry) {
        (None, _) => true,
        (Some(ours), Some(e)) => e["LD_PRELOAD=".len()..]
            .split(|&b| b == b':' || b == b' ')
            .any(|part| our_preload_parts(ours).any(|o| o == part)),
        (Some(_), None) => false,
    };
    let vars_ok = saved
        .entries
        .iter()
        .all(|want| old.iter().any(|&p| bytes(p) == want.to_bytes()));
    if preload_ok && vars_ok {
        return envp;
    }
    // Pointers for the kept entries, ours, LD_PRELOAD and the NULL; then the LD_PRELOAD text.
    let preload_text_len = "LD_PRELOAD=".len()
        + our_preload.map_or(0, <[u8]>::len)
        + 1
        + preload_entry.map_or(0, <[u8]>::len)
        + 1;
    let ptrs = old.len() + saved.entries.len() + 2;
    let len = ptrs * std::mem::size_of::<*const c_char>() + preload_text_len;
    // SAFETY: an anonymous private mapping, written below and never unmapped.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        return envp;
    }
    let table = mem as *mut *const c_char;
    let mut n = 0;
    let mut push = |p: *const c_char| {
        // SAFETY: n < ptrs: at most every old entry, every saved one, LD_PRELOAD and NULL.
        unsafe { table.add(n).write(p) };
        n += 1;
    };
    for &p in old {
        let e = bytes(p);
        if !ours(e) && name_of(e) != b"LD_PRELOAD" {
            push(p);
        }
    }
    for e in &saved.entries {
        push(e.as_ptr());
    }
    if let Some(our) = our_preload {
        // SAFETY: the text area follows the pointer table inside the mapping.
        let text = unsafe { (mem as *mut u8).add(ptrs * std::mem::size_of::<*const c_char>()) };
        let mut at = 0;
        let mut put = |b: &[u8]| {
            // SAFETY: `preload_text_len` counted every byte put here.
            unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), text.add(at), b.len()) };
            at += b.len();
        };
        put(b"LD_PRELOAD=");
        put(our);
        if let Some(theirs) = preload_entry.map(|e| &e["LD_PRELOAD=".len()..]).filter(|t| !t.is_empty()) {
            put(b":");
            put(theirs);
        }
        put(b"\0");
        push(text as *const c_char);
    }
    push(std::ptr::null());
    table
}

fn our_preload_parts(ours: &[u8]) -> impl Iterator<Item = &[u8]> {
    ours.split(|&b| b == b':' || b == b' ').filter(|p| !p.is_empty())
}

static EXECVE: Next = Next::new(c"execve");
static EXECVPE: Next = Next::new(c"execvpe");
static FEXECVE: Next = Next::new(c"fexecve");
static POSIX_SPAWN: Next = Next::new(c"posix_spawn");
static POSIX_SPAWNP: Next = Next::new(c"posix_spawnp");

type Argv = *const *const c_char;

#[no_mangle]
pub unsafe extern "C" fn execve(path: *const c_char, argv: Argv, envp: Argv) -> c_int {
    type F = unsafe extern "C" fn(*const c_char, Argv, Argv) -> c_int;
    // SAFETY: the real function's signature; the environment as the caller gave it, completed.
    unsafe { std::mem::transmute::<usize, F>(EXECVE.get())(path, argv, with_recorder_env(envp)) }
}

#[no_mangle]
pub unsafe extern "C" fn execvpe(file: *const c_char, argv: Argv, envp: Argv) -> c_int {
    type F = unsafe extern "C" fn(*const c_char, Argv, Argv) -> c_int;
    // SAFETY: as above.
    unsafe { std::mem::transmute::<usize, F>(EXECVPE.get())(file, argv, with_recorder_env(envp)) }
}

#[no_mangle]
pub unsafe extern "C" fn fexecve(fd: c_int, argv: Argv, envp: Argv) -> c_int {
    type F = unsafe extern "C" fn(c_int, Argv, Argv) -> c_int;
    // SAFETY: as above.
    unsafe { std::mem::transmute::<usize, F>(FEXECVE.get())(fd, argv, with_recorder_env(envp)) }
}

type FileActions = *const libc::posix_spawn_file_actions_t;
type SpawnAttr = *const libc::posix_spawnattr_t;
type SpawnFn = unsafe extern "C" fn(*mut pid_t, *const c_char, FileActions, SpawnAttr, Argv, Argv) -> c_int;

/// `posix_spawn` and `posix_spawnp` differ only in how the real one finds the program.
macro_rules! spawn_wrapper {
    ($name:ident, $next:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            pid: *mut pid_t,
            program: *const c_char,
            actions: FileActions,
            attr: SpawnAttr,
            argv: Argv,
            envp: Argv,
        ) -> c_int {
            // SAFETY: the real function's signature; the environment as the caller gave it,
            // completed.
            unsafe {
                let real = std::mem::transmute::<usize, SpawnFn>($next.get());
                real(pid, program, actions, attr, argv, with_recorder_env(envp))
            }
        }
    };
}

spawn_wrapper!(posix_spawn, POSIX_SPAWN);
spawn_wrapper!(posix_spawnp, POSIX_SPAWNP);
