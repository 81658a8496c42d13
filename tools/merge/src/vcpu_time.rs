//! When a vCPU thread was not running guest code, and why, from the host's events of it.
//!
//! A vCPU thread runs guest code until something takes it out: a VM exit (`kvm_exit`, with
//! its reason; under PVM, which has no exit events, the first exit-handling event such as
//! `kvm_pio`), a return to the VMM (`kvm_fpu: unload` / `kvm_userspace_exit`, until the next
//! `kvm_fpu: load` re-enters `KVM_RUN`), or the scheduler (`sched_switch` away from it:
//! preempted if it was runnable, sleeping or blocked otherwise; `sched_wakeup` makes it wait
//! for a CPU). It runs guest code again after `kvm_entry`, or where that never fires, when it
//! re-enters `KVM_RUN` or is switched back in while it was in the guest. Consecutive reasons
//! make one [`Period`] of not running.
//!
//! What the events cannot show is not invented: under PVM an exit begins shortly before the
//! event that shows it, and the way back into the guest after `kvm_fpu: load` or a switch in
//! is not traced, so periods there are a little shorter than the truth.
use vftrace_kvm::{KvmEvent, KvmEventKind};

/// Why a vCPU was not running guest code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// In a VM exit, in the kernel (`kvm_exit`'s reason, or the event that showed it).
    Exit(String),
    /// In the VMM, in user space (`kvm_userspace_exit`'s reason when known).
    Vmm(String),
    /// Switched out while runnable.
    Preempted,
    /// Switched out to wait (state S).
    Sleeping,
    /// Switched out in another state (D: uninterruptible...).
    Blocked(String),
    /// Woken, waiting for a CPU.
    Runnable,
}

impl Reason {
    /// The name of a span of this reason.
    pub fn label(&self) -> String {
        match self {
            Reason::Exit(why) => format!("VM exit: {why}"),
            Reason::Vmm(why) if why.is_empty() => "in the VMM".into(),
            Reason::Vmm(why) => format!("in the VMM ({why})"),
            Reason::Preempted => "preempted".into(),
            Reason::Sleeping => "sleeping".into(),
            Reason::Blocked(state) => format!("blocked ({state})"),
            Reason::Runnable => "waiting for a CPU".into(),
        }
    }

    /// The event category of a span of this reason.
    pub fn category(&self) -> &'static str {
        match self {
            Reason::Exit(_) | Reason::Vmm(_) => "kvm",
            _ => "sched",
        }
    }

    fn off_cpu(prev_state: &str) -> Reason {
        match prev_state.trim_end_matches('+') {
            "R" => Reason::Preempted,
            "S" => Reason::Sleeping,
            other => Reason::Blocked(other.to_string()),
        }
    }
}

/// One reason from `start` to `end` (host TSC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub start: u64,
    pub end: u64,
    pub reason: Reason,
}

/// A time the vCPU did not run guest code: its reasons one after another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Period {
    pub start: u64,
    pub end: u64,
    pub segments: Vec<Segment>,
}

/// Which events the capture has at all (they decide what marks an exit and an entry).
#[derive(Clone, Copy, Debug, Default)]
pub struct CaptureHas {
    pub exits: bool,
    pub entries: bool,
}

impl CaptureHas {
    pub fn of(events: &[KvmEvent]) -> CaptureHas {
        let mut has = CaptureHas::default();
        for e in events {
            match e.kind {
                KvmEventKind::Exit { .. } => has.exits = true,
                KvmEventKind::Entry { .. } => has.entries = true,
                _ => {}
            }
        }
        has
    }
}

/// Does `e` tell anything about thread `tid`'s running (as its own event or the scheduler's)?
pub fn concerns(e: &KvmEvent, tid: u32) -> bool {
    match &e.kind {
        KvmEventKind::SchedSwitch {
            prev_pid, next_pid, ..
        } => *prev_pid == tid || *next_pid == tid,
        KvmEventKind::SchedWakeup { pid, .. } => *pid == tid,
        _ => e.pid == tid,
    }
}

/// The periods thread `tid` did not run guest code, from `events` (those that
/// [`concerns`] it, in time order).
pub fn not_running_periods<'e>(
    events: impl IntoIterator<Item = &'e KvmEvent>,
    tid: u32,
    has: CaptureHas,
) -> Vec<Period> {
    let mut periods: Vec<Period> = Vec::new();
    // The reason now (None: running guest code), since when, and the reason to go back to
    // when switched back in.
    let mut now: Option<Reason> = None;
    let mut since = 0u64;
    let mut resume: Option<Reason> = None;
    // `now` is an exit only inferred from an exit-handling event (no `kvm_exit` in the
    // capture): its end is known only when it goes on to the VMM; an exit the kernel handled
    // itself ends unseen, so it is not shown at all rather than stretched to the next event.
    let mut inferred = false;
    let mut change = |now: &mut Option<Reason>, since: &mut u64, to: Option<Reason>, t: u64| {
        if *now == to {
            return;
        }
        if let Some(reason) = now.take() {
            if t > *since {
                let seg = Segment {
                    start: *since,
                    end: t,
                    reason,
                };
                match periods.last_mut() {
                    Some(p) if p.end == seg.start => {
                        p.end = seg.end;
                        p.segments.push(seg);
                    }
                    _ => periods.push(Period {
                        start: seg.start,
                        end: seg.end,
                        segments: vec![seg],
                    }),
                }
            }
        }
        *now = to;
        *since = t;
    };
    for e in events {
        let t = e.tsc;
        let own = e.pid == tid;
        let next = match &e.kind {
            KvmEventKind::Exit { reason, .. } if own && now.is_none() => {
                Some(Reason::Exit(reason.clone()))
            }
            KvmEventKind::Entry { .. } if own => None,
            KvmEventKind::Pio { .. }
            | KvmEventKind::Mmio { .. }
            | KvmEventKind::Hypercall { .. }
            | KvmEventKind::Other { .. }
                if own && (now.is_none() || inferred) && !has.exits =>
            {
                let Some(what) = exit_shown_by(&e.kind) else {
                    continue;
                };
                Some(Reason::Exit(what))
            }
            KvmEventKind::Fpu { load: false } if own => match &now {
                Some(Reason::Vmm(_)) => continue,
                _ => Some(Reason::Vmm(String::new())),
            },
            KvmEventKind::UserspaceExit { reason } if own => Some(Reason::Vmm(reason.clone())),
            KvmEventKind::Fpu { load: true } if own => {
                if has.entries {
                    Some(Reason::Exit("entering the guest".into()))
                } else {
                    None
                }
            }
            KvmEventKind::SchedSwitch {
                prev_pid,
                prev_state,
                next_pid,
                ..
            } => {
                if *prev_pid == tid && *next_pid != tid {
                    resume = now.clone();
                    Some(Reason::off_cpu(prev_state))
                } else if *next_pid == tid && *prev_pid != tid {
                    resume.take()
                } else {
                    continue;
                }
            }
            KvmEventKind::SchedWakeup { pid, .. } if *pid == tid => match now {
                Some(Reason::Sleeping | Reason::Blocked(_)) => Some(Reason::Runnable),
                _ => continue,
            },
            _ => continue,
        };
        if inferred && !matches!(next, Some(Reason::Vmm(_))) {
            now = None;
            if matches!(resume, Some(Reason::Exit(_)))
                && matches!(
                    next,
                    Some(Reason::Preempted | Reason::Sleeping | Reason::Blocked(_))
                )
            {
                resume = None;
            }
        }
        inferred = matches!(next, Some(Reason::Exit(_))) && !has.exits && now.is_none();
        // (`now` is None here exactly when the exit starts from guest code or replaces an
        // inferred one.)
        change(&mut now, &mut since, next, t);
    }
    periods
}

/// The exit a PVM exit-handling event shows (there is no `kvm_exit` to say it).
fn exit_shown_by(kind: &KvmEventKind) -> Option<String> {
    Some(match kind {
        KvmEventKind::Pio {
            write, port, count, ..
        } => format!(
            "pio {} {port:#x}{}",
            if *write { "write" } else { "read" },
            if *count > 1 { " (string)" } else { "" }
        ),
        KvmEventKind::Mmio { write, gpa, .. } => {
            format!("mmio {} {gpa:#x}", if *write { "write" } else { "read" })
        }
        KvmEventKind::Hypercall { nr } => format!("hypercall {nr}"),
        KvmEventKind::Other { name, .. } if name == "kvm_msr" => "msr".into(),
        _ => return None,
    })
}

/// The times thread `tid` was on a CPU (for VMM threads that are not vCPUs): (start, end,
/// host CPU) from its `sched_switch` events.
pub fn running_spans<'e>(
    events: impl IntoIterator<Item = &'e KvmEvent>,
    tid: u32,
) -> Vec<(u64, u64, u32)> {
    let mut spans = Vec::new();
    let mut since: Option<(u64, u32)> = None;
    for e in events {
        if let KvmEventKind::SchedSwitch {
            prev_pid, next_pid, ..
        } = &e.kind
        {
            if *next_pid == tid && *prev_pid != tid {
                since = Some((e.tsc, e.cpu));
            } else if *prev_pid == tid && *next_pid != tid {
                if let Some((start, cpu)) = since.take() {
                    if e.tsc > start {
                        spans.push((start, e.tsc, cpu));
                    }
                }
            }
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(tsc: u64, pid: u32, kind: KvmEventKind) -> KvmEvent {
        KvmEvent {
            tsc,
            cpu: 0,
            pid,
            comm: "qemu".into(),
            kind,
        }
    }
    fn switch(tsc: u64, prev: u32, state: &str, next: u32) -> KvmEvent {
        ev(
            tsc,
            prev,
            KvmEventKind::SchedSwitch {
                prev_comm: "a".into(),
                prev_pid: prev,
                prev_state: state.into(),
                next_comm: "b".into(),
                next_pid: next,
            },
        )
    }
    fn pio(tsc: u64) -> KvmEvent {
        ev(
            tsc,
            7,
            KvmEventKind::Pio {
                write: true,
                port: 0x6a0,
                size: 4,
                count: 1,
                val: Some(1),
            },
        )
    }

    /// The PVM shapes of the demo's capture: a pio exit to the VMM and back, then a
    /// preemption by another task, then a sleep ended by a wakeup.
    #[test]
    fn pvm_exit_to_the_vmm_preemption_and_sleep() {
        let events = [
            pio(100),
            ev(103, 7, KvmEventKind::Fpu { load: false }),
            ev(
                109,
                7,
                KvmEventKind::UserspaceExit {
                    reason: "KVM_EXIT_IO (2)".into(),
                },
            ),
            ev(150, 7, KvmEventKind::Fpu { load: true }),
            switch(1000, 7, "R+", 22),
            switch(5000, 22, "S", 7),
            switch(6000, 7, "S", 0),
            ev(
                6500,
                0,
                KvmEventKind::SchedWakeup {
                    comm: "qemu".into(),
                    pid: 7,
                    target_cpu: 1,
                },
            ),
            switch(6600, 9, "R", 7),
            // Another thread's events change nothing.
            switch(7000, 8, "R", 9),
        ];
        let p = not_running_periods(&events, 7, CaptureHas::default());
        let labels = |p: &Period| -> Vec<(u64, u64, String)> {
            p.segments
                .iter()
                .map(|s| (s.start, s.end, s.reason.label()))
                .collect()
        };
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(
            labels(&p[0]),
            [
                (100, 103, "VM exit: pio write 0x6a0".to_string()),
                (103, 109, "in the VMM".to_string()),
                (109, 150, "in the VMM (KVM_EXIT_IO (2))".to_string()),
            ]
        );
        assert_eq!((p[1].start, p[1].end), (1000, 5000));
        assert_eq!(p[1].segments[0].reason, Reason::Preempted);
        assert_eq!(
            labels(&p[2]),
            [
                (6000, 6500, "sleeping".to_string()),
                (6500, 6600, "waiting for a CPU".to_string()),
            ]
        );
        assert_eq!(running_spans(&events, 22), [(1000, 5000, 0)]);
    }

    /// Under PVM an exit the kernel handles itself (no return to the VMM) has no visible end:
    /// it is left out, not stretched to whatever event comes next.
    #[test]
    fn pvm_exits_handled_in_the_kernel_are_not_stretched() {
        let msr = |tsc| {
            ev(
                tsc,
                7,
                KvmEventKind::Other {
                    name: "kvm_msr".into(),
                    fields: "msr_write 6e0 = 0x1".into(),
                },
            )
        };
        let events = [
            msr(100),
            pio(5_000),
            ev(5_003, 7, KvmEventKind::Fpu { load: false }),
            ev(5_040, 7, KvmEventKind::Fpu { load: true }),
            msr(9_000),
            switch(9_100, 7, "R", 3),
            switch(9_900, 3, "S", 7),
        ];
        let p = not_running_periods(&events, 7, CaptureHas::default());
        let spans: Vec<(u64, u64)> = p.iter().map(|p| (p.start, p.end)).collect();
        assert_eq!(spans, [(5_000, 5_040), (9_100, 9_900)], "{p:?}");
        assert_eq!(p[1].segments.len(), 1, "preempted, then back in the guest");
    }

    /// VMX/SVM shapes: an exit is a span from kvm_exit to kvm_entry with its reason, and a
    /// preemption inside the exit resumes the exit, not the guest.
    #[test]
    fn exit_to_entry_with_a_preemption_inside() {
        let exit = |tsc, reason: &str| {
            ev(
                tsc,
                7,
                KvmEventKind::Exit {
                    reason: reason.into(),
                    rip: Some(0x10),
                    vcpu: Some(0),
                },
            )
        };
        let entry = |tsc| {
            ev(
                tsc,
                7,
                KvmEventKind::Entry {
                    vcpu: Some(0),
                    rip: None,
                },
            )
        };
        let events = [
            exit(100, "EXTERNAL_INTERRUPT"),
            pio(105), // not an exit of its own where kvm_exit fires
            switch(110, 7, "R", 3),
            switch(400, 3, "S", 7),
            entry(420),
            exit(900, "HLT"),
            entry(950),
        ];
        let has = CaptureHas::of(&events);
        let p = not_running_periods(&events, 7, has);
        assert_eq!(p.len(), 2);
        let reasons: Vec<(u64, u64, Reason)> = p[0]
            .segments
            .iter()
            .map(|s| (s.start, s.end, s.reason.clone()))
            .collect();
        assert_eq!(
            reasons,
            [
                (100, 110, Reason::Exit("EXTERNAL_INTERRUPT".into())),
                (110, 400, Reason::Preempted),
                (400, 420, Reason::Exit("EXTERNAL_INTERRUPT".into())),
            ]
        );
        assert_eq!((p[1].start, p[1].end), (900, 950));
        assert_eq!(p[1].segments[0].reason.label(), "VM exit: HLT");
    }
}
