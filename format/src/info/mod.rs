//! The `info` file: a 40-byte binary header followed by one text section per set info bit.
//!
//! Section texts follow uftrace 0.13 (`cmds/info.c`): uftrace reads them with `fgets` into a
//! 4096-byte buffer, in bit order, and fails the whole directory ("cannot read uftrace header
//! info") on any prefix mismatch. The writer therefore refuses strings that would break a line
//! or overflow that buffer instead of producing a directory uftrace cannot open.

use std::io::{self, Write};
use std::path::Path;

use crate::error::FormatError;

/// The 8-byte magic at the start of `info`.
pub const MAGIC: &[u8; 8] = b"Ftrace!\0";
/// File version written by this crate (uftrace 0.13 accepts 3 and 4).
pub const FILE_VERSION: u32 = 4;
/// Oldest file version uftrace 0.13 accepts.
pub const FILE_VERSION_MIN: u32 = 3;
/// Size of the binary header.
pub const HEADER_SIZE: usize = 40;
/// uftrace reads each info line with `fgets(buf, PATH_MAX)`: a line plus its newline must fit
/// in 4095 bytes, or the rest is taken as the next section and the directory cannot be read.
pub const MAX_LINE: usize = 4095;

// Feature bits (`feat_mask`).
pub const PLTHOOK: u64 = 1 << 0;
/// Effectively mandatory: without it uftrace garbles replay and crashes in dump/report/graph.
pub const TASK_SESSION: u64 = 1 << 1;
pub const KERNEL: u64 = 1 << 2;
pub const ARGUMENT: u64 = 1 << 3;
pub const RETVAL: u64 = 1 << 4;
pub const SYM_REL_ADDR: u64 = 1 << 5;
pub const MAX_STACK: u64 = 1 << 6;
pub const EVENT: u64 = 1 << 7;
pub const PERF_EVENT: u64 = 1 << 8;
pub const AUTO_ARGS: u64 = 1 << 9;
pub const DEBUG_INFO: u64 = 1 << 10;
pub const ESTIMATE_RETURN: u64 = 1 << 11;

// Info bits (`info_mask`): one text section each, written and read in this order.
pub const EXE_NAME: u64 = 1 << 0;
pub const EXE_BUILD_ID: u64 = 1 << 1;
pub const EXIT_STATUS: u64 = 1 << 2;
pub const CMDLINE: u64 = 1 << 3;
pub const CPUINFO: u64 = 1 << 4;
pub const MEMINFO: u64 = 1 << 5;
pub const OSINFO: u64 = 1 << 6;
pub const TASKINFO: u64 = 1 << 7;
pub const USAGEINFO: u64 = 1 << 8;
pub const LOADINFO: u64 = 1 << 9;
pub const ARG_SPEC: u64 = 1 << 10;
pub const RECORD_DATE: u64 = 1 << 11;
pub const PATTERN_TYPE: u64 = 1 << 12;
pub const VERSION: u64 = 1 << 13;
/// Every info bit uftrace 0.13 knows.
pub const ALL_INFO: u64 = (1 << 14) - 1;

/// Feature bits vftrace sets for the directories it writes.
pub const VFTRACE_FEATURES: u64 = TASK_SESSION | SYM_REL_ADDR | MAX_STACK;
/// Info sections vftrace writes by default: everything uftrace needs plus what `uftrace info`
/// shows usefully (`dump --chrome` needs CMDLINE, nearly every command needs TASKINFO).
pub const VFTRACE_INFO: u64 = EXE_NAME
    | EXIT_STATUS
    | CMDLINE
    | CPUINFO
    | MEMINFO
    | OSINFO
    | TASKINFO
    | RECORD_DATE
    | PATTERN_TYPE
    | VERSION;

/// Lines the `osinfo` section may hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OsInfo {
    /// `sysname release`, e.g. `Linux 6.1.0-18-amd64`.
    pub kernel: String,
    pub hostname: String,
    /// As in os-release, quotes included: `"Debian GNU/Linux 12 (bookworm)"`.
    pub distro: String,
}

/// The `usageinfo` section (getrusage of the traced program).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageInfo {
    pub sys_time_us: u64,
    pub user_time_us: u64,
    pub voluntary_ctxsw: i64,
    pub involuntary_ctxsw: i64,
    pub max_rss_kb: i64,
    pub major_faults: i64,
    pub minor_faults: i64,
    pub read_blocks: i64,
    pub write_blocks: i64,
}

#[cfg(feature = "rusage")]
impl UsageInfo {
    /// The section from getrusage(2)'s answer.
    pub fn from_rusage(u: &libc::rusage) -> Self {
        let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        UsageInfo {
            sys_time_us: us(u.ru_stime),
            user_time_us: us(u.ru_utime),
            voluntary_ctxsw: u.ru_nvcsw,
            involuntary_ctxsw: u.ru_nivcsw,
            max_rss_kb: u.ru_maxrss,
            major_faults: u.ru_majflt,
            minor_faults: u.ru_minflt,
            read_blocks: u.ru_inblock,
            write_blocks: u.ru_oublock,
        }
    }
}

/// The whole `info` file. Only the sections whose bit is set in `info_mask` are written/read;
/// the other fields keep their defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Info {
    pub feat_mask: u64,
    pub info_mask: u64,
    pub max_stack: u16,
    /// Absolute path of the traced program.
    pub exename: String,
    /// 40 hex digits (20 bytes), as `build_id:` wants.
    pub build_id: String,
    pub exit_status: i32,
    /// The command line as plain text; written JSON-escaped (uftrace's `dump --chrome` pastes it
    /// into a JSON string) and unescaped again by the parser.
    pub cmdline: String,
    pub cpus_online: u32,
    pub cpus_possible: u32,
    pub cpu_desc: String,
    /// Memory in KiB. uftrace stores it as text (`22.6 / 23.5 GB (free / total)`), so a parsed
    /// value keeps only that precision.
    pub mem_total_kb: u64,
    pub mem_free_kb: u64,
    pub os: OsInfo,
    /// The tids of the trace (`taskinfo:tids=`); `nr_tid` is always written as its length.
    pub tids: Vec<u32>,
    pub usage: UsageInfo,
    /// 1, 5 and 15 minute load averages.
    pub load_avg: [f32; 3],
    /// Raw lines of the `argspec` section after `argspec:lines=N` (`argspec:...`, `retspec:...`,
    /// `argauto:...`, `retauto:...`, `enumauto:...`, `auto-args:1`).
    pub arg_spec: Vec<String>,
    /// ctime(3) text, e.g. `Sun Nov 22 06:10:26 2026`.
    pub record_date: String,
    /// e.g. `0.005346383 sec`.
    pub elapsed_time: String,
    /// `regex`, `glob` or `simple`.
    pub pattern_type: String,
    /// Free text shown by `uftrace info` as "program version".
    pub version: String,
}

impl Default for Info {
    fn default() -> Self {
        Info {
            feat_mask: VFTRACE_FEATURES,
            info_mask: VFTRACE_INFO,
            max_stack: 1024,
            exename: String::new(),
            build_id: String::new(),
            exit_status: 0,
            cmdline: String::new(),
            cpus_online: 1,
            cpus_possible: 1,
            cpu_desc: String::new(),
            mem_total_kb: 0,
            mem_free_kb: 0,
            os: OsInfo {
                distro: "\"Unknown\"".into(),
                ..OsInfo::default()
            },
            tids: Vec::new(),
            usage: UsageInfo::default(),
            load_avg: [0.0; 3],
            arg_spec: Vec::new(),
            record_date: String::new(),
            elapsed_time: "0.000000000 sec".into(),
            pattern_type: "regex".into(),
            version: concat!("vftrace ", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

impl Info {
    /// An `Info` with vftrace's default features and sections, for `exename` run as `cmdline`,
    /// recorded now. Machine facts (cpus, memory, os) are left at neutral defaults; use
    /// [`Info::from_host`] to fill them from this machine.
    pub fn new(exename: impl Into<String>, cmdline: impl Into<String>) -> Info {
        Info {
            exename: exename.into(),
            cmdline: cmdline.into(),
            record_date: ctime_now(),
            ..Info::default()
        }
    }

    /// The program's end as `wait` reported it (uftrace keeps the raw status: `exited with
    /// code N` is `N << 8`, `terminated by signal N` is `N`), or None when it is not known (an
    /// in-process dump runs before the program ends): then the section is left out rather than
    /// claiming an exit code.
    pub fn set_exit_status(&mut self, status: Option<i32>) {
        match status {
            Some(s) => {
                self.exit_status = s;
                self.info_mask |= EXIT_STATUS;
            }
            None => {
                self.exit_status = 0;
                self.info_mask &= !EXIT_STATUS;
            }
        }
    }

    /// `elapsed_time:` from nanoseconds, as uftrace writes it (`1.234567890 sec`).
    pub fn set_elapsed_ns(&mut self, ns: u64) {
        self.elapsed_time = format!("{}.{:09} sec", ns / 1_000_000_000, ns % 1_000_000_000);
    }

    /// Like [`Info::new`], with cpus, memory, os and load read from this machine's /proc.
    /// Facts that cannot be read keep their defaults.
    pub fn from_host(exename: impl Into<String>, cmdline: impl Into<String>) -> Info {
        let mut info = Info::new(exename, cmdline);
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let online = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count() as u32;
        let possible = count_cpu_list(read("/sys/devices/system/cpu/possible").trim());
        info.cpus_online = online.max(1);
        info.cpus_possible = possible.unwrap_or(online).max(info.cpus_online);
        if let Some(model) = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")) {
            info.cpu_desc = model
                .trim_start_matches([' ', '\t', ':'])
                .trim()
                .to_string();
        }
        for line in read("/proc/meminfo").lines() {
            let kb = |rest: &str| {
                rest.split_whitespace()
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            if let Some(rest) = line.strip_prefix("MemTotal:") {
                info.mem_total_kb = kb(rest);
            } else if let Some(rest) = line.strip_prefix("MemFree:") {
                info.mem_free_kb = kb(rest);
            }
        }
        let ostype = read("/proc/sys/kernel/ostype");
        let release = read("/proc/sys/kernel/osrelease");
        info.os.kernel = format!("{} {}", ostype.trim(), release.trim());
        info.os.hostname = read("/proc/sys/kernel/hostname").trim().to_string();
        if let Some(name) = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        {
            info.os.distro = name.trim().to_string();
        }
        let load: Vec<f32> = read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .filter_map(|v| v.parse().ok())
            .collect();
        if load.len() == 3 {
            info.load_avg = [load[0], load[1], load[2]];
            info.info_mask |= LOADINFO;
        }
        info
    }

    /// Writes the header and the sections selected by `info_mask`. Fails with `InvalidInput`
    /// (writing nothing) when a field would make a file uftrace 0.13 cannot read.
    pub fn write_to(&self, mut w: impl Write) -> io::Result<()> {
        let bytes = self.to_bytes()?;
        w.write_all(&bytes)
    }

    /// The complete file contents, checked as in [`Info::write_to`].
    pub fn to_bytes(&self) -> io::Result<Vec<u8>> {
        if self.info_mask & !ALL_INFO != 0 {
            return Err(invalid(format!(
                "info_mask {:#x} has bits uftrace 0.13 does not know",
                self.info_mask
            )));
        }
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FILE_VERSION.to_le_bytes());
        out.extend_from_slice(&(HEADER_SIZE as u16).to_le_bytes());
        out.push(1); // little endian
        out.push(2); // ELFCLASS64
        out.extend_from_slice(&self.feat_mask.to_le_bytes());
        out.extend_from_slice(&self.info_mask.to_le_bytes());
        out.extend_from_slice(&self.max_stack.to_le_bytes());
        out.extend_from_slice(&[0u8; 6]);
        debug_assert_eq!(out.len(), HEADER_SIZE);

        let mut lines: Vec<(&'static str, String)> = Vec::new();
        let m = self.info_mask;
        if m & EXE_NAME != 0 {
            lines.push(("exename", format!("exename:{}", self.exename)));
        }
        if m & EXE_BUILD_ID != 0 {
            if self.build_id.len() != 40 || !self.build_id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(format!(
                    "build_id {:?} is not 40 hex digits",
                    self.build_id
                )));
            }
            lines.push(("build_id", format!("build_id:{}", self.build_id)));
        }
        if m & EXIT_STATUS != 0 {
            lines.push(("exit_status", format!("exit_status:{}", self.exit_status)));
        }
        if m & CMDLINE != 0 {
            lines.push((
                "cmdline",
                format!(
                    "cmdline:{}",
                    json_escape_truncated(&self.cmdline, MAX_LINE - 1 - 8)
                ),
            ));
        }
        if m & CPUINFO != 0 {
            lines.push(("cpuinfo", "cpuinfo:lines=2".into()));
            lines.push((
                "cpuinfo",
                format!(
                    "cpuinfo:nr_cpus={} / {} (online/possible)",
                    self.cpus_online, self.cpus_possible
                ),
            ));
            lines.push(("cpu_desc", format!("cpuinfo:desc={}", self.cpu_desc)));
        }
        if m & MEMINFO != 0 {
            lines.push((
                "meminfo",
                format!(
                    "meminfo:{}",
                    format_meminfo(self.mem_free_kb, self.mem_total_kb)
                ),
            ));
        }
        if m & OSINFO != 0 {
            lines.push(("osinfo", "osinfo:lines=3".into()));
            lines.push(("os.kernel", format!("osinfo:kernel={}", self.os.kernel)));
            lines.push((
                "os.hostname",
                format!("osinfo:hostname={}", self.os.hostname),
            ));
            lines.push(("os.distro", format!("osinfo:distro={}", self.os.distro)));
        }
        if m & TASKINFO != 0 {
            lines.push(("taskinfo", "taskinfo:lines=2".into()));
            lines.push(("taskinfo", format!("taskinfo:nr_tid={}", self.tids.len())));
            let tids: Vec<String> = self.tids.iter().map(u32::to_string).collect();
            // uftrace reads this line with getline: no length limit, checked below as `tids`.
            lines.push(("tids", format!("taskinfo:tids={}", tids.join(","))));
        }
        if m & USAGEINFO != 0 {
            let u = &self.usage;
            lines.push(("usageinfo", "usageinfo:lines=6".into()));
            lines.push((
                "usageinfo",
                format!("usageinfo:systime={}", format_us(u.sys_time_us)),
            ));
            lines.push((
                "usageinfo",
                format!("usageinfo:usrtime={}", format_us(u.user_time_us)),
            ));
            lines.push((
                "usageinfo",
                format!(
                    "usageinfo:ctxsw={} / {} (voluntary / involuntary)",
                    u.voluntary_ctxsw, u.involuntary_ctxsw
                ),
            ));
            lines.push(("usageinfo", format!("usageinfo:maxrss={}", u.max_rss_kb)));
            lines.push((
                "usageinfo",
                format!(
                    "usageinfo:pagefault={} / {} (major / minor)",
                    u.major_faults, u.minor_faults
                ),
            ));
            lines.push((
                "usageinfo",
                format!(
                    "usageinfo:iops={} / {} (read / write)",
                    u.read_blocks, u.write_blocks
                ),
            ));
        }
        if m & LOADINFO != 0 {
            let [a, b, c] = self.load_avg;
            lines.push(("loadinfo", format!("loadinfo:{a:.2} / {b:.2} / {c:.2}")));
        }
        if m & ARG_SPEC != 0 {
            if self.arg_spec.len() > 6 {
                return Err(invalid(format!(
                    "arg_spec has {} lines; uftrace reads at most 6",
                    self.arg_spec.len()
                )));
            }
            if let Some(bad) = self
                .arg_spec
                .iter()
                .find(|l| ARG_SPEC_PREFIXES.iter().all(|p| !l.starts_with(p)))
            {
                return Err(invalid(format!(
                    "arg_spec line {bad:?} has none of the prefixes {ARG_SPEC_PREFIXES:?}"
                )));
            }
            lines.push(("argspec", format!("argspec:lines={}", self.arg_spec.len())));
            for l in &self.arg_spec {
                lines.push(("arg_spec", l.clone()));
            }
        }
        if m & RECORD_DATE != 0 {
            lines.push(("record_date", format!("record_date:{}", self.record_date)));
            lines.push((
                "elapsed_time",
                format!("elapsed_time:{}", self.elapsed_time),
            ));
        }
        if m & PATTERN_TYPE != 0 {
            lines.push((
                "pattern_type",
                format!("pattern_type:{}", self.pattern_type),
            ));
        }
        if m & VERSION != 0 {
            lines.push(("version", format!("uftrace_version:{}", self.version)));
        }
        for (field, line) in &lines {
            if line.contains(['\n', '\r', '\0']) {
                return Err(invalid(format!(
                    "info field `{field}` contains a line break or NUL: {line:?}"
                )));
            }
            if *field != "tids" && line.len() + 1 > MAX_LINE {
                return Err(invalid(format!(
                    "info field `{field}` makes a {}-byte line; uftrace reads at most {MAX_LINE}",
                    line.len() + 1
                )));
            }
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        Ok(out)
    }

    /// True when `feat_mask` has all of `bits`.
    pub fn has_feature(&self, bits: u64) -> bool {
        self.feat_mask & bits == bits
    }

    /// The memory line as the `meminfo` section writes it: `22.6 / 23.5 GB (free / total)`.
    pub fn meminfo_text(&self) -> String {
        format_meminfo(self.mem_free_kb, self.mem_total_kb)
    }
}

const ARG_SPEC_PREFIXES: [&str; 6] = [
    "argspec:",
    "retspec:",
    "argauto:",
    "retauto:",
    "enumauto:",
    "auto-args:1",
];

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn count_cpu_list(list: &str) -> Option<u32> {
    if list.is_empty() {
        return None;
    }
    let mut n = 0u32;
    for part in list.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        n = n.saturating_add(b.checked_sub(a)?.saturating_add(1));
    }
    Some(n)
}

const MEM_UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];

/// uftrace's `free.d / total.d UNIT (free / total)` text, with its rounding.
fn format_meminfo(free_kb: u64, total_kb: u64) -> String {
    let (mut total, mut free) = (total_kb, free_kb);
    let (mut total_small, mut free_small) = ((total % 1024) / 103, (free % 1024) / 103);
    let mut unit = MEM_UNITS[0];
    for u in MEM_UNITS {
        unit = u;
        if total < 1024 {
            break;
        }
        total_small = (total % 1024) / 103;
        free_small = (free % 1024) / 103;
        total >>= 10;
        free >>= 10;
    }
    format!("{free}.{free_small} / {total}.{total_small} {unit} (free / total)")
}

fn format_us(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

/// Escapes `s` for a JSON string body and cuts it (at a character boundary, never inside an
/// escape) so the result is at most `max` bytes.
fn json_escape_truncated(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    let mut buf = [0u8; 4];
    for c in s.chars() {
        let piece: std::borrow::Cow<str> = match c {
            '"' => "\\\"".into(),
            '\\' => "\\\\".into(),
            c if (c as u32) < 0x20 || c == '\u{7f}' => format!("\\u{:04x}", c as u32).into(),
            c => (*c.encode_utf8(&mut buf)).to_owned().into(),
        };
        if out.len() + piece.len() > max {
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// The current time as ctime(3) prints it (UTC; uftrace prints local time, which is free text).
pub fn ctime_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    ctime(secs)
}

/// ctime(3)-style text for `unix_secs` (UTC): `Thu Jan  1 00:00:00 1970`.
pub fn ctime(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        year
    )
}

mod parse;

#[cfg(test)]
mod tests {
    use super::parse::parse_meminfo;
    use super::*;

    fn full() -> Info {
        Info {
            info_mask: ALL_INFO & !EXE_BUILD_ID | EXE_BUILD_ID,
            exename: "/bin/prog".into(),
            build_id: "38e3e9328f9a153bfd19cdb004d6c59e02c55e79".into(),
            exit_status: -3,
            cmdline: "prog \"a b\" c\\d\te".into(),
            cpus_online: 2,
            cpus_possible: 4,
            cpu_desc: "AMD EPYC".into(),
            mem_total_kb: 23 << 20 | (5 * 103) << 10,
            mem_free_kb: 22 << 20 | (6 * 103) << 10,
            os: OsInfo {
                kernel: "Linux 6.1".into(),
                hostname: "vm".into(),
                distro: "\"Debian\"".into(),
            },
            tids: vec![7, 8, 9],
            usage: UsageInfo {
                sys_time_us: 5462,
                user_time_us: 1_000_001,
                voluntary_ctxsw: 2,
                involuntary_ctxsw: 1,
                max_rss_kb: 7264,
                major_faults: 0,
                minor_faults: 631,
                read_blocks: 0,
                write_blocks: 16,
            },
            load_avg: [0.51, 0.27, 0.12],
            arg_spec: vec![
                "argspec:main@arg1".into(),
                "argauto:".into(),
                "retauto:".into(),
                "enumauto:".into(),
            ],
            record_date: "Sun Nov 22 06:10:26 2026".into(),
            elapsed_time: "0.005346383 sec".into(),
            pattern_type: "regex".into(),
            version: "v0.13 ( x86_64 )".into(),
            ..Info::default()
        }
    }

    #[test]
    fn round_trip_all_sections() {
        let info = full();
        let bytes = info.to_bytes().unwrap();
        let back = Info::parse(&bytes, Path::new("info")).unwrap();
        assert_eq!(back, info);
    }

    #[test]
    fn meminfo_text_is_uftraces() {
        assert_eq!(
            format_meminfo(23_700_000, 24_600_000),
            "22.5 / 23.4 GB (free / total)"
        );
        assert_eq!(
            format_meminfo(500, 1000),
            "500.4 / 1000.9 KB (free / total)"
        );
        for kb in [0u64, 1, 1023, 1024, 24_600_000, 5 << 30] {
            let text = format_meminfo(kb / 2, kb);
            let (f, t) = parse_meminfo(&text).unwrap();
            assert_eq!(format_meminfo(f, t), text);
        }
    }

    #[test]
    fn ctime_matches_known_dates() {
        assert_eq!(ctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(ctime(1_700_000_000), "Tue Nov 14 22:13:20 2023");
    }

    #[test]
    fn refuses_line_breaks_and_long_lines() {
        let mut info = Info::new("/a\nb", "x");
        assert!(info.to_bytes().unwrap_err().to_string().contains("exename"));
        info.exename = "/a".repeat(3000);
        assert!(info.to_bytes().unwrap_err().to_string().contains("4095"));
        // The command line is truncated rather than refused.
        info.exename = "/a".into();
        info.cmdline = "y".repeat(10_000);
        let bytes = info.to_bytes().unwrap();
        let back = Info::parse(&bytes, Path::new("info")).unwrap();
        assert_eq!(back.cmdline.len(), MAX_LINE - 1 - 8);
    }

    #[test]
    fn errors_name_offset() {
        let mut bytes = Info::new("/a", "x").to_bytes().unwrap();
        let pos = bytes.windows(8).position(|w| w == b"cmdline:").unwrap();
        bytes[pos] = b'X';
        let err = Info::parse(&bytes, Path::new("d/info")).unwrap_err();
        assert_eq!(err.offset, Some(pos as u64));
        assert!(
            err.to_string()
                .starts_with(&format!("d/info: offset {pos}: expected `cmdline:`")),
            "{err}"
        );
    }
}
