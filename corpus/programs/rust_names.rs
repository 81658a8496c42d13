//! Rust names of every kind: a generic function instantiated for two types, trait methods of two
//! impls, an inherent method, a closure inside a generic function, a nested module.
use std::hint::black_box;

mod shapes {
    pub trait Area {
        fn area(&self) -> f64;
    }

    pub struct Square(pub f64);
    pub struct Circle(pub f64);

    impl Square {
        #[inline(never)]
        pub fn new(side: f64) -> Square {
            Square(std::hint::black_box(side))
        }
    }

    impl Area for Square {
        #[inline(never)]
        fn area(&self) -> f64 {
            self.0 * self.0
        }
    }

    impl Area for Circle {
        #[inline(never)]
        fn area(&self) -> f64 {
            3.0 * self.0 * self.0
        }
    }
}

use shapes::{Area, Circle, Square};

#[inline(never)]
fn total<T: Area>(items: &[T]) -> f64 {
    let mut sum = 0.0;
    let mut add = |s: &T| sum += s.area();
    // Called through a trait object the optimiser cannot see through, the closure stays a
    // function of its own.
    let add: &mut dyn FnMut(&T) = black_box(&mut add);
    for item in items {
        add(item);
    }
    sum
}

fn main() {
    let squares = [Square::new(1.0), Square::new(2.0)];
    let circles = [Circle(1.0)];
    let t = total(&squares) + total(&circles);
    println!("total = {t}");
}
