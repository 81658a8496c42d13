//! What was recorded (uftrace's `info`), and what the data holds: records, lost records, the
//! time span and the clock of every thread.

use std::io::Write;
use std::path::Path;

use vftrace_format::balance::Repairs;
use vftrace_format::dir::TraceDir;
use vftrace_format::info::{
    CMDLINE, CPUINFO, EXE_BUILD_ID, EXE_NAME, EXIT_STATUS, LOADINFO, MEMINFO, OSINFO, PATTERN_TYPE,
    RECORD_DATE, TASKINFO, USAGEINFO, VERSION,
};
use vftrace_format::task::Timestamp;

use crate::calls::{visit_threads, AtEnd, CallEvent, CallVisitor, ThreadCalls};
use crate::stats::{task_name, threads_to_read};
use crate::ViewError;

/// What the data of one thread holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadData {
    pub tid: u32,
    pub records: u64,
    pub calls: u64,
    pub first_ns: Option<u64>,
    pub last_ns: u64,
    pub repairs: Repairs,
}

/// Sums up each thread's data.
#[derive(Default)]
struct Counter {
    threads: Vec<ThreadData>,
}

impl CallVisitor for Counter {
    fn thread_start(&mut self, tid: u32) {
        self.threads.push(ThreadData {
            tid,
            ..ThreadData::default()
        });
    }

    fn event(&mut self, event: CallEvent) {
        let data = self.threads.last_mut().expect("inside a thread");
        let time = event.time();
        data.first_ns.get_or_insert(time);
        data.last_ns = time;
        if let CallEvent::Exit(_) = event {
            data.calls += 1;
        }
    }

    fn thread_end(&mut self, calls: &ThreadCalls) {
        let data = self.threads.last_mut().expect("inside a thread");
        data.records = calls.records();
        data.repairs = *calls.repairs();
    }
}

/// Reads every thread's records once (streaming) and sums them up; also returns the threads
/// listed without a data file.
pub fn thread_data(
    trace: &TraceDir,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Vec<ThreadData>, Vec<u32>), ViewError> {
    let (tids, missing) = threads_to_read(trace, None);
    let mut counter = Counter::default();
    visit_threads(trace, &tids, AtEnd::Keep, &mut counter, progress)?;
    Ok((counter.threads, missing))
}

/// How uftrace words a wait(2) status.
fn exit_text(status: i32) -> String {
    if status == 1 << 16 {
        return "terminated by finish trigger".into();
    }
    let signal = status & 0x7f;
    if signal == 0 {
        format!("exited with code: {}", (status >> 8) & 0xff)
    } else if signal != 0x7f {
        format!("terminated by signal: {signal}")
    } else {
        format!("unknown exit status: {status}")
    }
}

/// Prints `uftrace info`'s system and process sections, then the trace data section.
pub fn write_info(
    dir: &Path,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), ViewError> {
    let trace = TraceDir::open(dir)?;
    let (threads, missing) = thread_data(&trace, progress)?;
    let info = &trace.info;
    let m = info.info_mask;
    let mut text = Text(String::with_capacity(4096));
    let t = &mut text;
    t.section("system information", false);
    if m & VERSION != 0 {
        t.line("program version", &info.version);
    }
    if m & RECORD_DATE != 0 {
        t.line("recorded on", &info.record_date);
    }
    if m & CMDLINE != 0 {
        t.line("cmdline", &info.cmdline);
    }
    if m & CPUINFO != 0 {
        t.line("cpu info", &info.cpu_desc);
        t.line(
            "number of cpus",
            &format!(
                "{} / {} (online / possible)",
                info.cpus_online, info.cpus_possible
            ),
        );
    }
    if m & MEMINFO != 0 {
        t.line("memory info", &info.meminfo_text());
    }
    if m & LOADINFO != 0 {
        let [a, b, c] = info.load_avg;
        t.line(
            "system load",
            &format!("{a:.2} / {b:.2} / {c:.2} (1 / 5 / 15 min)"),
        );
    }
    if m & OSINFO != 0 {
        t.line("kernel version", &info.os.kernel);
        t.line("hostname", &info.os.hostname);
        t.line("distro", &info.os.distro);
    }
    t.section("process information", true);
    if m & TASKINFO != 0 {
        t.line("number of tasks", &info.tids.len().to_string());
        let list: Vec<String> = info
            .tids
            .iter()
            .map(|&tid| format!("{tid}({})", task_name(&trace, tid)))
            .collect();
        t.line("task list", &list.join(", "));
    }
    if m & EXE_NAME != 0 {
        t.line("exe image", &info.exename);
    }
    if m & EXE_BUILD_ID != 0 {
        t.line("build id", &info.build_id);
    }
    if m & PATTERN_TYPE != 0 {
        t.line("pattern", &info.pattern_type);
    }
    if m & EXIT_STATUS != 0 {
        t.line("exit status", &exit_text(info.exit_status));
    }
    if m & RECORD_DATE != 0 {
        t.line("elapsed time", &info.elapsed_time);
    }
    if m & USAGEINFO != 0 {
        let u = &info.usage;
        t.line(
            "cpu time",
            &format!(
                "{:.3} / {:.3} sec (sys / user)",
                u.sys_time_us as f64 / 1e6,
                u.user_time_us as f64 / 1e6
            ),
        );
        t.line(
            "context switch",
            &format!(
                "{} / {} (voluntary / involuntary)",
                u.voluntary_ctxsw, u.involuntary_ctxsw
            ),
        );
        t.line("max rss", &format!("{} KB", u.max_rss_kb));
        t.line(
            "page fault",
            &format!("{} / {} (major / minor)", u.major_faults, u.minor_faults),
        );
        t.line(
            "disk iops",
            &format!("{} / {} (read / write)", u.read_blocks, u.write_blocks),
        );
    }

    t.section("trace data", true);
    let records: u64 = threads.iter().map(|d| d.records).sum();
    let calls: u64 = threads.iter().map(|d| d.calls).sum();
    let mut repairs = Repairs::default();
    for d in &threads {
        repairs.add(&d.repairs);
    }
    t.line(
        "records",
        &format!(
            "{records} ({:.1} MB) in {} thread(s), {calls} calls",
            records as f64 * 16.0 / 1e6,
            threads.len()
        ),
    );
    t.line(
        "lost records",
        &format!(
            "{} ({} LOST markers)",
            repairs.lost_records, repairs.lost_markers
        ),
    );
    let first = threads.iter().filter_map(|d| d.first_ns).min();
    let last = threads.iter().map(|d| d.last_ns).max();
    if let (Some(first), Some(last)) = (first, last) {
        t.line(
            "time span",
            &format!(
                "{} sec, from {} to {}",
                Timestamp(last - first),
                Timestamp(first),
                Timestamp(last)
            ),
        );
    }
    match &trace.clock {
        Some(c) => t.line(
            "clock",
            &format!(
                "{} TSC at {:.3} MHz, record times in ns (vftrace.clock)",
                c.source,
                c.tsc_hz / 1e6
            ),
        ),
        None => t.line("clock", "record times in ns (no vftrace.clock)"),
    }
    if repairs.unbalanced() {
        t.line(
            "repairs",
            &format!(
                "{} exits without entry, {} calls closed by a shallower record, {} never exited, {} times going backwards",
                repairs.unmatched_exits, repairs.closed_by_depth, repairs.closed_at_end, repairs.time_inversions
            ),
        );
    }
    for tid in &missing {
        t.line(
            "missing data",
            &format!("thread {tid} is listed but has no {tid}.dat"),
        );
    }
    t.0.push_str(&format!(
        "#\n# {:>6}  {:>10}  {:>10}  {:>6}  {:>20}  span\n",
        "TID", "records", "calls", "lost", "first record"
    ));
    for d in &threads {
        t.0.push_str(&format!(
            "# {:>6}  {:>10}  {:>10}  {:>6}  {:>20}  {} sec\n",
            d.tid,
            d.records,
            d.calls,
            d.repairs.lost_records,
            d.first_ns
                .map_or("-".to_string(), |f| Timestamp(f).to_string()),
            Timestamp(d.first_ns.map_or(0, |f| d.last_ns - f)),
        ));
    }
    t.0.push('\n');
    out.write_all(text.0.as_bytes())
        .map_err(|e| ViewError::output("the info", e))
}

/// The `# key                 : value` lines of uftrace's info.
struct Text(String);

impl Text {
    fn line(&mut self, key: &str, value: &str) {
        self.0.push_str(&format!("# {key:<20}: {value}\n"));
    }

    fn section(&mut self, title: &str, after_another: bool) {
        if after_another {
            self.0.push_str("#\n");
        }
        self.0
            .push_str(&format!("# {title}\n# {}\n", "=".repeat(title.len())));
    }
}
