//! Getting the stream out of guest memory. The guest writes it to its RAM and announces
//! `vftrace-stream addr=0x... len=...` on the debug console; QEMU keeps the RAM in a file
//! (`-object memory-backend-file,...,share=on`) that the host reads after QEMU exits.
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// Where the guest says its stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub addr: u64,
    pub len: u64,
}

/// How the guest announces its end-of-run stream, and (live) its trace pool.
pub const STREAM_LINE: &str = "vftrace-stream ";
pub const POOL_LINE: &str = "vftrace-pool ";

impl Announcement {
    /// `PREFIX addr=0x... len=N` (guest text: anything else is None).
    pub fn parse_line(line: &str, prefix: &str) -> Option<Announcement> {
        let rest = line.trim().strip_prefix(prefix)?;
        let mut addr = None;
        let mut len = None;
        for field in rest.split_ascii_whitespace() {
            if let Some(v) = field.strip_prefix("addr=0x") {
                addr = u64::from_str_radix(v, 16).ok();
            } else if let Some(v) = field.strip_prefix("len=") {
                len = v.parse().ok();
            }
        }
        Some(Announcement {
            addr: addr?,
            len: len?,
        })
    }
}

/// Finds the last stream announcement line in the console output (guest text; anything
/// unparsable is ignored).
pub fn parse_announcement(console: &[u8]) -> Option<Announcement> {
    let text = String::from_utf8_lossy(console);
    text.lines()
        .rev()
        .find_map(|line| Announcement::parse_line(line, STREAM_LINE))
}

/// Reads the announced stream from the guest RAM file. The guest's numbers are checked
/// against the file's size before anything is allocated.
pub fn extract_stream(ram: &Path, announcement: Announcement) -> io::Result<Vec<u8>> {
    let mut file =
        File::open(ram).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", ram.display())))?;
    let size = file.metadata()?.len();
    let end = announcement.addr.checked_add(announcement.len);
    if end.is_none_or(|end| end > size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the guest announced a stream at {:#x}+{} but its RAM ({}) has only {size} bytes",
                announcement.addr,
                announcement.len,
                ram.display()
            ),
        ));
    }
    file.seek(SeekFrom::Start(announcement.addr))?;
    let mut bytes = vec![0u8; announcement.len as usize];
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_is_found_among_other_output() {
        let console = b"hello\nvftrace-stream addr=0x9cc000 len=2515890\n";
        assert_eq!(
            parse_announcement(console),
            Some(Announcement {
                addr: 0x9cc000,
                len: 2515890
            })
        );
        assert_eq!(parse_announcement(b"vftrace-stream addr=zz len=1\n"), None);
    }
}
