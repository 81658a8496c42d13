//! A panic two frames below catch_unwind, caught, then the same calls without a panic. While
//! the panic passes, the guard in middle() is dropped in middle's frame; inner, middle and the
//! closure end; everything above the catch (protected, main) goes on and ends normally later.
use std::hint::black_box;

struct Guard(u32);

impl Drop for Guard {
    #[inline(never)]
    fn drop(&mut self) {
        println!("drop guard {}", self.0);
    }
}

#[inline(never)]
fn inner(n: u32) -> u32 {
    if black_box(n) > 0 {
        panic!("inner failed at {n}");
    }
    n
}

#[inline(never)]
fn middle(n: u32) -> u32 {
    let _guard = Guard(n);
    inner(n) + 1
}

#[inline(never)]
fn protected(n: u32) -> Option<u32> {
    std::panic::catch_unwind(|| middle(n)).ok()
}

#[inline(never)]
fn after(x: u32) -> u32 {
    black_box(x) + 1
}

fn main() {
    let a = protected(1);
    let b = after(7);
    let c = protected(0);
    println!("{a:?} {b} {c:?}");
}
