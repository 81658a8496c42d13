//! Shared by the tests that record for real: dependency checks, a tiny KVM guest, scratch
//! directories.
#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::process::Command;

/// Checks root, tracefs, /dev/kvm and QEMU. Outside CI a missing one skips the test (loudly);
/// with CI=true it fails the test.
pub fn recording_possible(test: &str) -> bool {
    let mut missing = Vec::new();
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (tracefs instances need it)".to_string());
    }
    if !Path::new("/dev/kvm").exists() {
        missing.push("/dev/kvm".into());
    }
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map_or(true, |o| !o.status.success())
    {
        missing.push("qemu-system-x86_64 (apt-get install qemu-system-x86)".into());
    }
    if missing.is_empty() {
        if let Err(e) = vftrace_kvm::tracefs::Tracefs::locate_or_mount() {
            missing.push(format!("tracefs ({e:#})"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "{test}: cannot record KVM events here, missing: {}",
        missing.join(", ")
    );
    vftrace_testsupport::missing(&message, "run as root on a machine with /dev/kvm");
    false
}

/// A fresh scratch directory for one test.
pub fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vftrace-kvm-test-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Guest port the marker value is written to.
pub const MARKER_PORT: u16 = 0x6a0;
/// Value written to QEMU's isa-debug-exit port; QEMU then exits with (v << 1) | 1.
pub const EXIT_VALUE: u32 = 0x21;
pub const QEMU_EXIT_STATUS: i32 = ((EXIT_VALUE << 1) | 1) as i32;

/// A 64 KiB firmware image (QEMU wants a multiple of 64 KiB, mapped below 4 GiB) whose reset
/// vector, in real mode, writes `marker` to [`MARKER_PORT`] and [`EXIT_VALUE`] to the
/// isa-debug-exit port 0xf4, then halts.
pub fn write_guest_bios(path: &Path, marker: u32) {
    let mut code = Vec::new();
    out_imm32(&mut code, MARKER_PORT, marker);
    finish_guest(path, code);
}

/// Like [`write_guest_bios`], but writes `count`, `count - 1`, ..., 1 to [`MARKER_PORT`]
/// (`count` must be at least 1).
pub fn write_busy_guest_bios(path: &Path, count: u32) {
    let mut code = vec![0x66, 0xb9]; // mov ecx, imm32
    code.extend(count.to_le_bytes());
    code.push(0xba); // mov dx, imm16
    code.extend(MARKER_PORT.to_le_bytes());
    code.extend([0x66, 0x89, 0xc8]); // again: mov eax, ecx
    code.extend([0x66, 0xef]); // out dx, eax
    code.extend([0x66, 0x49]); // dec ecx
    code.extend([0x75, 0xf7]); // jnz again
    finish_guest(path, code);
}

/// `mov eax, value; mov dx, port; out dx, eax`
fn out_imm32(code: &mut Vec<u8>, port: u16, value: u32) {
    code.extend([0x66, 0xb8]);
    code.extend(value.to_le_bytes());
    code.push(0xba);
    code.extend(port.to_le_bytes());
    code.extend([0x66, 0xef]);
}

/// Appends the exit write and a halt loop, and writes the image with `code` at the reset
/// vector's target.
fn finish_guest(path: &Path, mut code: Vec<u8>) {
    out_imm32(&mut code, 0xf4, EXIT_VALUE);
    code.extend([0xf4, 0xeb, 0xfd]); // hlt; jmp back to hlt
    let mut image = vec![0xf4u8; 64 * 1024]; // hlt everywhere
    let code_at = 0xff00;
    image[code_at..code_at + code.len()].copy_from_slice(&code);
    // The reset vector (0xffff0 = offset 0xfff0): jmp near to the code.
    let rel = (code_at as i32 - (0xfff0 + 3)) as i16;
    image[0xfff0] = 0xe9;
    image[0xfff1..0xfff3].copy_from_slice(&rel.to_le_bytes());
    std::fs::write(path, image).unwrap();
}

/// The command line booting that firmware in a microvm under `timeout`.
pub fn qemu_command(bios: &Path) -> Vec<String> {
    let line = "timeout 30 qemu-system-x86_64 -accel kvm -cpu host,-arch-capabilities -machine microvm -m 64 \
                -no-reboot -monitor none -serial none -display none -device isa-debug-exit,iobase=0xf4,iosize=0x04";
    let mut command: Vec<String> = line.split_whitespace().map(String::from).collect();
    command.extend(["-bios".to_string(), bios.display().to_string()]);
    command
}

/// Instances in tracefs whose name says process `pid` made them.
pub fn instances_of(pid: u32) -> Vec<String> {
    let tracefs = vftrace_kvm::tracefs::Tracefs::locate_or_mount().unwrap();
    let prefix = format!("{}{pid}-", vftrace_kvm::tracefs::INSTANCE_PREFIX);
    std::fs::read_dir(tracefs.root().join("instances"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}
