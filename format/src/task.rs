//! `task.txt`: sessions, tasks, forks and dlopen events, one per line.
//!
//! ```text
//! SESS timestamp=383.956900039 pid=7812 sid=81c8631bb709d01f exename="/tmp/t"
//! TASK timestamp=383.956993299 tid=7812 pid=7812
//! FORK timestamp=384.000000000 pid=7813 ppid=7812
//! DLOP timestamp=384.100000000 tid=7812 sid=81c8631bb709d01f base=7f0000000000 libname="/lib/x.so"
//! ```
//! Timestamps are nanoseconds written as `seconds.nanoseconds` (9 digits).

use std::fmt;
use std::io::{self, Write};
use std::path::Path;

use crate::error::{numbered_lines, text_of, FormatError};

/// uftrace prints and compares session ids as 16 characters (`%.*s` with SESSION_ID_LEN).
pub const SESSION_ID_LEN: usize = 16;

/// One line of `task.txt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskLine {
    Session {
        timestamp_ns: u64,
        pid: u32,
        sid: String,
        exename: String,
    },
    Task {
        timestamp_ns: u64,
        tid: u32,
        pid: u32,
    },
    Fork {
        timestamp_ns: u64,
        pid: u32,
        ppid: u32,
    },
    Dlopen {
        timestamp_ns: u64,
        tid: u32,
        sid: String,
        base: u64,
        libname: String,
    },
}

impl TaskLine {
    pub fn timestamp_ns(&self) -> u64 {
        match *self {
            TaskLine::Session { timestamp_ns, .. }
            | TaskLine::Task { timestamp_ns, .. }
            | TaskLine::Fork { timestamp_ns, .. }
            | TaskLine::Dlopen { timestamp_ns, .. } => timestamp_ns,
        }
    }

    /// Checks what uftrace needs to read the line back: a 16-character session id of
    /// non-blank characters, and names without a double quote or line break.
    pub fn validate(&self) -> Result<(), String> {
        let check_sid = |sid: &str| {
            if sid.len() != SESSION_ID_LEN || !sid.bytes().all(|b| b.is_ascii_graphic()) {
                Err(format!("session id {sid:?} must be {SESSION_ID_LEN} printable ASCII characters (e.g. hex digits)"))
            } else {
                Ok(())
            }
        };
        let check_name = |what: &str, name: &str| {
            if name.contains(['"', '\n', '\r', '\0']) {
                Err(format!("{what} {name:?} contains a double quote or line break, which task.txt cannot hold"))
            } else {
                Ok(())
            }
        };
        match self {
            TaskLine::Session { sid, exename, .. } => {
                check_sid(sid)?;
                check_name("exename", exename)
            }
            TaskLine::Dlopen { sid, libname, .. } => {
                check_sid(sid)?;
                check_name("libname", libname)
            }
            TaskLine::Task { .. } | TaskLine::Fork { .. } => Ok(()),
        }
    }

    /// Parses one line (without its newline). `None` for lines uftrace ignores (unknown kind).
    pub fn parse_line(line: &str) -> Result<Option<TaskLine>, String> {
        let Some((kind, rest)) = line.split_at_checked(4) else {
            return Ok(None);
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| format!("expected a space after {kind:?}"))?;
        let fields = Fields(rest);
        Ok(Some(match kind {
            "SESS" => TaskLine::Session {
                timestamp_ns: fields.timestamp()?,
                pid: fields.num("pid")?,
                sid: fields.word("sid")?.to_string(),
                exename: fields.quoted("exename")?.to_string(),
            },
            "TASK" => TaskLine::Task {
                timestamp_ns: fields.timestamp()?,
                tid: fields.num("tid")?,
                pid: fields.num("pid")?,
            },
            "FORK" => TaskLine::Fork {
                timestamp_ns: fields.timestamp()?,
                pid: fields.num("pid")?,
                ppid: fields.num("ppid")?,
            },
            "DLOP" => TaskLine::Dlopen {
                timestamp_ns: fields.timestamp()?,
                tid: fields.num("tid")?,
                sid: fields.word("sid")?.to_string(),
                base: u64::from_str_radix(fields.word("base")?, 16)
                    .map_err(|_| "base is not a hex number".to_string())?,
                libname: fields.quoted("libname")?.to_string(),
            },
            _ => return Ok(None),
        }))
    }
}

/// `key=value` fields of a line, found by key.
struct Fields<'a>(&'a str);

impl<'a> Fields<'a> {
    /// The text after ` key=` (or at the start of the line).
    fn after(&self, key: &str) -> Result<&'a str, String> {
        let s = self.0;
        let mut from = 0;
        while let Some(i) = s[from..].find(key) {
            let at = from + i;
            let starts_field = at == 0 || s.as_bytes()[at - 1] == b' ';
            if starts_field && s[at + key.len()..].starts_with('=') {
                return Ok(&s[at + key.len() + 1..]);
            }
            from = at + key.len();
        }
        Err(format!("missing field `{key}=`"))
    }

    fn word(&self, key: &str) -> Result<&'a str, String> {
        let v = self.after(key)?;
        let w = v.split(' ').next().unwrap_or("");
        if w.is_empty() {
            return Err(format!("field `{key}=` is empty"));
        }
        Ok(w)
    }

    fn num<T: std::str::FromStr>(&self, key: &str) -> Result<T, String> {
        let w = self.word(key)?;
        w.parse()
            .map_err(|_| format!("field `{key}={w}` is not a number"))
    }

    fn quoted(&self, key: &str) -> Result<&'a str, String> {
        let v = self.after(key)?;
        let v = v
            .strip_prefix('"')
            .ok_or_else(|| format!("field `{key}=` is not quoted"))?;
        // uftrace takes everything up to the last double quote of the line.
        let end = v
            .rfind('"')
            .ok_or_else(|| format!("field `{key}=` has no closing quote"))?;
        Ok(&v[..end])
    }

    fn timestamp(&self) -> Result<u64, String> {
        parse_timestamp(self.word("timestamp")?)
    }
}

/// `S.NNNNNNNNN` -> nanoseconds. Like uftrace (`%lu.%lu`), the digits after the point are an
/// integer count of nanoseconds; uftrace always writes 9 of them.
pub fn parse_timestamp(text: &str) -> Result<u64, String> {
    let bad = || format!("timestamp {text:?} is not SECONDS.NANOSECONDS");
    let (s, ns) = text.split_once('.').ok_or_else(bad)?;
    let digits = |t: &str| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(s) || !digits(ns) {
        return Err(bad());
    }
    let (s, ns): (u64, u64) = (
        s.parse().map_err(|_| bad())?,
        ns.parse().map_err(|_| bad())?,
    );
    if ns >= 1_000_000_000 {
        return Err(format!(
            "timestamp {text:?} has {ns} nanoseconds (must be below 1000000000)"
        ));
    }
    s.checked_mul(1_000_000_000)
        .and_then(|v| v.checked_add(ns))
        .ok_or_else(|| format!("timestamp {text:?} overflows 64-bit nanoseconds"))
}

/// Nanoseconds as `S.NNNNNNNNN`.
pub struct Timestamp(pub u64);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09}",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

impl fmt::Display for TaskLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskLine::Session {
                timestamp_ns,
                pid,
                sid,
                exename,
            } => {
                write!(
                    f,
                    "SESS timestamp={} pid={pid} sid={sid} exename=\"{exename}\"",
                    Timestamp(*timestamp_ns)
                )
            }
            TaskLine::Task {
                timestamp_ns,
                tid,
                pid,
            } => write!(
                f,
                "TASK timestamp={} tid={tid} pid={pid}",
                Timestamp(*timestamp_ns)
            ),
            TaskLine::Fork {
                timestamp_ns,
                pid,
                ppid,
            } => write!(
                f,
                "FORK timestamp={} pid={pid} ppid={ppid}",
                Timestamp(*timestamp_ns)
            ),
            TaskLine::Dlopen {
                timestamp_ns,
                tid,
                sid,
                base,
                libname,
            } => write!(
                f,
                "DLOP timestamp={} tid={tid} sid={sid} base={base:x} libname=\"{libname}\"",
                Timestamp(*timestamp_ns)
            ),
        }
    }
}

/// Writes `lines` in task.txt form, refusing (before writing anything) lines uftrace could not
/// read back.
pub fn write_tasks(mut w: impl Write, lines: &[TaskLine]) -> io::Result<()> {
    for l in lines {
        l.validate()
            .map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
    }
    let mut text = String::new();
    for l in lines {
        use std::fmt::Write as _;
        let _ = writeln!(text, "{l}");
    }
    w.write_all(text.as_bytes())
}

/// Parses a whole task.txt. Unknown line kinds are skipped as uftrace does; a malformed known
/// line is an error naming its line number.
pub fn parse_tasks(bytes: &[u8], file: &Path) -> Result<Vec<TaskLine>, FormatError> {
    let text = text_of(bytes, file)?;
    let mut out = Vec::new();
    for (n, line) in numbered_lines(text) {
        if line.trim().is_empty() {
            continue;
        }
        match TaskLine::parse_line(line) {
            Ok(Some(l)) => out.push(l),
            Ok(None) => {}
            Err(msg) => return Err(FormatError::at_line(file, n, msg)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<TaskLine> {
        vec![
            TaskLine::Session {
                timestamp_ns: 383_956_900_039,
                pid: 7812,
                sid: "81c8631bb709d01f".into(),
                exename: "/tmp/a b/t".into(),
            },
            TaskLine::Task {
                timestamp_ns: 383_956_993_299,
                tid: 7812,
                pid: 7812,
            },
            TaskLine::Fork {
                timestamp_ns: 384_000_000_000,
                pid: 7813,
                ppid: 7812,
            },
            TaskLine::Dlopen {
                timestamp_ns: 5,
                tid: 7812,
                sid: "81c8631bb709d01f".into(),
                base: 0x7f00_0000_1000,
                libname: "/lib/x.so".into(),
            },
        ]
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        write_tasks(&mut buf, &sample()).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(text.starts_with(
            "SESS timestamp=383.956900039 pid=7812 sid=81c8631bb709d01f exename=\"/tmp/a b/t\"\n"
        ));
        assert!(text.contains("DLOP timestamp=0.000000005 tid=7812 sid=81c8631bb709d01f base=7f0000001000 libname=\"/lib/x.so\"\n"));
        assert_eq!(parse_tasks(&buf, Path::new("task.txt")).unwrap(), sample());
    }

    #[test]
    fn errors_name_the_line() {
        let text = b"TASK timestamp=1.000000000 tid=1 pid=1\nTASK timestamp=1.x tid=1 pid=1\n";
        let err = parse_tasks(text, Path::new("d/task.txt")).unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(
            err.to_string()
                .starts_with("d/task.txt:2: timestamp \"1.x\""),
            "{err}"
        );
        let err = parse_tasks(b"TASK timestamp=1.0 pid=1\n", Path::new("t")).unwrap_err();
        assert!(err.message.contains("tid"), "{err}");
    }

    #[test]
    fn refuses_unreadable_lines() {
        let bad = TaskLine::Session {
            timestamp_ns: 0,
            pid: 1,
            sid: "short".into(),
            exename: "x".into(),
        };
        assert!(write_tasks(Vec::new(), &[bad]).is_err());
        let bad = TaskLine::Session {
            timestamp_ns: 0,
            pid: 1,
            sid: "0123456789abcdef".into(),
            exename: "a\"b".into(),
        };
        assert!(write_tasks(Vec::new(), &[bad]).is_err());
    }
}
