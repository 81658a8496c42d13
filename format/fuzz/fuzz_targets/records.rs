//! Any bytes as a TID.dat: the reader must not panic, must stop after its first error, and the
//! iterator and batch interfaces must agree.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vftrace_format::reader::RecordReader;

fuzz_target!(|data: &[u8]| {
    let mut ok = Vec::new();
    let mut errors = 0;
    for r in RecordReader::new(data, "fuzz.dat") {
        match r {
            Ok(rec) => ok.push(rec),
            Err(e) => {
                assert!(e.offset.is_some_and(|o| o <= data.len() as u64));
                errors += 1;
            }
        }
    }
    assert!(errors <= 1);
    let mut batch = Vec::new();
    let mut reader = RecordReader::new(data, "fuzz.dat");
    while let Ok(n) = reader.read_batch(&mut batch) {
        if n == 0 {
            break;
        }
    }
    assert_eq!(batch, ok);
    for r in &ok {
        assert_eq!(r.to_bytes().len(), 16);
    }
});
