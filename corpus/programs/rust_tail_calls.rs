//! Sibling calls in ordinary optimised Rust: a ends by jumping to b, b by jumping to c (the test
//! checks the disassembly), as `Arc::drop_slow` ends by jumping to `__rust_dealloc`. The calls
//! happened: main called a, a called b, b called c.
use std::hint::black_box;

#[inline(never)]
fn c(x: u64) -> u64 {
    x.wrapping_mul(2654435761) >> 3
}

#[inline(never)]
fn b(x: u64) -> u64 {
    c(x ^ 0x55)
}

#[inline(never)]
fn a(x: u64) -> u64 {
    b(x.wrapping_mul(3))
}

#[inline(never)]
fn after(x: u64) -> u64 {
    x.wrapping_sub(1)
}

fn main() {
    let r = a(black_box(5));
    println!("a(5) = {r}");
    println!("after(a(5)) = {}", after(black_box(r)));
}
