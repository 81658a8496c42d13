//! Real binaries built here with gcc, judged by `nm -n` and by uftrace 0.13 itself.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use vftrace_symbols::{
    elf_functions, placement_in_trace_dir, write_sym_file, ImageKind, Placement, SymError,
};

/// True if `tool` runs. In CI a missing tool fails the test; elsewhere the test is skipped
/// with a loud message.
fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        vftrace_testsupport::missing(tool, "this test needs it");
    }
    ok
}

/// A fresh directory, removed when the test passes (kept for inspection when it fails).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("vftrace-symbols-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

const PROGRAM: &str = r#"
#include <stdio.h>
__attribute__((noinline)) static int helper(int x) { return x ^ 3; }
__attribute__((noinline)) int leaf(int x) { return helper(x) * 2; }
__attribute__((noinline)) int mid(int x) { return leaf(x) + 1; }
__attribute__((weak)) int weakling(int x) { return x - 1; }
int main(void) { int s = 0; for (int i = 0; i < 3; i++) s += mid(i) + weakling(i); printf("%d\n", s); return 0; }
"#;

fn build(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let src = dir.join("prog.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let out = dir.join(name);
    let build_id = "-Wl,--build-id=0x0123456789abcdef0123456789abcdef01234567";
    let all: Vec<&str> = flags
        .iter()
        .copied()
        .chain(["-O1", "-pg", build_id])
        .collect();
    vftrace_testsupport::gcc(&src, &out, &all);
    out
}

/// `nm -n` text symbols as (address, name).
fn nm_text_symbols(elf: &Path) -> BTreeSet<(u64, String)> {
    let out = Command::new("nm").arg("-n").arg(elf).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (addr, kind, name) = (f.next()?, f.next()?, f.next()?);
            "TtWwi"
                .contains(kind)
                .then(|| (u64::from_str_radix(addr, 16).unwrap(), name.to_string()))
        })
        .collect()
}

fn check_against_nm(flags: &[&str], kind: ImageKind) {
    if !have("gcc") || !have("nm") {
        return;
    }
    let dir = scratch(&format!("nm{}", flags.join("")));
    let elf = build(&dir, "prog", flags);
    let syms = elf_functions(&elf).unwrap();
    assert_eq!(syms.kind, kind);
    assert_eq!(
        syms.build_id_hex().as_deref(),
        Some("0123456789abcdef0123456789abcdef01234567")
    );
    assert!(!syms.from_dynsym);
    let nm = nm_text_symbols(&elf);
    for f in &syms.functions {
        assert!(
            nm.contains(&(f.addr, f.name.clone())),
            "{} at {:#x} is not in nm -n's text symbols",
            f.name,
            f.addr
        );
    }
    for name in ["helper", "leaf", "mid", "main", "weakling"] {
        let (addr, _) = nm
            .iter()
            .find(|(_, n)| n == name)
            .unwrap_or_else(|| panic!("nm lacks {name}"));
        let ours = syms
            .functions
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("we lack {name}"));
        assert_eq!(ours.addr, *addr, "{name}");
        assert!(ours.size > 0, "{name} has a size");
        assert_eq!(syms.function_at(addr + 1).unwrap().name, name);
    }
    assert_eq!(
        syms.functions
            .iter()
            .find(|f| f.name == "helper")
            .unwrap()
            .type_char(),
        't'
    );
    assert_eq!(
        syms.functions
            .iter()
            .find(|f| f.name == "weakling")
            .unwrap()
            .type_char(),
        'w'
    );
    assert!(
        syms.functions.windows(2).all(|w| w[0].addr < w[1].addr),
        "sorted, one per address"
    );

    // The .sym file: addresses relative to the first mapping, last function terminated.
    let out = dir.join("prog.sym");
    write_sym_file(
        &syms,
        &Placement {
            load_address: Some(0x5555_5555_4000),
            ..Default::default()
        },
        &out,
    )
    .unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let parsed = vftrace_format::sym::parse_symbols(text.as_bytes(), &out).unwrap();
    let base = syms.link_base();
    for f in &syms.functions {
        let found = parsed
            .find(f.addr - base + f.size.max(1) - 1)
            .unwrap_or_else(|| panic!("{} does not resolve:\n{text}", f.name));
        assert_eq!(found.name, f.name);
    }
    let last = syms.functions.last().unwrap();
    assert!(
        parsed.find(last.addr - base).is_some(),
        "the last function resolves"
    );
}

#[test]
fn non_pie_matches_nm() {
    check_against_nm(&["-no-pie"], ImageKind::Exec);
}

#[test]
fn pie_matches_nm() {
    check_against_nm(&["-pie", "-fPIE"], ImageKind::Dyn);
}

#[test]
fn relocation_rules() {
    if !have("gcc") {
        return;
    }
    let dir = scratch("reloc");
    let pie = elf_functions(&build(&dir, "pie", &["-pie", "-fPIE"])).unwrap();
    let exec = elf_functions(&build(&dir, "exec", &["-no-pie"])).unwrap();
    assert_eq!(pie.load_bias(None), 0);
    assert_eq!(pie.load_bias(Some(0x7f00_0000_0000)), 0x7f00_0000_0000);
    assert_eq!(exec.load_bias(None), 0, "ET_EXEC runs as linked");
    assert_eq!(exec.link_base(), 0x400000);
    assert_eq!(exec.load_bias(Some(0x1000_0000)), 0x1000_0000 - 0x400000);
    assert_eq!(exec.load_address_for_map_start(0x400000), 0x400000);
    // An explicit mapping start below the functions' runtime addresses is an error.
    let below = Placement {
        load_address: None,
        map_start: Some(0x7000_0000),
        path_name: None,
    };
    let err = write_sym_file(&exec, &below, &dir.join("x.sym")).unwrap_err();
    assert!(matches!(err, SymError::BelowBase { .. }), "{err}");
}

/// Names that `uftrace replay` prints for the functions, in order.
fn replay_names(dir: &Path) -> Vec<String> {
    let out = Command::new("uftrace")
        .args(["replay", "--no-pager", "-d"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "uftrace replay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split('|').nth(1))
        .map(|f| {
            f.trim()
                .trim_end_matches(['{', ';', '}'])
                .trim()
                .trim_end_matches("()")
                .to_string()
        })
        .filter(|f| !f.is_empty())
        .collect()
}

fn uftrace_resolves(flags: &[&str], name: &str) {
    if !have("gcc") || !have("uftrace") {
        return;
    }
    let dir = scratch(&format!("uftrace-{name}"));
    let elf = build(&dir, name, flags);
    let trace = dir.join("trace");
    // --no-libcall: PLT stubs are not functions of the symbol table (uftrace synthesizes `P`
    // entries for them; we do not), and vftrace's mcount never sees them.
    vftrace_testsupport::uftrace_record(&elf, &trace, &["--no-pager", "--no-libcall"]);
    let reference = replay_names(&trace);
    assert!(
        reference.iter().any(|n| n == "leaf"),
        "uftrace's own symbols: {reference:?}"
    );

    // Keep a copy of the binary for us, then take away both uftrace's .sym and the binary so
    // only the file we write can name the functions.
    let copy = dir.join("elsewhere");
    std::fs::create_dir_all(&copy).unwrap();
    let our_elf = copy.join(name);
    std::fs::rename(&elf, &our_elf).unwrap();
    std::fs::remove_file(trace.join(format!("{name}.sym"))).unwrap();
    let blind = replay_names(&trace);
    assert!(
        !blind.iter().any(|n| n == "leaf"),
        "without the .sym uftrace should not know `leaf`: {blind:?}"
    );

    let syms = elf_functions(&our_elf).unwrap();
    let (placement, out) = placement_in_trace_dir(&syms, &trace).unwrap();
    assert_eq!(out, trace.join(format!("{name}.sym")));
    assert_eq!(placement.path_name.as_deref(), Some(elf.to_str().unwrap()));
    write_sym_file(&syms, &placement, &out).unwrap();
    let ours = replay_names(&trace);
    assert_eq!(
        ours, reference,
        "uftrace replay names with our .sym vs uftrace's own"
    );
}

#[test]
fn uftrace_resolves_names_with_our_sym_pie() {
    uftrace_resolves(&["-pie", "-fPIE"], "ppie");
}

#[test]
fn uftrace_resolves_names_with_our_sym_non_pie() {
    uftrace_resolves(&["-no-pie"], "pexec");
}

#[test]
fn garbage_and_truncated_files_are_errors_naming_the_file() {
    let dir = scratch("bad");
    let garbage = dir.join("garbage.elf");
    std::fs::write(
        &garbage,
        b"this is not an ELF file at all, just text\n".repeat(20),
    )
    .unwrap();
    let err = elf_functions(&garbage).unwrap_err().to_string();
    assert!(
        err.contains("garbage.elf") && err.contains("not a valid ELF"),
        "{err}"
    );

    let missing = dir.join("missing.elf");
    let err = elf_functions(&missing).unwrap_err().to_string();
    assert!(
        err.contains("missing.elf") && err.contains("cannot read"),
        "{err}"
    );

    // Valid magic, nonsense after it.
    let mut fake = b"\x7fELF\x02\x01\x01".to_vec();
    fake.extend(std::iter::repeat_n(0xa5u8, 200));
    let fake_path = dir.join("fake.elf");
    std::fs::write(&fake_path, &fake).unwrap();
    let err = elf_functions(&fake_path).unwrap_err().to_string();
    assert!(err.contains("fake.elf"), "{err}");

    if !have("gcc") {
        return;
    }
    let elf = build(&dir, "whole", &["-pie", "-fPIE"]);
    let bytes = std::fs::read(&elf).unwrap();
    for len in [
        0,
        4,
        16,
        63,
        64,
        500,
        bytes.len() / 2,
        bytes.len() - 200,
        bytes.len() - 1,
    ] {
        let cut = dir.join(format!("cut-{len}.elf"));
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let err = elf_functions(&cut)
            .expect_err(&format!("{len} bytes of {} parsed", bytes.len()))
            .to_string();
        assert!(err.contains(&format!("cut-{len}.elf")), "{err}");
    }
    // A relocatable object is not an image.
    let obj = dir.join("prog.o");
    assert!(Command::new("gcc")
        .args(["-c", "-o"])
        .arg(&obj)
        .arg(dir.join("prog.c"))
        .status()
        .unwrap()
        .success());
    let err = elf_functions(&obj).unwrap_err().to_string();
    assert!(
        err.contains("prog.o") && err.contains("relocatable"),
        "{err}"
    );
}
