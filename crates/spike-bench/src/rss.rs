//! Resident set size of a process, read from `/proc/<pid>/status` (Linux).

/// `VmRSS` of process `pid` in KiB; `None` when unavailable (no such process, not Linux).
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// `VmHWM` (peak RSS) of process `pid` in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmHWM:")
}

/// `VmRSS` of this process in KiB.
pub fn own_rss_kib() -> Option<u64> {
    rss_kib(std::process::id())
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_field(&text, field)
}

/// Extracts `field` (e.g. `VmRSS:`) in kB from the text of a `/proc/<pid>/status` file.
pub fn parse_field(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        let text = "Name:\tspike-nexus\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_field(text, "VmRSS:"), Some(10240));
        assert_eq!(parse_field(text, "VmHWM:"), Some(20480));
        assert_eq!(parse_field(text, "VmSwap:"), None);
    }

    #[test]
    fn own_rss_is_positive_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(own_rss_kib().is_some_and(|k| k > 0));
            assert_eq!(rss_kib(u32::MAX), None);
        }
    }
}
