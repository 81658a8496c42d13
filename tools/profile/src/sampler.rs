//! The sampling session: attach (and check the RAM file and the images against the guest),
//! sample at a fixed rate until told to stop or the VM exits, and write the profile.
//!
//! Per sample the VM is stopped once: one write carries the interrupt and a register read for
//! every vCPU, one read brings the answers; the stacks are walked while the VM stays stopped
//! (through the RAM file: no further round trip), then `c` lets it run. Symbols are looked up
//! and the files written after that, while the guest runs.
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vftrace_format::samples::{write_header, write_sample, write_trailer, ProfileSample};
use vftrace_kvm::clock::{measure_sync, tsc_hz_between};

use crate::aggregate::{Aggregate, GroupKey, PauseStats};
use crate::images::{ImageSpec, Images};
use crate::memory::{GuestMemory, PageCache, RamMemory, StubMemory};
use crate::output::{self, AtomicFile, Title, OUTPUT_FILES, SAMPLES_FILE};
use crate::paging::{PageWalk, RamFile};
use crate::regs::Registers;
use crate::rsp::RspError;
use crate::shadow::ShadowStack;
use crate::stub::{Stopped, Stub, StubError};
use crate::unwind::{leaf_return_slot, walk, Walk, WalkLimits};
use crate::ProfileError;

mod checks;

/// What to sample and where to put it.
#[derive(Clone, Debug)]
pub struct ProfileOptions {
    /// `HOST:PORT` of the gdb stub.
    pub gdb: String,
    pub images: Vec<ImageSpec>,
    /// Stops per second.
    pub hz: f64,
    /// The VM's RAM file (QEMU memory-backend-file, share=on): stacks are read from it.
    pub ram: Option<PathBuf>,
    pub output_dir: PathBuf,
    pub limits: WalkLimits,
    /// Limit on every read from the stub.
    pub stub_timeout: Duration,
}

/// How sampling ended.
#[derive(Debug)]
pub enum RunEnd {
    /// The caller said stop (duration, signal, the command exited).
    Stopped,
    /// The VM exited (or its VMM closed the connection).
    VmExited(String),
    /// Talking to the stub failed; the samples so far are kept.
    Failed(ProfileError),
}

/// Passed to the caller's stop check.
pub struct Progress {
    pub stops: u64,
    pub elapsed: Duration,
}

/// A running profile.
pub struct Profiler {
    opts: ProfileOptions,
    stub: Stub,
    images: Images,
    ram: Option<RamFile>,
    cache: PageCache,
    samples_file: AtomicFile,
    pub profile: Aggregate,
    pub warnings: Vec<String>,
    /// What attaching found out (image placements).
    pub notes: Vec<String>,
    /// How long the VM was stopped while attaching and checking.
    pub setup_pause: Duration,
    start_sync: (u64, u64),
    started: Option<Instant>,
    last_sample: Option<Instant>,
    /// Ticks that came later than one period after the one before.
    pub late_ticks: u64,
    /// The stub is gone: no detach at the end.
    connection_lost: bool,
    /// Reads of guest memory through the stub during samples (the slow path).
    pub stub_reads: u64,
    /// The RAM file has been compared with the stub's view.
    ram_checked: bool,
}

/// What a finished profile wrote and measured.
#[derive(Debug)]
pub struct ProfileSummary {
    pub written: Vec<PathBuf>,
    pub stops: u64,
    pub samples: u64,
    pub vcpus: usize,
    pub pauses: Option<PauseStats>,
    /// The part of each pause spent walking stacks (the rest is the stub's).
    pub walks: Option<PauseStats>,
    /// Stops per second over the sampling time.
    pub achieved_hz: f64,
    pub asked_hz: f64,
    pub elapsed: Duration,
    pub setup_pause: Duration,
    pub complete: u64,
    /// (reason, count) of cut stacks.
    pub cuts: Vec<(String, u64)>,
    pub unresolved_trampolines: u64,
    pub without_registers: u64,
    pub stub_reads: u64,
    pub late_ticks: u64,
    pub warnings: Vec<String>,
}

impl Profiler {
    /// Loads the images, connects, checks the RAM file and the images against the stopped
    /// guest, and lets the VM run again. On any error after connecting the VM is let go.
    /// While nothing listens at the stub's address, `wait_for_stub` says whether to try again
    /// (in 20 ms): a VMM that is starting up opens its port a little later.
    pub fn attach(
        opts: ProfileOptions,
        wait_for_stub: &mut dyn FnMut() -> bool,
    ) -> Result<Profiler, ProfileError> {
        if !(opts.hz.is_finite() && opts.hz > 0.0) {
            return Err(ProfileError::Setup(format!(
                "{} is not a sampling rate (Hz)",
                opts.hz
            )));
        }
        let images = Images::load(&opts.images)?;
        refuse_overwriting_inputs(&opts)?;
        std::fs::create_dir_all(&opts.output_dir)
            .map_err(|e| ProfileError::output(&opts.output_dir, e))?;
        let samples_path = opts.output_dir.join(SAMPLES_FILE);
        let samples_file = AtomicFile::create(&samples_path)
            .map_err(|e| ProfileError::output(&samples_path, e))?;

        let stub = loop {
            match Stub::attach(&opts.gdb, opts.stub_timeout) {
                Err(StubError::Protocol(RspError::Connect { source, .. }))
                    if source.kind() == std::io::ErrorKind::ConnectionRefused
                        && wait_for_stub() =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        let connected = Instant::now();
        let mut profiler = Profiler {
            stub,
            images,
            ram: None,
            cache: PageCache::default(),
            samples_file,
            profile: Aggregate::default(),
            warnings: Vec::new(),
            notes: Vec::new(),
            setup_pause: Duration::ZERO,
            start_sync: (0, 0),
            started: None,
            last_sample: None,
            late_ticks: 0,
            connection_lost: false,
            stub_reads: 0,
            ram_checked: false,
            opts,
        };
        if let Err(e) = profiler.check_guest() {
            let _ = profiler.stub.detach();
            return Err(e);
        }
        let sync = measure_sync(16).sync;
        profiler.start_sync = (sync.tsc, sync.mono_ns);
        let header = write_header(
            profiler.samples_file.writer(),
            &profiler.opts.gdb,
            profiler.start_sync,
        );
        if let Err(e) = header {
            let _ = profiler.stub.detach();
            return Err(ProfileError::output(&samples_path, e));
        }
        profiler.stub.resume()?;
        profiler.setup_pause = connected.elapsed();
        Ok(profiler)
    }

    pub fn vcpus(&self) -> usize {
        self.stub.threads().len().max(1)
    }

    pub fn peer(&self) -> &str {
        self.stub.peer()
    }

    /// Samples at the asked rate until `keep_going` says no, the VM exits or the stub fails.
    pub fn run(&mut self, keep_going: &mut dyn FnMut(&Progress) -> bool) -> RunEnd {
        let period = Duration::from_secs_f64(1.0 / self.opts.hz);
        let started = *self.started.get_or_insert_with(Instant::now);
        let mut next = Instant::now();
        loop {
            // Sleep in short pieces so that a stop request is seen soon.
            loop {
                let progress = Progress {
                    stops: self.profile.stops,
                    elapsed: started.elapsed(),
                };
                if !keep_going(&progress) {
                    return RunEnd::Stopped;
                }
                let now = Instant::now();
                if now >= next {
                    break;
                }
                std::thread::sleep((next - now).min(Duration::from_millis(20)));
            }
            match self.sample() {
                Ok(None) => {}
                Ok(Some(exit)) => return RunEnd::VmExited(exit),
                Err(ProfileError::Stub(StubError::Protocol(RspError::Closed { .. }))) => {
                    self.connection_lost = true;
                    return RunEnd::VmExited("its gdb stub closed the connection".into());
                }
                Err(e) => {
                    // The session is out of step, but the VM must not stay stopped: it is
                    // (the stop reply came) or will be (a stub too slow to answer in time).
                    let timed_out = matches!(
                        e,
                        ProfileError::Stub(StubError::Protocol(RspError::Timeout { .. }))
                    );
                    if self.stub.is_stopped() || timed_out {
                        self.stub.abandon();
                    }
                    self.connection_lost = true;
                    return RunEnd::Failed(e);
                }
            }
            next += period;
            let now = Instant::now();
            if next < now {
                // Behind by more than a period: skip ahead instead of stopping in a burst.
                self.late_ticks += 1;
                next = now;
            }
        }
    }

    /// One stop of the VM: registers, stacks, continue; then the bookkeeping. Returns the
    /// VM's exit status if it is gone.
    fn sample(&mut self) -> Result<Option<String>, ProfileError> {
        let t0 = Instant::now();
        let regs = match self.stub.stop_and_read_registers()? {
            Stopped::Registers(r) => r,
            Stopped::Exited(status) => {
                self.connection_lost = true;
                return Ok(Some(format!("the VM exited ({status})")));
            }
        };
        let host_tsc = vftrace_kvm::tsc_now();
        if self.ram.is_some() && !self.ram_checked {
            if let Some((vcpu, r)) = regs
                .iter()
                .enumerate()
                .find_map(|(i, r)| r.as_ref().ok().map(|r| (i, *r)))
            {
                self.ram_checked = self.check_ram(vcpu, &r)?;
            }
        }
        let walk_started = Instant::now();
        let mut walks: Vec<Option<(Registers, Walk)>> = Vec::with_capacity(regs.len());
        for (vcpu, r) in regs.iter().enumerate() {
            walks.push(match r {
                Ok(r) => Some((*r, self.walk_vcpu(vcpu, r)?)),
                Err(_) => None,
            });
        }
        let walking = walk_started.elapsed();
        self.stub.resume()?;
        let pause = t0.elapsed();
        self.last_sample = Some(Instant::now());
        self.profile.add_stop(pause, walking);
        for (vcpu, w) in walks.into_iter().enumerate() {
            match w {
                Some((regs, walk)) => self.record(vcpu as u32, &regs, &walk, host_tsc, pause)?,
                None => self.profile.without_registers += 1,
            }
        }
        Ok(None)
    }

    fn walk_vcpu(&mut self, vcpu: usize, regs: &Registers) -> Result<Walk, ProfileError> {
        let function = self.images.function_at(regs.rip);
        let start = function.as_ref().map(|f| f.start);
        let prologue = start.and_then(|s| self.images.code(s, 5));
        let mut shadow = self
            .images
            .tracer()
            .map(|t| ShadowStack::new(*t, regs.fs_base));
        let walk_with =
            |mem: &mut dyn GuestMemory, at_rip: Option<&[u8]>, shadow: Option<&mut ShadowStack>| {
                let leaf = leaf_return_slot(regs.rip, start, prologue, at_rip);
                walk(
                    mem,
                    regs.rip,
                    regs.rsp,
                    regs.rbp,
                    leaf,
                    shadow,
                    self.opts.limits,
                )
            };
        let code_at_rip = self.images.code(regs.rip, 2);
        if let (Some(ram), Some(walk)) = (&self.ram, PageWalk::for_registers(regs)) {
            self.cache.clear();
            let mut mem = RamMemory {
                ram,
                walk,
                cache: &mut self.cache,
            };
            let mut bytes = [0u8; 2];
            let at_rip = match code_at_rip {
                Some(c) => Some(c),
                None => mem.read(regs.rip, &mut bytes).ok().map(|()| &bytes[..]),
            };
            return Ok(walk_with(&mut mem, at_rip, shadow.as_mut()));
        }
        let mut mem = StubMemory::new(&mut self.stub, vcpu, regs.rsp);
        let w = walk_with(&mut mem, code_at_rip, shadow.as_mut());
        self.stub_reads += mem.requests;
        match mem.error.take() {
            Some(e) => Err(e.into()),
            None => Ok(w),
        }
    }

    /// Names the frames and adds the sample to the profile and the samples file.
    fn record(
        &mut self,
        vcpu: u32,
        regs: &Registers,
        walk: &Walk,
        host_tsc: u64,
        pause: Duration,
    ) -> Result<(), ProfileError> {
        // Return addresses point after their call: name the call's own function.
        let names: Vec<String> = walk
            .frames
            .iter()
            .enumerate()
            .map(|(i, &a)| {
                let name = self
                    .images
                    .frame_name(if i == 0 { a } else { a.wrapping_sub(1) });
                name.replace(';', ":")
            })
            .collect();
        let mut folded =
            String::with_capacity(names.iter().map(|n| n.len() + 1).sum::<usize>() + 24);
        if let Some(cut) = walk.cut {
            folded.push_str(&format!("[stack cut: {}];", cut.describe()));
        }
        for (i, n) in names.iter().rev().enumerate() {
            if i > 0 {
                folded.push(';');
            }
            folded.push_str(n);
        }
        let sample = ProfileSample {
            host_tsc,
            vcpu,
            cr3: regs.cr3,
            cpl: regs.cpl(),
            pause_ns: pause.as_nanos() as u64,
            stack: folded,
        };
        let path = self.opts.output_dir.join(SAMPLES_FILE);
        write_sample(self.samples_file.writer(), &sample)
            .map_err(|e| ProfileError::output(&path, e))?;
        let key = GroupKey {
            vcpu,
            cr3: regs.cr3,
            cpl: regs.cpl(),
        };
        self.profile.add(
            key,
            sample.stack,
            &names[0],
            walk.cut,
            walk.unresolved_trampolines,
        );
        Ok(())
    }

    /// Lets the VM go (if it still runs), writes every output and returns the summary (with
    /// the warnings the run gave; those of attaching are in [`Profiler::warnings`]).
    /// `what` names what was sampled, for the flame graph's title.
    pub fn finish(mut self, what: &str) -> Result<ProfileSummary, ProfileError> {
        let mut detach_error = None;
        if !self.connection_lost {
            match self.stub.detach() {
                // The VM exited meanwhile: nothing to let go.
                Ok(()) | Err(StubError::Protocol(RspError::Closed { .. })) => {}
                Err(e) => detach_error = Some(e),
            }
        }
        let elapsed = match (self.started, self.last_sample) {
            (Some(s), Some(l)) => l.duration_since(s),
            _ => Duration::ZERO,
        };
        let dir = self.opts.output_dir.clone();
        let sync = measure_sync(16).sync;
        let tsc_hz = tsc_hz_between(
            vftrace_kvm::ClockSync {
                tsc: self.start_sync.0,
                mono_ns: self.start_sync.1,
            },
            sync,
        );
        let samples_path = dir.join(SAMPLES_FILE);
        write_trailer(self.samples_file.writer(), (sync.tsc, sync.mono_ns), tsc_hz)
            .and_then(|()| self.samples_file.writer().flush())
            .map_err(|e| ProfileError::output(&samples_path, e))?;
        let title = Title {
            title: what.to_string(),
            subtitle: format!(
                "{} samples of {} vCPU(s) at {} Hz through the gdb stub at {}",
                self.profile.samples(),
                self.vcpus(),
                self.opts.hz,
                self.opts.gdb
            ),
        };
        let mut written = output::write_profile(&dir, &self.profile, &title)
            .map_err(|e| ProfileError::output(&dir, e))?;
        written.push(
            self.samples_file
                .commit()
                .map_err(|e| ProfileError::output(&samples_path, e))?,
        );
        let achieved_hz = if elapsed.is_zero() {
            0.0
        } else {
            // Stops after the first, over the time from the first to the last.
            self.profile.stops.saturating_sub(1) as f64 / elapsed.as_secs_f64()
        };
        // The warnings of attaching were the caller's to show then; these are the run's.
        let mut warnings = Vec::new();
        if let (Some(ram), false) = (&self.ram, self.ram_checked) {
            warnings.push(format!(
                "{} was never compared with the guest's memory (no stop found a vCPU's stack or code above 1 MiB): its stacks may not be this VM's",
                ram.path.display()
            ));
        }
        if let Some(e) = detach_error {
            warnings.push(format!("could not detach from the stub cleanly: {e}"));
        }
        let p = &self.profile;
        Ok(ProfileSummary {
            written,
            stops: p.stops,
            samples: p.samples(),
            vcpus: self.stub.threads().len().max(1),
            pauses: PauseStats::of(&p.pauses_ns),
            walks: PauseStats::of(&p.walks_ns),
            achieved_hz,
            asked_hz: self.opts.hz,
            elapsed,
            setup_pause: self.setup_pause,
            complete: p.complete,
            cuts: p.cuts.iter().map(|(c, n)| (c.describe(), *n)).collect(),
            unresolved_trampolines: p.unresolved_trampolines,
            without_registers: p.without_registers,
            stub_reads: self.stub_reads,
            late_ticks: self.late_ticks,
            warnings,
        })
    }
}

/// No output may land on an input (an image or the RAM file).
fn refuse_overwriting_inputs(opts: &ProfileOptions) -> Result<(), ProfileError> {
    let inputs: Vec<&Path> = opts
        .images
        .iter()
        .map(|i| i.path.as_path())
        .chain(opts.ram.as_deref())
        .collect();
    for name in OUTPUT_FILES {
        let out = opts.output_dir.join(name);
        for input in &inputs {
            if same_file(&out, input) {
                return Err(ProfileError::Setup(format!(
                    "{} would overwrite the input {}; choose another -o",
                    out.display(),
                    input.display()
                )));
            }
        }
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
