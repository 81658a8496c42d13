//! A Rust program that links libvftrace.a and uses its C API itself (when VFTRACE_CORPUS_DIR
//! is set): nothing is traced but work() and leaf(). vftrace_dump must not trace vftrace's own
//! work, such as allocating (Rust's allocator shim, `__rustc::__rust_alloc`, is instrumented in
//! this very binary). Everything the program allocates itself is allocated before tracing
//! starts or after the dump.
use std::ffi::{c_char, c_int, CString};
use std::hint::black_box;
use std::os::unix::ffi::OsStringExt;

extern "C" {
    fn vftrace_init(capacity_bytes: usize, mode: c_int) -> c_int;
    fn vftrace_enable();
    fn vftrace_dump(dir: *const c_char) -> c_int;
}

#[inline(never)]
fn leaf(x: u64) -> u64 {
    black_box(x) * 3
}

#[inline(never)]
fn work(n: u64) -> u64 {
    let mut sum = 0;
    let mut i = 0;
    while i < n {
        sum += leaf(i);
        i += 1;
    }
    sum
}

fn main() {
    let dir = std::env::var_os("VFTRACE_CORPUS_DIR").map(|d| CString::new(d.into_vec()).unwrap());
    if dir.is_some() {
        // SAFETY: called once, before any other vftrace call.
        assert_eq!(unsafe { vftrace_init(64 << 20, 0) }, 0);
        // SAFETY: after vftrace_init.
        unsafe { vftrace_enable() };
    }
    let r = work(3);
    if let Some(dir) = &dir {
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { vftrace_dump(dir.as_ptr()) }, 0);
    }
    println!("work(3) = {r}");
}
