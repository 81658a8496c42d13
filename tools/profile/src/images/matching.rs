//! Whether, and where, the guest runs the images: position-independent images placed by the
//! code at a stopped vCPU's rip, and every image's code compared with guest memory.
use std::path::PathBuf;

use super::Images;
use crate::memory::GuestMemory;

/// Functions compared with guest memory per image, and the bytes compared in each.
const VERIFY_FUNCTIONS: usize = 8;
const VERIFY_BYTES: usize = 32;

impl Images {
    /// Places the position-independent images given without a load address where the guest's
    /// loader put them (uhyve, for one, picks a new address every run): the code bytes at
    /// `rip`, found once in an image's executable segments at a page-aligned bias, place it.
    /// [`Images::verify`] then checks the placement. Returns one message per image placed.
    pub fn place_by_code(&mut self, mem: &mut dyn GuestMemory, rip: u64) -> Vec<String> {
        const PROBE: usize = 32;
        let mut messages = Vec::new();
        let mut at_rip = [0u8; PROBE];
        if mem.read(rip, &mut at_rip).is_err() {
            return messages;
        }
        for image in self.images.iter_mut().filter(|i| !i.placed) {
            let mut found = None;
            let mut count = 0;
            for (start, bytes) in &image.code {
                for (off, window) in bytes.windows(PROBE).enumerate() {
                    if window == at_rip {
                        count += 1;
                        found = Some(start.wrapping_add(off as u64));
                    }
                }
            }
            let Some(addr) = found.filter(|_| count == 1) else {
                continue;
            };
            let bias = image.bias.wrapping_add(rip.wrapping_sub(addr));
            if bias % 4096 != 0 {
                continue;
            }
            image.rebase(bias);
            messages.push(format!(
                "{} is loaded at bias {bias:#x} (the code at rip {rip:#x} is found there)",
                image.path.display()
            ));
        }
        messages
    }

    /// Compares each image's code with guest memory (a few functions' bytes, away from their
    /// first bytes, which tracers and kernels patch).
    pub fn verify(&self, mem: &mut dyn GuestMemory) -> Vec<Verification> {
        self.images
            .iter()
            .map(|image| {
                let mut v = Verification {
                    path: image.path.clone(),
                    compared: 0,
                    matched: 0,
                    first_mismatch: None,
                };
                let candidates: Vec<_> = image
                    .symbols
                    .functions
                    .iter()
                    .filter(|f| f.size as usize >= VERIFY_BYTES + 16)
                    .collect();
                let step = (candidates.len() / VERIFY_FUNCTIONS).max(1);
                for f in candidates.iter().step_by(step).take(VERIFY_FUNCTIONS) {
                    let addr = f.addr.wrapping_add(image.bias) + 16;
                    let Some(expected) = self.code(addr, VERIFY_BYTES) else {
                        continue;
                    };
                    let mut got = [0u8; VERIFY_BYTES];
                    if mem.read(addr, &mut got).is_err() {
                        continue;
                    }
                    v.compared += 1;
                    if got[..] == *expected {
                        v.matched += 1;
                    } else if v.first_mismatch.is_none() {
                        v.first_mismatch = Some(addr);
                    }
                }
                v
            })
            .collect()
    }
}

/// How an image compared with guest memory.
#[derive(Clone, Debug)]
pub struct Verification {
    pub path: PathBuf,
    pub compared: usize,
    pub matched: usize,
    pub first_mismatch: Option<u64>,
}

impl Verification {
    /// Most compared code differs: the guest does not run this image there.
    pub fn mismatch(&self) -> bool {
        self.compared > 0 && self.matched * 2 < self.compared
    }
}
