//! What the rows read of the processes in a route, from Linux `/proc`:
//! CPU time, peak resident memory, worker processes.

/// User + system CPU seconds of `pids` together (`/proc/PID/stat`).
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter().map(|&p| cpu_seconds_of(p)).sum()
}

fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name start with the state;
    // utime and stime are the 12th and 13th of them, in clock ticks (100
    // per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    (tick(11) + tick(12)) as f64 / 100.0
}

/// Peak resident set (VmHWM) of `pids` added up, in MB: for nginx the
/// master and every worker, an upper bound of what they held at once.
pub fn peak_rss_mb(pids: &[u32]) -> f64 {
    pids.iter().map(|&p| vm_hwm_kb(p)).sum::<u64>() as f64 / 1024.0
}

fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resets the peak-RSS mark of `pids` (`clear_refs` 5), so the next
/// reading reports only what came after.
pub fn reset_peak_rss(pids: &[u32]) {
    for p in pids {
        let _ = std::fs::write(format!("/proc/{p}/clear_refs"), "5");
    }
}

/// The child processes of `pid` (all its threads' children).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    out
}
