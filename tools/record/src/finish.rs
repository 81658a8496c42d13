//! The rest of the trace directory once the program family is gone: task.txt (sessions, forks,
//! tasks, libraries loaded at run time), a map for every session, symbol files for every
//! instrumented module, info and the clock.
use crate::child::Ended;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;
use vftrace_format::clock::ClockMap;
use vftrace_format::dir::{map_file_name, TraceDirWriter};
use vftrace_format::info::{Info, UsageInfo};
use vftrace_format::maps::{self, MapEntry};
use vftrace_format::pool::drain::{Drain, Session};
use vftrace_format::task::TaskLine;

/// What `info` says about the run.
pub struct RunFacts<'a> {
    pub exe: &'a Path,
    pub cmdline: String,
    pub ended: Option<Ended>,
    pub elapsed_ns: u64,
    pub usage: Option<UsageInfo>,
}

/// Writes task.txt, maps, symbols, info and the clock. Returns warnings for the user.
pub fn write_metadata(
    writer: &mut TraceDirWriter,
    dir: &Path,
    drain: &Drain,
    clock: &ClockMap,
    facts: &RunFacts<'_>,
) -> io::Result<Vec<String>> {
    let mut warnings = Vec::new();
    let ns = |tsc: u64| clock.converter().convert(tsc);
    let mut sessions: Vec<&Session> = drain.sessions.iter().collect();
    sessions.sort_by_key(|s| s.ticket);
    // A session per sid (a message posted twice would be one session).
    let mut seen_sid = BTreeSet::new();
    sessions.retain(|s| seen_sid.insert(s.sid.clone()));

    let mut tasks = Vec::new();
    let mut pids_with_lines = BTreeSet::new();
    for s in &sessions {
        tasks.push(TaskLine::Session {
            timestamp_ns: ns(s.tsc),
            pid: s.pid,
            sid: s.sid.clone(),
            exename: s.exe.clone(),
        });
    }
    let first_session: BTreeMap<u32, u64> = sessions.iter().fold(BTreeMap::new(), |mut m, s| {
        m.entry(s.pid).or_insert(s.tsc);
        m
    });
    for f in &drain.forks {
        tasks.push(TaskLine::Fork {
            timestamp_ns: ns(f.tsc),
            pid: f.pid,
            ppid: f.ppid,
        });
        pids_with_lines.insert(f.pid);
    }
    // A child started by vfork + exec (or posix_spawn) sends no fork message: its first
    // session says who its parent was.
    for s in &sessions {
        if !pids_with_lines.contains(&s.pid)
            && first_session.get(&s.pid) == Some(&s.tsc)
            && first_session.contains_key(&s.ppid)
        {
            tasks.push(TaskLine::Fork {
                timestamp_ns: ns(s.tsc),
                pid: s.pid,
                ppid: s.ppid,
            });
            pids_with_lines.insert(s.pid);
        }
    }
    // One TASK line per tid, no later than its first record.
    let mut tids: Vec<(u64, u32, u32)> = Vec::new();
    for (tid, threads) in drain.threads_by_tid() {
        let first = threads.iter().filter_map(|t| t.first_ns()).min();
        let start = threads
            .iter()
            .map(|t| ns(t.info.start_tsc))
            .min()
            .unwrap_or(0);
        let pid = threads
            .iter()
            .min_by_key(|t| t.info.start_tsc)
            .map_or(0, |t| t.info.pid);
        let ts = first.map_or(start, |f| f.min(start));
        tids.push((ts, tid, pid));
        if let Some(cut) = threads.iter().find_map(|t| t.cut.as_ref()) {
            warnings.push(format!("thread {tid}: its trace ends early: {cut}"));
        }
    }
    tids.sort();
    for &(ts, tid, pid) in &tids {
        tasks.push(TaskLine::Task {
            timestamp_ns: ts,
            tid,
            pid,
        });
    }
    // uftrace ties a task to a session when it reads a TASK line after the SESS line: after
    // an exec, the thread that exec'd (its tid is the pid) needs one for the new image. (One
    // more for a session it already has changes nothing.)
    for s in &sessions {
        tasks.push(TaskLine::Task {
            timestamp_ns: ns(s.tsc),
            tid: s.pid,
            pid: s.pid,
        });
    }
    for lib in &drain.libraries {
        let session = sessions
            .iter()
            .filter(|s| s.pid == lib.pid && s.tsc <= lib.tsc)
            .max_by_key(|s| s.tsc);
        let Some(session) = session else {
            warnings.push(format!(
                "{} was loaded by an unknown process {}",
                lib.path, lib.pid
            ));
            continue;
        };
        tasks.push(TaskLine::Dlopen {
            timestamp_ns: ns(lib.tsc),
            tid: lib.tid,
            sid: session.sid.clone(),
            base: lib.base,
            libname: lib.path.clone(),
        });
    }
    tasks.sort_by_key(|t| t.timestamp_ns());
    writer.write_tasks(&tasks)?;

    // Maps: each process wrote its own when it started; symbol files for what they map.
    let mut modules: BTreeMap<String, MapEntry> = BTreeMap::new();
    for s in &sessions {
        let path = dir.join(map_file_name(&s.sid));
        let entries = match std::fs::read(&path) {
            Ok(bytes) => {
                let entries = maps::parse_maps(&bytes, &path).map_err(io::Error::other)?;
                // Written again through the writer, which checks it and knows it is there.
                writer.write_map(&s.sid, &entries)?;
                entries
            }
            Err(_) => {
                warnings.push(format!(
                    "process {} ({}) ended before its memory map could be read: its functions show as addresses",
                    s.pid, s.exe
                ));
                let e = maps::guest_map(0, 0, &s.exe);
                writer.write_map(&s.sid, &e)?;
                continue;
            }
        };
        for m in entries {
            if !m.path.is_empty() && !m.path.starts_with('[') {
                modules.entry(m.path.clone()).or_insert(m);
            }
        }
    }
    let exes: BTreeSet<&str> = sessions.iter().map(|s| s.exe.as_str()).collect();
    for (path, first) in &modules {
        write_module_symbols(
            writer,
            path,
            first.start,
            exes.contains(path.as_str()),
            &mut warnings,
        )?;
    }
    for lib in &drain.libraries {
        if !modules.contains_key(&lib.path) {
            write_library_symbols(writer, lib.base, &lib.path, &mut warnings)?;
        }
    }

    let mut info = Info::from_host(facts.exe.to_string_lossy(), facts.cmdline.clone());
    info.tids = tids.iter().map(|&(_, t, _)| t).collect();
    info.set_exit_status(facts.ended.map(|e| e.status));
    info.set_elapsed_ns(facts.elapsed_ns);
    if let Some(u) = &facts.usage {
        info.usage = u.clone();
        info.info_mask |= vftrace_format::info::USAGEINFO;
    }
    writer.write_info(&info)?;
    writer.write_clock(clock)?;
    Ok(warnings)
}

/// The symbol file of a module mapped at `map_start`, if it is instrumented (or the program).
fn write_module_symbols(
    writer: &mut TraceDirWriter,
    path: &str,
    map_start: u64,
    is_exe: bool,
    warnings: &mut Vec<String>,
) -> io::Result<()> {
    let symbols = match vftrace_symbols::elf_functions(Path::new(path)) {
        Ok(s) if is_exe || s.instrumented => s,
        Ok(_) => return Ok(()),
        Err(e) => {
            if is_exe {
                warnings.push(format!("no symbols for {path}: {e}"));
            }
            return Ok(());
        }
    };
    let placement = vftrace_symbols::Placement {
        load_address: Some(symbols.load_address_for_map_start(map_start)),
        map_start: Some(map_start),
        path_name: Some(path.to_string()),
    };
    match vftrace_symbols::sym_symbols(&symbols, &placement) {
        Ok((_, syms)) => writer.write_symbols(path, &syms),
        Err(e) => {
            warnings.push(format!("no symbols for {path}: {e}"));
            Ok(())
        }
    }
}

/// A library loaded at run time (and maybe closed since): placed by its load bias.
fn write_library_symbols(
    writer: &mut TraceDirWriter,
    bias: u64,
    path: &str,
    warnings: &mut Vec<String>,
) -> io::Result<()> {
    let symbols = match vftrace_symbols::elf_functions(Path::new(path)) {
        Ok(s) => s,
        Err(e) => {
            warnings.push(format!("no symbols for {path} (loaded at run time): {e}"));
            return Ok(());
        }
    };
    let start = bias.wrapping_add(symbols.first_load_vaddr) & !0xfff;
    write_module_symbols(writer, path, start, true, warnings)
}
