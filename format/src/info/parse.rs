//! Reading an `info` file: the header, then each set section in bit order, every error naming
//! the byte offset where the text stopped being what uftrace writes.
use super::*;
use crate::error::numbered_lines;

impl Info {
    /// Parses a complete `info` file. `file` is only used to name errors.
    pub fn parse(bytes: &[u8], file: &Path) -> Result<Info, FormatError> {
        if bytes.len() < HEADER_SIZE {
            return Err(FormatError::at_offset(
                file,
                bytes.len() as u64,
                format!(
                    "info header truncated: {} of {HEADER_SIZE} bytes",
                    bytes.len()
                ),
            ));
        }
        if &bytes[..8] != MAGIC {
            return Err(FormatError::at_offset(
                file,
                0,
                "bad magic: not a uftrace info file (expected \"Ftrace!\\0\")",
            ));
        }
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        let version = u32_at(8);
        if !(FILE_VERSION_MIN..=FILE_VERSION).contains(&version) {
            return Err(FormatError::at_offset(
                file,
                8,
                format!("unsupported file version {version} (uftrace 0.13 reads 3 and 4)"),
            ));
        }
        if bytes[14] != 1 {
            return Err(FormatError::at_offset(
                file,
                14,
                format!("endian byte {} is not 1 (little endian)", bytes[14]),
            ));
        }
        if bytes[15] != 2 {
            return Err(FormatError::at_offset(
                file,
                15,
                format!("ELF class {} is not 2 (64-bit)", bytes[15]),
            ));
        }
        let mut info = Info {
            feat_mask: u64_at(16),
            info_mask: u64_at(24),
            max_stack: u16_at(32),
            version: String::new(),
            elapsed_time: String::new(),
            pattern_type: String::new(),
            os: OsInfo::default(),
            ..Info::default()
        };
        let text = String::from_utf8_lossy(&bytes[HEADER_SIZE..]);
        let mut sections = SectionReader {
            lines: numbered_lines(&text).peekable(),
            offset: HEADER_SIZE as u64,
            file,
        };
        let m = info.info_mask;
        if m & EXE_NAME != 0 {
            info.exename = sections.expect("exename:", "EXE_NAME")?.to_string();
        }
        if m & EXE_BUILD_ID != 0 {
            let (off, id) = sections.expect_at("build_id:", "EXE_BUILD_ID")?;
            let id = id.get(..40).unwrap_or(id);
            if id.len() != 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(FormatError::at_offset(
                    file,
                    off,
                    format!("build_id {id:?} is not 40 hex digits"),
                ));
            }
            info.build_id = id.to_ascii_lowercase();
        }
        if m & EXIT_STATUS != 0 {
            let (off, v) = sections.expect_at("exit_status:", "EXIT_STATUS")?;
            info.exit_status = parse_num(v.trim(), file, off, "exit_status")?;
        }
        if m & CMDLINE != 0 {
            info.cmdline = json_unescape(sections.expect("cmdline:", "CMDLINE")?);
        }
        if m & CPUINFO != 0 {
            for (off, line) in sections.counted("cpuinfo:", "CPUINFO", 2)? {
                if let Some(v) = line.strip_prefix("nr_cpus=") {
                    let nums = v.split(" (").next().unwrap_or(v);
                    let (a, b) = nums.split_once(" / ").unwrap_or((nums, nums));
                    info.cpus_online = parse_num(a.trim(), file, off, "nr_cpus online")?;
                    info.cpus_possible = parse_num(b.trim(), file, off, "nr_cpus possible")?;
                } else if let Some(v) = line.strip_prefix("desc=") {
                    info.cpu_desc = v.to_string();
                }
            }
        }
        if m & MEMINFO != 0 {
            let (off, v) = sections.expect_at("meminfo:", "MEMINFO")?;
            let (free, total) = parse_meminfo(v).ok_or_else(|| {
                FormatError::at_offset(
                    file,
                    off,
                    format!("meminfo {v:?} is not `F / T UNIT (free / total)`"),
                )
            })?;
            info.mem_free_kb = free;
            info.mem_total_kb = total;
        }
        if m & OSINFO != 0 {
            for (_, line) in sections.counted("osinfo:", "OSINFO", 3)? {
                if let Some(v) = line.strip_prefix("kernel=") {
                    info.os.kernel = v.to_string();
                } else if let Some(v) = line.strip_prefix("hostname=") {
                    info.os.hostname = v.to_string();
                } else if let Some(v) = line.strip_prefix("distro=") {
                    info.os.distro = v.to_string();
                }
            }
        }
        if m & TASKINFO != 0 {
            let mut nr_tid: Option<(u64, usize)> = None;
            let mut tids_at = None;
            for (off, line) in sections.counted("taskinfo:", "TASKINFO", 2)? {
                if let Some(v) = line.strip_prefix("nr_tid=") {
                    nr_tid = Some((off, parse_num(v.trim(), file, off, "nr_tid")?));
                } else if let Some(v) = line.strip_prefix("tids=") {
                    info.tids = v
                        .split(',')
                        .filter(|t| !t.is_empty())
                        .map(|t| parse_num(t.trim(), file, off, "tid"))
                        .collect::<Result<_, _>>()?;
                    tids_at = Some(off);
                } else {
                    return Err(FormatError::at_offset(
                        file,
                        off,
                        format!("unknown taskinfo line {line:?}"),
                    ));
                }
            }
            if let (Some((_, n)), Some(off)) = (nr_tid, tids_at) {
                if n != info.tids.len() {
                    return Err(FormatError::at_offset(
                        file,
                        off,
                        format!(
                            "taskinfo:nr_tid={n} but {} tids are listed (uftrace aborts on this)",
                            info.tids.len()
                        ),
                    ));
                }
            }
        }
        if m & USAGEINFO != 0 {
            let u = &mut info.usage;
            for (off, line) in sections.counted("usageinfo:", "USAGEINFO", 6)? {
                let pair = |v: &str, what: &str| -> Result<(i64, i64), FormatError> {
                    let nums = v.split(" (").next().unwrap_or(v);
                    let (a, b) = nums.split_once(" / ").ok_or_else(|| {
                        FormatError::at_offset(file, off, format!("{what} {v:?} is not `A / B`"))
                    })?;
                    Ok((
                        parse_num(a.trim(), file, off, what)?,
                        parse_num(b.trim(), file, off, what)?,
                    ))
                };
                if let Some(v) = line.strip_prefix("systime=") {
                    u.sys_time_us = parse_us(v.trim()).ok_or_else(|| {
                        FormatError::at_offset(file, off, format!("systime {v:?} is not S.UUUUUU"))
                    })?;
                } else if let Some(v) = line.strip_prefix("usrtime=") {
                    u.user_time_us = parse_us(v.trim()).ok_or_else(|| {
                        FormatError::at_offset(file, off, format!("usrtime {v:?} is not S.UUUUUU"))
                    })?;
                } else if let Some(v) = line.strip_prefix("ctxsw=") {
                    (u.voluntary_ctxsw, u.involuntary_ctxsw) = pair(v, "ctxsw")?;
                } else if let Some(v) = line.strip_prefix("maxrss=") {
                    u.max_rss_kb = parse_num(v.trim(), file, off, "maxrss")?;
                } else if let Some(v) = line.strip_prefix("pagefault=") {
                    (u.major_faults, u.minor_faults) = pair(v, "pagefault")?;
                } else if let Some(v) = line.strip_prefix("iops=") {
                    (u.read_blocks, u.write_blocks) = pair(v, "iops")?;
                }
            }
        }
        if m & LOADINFO != 0 {
            let (off, v) = sections.expect_at("loadinfo:", "LOADINFO")?;
            let loads: Vec<&str> = v.split(" / ").collect();
            if loads.len() != 3 {
                return Err(FormatError::at_offset(
                    file,
                    off,
                    format!("loadinfo {v:?} is not `A / B / C`"),
                ));
            }
            for (slot, text) in info.load_avg.iter_mut().zip(loads) {
                *slot = parse_num(text.trim(), file, off, "load average")?;
            }
        }
        if m & ARG_SPEC != 0 {
            let (off, first) = sections.expect_at("argspec:", "ARG_SPEC")?;
            match first.strip_prefix("lines=") {
                // Old format: a single argspec line.
                None => info.arg_spec = vec![format!("argspec:{first}")],
                Some(n) => {
                    let n: usize = parse_num(n.trim(), file, off, "argspec lines")?;
                    if n > 6 {
                        return Err(FormatError::at_offset(
                            file,
                            off,
                            format!("argspec:lines={n} is more than uftrace's 6"),
                        ));
                    }
                    for _ in 0..n {
                        let (off, line) = sections.next_line("ARG_SPEC")?;
                        if ARG_SPEC_PREFIXES.iter().all(|p| !line.starts_with(p)) {
                            return Err(FormatError::at_offset(
                                file,
                                off,
                                format!("unknown argspec line {line:?}"),
                            ));
                        }
                        info.arg_spec.push(line.to_string());
                    }
                }
            }
        }
        if m & RECORD_DATE != 0 {
            info.record_date = sections.expect("record_date:", "RECORD_DATE")?.to_string();
            info.elapsed_time = sections.expect("elapsed_time:", "RECORD_DATE")?.to_string();
        }
        if m & PATTERN_TYPE != 0 {
            info.pattern_type = sections
                .expect("pattern_type:", "PATTERN_TYPE")?
                .to_string();
        }
        if m & VERSION != 0 {
            info.version = sections.expect("uftrace_version:", "VERSION")?.to_string();
        }
        Ok(info)
    }
}

/// Walks the text sections, tracking byte offsets for errors.
struct SectionReader<'a, I: Iterator<Item = (usize, &'a str)>> {
    lines: std::iter::Peekable<I>,
    offset: u64,
    file: &'a Path,
}

impl<'a, I: Iterator<Item = (usize, &'a str)>> SectionReader<'a, I> {
    fn next_line(&mut self, section: &str) -> Result<(u64, &'a str), FormatError> {
        let at = self.offset;
        match self.lines.next() {
            Some((_, line)) => {
                self.offset += line.len() as u64 + 1;
                Ok((at, line))
            }
            None => Err(FormatError::at_offset(
                self.file,
                at,
                format!(
                    "info text ends before the {section} section (its bit is set in info_mask)"
                ),
            )),
        }
    }

    fn expect_at(&mut self, prefix: &str, section: &str) -> Result<(u64, &'a str), FormatError> {
        let (at, line) = self.next_line(section)?;
        match line.strip_prefix(prefix) {
            Some(rest) => Ok((at, rest)),
            None => Err(FormatError::at_offset(
                self.file,
                at,
                format!(
                    "expected `{prefix}` line of the {section} section, found {:?}",
                    truncate(line, 60)
                ),
            )),
        }
    }

    fn expect(&mut self, prefix: &str, section: &str) -> Result<&'a str, FormatError> {
        self.expect_at(prefix, section).map(|(_, v)| v)
    }

    /// A `PREFIXlines=N` section: returns its N lines with the prefix removed.
    fn counted(
        &mut self,
        prefix: &str,
        section: &str,
        max: usize,
    ) -> Result<Vec<(u64, &'a str)>, FormatError> {
        let (at, first) = self.expect_at(prefix, section)?;
        let n = first
            .strip_prefix("lines=")
            .and_then(|n| n.trim().parse::<usize>().ok())
            .ok_or_else(|| {
                FormatError::at_offset(
                    self.file,
                    at,
                    format!(
                        "expected `{prefix}lines=N`, found {:?}",
                        truncate(first, 60)
                    ),
                )
            })?;
        if n > max {
            return Err(FormatError::at_offset(
                self.file,
                at,
                format!("{prefix}lines={n} is more than uftrace's {max}"),
            ));
        }
        (0..n).map(|_| self.expect_at(prefix, section)).collect()
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn parse_num<T: std::str::FromStr>(
    text: &str,
    file: &Path,
    off: u64,
    what: &str,
) -> Result<T, FormatError> {
    text.parse().map_err(|_| {
        FormatError::at_offset(
            file,
            off,
            format!("{what} {:?} is not a number", truncate(text, 40)),
        )
    })
}

/// Inverse of [`format_meminfo`] up to its precision (formatting the result gives the same text).
pub(super) fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let body = text.strip_suffix(" (free / total)").unwrap_or(text);
    let (free, rest) = body.split_once(" / ")?;
    let (total, unit) = rest.rsplit_once(' ')?;
    let shift = 10 * MEM_UNITS.iter().position(|u| *u == unit)? as u32;
    let value = |t: &str| -> Option<u64> {
        let (int, frac) = t.split_once('.').unwrap_or((t, "0"));
        let (int, frac): (u64, u64) = (int.parse().ok()?, frac.parse().ok()?);
        let whole = int.checked_shl(shift).filter(|v| v >> shift == int)?;
        let small = if shift == 0 {
            0
        } else {
            (frac.min(9) * 103) << (shift - 10)
        };
        whole.checked_add(small)
    };
    Some((value(free)?, value(total)?))
}

fn parse_us(text: &str) -> Option<u64> {
    let (s, frac) = text.split_once('.').unwrap_or((text, "0"));
    if frac.is_empty() || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac: u64 = format!("{frac:0<6}").parse().ok()?;
    s.parse::<u64>()
        .ok()?
        .checked_mul(1_000_000)?
        .checked_add(frac)
}

/// Undoes [`json_escape_truncated`]. uftrace itself only escapes `"`, so unknown escapes are kept.
fn json_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let (text, used): (Option<char>, usize) = match tail.as_bytes().get(1) {
            Some(b'"') => (Some('"'), 2),
            Some(b'\\') => (Some('\\'), 2),
            Some(b'u') => match tail
                .get(2..6)
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32)
            {
                Some(c) => (Some(c), 6),
                None => (None, 1),
            },
            _ => (None, 1),
        };
        match text {
            Some(c) => out.push(c),
            None => out.push('\\'),
        }
        rest = &tail[used..];
    }
    out.push_str(rest);
    out
}
