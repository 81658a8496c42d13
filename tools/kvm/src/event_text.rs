//! The field text of the KVM events vftrace interprets, in the shapes the kernel prints
//! (tracefs `print fmt`), both ways: text to [`KvmEventKind`] and back.
//!
//! Kernels differ in details (older ones print no vcpu in kvm_exit, no rip in kvm_entry, no
//! val in kvm_pio), so optional parts are optional here. A known event whose fields have an
//! unknown shape becomes [`KvmEventKind::Other`] rather than an error: its line structure was
//! sound, only its meaning is not known.

use crate::KvmEventKind;
use std::fmt::Write;

/// Interprets the fields of event `name` (without the system prefix).
pub(crate) fn parse_kind(name: &str, fields: &str) -> KvmEventKind {
    let tokens: Vec<&str> = fields.split_whitespace().collect();
    let known = match name {
        "kvm_write_tsc_offset" => parse_write_tsc_offset(&tokens),
        "kvm_pio" => parse_pio(&tokens),
        "kvm_mmio" => parse_mmio(&tokens),
        "kvm_exit" => parse_exit(&tokens),
        "kvm_entry" => parse_entry(&tokens),
        "kvm_hypercall" => parse_hypercall(&tokens),
        "kvm_fpu" => match tokens.as_slice() {
            ["load"] => Some(KvmEventKind::Fpu { load: true }),
            ["unload"] => Some(KvmEventKind::Fpu { load: false }),
            _ => None,
        },
        "kvm_userspace_exit" => {
            fields
                .trim()
                .strip_prefix("reason ")
                .map(|r| KvmEventKind::UserspaceExit {
                    reason: r.trim().to_string(),
                })
        }
        "sched_switch" => parse_sched_switch(fields),
        "sched_wakeup" => parse_sched_wakeup(fields),
        _ => None,
    };
    known.unwrap_or_else(|| KvmEventKind::Other {
        name: name.to_string(),
        fields: fields.to_string(),
    })
}

/// The canonical field text of `kind`; [`parse_kind`] reads it back to the same value.
pub(crate) fn format_fields(kind: &KvmEventKind) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = match kind {
        KvmEventKind::WriteTscOffset { vcpu, prev, next } => {
            write!(out, "vcpu={vcpu} prev={prev} next={next}")
        }
        KvmEventKind::Pio {
            write,
            port,
            size,
            count,
            val,
        } => {
            let rw = if *write { "write" } else { "read" };
            let _ = write!(out, "pio_{rw} at {port:#x} size {size} count {count}");
            match val {
                Some(v) => write!(out, " val {v:#x}"),
                None => Ok(()),
            }
        }
        KvmEventKind::Mmio {
            write,
            len,
            gpa,
            val,
        } => {
            let kind = match (write, val) {
                (true, _) => "write",
                (false, Some(_)) => "read",
                (false, None) => "unsatisfied-read",
            };
            let _ = write!(out, "mmio {kind} len {len} gpa {gpa:#x}");
            match val {
                Some(v) => write!(out, " val {v:#x}"),
                None => Ok(()),
            }
        }
        KvmEventKind::Exit { reason, rip, vcpu } => {
            if let Some(v) = vcpu {
                let _ = write!(out, "vcpu {v} ");
            }
            let _ = write!(out, "reason {reason}");
            match rip {
                Some(r) => write!(out, " rip {r:#x}"),
                None => Ok(()),
            }
        }
        KvmEventKind::Entry { vcpu, rip } => match (vcpu, rip) {
            (Some(v), Some(r)) => write!(out, "vcpu {v}, rip {r:#x}"),
            (Some(v), None) => write!(out, "vcpu {v}"),
            (None, Some(r)) => write!(out, "rip {r:#x}"),
            (None, None) => Ok(()),
        },
        KvmEventKind::Hypercall { nr } => write!(out, "nr {nr:#x}"),
        KvmEventKind::Fpu { load } => out.write_str(if *load { "load" } else { "unload" }),
        KvmEventKind::UserspaceExit { reason } => write!(out, "reason {reason}"),
        KvmEventKind::SchedSwitch {
            prev_comm,
            prev_pid,
            prev_state,
            next_comm,
            next_pid,
        } => write!(
            out,
            "prev_comm={prev_comm} prev_pid={prev_pid} prev_state={prev_state} ==> next_comm={next_comm} next_pid={next_pid}"
        ),
        KvmEventKind::SchedWakeup {
            comm,
            pid,
            target_cpu,
        } => write!(out, "comm={comm} pid={pid} target_cpu={target_cpu:03}"),
        KvmEventKind::Other { fields, .. } => write!(out, "{fields}"),
    };
    out
}

fn parse_hex(token: &str) -> Option<u64> {
    let digits = token.strip_prefix("0x").unwrap_or(token);
    u64::from_str_radix(digits, 16).ok()
}

fn parse_write_tsc_offset(tokens: &[&str]) -> Option<KvmEventKind> {
    let [vcpu, prev, next, ..] = tokens else {
        return None;
    };
    Some(KvmEventKind::WriteTscOffset {
        vcpu: vcpu.strip_prefix("vcpu=")?.parse().ok()?,
        prev: prev.strip_prefix("prev=")?.parse().ok()?,
        next: next.strip_prefix("next=")?.parse().ok()?,
    })
}

/// `pio_write at 0x6a0 size 4 count 1 val 0x4ebfff1b [(...)]`
fn parse_pio(tokens: &[&str]) -> Option<KvmEventKind> {
    let [rw, "at", port, "size", size, "count", count, rest @ ..] = tokens else {
        return None;
    };
    let write = match *rw {
        "pio_write" => true,
        "pio_read" => false,
        _ => return None,
    };
    let val = match rest {
        ["val", v, ..] => Some(parse_hex(v)?),
        _ => None,
    };
    Some(KvmEventKind::Pio {
        write,
        port: u16::try_from(parse_hex(port)?).ok()?,
        size: size.parse().ok()?,
        count: count.parse().ok()?,
        val,
    })
}

/// `mmio write len 4 gpa 0xfee000b0 val 0x0`
fn parse_mmio(tokens: &[&str]) -> Option<KvmEventKind> {
    let ["mmio", kind, "len", len, "gpa", gpa, rest @ ..] = tokens else {
        return None;
    };
    let (write, satisfied) = match *kind {
        "write" => (true, true),
        "read" => (false, true),
        "unsatisfied-read" => (false, false),
        _ => return None,
    };
    let val = match rest {
        ["val", v, ..] if satisfied => Some(parse_hex(v)?),
        _ => None,
    };
    Some(KvmEventKind::Mmio {
        write,
        len: len.parse().ok()?,
        gpa: parse_hex(gpa)?,
        val,
    })
}

/// `[vcpu 0 ]reason EXTERNAL_INTERRUPT rip 0xffffffff8104a7c6 info1 ...`; the reason may have
/// several words (`DE excp`, `... FAILED_VMENTRY`).
fn parse_exit(tokens: &[&str]) -> Option<KvmEventKind> {
    let (vcpu, tokens) = match tokens {
        ["vcpu", v, rest @ ..] => (Some(v.parse().ok()?), rest),
        _ => (None, tokens),
    };
    let ["reason", rest @ ..] = tokens else {
        return None;
    };
    let reason_words = rest.iter().position(|t| *t == "rip").unwrap_or(rest.len());
    let rip = match &rest[reason_words..] {
        ["rip", r, ..] => Some(parse_hex(r)?),
        ["rip"] => return None,
        _ => None,
    };
    Some(KvmEventKind::Exit {
        reason: rest[..reason_words].join(" "),
        rip,
        vcpu,
    })
}

/// `vcpu 0, rip 0xffffffff81000000 intr_info ...`, or `vcpu 0` on older kernels.
fn parse_entry(tokens: &[&str]) -> Option<KvmEventKind> {
    let (vcpu, tokens) = match tokens {
        ["vcpu", v, rest @ ..] => (Some(v.trim_end_matches(',').parse().ok()?), rest),
        _ => (None, tokens),
    };
    let rip = match tokens {
        ["rip", r, ..] => Some(parse_hex(r)?),
        [] => None,
        _ if vcpu.is_some() => None,
        _ => return None,
    };
    Some(KvmEventKind::Entry { vcpu, rip })
}

/// `COMM_KEY=COMM PID_KEY=N rest...` where COMM may hold spaces (`opt cgu.03`): the comm is
/// what lies before the last ` PID_KEY=`. Returns (comm, pid, the words after the pid).
fn comm_and_pid<'a>(
    text: &'a str,
    comm_key: &str,
    pid_key: &str,
) -> Option<(&'a str, u32, Vec<&'a str>)> {
    let rest = text.trim().strip_prefix(comm_key)?;
    let at = rest.rfind(pid_key)?;
    let comm = &rest[..at];
    let mut words = rest[at + pid_key.len()..].split_whitespace();
    let pid = words.next()?.parse().ok()?;
    Some((comm, pid, words.collect()))
}

/// `prev_comm=C prev_pid=N [prev_prio=P] prev_state=S ==> next_comm=C next_pid=N [next_prio=P]`
fn parse_sched_switch(fields: &str) -> Option<KvmEventKind> {
    let (prev, next) = fields.split_once(" ==> ")?;
    let (prev_comm, prev_pid, rest) = comm_and_pid(prev, "prev_comm=", " prev_pid=")?;
    let prev_state = rest.iter().find_map(|w| w.strip_prefix("prev_state="))?;
    let (next_comm, next_pid, _) = comm_and_pid(next, "next_comm=", " next_pid=")?;
    Some(KvmEventKind::SchedSwitch {
        prev_comm: prev_comm.to_string(),
        prev_pid,
        prev_state: prev_state.to_string(),
        next_comm: next_comm.to_string(),
        next_pid,
    })
}

/// `comm=C pid=N [prio=P] target_cpu=NNN`
fn parse_sched_wakeup(fields: &str) -> Option<KvmEventKind> {
    let (comm, pid, rest) = comm_and_pid(fields, "comm=", " pid=")?;
    let target_cpu = rest.iter().find_map(|w| w.strip_prefix("target_cpu="))?;
    Some(KvmEventKind::SchedWakeup {
        comm: comm.to_string(),
        pid,
        target_cpu: target_cpu.parse().ok()?,
    })
}

/// `nr 0x1 a0 0x0 a1 ...`
fn parse_hypercall(tokens: &[&str]) -> Option<KvmEventKind> {
    let ["nr", nr, ..] = tokens else { return None };
    Some(KvmEventKind::Hypercall { nr: parse_hex(nr)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_shapes_parse() {
        assert_eq!(
            parse_kind(
                "kvm_pio",
                "pio_write at 0x6a0 size 4 count 1 val 0x4ebfff1b "
            ),
            KvmEventKind::Pio {
                write: true,
                port: 0x6a0,
                size: 4,
                count: 1,
                val: Some(0x4ebfff1b)
            }
        );
        assert_eq!(
            parse_kind("kvm_pio", "pio_read at 0x3f8 size 1 count 8 val 0x0 (...)"),
            KvmEventKind::Pio {
                write: false,
                port: 0x3f8,
                size: 1,
                count: 8,
                val: Some(0)
            }
        );
        assert_eq!(
            parse_kind(
                "kvm_write_tsc_offset",
                "vcpu=0 prev=0 next=18446743067139719286"
            ),
            KvmEventKind::WriteTscOffset {
                vcpu: 0,
                prev: 0,
                next: 18446743067139719286
            }
        );
        assert_eq!(
            parse_kind(
                "kvm_mmio",
                "mmio unsatisfied-read len 4 gpa 0xfee00030 val 0x0"
            ),
            KvmEventKind::Mmio {
                write: false,
                len: 4,
                gpa: 0xfee00030,
                val: None
            }
        );
        assert_eq!(
            parse_kind(
                "kvm_exit",
                "vcpu 1 reason EPT_VIOLATION rip 0xffffffff81234567 info1 0x0000000000000181 \
                 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000"
            ),
            KvmEventKind::Exit {
                reason: "EPT_VIOLATION".into(),
                rip: Some(0xffffffff81234567),
                vcpu: Some(1)
            }
        );
        assert_eq!(
            parse_kind("kvm_exit", "reason DE excp rip 0x10 info 0 0"),
            KvmEventKind::Exit {
                reason: "DE excp".into(),
                rip: Some(0x10),
                vcpu: None
            }
        );
        assert_eq!(
            parse_kind(
                "kvm_entry",
                "vcpu 0, rip 0xfff0 intr_info 0x00000000 error_code 0x00000000"
            ),
            KvmEventKind::Entry {
                vcpu: Some(0),
                rip: Some(0xfff0)
            }
        );
        assert_eq!(
            parse_kind("kvm_entry", "vcpu 3"),
            KvmEventKind::Entry {
                vcpu: Some(3),
                rip: None
            }
        );
        assert_eq!(
            parse_kind("kvm_hypercall", "nr 0xc a0 0x1 a1 0x0 a2 0x0 a3 0x0"),
            KvmEventKind::Hypercall { nr: 0xc }
        );
    }

    #[test]
    fn scheduler_and_vmm_shapes_parse() {
        assert_eq!(
            parse_kind(
                "sched_switch",
                "prev_comm=opt cgu.03 prev_pid=25958 prev_prio=120 prev_state=R+ ==> next_comm=qemu-system-x86 next_pid=25973 next_prio=120"
            ),
            KvmEventKind::SchedSwitch {
                prev_comm: "opt cgu.03".into(),
                prev_pid: 25958,
                prev_state: "R+".into(),
                next_comm: "qemu-system-x86".into(),
                next_pid: 25973
            }
        );
        assert_eq!(
            parse_kind(
                "sched_wakeup",
                "comm=CPU 0/KVM pid=7 prio=120 target_cpu=001"
            ),
            KvmEventKind::SchedWakeup {
                comm: "CPU 0/KVM".into(),
                pid: 7,
                target_cpu: 1
            }
        );
        assert_eq!(
            parse_kind("kvm_fpu", "unload"),
            KvmEventKind::Fpu { load: false }
        );
        assert_eq!(
            parse_kind("kvm_userspace_exit", "reason KVM_EXIT_IO (2)"),
            KvmEventKind::UserspaceExit {
                reason: "KVM_EXIT_IO (2)".into()
            }
        );
    }

    #[test]
    fn unknown_shapes_become_other() {
        for (name, fields) in [
            ("kvm_pio", "pio_write at 0x10000 size 4 count 1 val 0x1"),
            ("kvm_pio", "pio_sideways at 0x10 size 4 count 1"),
            ("kvm_write_tsc_offset", "vcpu=0 prev=-1 next=2"),
            ("kvm_msr", "msr_write 10 = 0x0"),
            ("kvm_exit", "reason X rip"),
            (
                "sched_switch",
                "prev_comm=a prev_pid=x prev_state=S ==> next_comm=b next_pid=2",
            ),
            ("sched_wakeup", "comm=a pid=1 prio=120"),
            ("kvm_fpu", "reload"),
        ] {
            assert_eq!(
                parse_kind(name, fields),
                KvmEventKind::Other {
                    name: name.into(),
                    fields: fields.into()
                }
            );
        }
    }

    #[test]
    fn canonical_text_round_trips() {
        let kinds = [
            KvmEventKind::WriteTscOffset {
                vcpu: 2,
                prev: u64::MAX,
                next: 5,
            },
            KvmEventKind::Pio {
                write: false,
                port: 0xffff,
                size: 2,
                count: 3,
                val: None,
            },
            KvmEventKind::Pio {
                write: true,
                port: 0,
                size: 4,
                count: 1,
                val: Some(u64::MAX),
            },
            KvmEventKind::Mmio {
                write: true,
                len: 8,
                gpa: 1 << 40,
                val: None,
            },
            KvmEventKind::Mmio {
                write: false,
                len: 1,
                gpa: 0,
                val: Some(7),
            },
            KvmEventKind::Mmio {
                write: false,
                len: 1,
                gpa: 0,
                val: None,
            },
            KvmEventKind::Exit {
                reason: "IO_INSTRUCTION".into(),
                rip: Some(0x1000),
                vcpu: Some(0),
            },
            KvmEventKind::Exit {
                reason: "HLT".into(),
                rip: None,
                vcpu: None,
            },
            KvmEventKind::Entry {
                vcpu: None,
                rip: None,
            },
            KvmEventKind::Entry {
                vcpu: None,
                rip: Some(1),
            },
            KvmEventKind::Entry {
                vcpu: Some(1),
                rip: Some(1),
            },
            KvmEventKind::Hypercall { nr: 0 },
            KvmEventKind::Fpu { load: true },
            KvmEventKind::UserspaceExit {
                reason: "restart (4)".into(),
            },
            KvmEventKind::SchedSwitch {
                prev_comm: "with space".into(),
                prev_pid: 1,
                prev_state: "D|W".into(),
                next_comm: "swapper/0".into(),
                next_pid: 0,
            },
            KvmEventKind::SchedWakeup {
                comm: "qemu-system-x86".into(),
                pid: 9,
                target_cpu: 12,
            },
        ];
        for kind in kinds {
            assert_eq!(parse_kind(kind.name(), &format_fields(&kind)), kind);
        }
    }
}
