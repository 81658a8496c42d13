//! Record reading and writing speed next to their peers, plain file reads and writes of the
//! same bytes.
//!
//! `cargo run --release -p vftrace-format --example bench_records [-- FILE.dat | -- --mb N]`
//! Without FILE, writes a synthetic N MB (default 320) TID.dat in the temp dir first.
//! Prints MB/s for: raw read (1 MiB blocks, words summed), `RecordReader` iterator,
//! `RecordReader::read_batch`, raw write of the bytes, `TraceDirWriter::write_records`
//! (4096-record batches), and the ratios to the raw read/write. Best of 3 runs each.

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use vftrace_format::dir::TraceDirWriter;
use vftrace_format::reader::RecordReader;
use vftrace_format::record::{Record, RecordType};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, generated) = match args.first().map(String::as_str) {
        Some("--mb") | None => {
            let mb: u64 = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(320);
            let p = std::env::temp_dir().join(format!("vftrace-bench-{}.dat", std::process::id()));
            write_synthetic(&p, mb);
            (p, true)
        }
        Some(file) => (PathBuf::from(file), false),
    };
    let size = std::fs::metadata(&path).unwrap().len();
    let mb = size as f64 / 1e6;
    println!(
        "file: {} ({mb:.1} MB, {} records)",
        path.display(),
        size / 16
    );

    let raw = best_of(3, || {
        let mut f = std::fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut sum = 0u64;
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            // Touch every word so the peer does comparable memory work.
            sum = buf[..n].chunks_exact(8).fold(sum, |s, c| {
                s.wrapping_add(u64::from_le_bytes(c.try_into().unwrap()))
            });
        }
        sum
    });
    let iter = best_of(3, || {
        let f = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
        RecordReader::new(f, &path)
            .map(|r| r.unwrap())
            .fold(0u64, |s, r| s.wrapping_add(r.time ^ r.addr))
    });
    let batch = best_of(3, || {
        let f = std::fs::File::open(&path).unwrap();
        let mut reader = RecordReader::new(f, &path);
        let mut v = Vec::with_capacity(1 << 16);
        let mut sum = 0u64;
        loop {
            v.clear();
            if reader.read_batch(&mut v).unwrap() == 0 {
                break;
            }
            sum = v.iter().fold(sum, |s, r| s.wrapping_add(r.time ^ r.addr));
        }
        sum
    });
    println!("{:<28} {:>10} {:>8}", "reader", "MB/s", "ratio");
    for (name, secs) in [
        ("raw read (peer)", raw),
        ("RecordReader iterator", iter),
        ("RecordReader::read_batch", batch),
    ] {
        println!("{name:<28} {:>10.0} {:>8.2}", mb / secs, raw / secs);
    }
    // Writing: the records of the file, in batches, against one plain write of its bytes.
    let records: Vec<Record> = RecordReader::new(std::fs::File::open(&path).unwrap(), &path)
        .map(|r| r.unwrap())
        .collect();
    let bytes = std::fs::read(&path).unwrap();
    let out_dir = std::env::temp_dir().join(format!("vftrace-bench-dir-{}", std::process::id()));
    let raw_write = best_of(3, || {
        let _ = std::fs::remove_dir_all(&out_dir);
        std::fs::create_dir_all(&out_dir).unwrap();
        std::fs::write(out_dir.join("1.dat"), &bytes).unwrap();
        0
    });
    let dir_write = best_of(3, || {
        let _ = std::fs::remove_dir_all(&out_dir);
        let mut w = TraceDirWriter::create(&out_dir).unwrap();
        for chunk in records.chunks(4096) {
            w.write_records(1, chunk.iter().copied()).unwrap();
        }
        w.flush().unwrap();
        0
    });
    let _ = std::fs::remove_dir_all(&out_dir);
    println!("{:<28} {:>10} {:>8}", "writer", "MB/s", "ratio");
    for (name, secs) in [
        ("raw write (peer)", raw_write),
        ("TraceDirWriter", dir_write),
    ] {
        println!("{name:<28} {:>10.0} {:>8.2}", mb / secs, raw_write / secs);
    }
    if generated {
        let _ = std::fs::remove_file(&path);
    }
}

fn best_of(n: usize, mut f: impl FnMut() -> u64) -> f64 {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn write_synthetic(path: &std::path::Path, mb: u64) {
    let records = mb * 1_000_000 / 16;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut depth = 0u16;
    for i in 0..records {
        let kind = if depth == 0 || (i % 3 != 0 && depth < 50) {
            RecordType::Entry
        } else {
            RecordType::Exit
        };
        let d = if kind == RecordType::Entry {
            depth
        } else {
            depth - 1
        };
        std::io::Write::write_all(
            &mut out,
            &Record::new(i * 7, kind, d, 0x5555_0000_0000 + (i % 4096) * 16).to_bytes(),
        )
        .unwrap();
        depth = if kind == RecordType::Entry {
            depth + 1
        } else {
            depth - 1
        };
    }
}
