//! Fast reading of `TID.dat` record streams.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::error::FormatError;
use crate::record::{Record, RecordError, RecordType, MAX_DEPTH, RECORD_MAGIC, RECORD_SIZE};

/// Bytes read per `read` call once a file proved large: syscalls then cost nothing per record.
pub const READ_BLOCK: usize = 1 << 20;
/// The first block is smaller, so the many tiny files of a trace with thousands of threads do
/// not each cost a 1 MiB buffer; it doubles on each refill up to READ_BLOCK.
const FIRST_BLOCK: usize = 64 << 10;
/// Records `read_batch` appends per call at most.
pub const BATCH_MAX: usize = 8192;

/// Decodes 16-byte records from `R`, reading in blocks of up to 1 MiB. Yields an error (and then stops)
/// on a bad magic, on an argument payload it cannot size (`more` bit), on trailing bytes that
/// are not a whole record, or on an I/O error; every error names the file and byte offset.
pub struct RecordReader<R: Read> {
    inner: R,
    file: PathBuf,
    buf: Box<[u8]>,
    /// Decoded up to here in `buf`.
    pos: usize,
    /// Valid bytes in `buf`.
    len: usize,
    /// File offset of `buf[0]`.
    base: u64,
    done: bool,
}

impl<R: Read> RecordReader<R> {
    /// Reads records from `inner`; `file` only names errors.
    pub fn new(inner: R, file: impl Into<PathBuf>) -> Self {
        RecordReader {
            inner,
            file: file.into(),
            buf: vec![0u8; FIRST_BLOCK].into_boxed_slice(),
            pos: 0,
            len: 0,
            base: 0,
            done: false,
        }
    }

    /// The file this reader names in its errors.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Byte offset of the next record.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Refills `buf` keeping the undecoded tail. Returns false at end of input.
    fn refill(&mut self) -> Result<bool, FormatError> {
        let tail = self.len - self.pos;
        if self.len > 0 && self.buf.len() < READ_BLOCK {
            let mut bigger = vec![0u8; (self.buf.len() * 2).min(READ_BLOCK)].into_boxed_slice();
            bigger[..self.len].copy_from_slice(&self.buf[..self.len]);
            self.buf = bigger;
        }
        self.buf.copy_within(self.pos..self.len, 0);
        self.base += self.pos as u64;
        self.pos = 0;
        self.len = tail;
        while self.len < RECORD_SIZE {
            match self.inner.read(&mut self.buf[self.len..]) {
                Ok(0) => {
                    if self.len == 0 {
                        return Ok(false);
                    }
                    return Err(FormatError::at_offset(
                        &self.file,
                        self.base,
                        format!("truncated record: {} trailing bytes at the end of the file (records are 16 bytes)", self.len),
                    ));
                }
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(FormatError::at_offset(
                        &self.file,
                        self.base + self.len as u64,
                        format!("read error: {e}"),
                    ))
                }
            }
        }
        Ok(true)
    }

    fn fail(&mut self, err: FormatError) -> Option<Result<Record, FormatError>> {
        self.done = true;
        Some(Err(err))
    }

    #[inline]
    fn decode_at(&self, pos: usize) -> Result<Record, FormatError> {
        let chunk: &[u8; RECORD_SIZE] = self.buf[pos..pos + RECORD_SIZE].try_into().unwrap();
        let time = u64::from_le_bytes(chunk[..8].try_into().unwrap());
        let word = u64::from_le_bytes(chunk[8..].try_into().unwrap());
        match Record::from_words(time, word) {
            Ok(r) if !r.more => Ok(r),
            Ok(_) => Err(FormatError::at_offset(
                &self.file,
                self.base + pos as u64,
                "record announces an argument/return payload (more bit); payloads of traces recorded with arguments are not supported",
            )),
            Err(RecordError::BadMagic(m)) => Err(FormatError::at_offset(
                &self.file,
                self.base + pos as u64,
                format!("bad record magic {m:#05b} (expected 0b101): not record data, or misaligned"),
            )),
        }
    }

    /// Appends up to 8192 records to `out`, validating them first in one tight loop.
    /// Returns the number appended; 0 means end of input.
    pub fn read_batch(&mut self, out: &mut Vec<Record>) -> Result<usize, FormatError> {
        if self.done {
            return Ok(0);
        }
        if self.len - self.pos < RECORD_SIZE {
            match self.refill() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return Ok(0);
                }
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            }
        }
        // At most 8192 records per call, so the caller's batch stays in cache.
        let whole = ((self.len - self.pos) / RECORD_SIZE).min(BATCH_MAX);
        let block = &self.buf[self.pos..self.pos + whole * RECORD_SIZE];
        // Validate first (a tight loop over the words), then decode the good prefix in one
        // `extend`, which the compiler turns into a straight copy loop.
        let good = block
            .chunks_exact(RECORD_SIZE)
            .position(|c| !is_plain_record(c))
            .unwrap_or(whole);
        let start = out.len();
        out.extend(
            block[..good * RECORD_SIZE]
                .chunks_exact(RECORD_SIZE)
                .map(|c| {
                    let time = u64::from_le_bytes(c[..8].try_into().unwrap());
                    let word = u64::from_le_bytes(c[8..].try_into().unwrap());
                    Record {
                        time,
                        kind: RecordType::from_bits(word),
                        more: false,
                        depth: ((word >> 6) & MAX_DEPTH as u64) as u16,
                        addr: word >> 16,
                    }
                }),
        );
        if good < whole {
            let err = self
                .decode_at(self.pos + good * RECORD_SIZE)
                .expect_err("validated as bad");
            self.pos += good * RECORD_SIZE;
            self.done = true;
            return Err(err);
        }
        self.pos += whole * RECORD_SIZE;
        Ok(out.len() - start)
    }
}

/// Magic right and no payload announced: a record `read_batch` can decode without checks.
#[inline(always)]
fn is_plain_record(chunk: &[u8]) -> bool {
    let word = u64::from_le_bytes(chunk[8..16].try_into().unwrap());
    (word >> 2) & 0b1111 == RECORD_MAGIC << 1
}

impl<R: Read> Iterator for RecordReader<R> {
    type Item = Result<Record, FormatError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.len - self.pos < RECORD_SIZE {
            match self.refill() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => return self.fail(e),
            }
        }
        match self.decode_at(self.pos) {
            Ok(r) => {
                self.pos += RECORD_SIZE;
                Some(Ok(r))
            }
            Err(e) => self.fail(e),
        }
    }
}

impl<R: Read> std::iter::FusedIterator for RecordReader<R> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(records: &[Record]) -> Vec<u8> {
        records.iter().flat_map(|r| r.to_bytes()).collect()
    }

    /// A reader that returns at most 7 bytes per call, to exercise partial reads.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(7);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn reads_many_blocks_and_partial_reads() {
        let recs: Vec<Record> = (0..200_000u64)
            .map(|i| Record::new(i, RecordType::Entry, (i % 5) as u16, i * 16))
            .collect();
        let data = bytes(&recs);
        let got: Vec<Record> = RecordReader::new(&data[..], "x.dat")
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, recs);
        let got: Vec<Record> = RecordReader::new(Trickle(&data[..1600]), "x.dat")
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, recs[..100]);
        let mut batch = Vec::new();
        let mut r = RecordReader::new(&data[..], "x.dat");
        while r.read_batch(&mut batch).unwrap() > 0 {}
        assert_eq!(batch, recs);
    }

    #[test]
    fn truncated_and_bad_magic() {
        let recs: Vec<Record> = (0..3u64)
            .map(|i| Record::new(i, RecordType::Exit, 0, 1))
            .collect();
        let mut data = bytes(&recs);
        data.extend_from_slice(&[1, 2, 3]);
        let out: Vec<_> = RecordReader::new(&data[..], "d/1.dat").collect();
        assert_eq!(out.len(), 4);
        let err = out[3].clone().unwrap_err();
        assert_eq!(err.offset, Some(48));
        assert!(
            err.to_string()
                .starts_with("d/1.dat: offset 48: truncated record: 3 trailing bytes"),
            "{err}"
        );

        let mut data = bytes(&recs);
        data[16 + 8] ^= 0b1000;
        let out: Vec<_> = RecordReader::new(&data[..], "d/1.dat").collect();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].clone().unwrap_err().offset, Some(16));
    }
}
