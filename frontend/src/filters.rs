//! `-F RE` and `-N RE` under `vftrace record`: the regular expressions (from the environment)
//! become address ranges of this process's functions, matched against each function's name as
//! uftrace shows it (Rust names demangled without hashes, C++ names demangled), in the
//! executable and every library loaded when tracing starts.
use regex::RegexSet;
use std::ffi::CStr;
use std::path::PathBuf;
use vftrace_format::abi::{action, Config, FilterRange};
use vftrace_format::recording::{FILTER_VAR, NOTRACE_VAR};

/// The filter part of the options; `Config::NONE` when none were asked for or none can be used
/// (the reason goes to stderr: the options are the user's own).
pub fn from_env() -> Config {
    let (only, never) = (patterns(FILTER_VAR), patterns(NOTRACE_VAR));
    if only.is_empty() && never.is_empty() {
        return Config::NONE;
    }
    let compile = |p: &[String]| RegexSet::new(p);
    let (only, never) = match (compile(&only), compile(&never)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("vftrace: bad filter expression, tracing without filters: {e}");
            return Config::NONE;
        }
    };
    let mut ranges = Vec::new();
    for (path, bias) in loaded_modules() {
        let Ok(symbols) = vftrace_symbols::elf_functions(&path) else {
            continue;
        };
        for f in &symbols.functions {
            let name = display_name(&f.name);
            let act = if never.is_match(&name) {
                action::NEVER
            } else if only.is_match(&name) {
                action::ONLY
            } else {
                continue;
            };
            let start = bias.wrapping_add(f.addr);
            ranges.push(FilterRange {
                start,
                end: start + f.size.max(1),
                action: act,
                _pad: 0,
            });
        }
    }
    ranges.sort_by_key(|r| r.start);
    ranges.dedup_by(|later, kept| later.start < kept.end);
    // A filter that matches nothing must still filter: "only these" with nothing leaves no
    // call traced, which the table says with one empty ONLY range.
    if ranges.is_empty() && !only.is_empty() {
        ranges.push(FilterRange {
            start: 0,
            end: 0,
            action: action::ONLY,
            _pad: 0,
        });
    }
    let table: &'static [FilterRange] = Vec::leak(ranges);
    Config {
        filters: table.as_ptr(),
        filter_count: table.len(),
        ..Config::NONE
    }
}

fn patterns(var: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// A function's name as uftrace prints it.
fn display_name(raw: &str) -> String {
    if let Ok(d) = rustc_demangle::try_demangle(raw) {
        return format!("{d:#}");
    }
    if raw.starts_with("_Z") {
        if let Ok(sym) = cpp_demangle::Symbol::new(raw) {
            if let Ok(text) = sym.demangle(&cpp_demangle::DemangleOptions::new().no_params()) {
                return text;
            }
        }
    }
    raw.to_string()
}

/// Every loaded ELF object and its load bias (the executable as /proc/self/exe).
fn loaded_modules() -> Vec<(PathBuf, u64)> {
    extern "C" fn each(info: *mut libc::dl_phdr_info, _: usize, out: *mut libc::c_void) -> i32 {
        // SAFETY: dl_iterate_phdr passes valid entries and our Vec.
        unsafe {
            let out = &mut *(out as *mut Vec<(PathBuf, u64)>);
            let name = if (*info).dlpi_name.is_null() {
                ""
            } else {
                CStr::from_ptr((*info).dlpi_name).to_str().unwrap_or("")
            };
            let path = match name {
                "" if out.is_empty() => PathBuf::from("/proc/self/exe"),
                "" => return 0,
                n if n.starts_with("linux-vdso") => return 0,
                n => PathBuf::from(n),
            };
            out.push((path, (*info).dlpi_addr));
        }
        0
    }
    let mut out: Vec<(PathBuf, u64)> = Vec::new();
    // SAFETY: the callback only appends to `out`.
    unsafe { libc::dl_iterate_phdr(Some(each), &mut out as *mut _ as *mut libc::c_void) };
    out
}
