//! The process metrics operators expect next to the node's own (Prometheus'
//! conventional names): resident memory, CPU seconds, open and allowed file
//! descriptors, start time. Read from `/proc` when `/metrics` is scraped; a figure that
//! cannot be read is left out, never made up.

/// Clock ticks per second and the page size, from the C library.
fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads the configuration value named.
    let v = unsafe { libc::sysconf(name) };
    (v > 0).then_some(v as u64)
}

/// `(utime + stime, starttime)` in clock ticks, from `/proc/self/stat`.
fn stat_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name is in parentheses and may hold spaces: fields start after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14, 15 and 22 of proc(5), counted from the state (field 3) at index 0.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let start: u64 = f.get(19)?.parse().ok()?;
    Some((utime + stime, start))
}

/// Boot time (Unix seconds), from `/proc/stat`.
fn boot_time() -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// `(name, help, kind, value)` of every process figure that could be read.
pub fn figures() -> Vec<(&'static str, &'static str, &'static str, f64)> {
    let mut out = Vec::new();
    if let (Some(pages), Some(page)) = (
        std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok()),
        sysconf(libc::_SC_PAGESIZE),
    ) {
        out.push((
            "process_resident_memory_bytes",
            "Resident memory of the process.",
            "gauge",
            (pages * page) as f64,
        ));
    }
    let ticks = sysconf(libc::_SC_CLK_TCK);
    if let (Some((cpu, start)), Some(hz)) = (stat_ticks(), ticks) {
        out.push((
            "process_cpu_seconds_total",
            "CPU time of the process, user and system.",
            "counter",
            cpu as f64 / hz as f64,
        ));
        if let Some(boot) = boot_time() {
            out.push((
                "process_start_time_seconds",
                "When the process started (Unix seconds).",
                "gauge",
                boot as f64 + start as f64 / hz as f64,
            ));
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        out.push((
            "process_open_fds",
            "Open file descriptors.",
            "gauge",
            dir.count() as f64,
        ));
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid rlimit for getrlimit to write.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        out.push((
            "process_max_fds",
            "The soft limit on open file descriptors.",
            "gauge",
            lim.rlim_cur as f64,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_figures_are_read() {
        let f = figures();
        let get = |n: &str| {
            f.iter()
                .find(|(name, ..)| *name == n)
                .map(|(.., v)| *v)
                .unwrap_or_else(|| panic!("{n} missing from {f:?}"))
        };
        assert!(get("process_resident_memory_bytes") > 1_000_000.0);
        assert!(get("process_open_fds") >= 3.0);
        assert!(get("process_max_fds") >= get("process_open_fds"));
        assert!(get("process_cpu_seconds_total") >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = get("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
    }
}
