//! What the backend asks of the system it runs on: the table of C callbacks
//! (`vftrace_format::abi::Platform`) the frontend hands over at init, and what happens when a
//! callback is missing.

pub use vftrace_format::abi::{Platform, ThreadInfo};

/// The callbacks with their fallbacks.
pub(crate) trait PlatformExt {
    fn thread_info(&self) -> ThreadInfo;
    fn signal_stack(&self) -> Option<(usize, usize)>;
    fn fatal(&self, message: &str) -> !;
}

impl PlatformExt for Platform {
    fn thread_info(&self) -> ThreadInfo {
        let mut info = ThreadInfo::default();
        if let Some(f) = self.thread_info {
            f(&mut info);
        }
        info
    }

    fn signal_stack(&self) -> Option<(usize, usize)> {
        let f = self.signal_stack?;
        let mut range = [0usize; 2];
        (f(&mut range) != 0 && range[0] < range[1]).then_some((range[0], range[1]))
    }

    fn fatal(&self, message: &str) -> ! {
        if let Some(f) = self.fatal {
            f(message.as_ptr(), message.len());
        }
        // SAFETY: ud2 raises #UD and nothing else.
        unsafe { core::arch::asm!("ud2", options(noreturn, nomem, nostack)) }
    }
}
