//! The VM's RAM file and x86_64 address translation in it.
//!
//! QEMU's `memory-backend-file` holds guest RAM from guest-physical address 0. Below 2 GiB the
//! file offset is the physical address on every x86 machine type (microvm, pc and q35 split
//! RAM at 2 GiB or higher, where the 32-bit PCI hole starts); above, the split depends on the
//! machine, so those addresses are not read from the file ([`FaultReason::OutsideRam`]).
//!
//! The walk is the CPU's 4-level one (PML4, PDPT, PD, PT; 1 GiB and 2 MiB pages), from the
//! vCPU's CR3, bounded to four table reads, with every entry's present bit and every physical
//! address checked. With paging off (CR0.PG clear) virtual is physical.
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::memory::{FaultReason, PageCache};
use crate::regs::Registers;

pub const PAGE_SIZE: usize = 4096;
/// Guest-physical addresses below this are file offsets on every machine type.
pub const IDENTITY_LIMIT: u64 = 2 << 30;

const PRESENT: u64 = 1;
const HUGE: u64 = 1 << 7;
/// Bits 51:12 of an entry: the physical frame.
const FRAME_MASK: u64 = 0x000f_ffff_ffff_f000;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;

/// The VM's RAM, as a file.
pub struct RamFile {
    file: File,
    /// Bytes readable as guest-physical memory from 0.
    limit: u64,
    pub path: PathBuf,
    pub size: u64,
}

impl RamFile {
    pub fn open(path: &Path) -> std::io::Result<RamFile> {
        let with_path =
            |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let file = File::open(path).map_err(with_path)?;
        let meta = file.metadata().map_err(with_path)?;
        if !meta.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{}: not a regular file (give the mem-path of the VM's memory-backend-file)",
                    path.display()
                ),
            ));
        }
        if meta.len() < PAGE_SIZE as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{}: {} bytes is no VM's RAM", path.display(), meta.len()),
            ));
        }
        Ok(RamFile {
            file,
            limit: meta.len().min(IDENTITY_LIMIT),
            path: path.to_path_buf(),
            size: meta.len(),
        })
    }

    /// Reads the physical page at `frame` (page-aligned).
    pub fn read_page(&self, frame: u64, page: &mut [u8; PAGE_SIZE]) -> Result<(), FaultReason> {
        if frame
            .checked_add(PAGE_SIZE as u64)
            .is_none_or(|end| end > self.limit)
        {
            return Err(FaultReason::OutsideRam);
        }
        self.file
            .read_exact_at(page, frame)
            .map_err(|_| FaultReason::Io)
    }
}

/// How a vCPU translates addresses, from its control registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageWalk {
    /// Paging off: virtual = physical.
    Identity,
    /// 4-level paging from this PML4 (physical).
    FourLevel {
        pml4: u64,
    },
    Unsupported,
}

impl PageWalk {
    /// The mode `regs` describe. Without CR0/EFER/CR4 (a stub that does not send them) a
    /// non-zero CR3 is taken to mean 4-level long mode, the only mode an x86_64 guest runs
    /// code in after boot.
    pub fn for_registers(regs: &Registers) -> Option<PageWalk> {
        let cr3 = regs.cr3?;
        if regs.cr0.is_some_and(|cr0| cr0 & CR0_PG == 0) {
            return Some(PageWalk::Identity);
        }
        let long = regs.efer.is_none_or(|efer| efer & EFER_LMA != 0)
            && regs
                .cr4
                .is_none_or(|cr4| cr4 & CR4_PAE != 0 && cr4 & CR4_LA57 == 0);
        Some(if long && cr3 != 0 {
            PageWalk::FourLevel {
                pml4: cr3 & FRAME_MASK,
            }
        } else {
            PageWalk::Unsupported
        })
    }

    /// The physical address of `va`.
    pub fn translate(
        &self,
        ram: &RamFile,
        cache: &mut PageCache,
        va: u64,
    ) -> Result<u64, FaultReason> {
        let pml4 = match *self {
            PageWalk::Identity => return Ok(va),
            PageWalk::Unsupported => return Err(FaultReason::UnsupportedPaging),
            PageWalk::FourLevel { pml4 } => pml4,
        };
        // Bits 63:47 must all equal bit 47.
        if ((va as i64) << 16 >> 16) as u64 != va {
            return Err(FaultReason::NonCanonical);
        }
        let mut table = pml4;
        // (index shift, whether a huge page may end the walk here, its offset mask)
        const LEVELS: [(u32, bool, u64); 4] = [
            (39, false, 0),
            (30, true, (1 << 30) - 1),
            (21, true, (1 << 21) - 1),
            (12, false, (1 << 12) - 1),
        ];
        for (level, (shift, may_be_huge, offset_mask)) in LEVELS.into_iter().enumerate() {
            let index = ((va >> shift) & 511) as usize;
            let page = cache.page(ram, table)?;
            let entry =
                u64::from_le_bytes(page[index * 8..index * 8 + 8].try_into().expect("8 bytes"));
            if entry & PRESENT == 0 {
                return Err(FaultReason::NotMapped);
            }
            let last = level == LEVELS.len() - 1;
            if last || (may_be_huge && entry & HUGE != 0) {
                return Ok((entry & FRAME_MASK & !offset_mask) | (va & offset_mask));
            }
            table = entry & FRAME_MASK;
        }
        unreachable!("the last level returns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{GuestMemory, RamMemory};
    use std::io::Write;

    /// A RAM file with page tables at 0x1000 (PML4), 0x2000 (PDPT), 0x3000 (PD), 0x4000 (PT):
    /// virtual 0x40_0000 (4 KiB page) -> physical 0x9000, 0x20_0000 (2 MiB page) -> 0x20_0000;
    /// PML4[1] points outside the file.
    fn ram() -> (tempdir::Dir, RamFile) {
        let mut mem = vec![0u8; 4 << 20];
        let mut put = |addr: usize, v: u64| mem[addr..addr + 8].copy_from_slice(&v.to_le_bytes());
        put(0x1000, 0x2000 | 3);
        put(0x1000 + 8, 0x7_0000_0000 | 3);
        put(0x2000, 0x3000 | 3);
        put(0x3000 + 8, 0x20_0000 | 3 | HUGE);
        put(0x3000 + 2 * 8, 0x4000 | 3);
        put(0x4000, 0x9000 | 3);
        put(0x9010, 0x1122_3344_5566_7788);
        put(0x20_0ff8, 0xaaaa);
        put(0x20_1000, 0xbbbb);
        let dir = tempdir::Dir::new();
        let path = dir.0.join("ram");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&mem)
            .unwrap();
        let file = RamFile::open(&path).unwrap();
        (dir, file)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p =
                    std::env::temp_dir().join(format!("vftrace-paging-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn regs(cr3: u64) -> Registers {
        Registers {
            cr0: Some(CR0_PG | 1),
            cr3: Some(cr3),
            cr4: Some(CR4_PAE),
            efer: Some(EFER_LMA | 1 << 8),
            ..Registers::default()
        }
    }

    #[test]
    fn four_level_walk_with_small_and_huge_pages_and_hostile_addresses() {
        let (_dir, ram) = ram();
        let mut cache = PageCache::default();
        let walk = PageWalk::for_registers(&regs(0x1000)).unwrap();
        let mut mem = RamMemory {
            ram: &ram,
            walk,
            cache: &mut cache,
        };
        assert_eq!(mem.read_u64(0x40_0010).unwrap(), 0x1122_3344_5566_7788);
        // A read across a 4 KiB boundary inside one 2 MiB page.
        let mut b = [0u8; 16];
        mem.read(0x20_0ff8, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b[..8].try_into().unwrap()), 0xaaaa);
        assert_eq!(u64::from_le_bytes(b[8..].try_into().unwrap()), 0xbbbb);

        // Hostile addresses fail cleanly.
        let reason = |m: &mut RamMemory, a| m.read_u64(a).unwrap_err().reason;
        assert_eq!(reason(&mut mem, 0x60_0000), FaultReason::NotMapped);
        assert_eq!(
            reason(&mut mem, 0x8000_0000_0000),
            FaultReason::NonCanonical
        );
        // PML4[1] -> a table far beyond the file.
        assert_eq!(reason(&mut mem, 1 << 39), FaultReason::OutsideRam);
        // The last byte readable then one past the end.
        assert!(mem.read(0x40_0ff8, &mut [0; 8]).is_ok());
        // CR3 outside the file.
        let walk = PageWalk::for_registers(&regs(0x7fff_f000_0000)).unwrap();
        let mut mem = RamMemory {
            ram: &ram,
            walk,
            cache: &mut cache,
        };
        assert_eq!(reason(&mut mem, 0x1000), FaultReason::OutsideRam);
    }

    #[test]
    fn paging_modes() {
        let mut r = regs(0x1000);
        r.cr0 = Some(1);
        assert_eq!(PageWalk::for_registers(&r), Some(PageWalk::Identity));
        let mut r = regs(0x1000);
        r.cr4 = Some(CR4_PAE | CR4_LA57);
        assert_eq!(PageWalk::for_registers(&r), Some(PageWalk::Unsupported));
        let mut r = regs(0x1000);
        r.efer = Some(0);
        assert_eq!(PageWalk::for_registers(&r), Some(PageWalk::Unsupported));
        assert_eq!(PageWalk::for_registers(&Registers::default()), None);
        let only_cr3 = Registers {
            cr3: Some(0x1000),
            ..Registers::default()
        };
        assert_eq!(
            PageWalk::for_registers(&only_cr3),
            Some(PageWalk::FourLevel { pml4: 0x1000 })
        );
    }
}
