//! Checks made while the VM is stopped after attaching, and again where the guest was not
//! ready yet: the stub gives registers, the RAM file is this VM's memory, the images are what
//! the guest runs (position-independent ones placed first).
use super::Profiler;
use crate::images::Verification;
use crate::memory::{GuestMemory, RamMemory, StubMemory};
use crate::paging::{PageWalk, RamFile};
use crate::regs::Registers;
use crate::stub::Stopped;
use crate::ProfileError;

/// Bytes compared between the stub's view and the RAM file's when checking `--ram`.
const RAM_CHECK_BYTES: usize = 64;
/// Below this, firmware ROM and legacy holes may cover RAM: not compared.
const LEGACY_ROM_END: u64 = 1 << 20;

impl Profiler {
    /// While the VM is stopped after attaching: registers readable, the RAM file is this VM's,
    /// the images are what the guest runs.
    pub(super) fn check_guest(&mut self) -> Result<(), ProfileError> {
        // Opened only now: the VMM creates the file before it opens its gdb port.
        if let Some(path) = &self.opts.ram {
            let ram =
                RamFile::open(path).map_err(|e| ProfileError::Setup(format!("--ram: {e}")))?;
            self.ram = Some(ram);
        }
        let Stopped::Registers(regs) = self.stub.stop_and_read_registers()? else {
            return Err(ProfileError::Setup("the VM exited while attaching".into()));
        };
        let Some((vcpu, first)) = regs
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.as_ref().ok().map(|r| (i, *r)))
        else {
            let why = regs
                .first()
                .and_then(|r| r.as_ref().err())
                .cloned()
                .unwrap_or_default();
            return Err(ProfileError::Setup(format!(
                "the stub at {} gives no vCPU's registers: {why}",
                self.stub.peer()
            )));
        };
        if self.ram.is_some() {
            self.ram_checked = self.check_ram(vcpu, &first)?;
        }
        let (placed, verifications) = match (&self.ram, PageWalk::for_registers(&first)) {
            (Some(ram), Some(walk)) => {
                self.cache.clear();
                let mut mem = RamMemory {
                    ram,
                    walk,
                    cache: &mut self.cache,
                };
                let placed = self.images.place_by_code(&mut mem, first.rip);
                (placed, self.images.verify(&mut mem))
            }
            _ => {
                let mut mem = StubMemory::new(&mut self.stub, vcpu, first.rip);
                let placed = self.images.place_by_code(&mut mem, first.rip);
                let v = self.images.verify(&mut mem);
                if let Some(e) = mem.error.take() {
                    return Err(e.into());
                }
                (placed, v)
            }
        };
        self.notes.extend(placed);
        for image in self.images.images.iter().filter(|i| !i.placed) {
            self.warnings.push(format!(
                "{} is position-independent and was not found at vCPU {vcpu}'s rip {:#x}: give IMAGE@LOAD_ADDRESS",
                image.path.display(),
                first.rip
            ));
        }
        self.judge_images(&verifications, &first)?;
        for (a, b) in self.images.overlaps() {
            self.warnings.push(format!(
                "{} and {} overlap; addresses in both are named from the first",
                a.display(),
                b.display()
            ));
        }
        if self.images.tracer().is_some() && !self.stub.layout().has_fs_base() {
            self.warnings.push(format!(
                "the images are traced by vftrace, but the stub at {} does not give fs_base: traced frames cannot be resolved through the shadow stack",
                self.stub.peer()
            ));
        }
        Ok(())
    }

    /// The RAM file must show what the stub shows, at the stack and at the code. Returns
    /// false when nothing could be compared yet (the guest still runs its firmware, whose ROM
    /// shadows RAM below 1 MiB): the check is then made again at the next stops.
    pub(super) fn check_ram(
        &mut self,
        vcpu: usize,
        regs: &Registers,
    ) -> Result<bool, ProfileError> {
        let ram = self.ram.as_ref().expect("checked by the caller");
        let Some(walk) = PageWalk::for_registers(regs) else {
            return Err(ProfileError::Setup(format!(
                "--ram needs each vCPU's CR3 to find guest memory in {}, and the stub at {} does not give CR3; profile without --ram",
                ram.path.display(),
                self.stub.peer()
            )));
        };
        let mut compared = false;
        for (what, addr) in [("stack", regs.rsp & !7), ("code", regs.rip)] {
            let mut through_stub = [0u8; RAM_CHECK_BYTES];
            if self
                .stub
                .read_memory(vcpu, addr, &mut through_stub)
                .is_err()
            {
                continue;
            }
            self.cache.clear();
            let differs = |detail: String| {
                ProfileError::Setup(format!(
                    "{} does not hold this VM's memory: {detail}; give the mem-path of this VM's memory-backend-file, created with share=on",
                    ram.path.display()
                ))
            };
            match walk.translate(ram, &mut self.cache, addr) {
                Ok(pa) if pa < LEGACY_ROM_END => continue,
                Ok(_) => {}
                Err(reason) => {
                    return Err(differs(format!(
                        "the guest's {what} at {addr:#x} is readable through the stub but maps to {} in the file",
                        reason.describe()
                    )))
                }
            }
            let mut mem = RamMemory {
                ram,
                walk,
                cache: &mut self.cache,
            };
            let mut from_file = [0u8; RAM_CHECK_BYTES];
            let same = mem.read(addr, &mut from_file).is_ok() && from_file == through_stub;
            if !same {
                return Err(differs(format!(
                    "the guest's {what} at {addr:#x} differs from what the stub reads there"
                )));
            }
            compared = true;
        }
        Ok(compared)
    }

    fn judge_images(
        &mut self,
        verifications: &[Verification],
        regs: &Registers,
    ) -> Result<(), ProfileError> {
        for v in verifications {
            if v.mismatch() {
                return Err(ProfileError::Mismatch(format!(
                    "{} is not what the guest runs: {} of {} of its functions compared have other code in guest memory (first at {:#x}); give the guest's own image, and IMAGE@LOAD_ADDRESS if it was relocated",
                    v.path.display(),
                    v.compared - v.matched,
                    v.compared,
                    v.first_mismatch.unwrap_or(0)
                )));
            }
            if v.compared == 0 {
                self.warnings.push(format!(
                    "could not check {} against the guest: none of its code is mapped in the address space of the first vCPU (CR3 {})",
                    v.path.display(),
                    regs.cr3.map_or("unknown".into(), |c| format!("{c:#x}"))
                ));
            }
        }
        Ok(())
    }
}
