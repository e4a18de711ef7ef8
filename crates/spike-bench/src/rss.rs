//! Resident set size of a process, read from `/proc/<pid>/status` (Linux), and where it goes,
//! from `/proc/<pid>/smaps` ([`breakdown`]).

use serde::Serialize;

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

/// Where the resident memory of a process goes, in KiB: `VmRSS` split as the kernel counts
/// it (`RssAnon`, `RssFile`, `RssShmem`) and by mapping, from `/proc/<pid>/smaps`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Breakdown {
    /// `VmRSS`.
    pub rss_kib: u64,
    /// `RssAnon`: private anonymous memory (heap, malloc arenas, thread stacks, and pages of
    /// file mappings written by the process, such as relocated data).
    pub rss_anon_kib: u64,
    /// `RssFile`: pages of mapped files (the executable, shared libraries); shared with the
    /// kernel's page cache and reclaimable.
    pub rss_file_kib: u64,
    /// `RssShmem`.
    pub rss_shmem_kib: u64,
    /// The executable's file pages (code, read-only data).
    pub exe_file_kib: u64,
    /// Private pages of the executable's mappings (relocated data, `.data`, `.bss`).
    pub exe_private_kib: u64,
    /// Other mapped files (shared libraries), resident.
    pub libs_kib: u64,
    /// `[heap]` (the `brk` heap of the main malloc arena).
    pub heap_kib: u64,
    /// Anonymous mappings other than `[heap]` and `[stack]`: the other malloc arenas, thread
    /// stacks, large allocations.
    pub anon_mappings_kib: u64,
    /// `[stack]` of the main thread.
    pub main_stack_kib: u64,
    /// Threads of the process.
    pub threads: u64,
}

/// Reads [`Breakdown`] for process `pid`; `None` when `/proc/<pid>` cannot be read.
pub fn breakdown(pid: u32) -> Option<Breakdown> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let mut b = parse_smaps(&smaps, exe.as_deref());
    b.rss_kib = parse_field(&status, "VmRSS:").unwrap_or(0);
    b.rss_anon_kib = parse_field(&status, "RssAnon:").unwrap_or(0);
    b.rss_file_kib = parse_field(&status, "RssFile:").unwrap_or(0);
    b.rss_shmem_kib = parse_field(&status, "RssShmem:").unwrap_or(0);
    b.threads = parse_field(&status, "Threads:").unwrap_or(0);
    Some(b)
}

/// Groups the mappings of an smaps text (see [`Breakdown`]); `exe` is the executable's path.
pub fn parse_smaps(smaps: &str, exe: Option<&str>) -> Breakdown {
    let mut b = Breakdown::default();
    let mut current: Option<String> = None;
    let mut rss = 0;
    let mut anonymous = 0;
    let flush = |b: &mut Breakdown, map: &Option<String>, rss: u64, anonymous: u64| {
        let Some(name) = map else { return };
        match name.as_str() {
            "[heap]" => b.heap_kib += rss,
            "[stack]" => b.main_stack_kib += rss,
            n if exe == Some(n) => {
                b.exe_private_kib += anonymous;
                b.exe_file_kib += rss - anonymous.min(rss);
            }
            n if n.starts_with('/') => b.libs_kib += rss,
            "" => b.anon_mappings_kib += rss,
            // [vdso], [vvar] and the like.
            _ => {}
        }
    };
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((start, end)) = first.split_once('-')
            && u64::from_str_radix(start, 16).is_ok()
            && u64::from_str_radix(end, 16).is_ok()
        {
            flush(&mut b, &current, rss, anonymous);
            // address perms offset dev inode [pathname]
            current = Some(words.nth(4).unwrap_or("").to_owned());
            (rss, anonymous) = (0, 0);
            continue;
        }
        let value = || words.clone().next().and_then(|v| v.parse::<u64>().ok());
        match first {
            "Rss:" => rss = value().unwrap_or(0),
            "Anonymous:" => anonymous = value().unwrap_or(0),
            _ => {}
        }
    }
    flush(&mut b, &current, rss, anonymous);
    b
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
    fn smaps_are_grouped_by_mapping() {
        let smaps = "\
55d0-55e0 r-xp 00000000 08:01 42   /usr/bin/spike-nexus
Rss:                  40 kB
Anonymous:             0 kB
55e0-55f0 rw-p 00010000 08:01 42   /usr/bin/spike-nexus
Rss:                   8 kB
Anonymous:             8 kB
5600-5700 rw-p 00000000 00:00 0    [heap]
Rss:                 100 kB
Anonymous:           100 kB
7f0000000000-7f0004000000 rw-p 00000000 00:00 0
Rss:                 300 kB
Anonymous:           300 kB
7f1000000000-7f1000100000 rw-p 00000000 00:00 0
Rss:                  12 kB
Anonymous:            12 kB
7f2000000000-7f2000100000 r-xp 00000000 08:01 7    /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 900 kB
Anonymous:             0 kB
7ffc000-7ffd000 rw-p 00000000 00:00 0    [stack]
Rss:                  20 kB
Anonymous:            20 kB
ffff-10000 r-xp 00000000 00:00 0    [vdso]
Rss:                   4 kB
";
        let b = parse_smaps(smaps, Some("/usr/bin/spike-nexus"));
        assert_eq!(b.exe_file_kib, 40);
        assert_eq!(b.exe_private_kib, 8);
        assert_eq!(b.heap_kib, 100);
        assert_eq!(b.anon_mappings_kib, 312);
        assert_eq!(b.libs_kib, 900);
        assert_eq!(b.main_stack_kib, 20);
    }

    #[test]
    fn own_breakdown_adds_up_on_linux() {
        if cfg!(target_os = "linux") {
            let b = breakdown(std::process::id()).unwrap();
            assert!(b.rss_kib > 0 && b.exe_file_kib > 0 && b.threads >= 1);
            assert!(b.rss_anon_kib + b.rss_file_kib + b.rss_shmem_kib >= b.rss_kib / 2);
        }
    }

    #[test]
    fn own_rss_is_positive_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(own_rss_kib().is_some_and(|k| k > 0));
            assert_eq!(rss_kib(u32::MAX), None);
        }
    }
}
