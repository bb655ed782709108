//! Facts about the `lb` process for the standard `process_*` metrics, read from `/proc/self`
//! (Linux), as Prometheus' own client libraries read them.

use std::path::Path;

/// Clock ticks per second of the times in `/proc/*/stat` (`USER_HZ`, which Linux fixes at 100
/// for user space on every architecture `lb` builds for).
const USER_HZ: f64 = 100.0;

/// The process facts one scrape reads; `None` where `/proc` could not tell.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ProcessFacts {
    /// Resident memory (`VmRSS`), bytes.
    pub resident_memory_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// User and system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// When the process started, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

/// Read the facts of this process.
pub(crate) fn read() -> ProcessFacts {
    let root = Path::new("/proc");
    let stat = std::fs::read_to_string(root.join("self/stat")).ok();
    let stat = stat.as_deref().and_then(parse_stat);
    let boot_time = std::fs::read_to_string(root.join("stat"))
        .ok()
        .and_then(|text| parse_boot_time(&text));
    ProcessFacts {
        resident_memory_bytes: std::fs::read_to_string(root.join("self/status"))
            .ok()
            .and_then(|text| parse_rss(&text)),
        open_fds: std::fs::read_dir(root.join("self/fd"))
            .ok()
            .map(|dir| dir.count() as u64),
        max_fds: std::fs::read_to_string(root.join("self/limits"))
            .ok()
            .and_then(|text| parse_max_fds(&text)),
        cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / USER_HZ),
        start_time_seconds: stat
            .zip(boot_time)
            .map(|(s, boot)| boot as f64 + s.start_ticks as f64 / USER_HZ),
    }
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

/// `utime` (field 14), `stime` (15) and `starttime` (22) of a `stat` line. The command name
/// (field 2) is in parentheses and may hold spaces and parentheses: fields are counted after
/// the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // `rest` starts with field 3 (the state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn parse_rss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The soft limit of `Max open files` in `/proc/self/limits` (`unlimited`: `u64::MAX`).
fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// `btime` of `/proc/stat`: when the machine booted, seconds since the Unix epoch.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|t| t.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (lb (a) b) S 1 2 3 0 -1 4194304 99 0 0 0 250 50 0 0 20 0 3 0 12345 \
                    3133440 414 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime: 250,
                stime: 50,
                start_ticks: 12345
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn status_limits_and_boot_time() {
        assert_eq!(
            parse_rss("Name:\tlb\nVmRSS:\t    1948 kB\nVmSwap:\t0 kB\n"),
            Some(1948 * 1024)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            20000                40000                files\n";
        assert_eq!(parse_max_fds(limits), Some(20000));
        assert_eq!(
            parse_max_fds(
                "Max open files            unlimited            unlimited            files\n"
            ),
            Some(u64::MAX)
        );
        assert_eq!(
            parse_boot_time("cpu 1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn this_process_has_facts() {
        let facts = read();
        assert!(facts.resident_memory_bytes.unwrap() > 0);
        assert!(facts.open_fds.unwrap() > 0);
        assert!(facts.max_fds.unwrap() > 0);
        assert!(facts.cpu_seconds.unwrap() >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = facts.start_time_seconds.unwrap();
        assert!(
            started <= now + 1.0 && started > now - 86_400.0 * 365.0,
            "{started}"
        );
    }
}
