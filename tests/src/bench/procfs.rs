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

/// One mapping of `/proc/<pid>/smaps` with the anonymous memory it holds resident.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Mapping {
    /// What the mapping is: its path or kernel name (`[heap]`, `[stack]`), or for a nameless
    /// anonymous mapping `anon <start address> <size>` (a thread's arena or stack: glibc maps
    /// arenas in 64 MiB reservations, tokio's stacks are 2 MiB).
    pub label: String,
    pub anon_kib: u64,
}

/// Parses `/proc/<pid>/smaps`: every mapping with its `Anonymous:` KiB. Header lines are
/// `start-end perms offset dev inode [name]`; the fields that follow are `Key: value kB`.
pub fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((start, end)) = first.split_once('-').filter(|(a, b)| {
            !a.is_empty() && a.chars().chain(b.chars()).all(|c| c.is_ascii_hexdigit())
        }) {
            let rest: Vec<&str> = words.collect();
            let name = rest.get(4..).map(|w| w.join(" ")).unwrap_or_default();
            let label = if name.is_empty() {
                let size = u64::from_str_radix(end, 16)
                    .unwrap_or(0)
                    .saturating_sub(u64::from_str_radix(start, 16).unwrap_or(0));
                format!("anon {start} {} KiB", size / 1024)
            } else {
                name
            };
            out.push(Mapping { label, anon_kib: 0 });
        } else if first == "Anonymous:" {
            if let (Some(m), Some(Ok(kib))) = (out.last_mut(), words.next().map(str::parse)) {
                m.anon_kib = kib;
            }
        }
    }
    out
}

/// Anonymous KiB resident per mapping of `pid`, mappings with none left out.
pub fn anon_by_mapping(pid: &str) -> Option<Vec<Mapping>> {
    let text = std::fs::read_to_string(Path::new("/proc").join(pid).join("smaps")).ok()?;
    Some(
        parse_smaps(&text)
            .into_iter()
            .filter(|m| m.anon_kib > 0)
            .collect(),
    )
}

/// How each mapping's anonymous memory changed from `before` to `after`, KiB, largest
/// change first (mappings with the same label summed; a mapping that came or went counts
/// from or to zero). Unchanged mappings are left out.
pub fn anon_changes(before: &[Mapping], after: &[Mapping]) -> Vec<(String, i64)> {
    let mut by: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for m in before {
        *by.entry(&m.label).or_default() -= m.anon_kib as i64;
    }
    for m in after {
        *by.entry(&m.label).or_default() += m.anon_kib as i64;
    }
    let mut out: Vec<(String, i64)> = by
        .into_iter()
        .filter(|(_, d)| *d != 0)
        .map(|(l, d)| (l.to_string(), d))
        .collect();
    out.sort_by(|a, b| b.1.abs().cmp(&a.1.abs()).then_with(|| a.0.cmp(&b.0)));
    out
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
    fn smaps_gives_anonymous_memory_per_mapping() {
        let text = "\
55d5c0a00000-55d5c0a21000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
Rss:                  12 kB
Anonymous:            12 kB
VmFlags: rd wr mr mw me ac
7f0000000000-7f0000200000 rw-p 00000000 00:00 0 
Size:               2048 kB
Anonymous:           100 kB
7f1000000000-7f1000001000 r-xp 00001000 fd:01 4242                       /usr/bin/duet relay
Size:                  4 kB
Anonymous:             0 kB
";
        let maps = parse_smaps(text);
        assert_eq!(
            maps,
            vec![
                Mapping {
                    label: "[heap]".into(),
                    anon_kib: 12
                },
                Mapping {
                    label: "anon 7f0000000000 2048 KiB".into(),
                    anon_kib: 100
                },
                Mapping {
                    label: "/usr/bin/duet relay".into(),
                    anon_kib: 0
                },
            ]
        );
        let later = vec![
            Mapping {
                label: "[heap]".into(),
                anon_kib: 40,
            },
            Mapping {
                label: "anon 7f2000000000 2048 KiB".into(),
                anon_kib: 8,
            },
        ];
        assert_eq!(
            anon_changes(&maps, &later),
            vec![
                ("anon 7f0000000000 2048 KiB".to_string(), -100),
                ("[heap]".to_string(), 28),
                ("anon 7f2000000000 2048 KiB".to_string(), 8),
            ]
        );
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
