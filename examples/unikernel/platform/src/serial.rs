//! Human-readable output on COM1 (0x3f8). QEMU's UART needs no initialisation to transmit.

use core::fmt;

use crate::port::outsb;

pub const COM1: u16 = 0x3f8;

/// A `fmt::Write` for COM1. Each write is one `rep outsb`.
pub struct Serial;

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        outsb(COM1, s.as_bytes());
        Ok(())
    }
}

/// Prints to the serial console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::serial::Serial, $($arg)*);
    }};
}
