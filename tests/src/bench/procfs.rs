//! What the operating system says a process cost: CPU time and resident memory read from
//! `/proc`, plus a description of the machine for the report.
//!
//! CPU comes from two places. `/proc/<pid>/stat` has user and system time for the whole
//! process in clock ticks (usually 10 ms: coarse, but it splits user from kernel time);
//! `/proc/<pid>/task/*/schedstat` has each thread's time on a CPU in nanoseconds. The
//! benchmark reports the nanosecond sum and uses the ticks for the user/system split.
//! The parsers take the file's text, so they are tested without a process.

use std::path::Path;

/// CPU time of one process at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuSample {
    /// User time, seconds (from clock ticks).
    pub user_s: f64,
    /// System (kernel) time, seconds (from clock ticks).
    pub system_s: f64,
    /// Time on a CPU summed over the live threads, seconds (from nanoseconds); falls back
    /// to user + system when schedstat is not available.
    pub total_s: f64,
}

impl CpuSample {
    /// CPU used between `self` (earlier) and `later`. Each part is clamped at zero: a
    /// thread that exited in between takes its schedstat time with it.
    pub fn until(&self, later: &CpuSample) -> CpuSample {
        CpuSample {
            user_s: (later.user_s - self.user_s).max(0.0),
            system_s: (later.system_s - self.system_s).max(0.0),
            total_s: (later.total_s - self.total_s).max(0.0),
        }
    }
}

/// Clock ticks per second for `/proc/<pid>/stat`. Linux has reported `USER_HZ = 100` to
/// user space on every architecture for decades, whatever the kernel's internal HZ.
pub const CLOCK_TICKS_PER_S: f64 = 100.0;

/// Parses `utime` and `stime` (fields 14 and 15) of `/proc/<pid>/stat`, in ticks. The
/// command name (field 2) may hold spaces and parentheses, so fields are counted after the
/// last `)`.
pub fn parse_stat_times(text: &str) -> Option<(u64, u64)> {
    let after = &text[text.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // After the name: state is field 3, so utime (14) is the 12th field here.
    let utime = fields.nth(11)?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// Parses the first field of a `schedstat` file: nanoseconds spent on a CPU.
pub fn parse_schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Parses a `kB` line such as `VmRSS:    12345 kB` from `/proc/<pid>/status`, in KiB.
pub fn parse_status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// CPU time of process `pid` now (`pid` may be `"self"`).
pub fn cpu(pid: &str) -> Option<CpuSample> {
    let base = Path::new("/proc").join(pid);
    let (utime, stime) = parse_stat_times(&std::fs::read_to_string(base.join("stat")).ok()?)?;
    let user_s = utime as f64 / CLOCK_TICKS_PER_S;
    let system_s = stime as f64 / CLOCK_TICKS_PER_S;
    let mut ns: Option<u64> = None;
    if let Ok(tasks) = std::fs::read_dir(base.join("task")) {
        for task in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            if let Some(v) = parse_schedstat_ns(&text) {
                ns = Some(ns.unwrap_or(0) + v);
            }
        }
    }
    Some(CpuSample {
        user_s,
        system_s,
        total_s: ns.map_or(user_s + system_s, |n| n as f64 / 1e9),
    })
}

/// Busy CPU time of the whole machine (every core: all but idle and iowait), seconds,
/// from the first line of `/proc/stat`. Over a window, minus the relay and the generator,
/// it shows what other work on the machine took.
pub fn machine_busy_s() -> Option<f64> {
    parse_machine_busy_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
        .map(|t| t as f64 / CLOCK_TICKS_PER_S)
}

/// Parses the `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq steal…
pub fn parse_machine_busy_ticks(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    Some(total.saturating_sub(v.get(3)? + v.get(4).copied().unwrap_or(0)))
}

/// Resident memory of `pid` in MiB (`VmRSS`), and its peak (`VmHWM`).
pub fn rss_mib(pid: &str) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(Path::new("/proc").join(pid).join("status")).ok()?;
    let rss = parse_status_kib(&text, "VmRSS")? as f64 / 1024.0;
    let hwm = parse_status_kib(&text, "VmHWM").map_or(rss, |k| k as f64 / 1024.0);
    Some((rss, hwm))
}

/// `VmRSS` split in MiB: anonymous memory (the heap, stacks: what the process allocated)
/// and file-backed pages (its own binary's code and data, paged in the first time each
/// part runs; shared, and the kernel may drop them at any time).
pub fn rss_split_mib(pid: &str) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(Path::new("/proc").join(pid).join("status")).ok()?;
    let mib = |key| parse_status_kib(&text, key).map(|k| k as f64 / 1024.0);
    Some((mib("RssAnon")?, mib("RssFile")?))
}

/// The machine a figure was measured on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub kernel: String,
    /// `net.core.rmem_max`: the most a socket buffer can be sized to without privileges.
    pub rmem_max_bytes: Option<u64>,
    /// Load average over the last minute when the run started (other work on the machine).
    pub load_average_1m: Option<f64>,
}

impl Machine {
    pub fn describe() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|x| x.1.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let memory_gib = parse_status_kib(&read("/proc/meminfo"), "MemTotal")
            .map_or(0.0, |k| super::stats::round3(k as f64 / 1024.0 / 1024.0));
        Machine {
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            rmem_max_bytes: read("/proc/sys/net/core/rmem_max").trim().parse().ok(),
            load_average_1m: read("/proc/loadavg")
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_survive_odd_command_names() {
        let text = "4242 (duet relay) (x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 \
                    350 120 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(parse_stat_times(text), Some((350, 120)));
        assert_eq!(parse_stat_times("garbage"), None);
        assert_eq!(parse_stat_times("1 (x) S 1 2"), None);
    }

    #[test]
    fn schedstat_and_status_parse() {
        assert_eq!(parse_schedstat_ns("123456789 2000 31\n"), Some(123_456_789));
        assert_eq!(parse_schedstat_ns(""), None);
        let status = "Name:\tduet-relay\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(10240));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn machine_busy_excludes_idle_and_iowait() {
        let text = "cpu  100 5 50 1000 20 3 2 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        assert_eq!(parse_machine_busy_ticks(text), Some(160));
        assert_eq!(parse_machine_busy_ticks("intr 1"), None);
    }

    #[test]
    fn cpu_deltas_never_go_negative() {
        let a = CpuSample {
            user_s: 1.0,
            system_s: 2.0,
            total_s: 3.0,
        };
        let b = CpuSample {
            user_s: 1.5,
            system_s: 2.5,
            total_s: 2.5,
        };
        let d = a.until(&b);
        assert_eq!(d.user_s, 0.5);
        assert_eq!(d.total_s, 0.0);
    }

    #[test]
    fn this_process_can_be_measured() {
        let c = cpu("self").expect("/proc/self/stat");
        assert!(c.total_s >= 0.0);
        assert!(rss_mib("self").expect("VmRSS").0 > 0.0);
        let (anon, file) = rss_split_mib("self").expect("RssAnon and RssFile");
        assert!(anon > 0.0 && file > 0.0);
    }
}
