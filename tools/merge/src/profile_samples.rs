//! Stack samples taken from the host by `vftrace profile` (`vftrace.samples`, read by the
//! format crate) as tracks: a "profile" process with one track per sampled vCPU, each sample an
//! instant named after its leaf frame, with the whole stack, CR3, CPL and the pause it cost as
//! arguments. Sample times are host TSC, placed on the timeline like the KVM events.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use vftrace_convert::{ArgValue, TimelineSink};
use vftrace_format::samples::SamplesReader;

use crate::clocks::HostClock;
use crate::MergeError;

/// Process id of the sample tracks in the output.
pub const PROFILE_PID: u32 = 0x4000_0003;

/// What the samples file contributed.
#[derive(Clone, Debug)]
pub struct ProfileTracks {
    pub path: PathBuf,
    pub samples: u64,
    pub vcpus: usize,
}

/// Emits the samples at `path` (a file, or a profile directory holding `vftrace.samples`).
/// A line that cannot be read ends the input; what came before is kept and the error is
/// added to `data_errors`.
pub fn emit_profile(
    path: &Path,
    host_clock: &HostClock,
    sink: &mut dyn TimelineSink,
    data_errors: &mut Vec<String>,
) -> Result<ProfileTracks, MergeError> {
    let mut reader = SamplesReader::open(path)?;
    sink.process(PROFILE_PID, "profile (host samples of vCPU stacks)")?;
    let mut vcpus = HashSet::new();
    let mut samples = 0u64;
    loop {
        let sample = match reader.next_sample() {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) => {
                data_errors.push(e.to_string());
                break;
            }
        };
        if vcpus.insert(sample.vcpu) {
            sink.thread(
                PROFILE_PID,
                sample.vcpu,
                &format!("vCPU {} samples", sample.vcpu),
            )?;
        }
        let leaf = sample.stack.rsplit(';').next().unwrap_or("");
        let mut args = vec![("stack", ArgValue::Str(&sample.stack))];
        if let Some(cr3) = sample.cr3 {
            args.push(("cr3", ArgValue::U64(cr3)));
        }
        if let Some(cpl) = sample.cpl {
            args.push(("cpl", ArgValue::U64(cpl.into())));
        }
        args.push(("pause_ns", ArgValue::U64(sample.pause_ns)));
        args.push(("host_tsc", ArgValue::U64(sample.host_tsc)));
        sink.instant(
            PROFILE_PID,
            sample.vcpu,
            host_clock.tsc_to_ns(sample.host_tsc),
            leaf,
            &args,
        )?;
        samples += 1;
    }
    Ok(ProfileTracks {
        path: reader.path().to_path_buf(),
        samples,
        vcpus: vcpus.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vftrace_convert::ChromeJsonWriter;

    #[test]
    fn samples_become_instants_on_vcpu_tracks_and_a_bad_line_ends_them() {
        let dir =
            std::env::temp_dir().join(format!("vftrace-merge-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vftrace.samples");
        std::fs::write(
            &path,
            "# vftrace profile samples 1\n\
             2000000000 0 0x108000 3 90000 guest_main;guest::workload::fib\n\
             3000000000 1 - - 80000 [unknown]\n\
             4000000000 0 0x108000 9 80000 guest_main\n\
             5000000000 0 0x108000 3 80000 guest_main\n",
        )
        .unwrap();
        let clock = HostClock::new(&[], 1e9, true);
        let mut sink = ChromeJsonWriter::new(Vec::new()).unwrap();
        let mut errors = Vec::new();
        let tracks = emit_profile(&dir, &clock, &mut sink, &mut errors).unwrap();
        sink.finish().unwrap();
        assert_eq!((tracks.samples, tracks.vcpus), (2, 2));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("vftrace.samples:4: cpl"), "{errors:?}");
        let doc: serde_json::Value = serde_json::from_slice(&sink.into_inner()).unwrap();
        let instants: Vec<&serde_json::Value> = doc["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "i")
            .collect();
        assert_eq!(instants[0]["name"], "guest::workload::fib");
        assert_eq!(instants[0]["pid"], PROFILE_PID);
        assert_eq!(instants[0]["ts"], 2_000_000.0, "host TSC at 1 GHz, in us");
        assert_eq!(
            instants[0]["args"]["stack"],
            "guest_main;guest::workload::fib"
        );
        assert_eq!(instants[1]["tid"], 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
