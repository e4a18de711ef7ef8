//! Best-effort process hardening for the CLI: no core dumps or ptrace-by-dumpability,
//! private file creation mask, and memory locking like SPIKE's Pilot (docs/compatibility.md#pilot-spike startup).

use std::io::Write as _;

/// `SPIKE_PILOT_SHOW_MEMORY_WARNING`: print a warning when memory cannot be locked.
pub const ENV_SHOW_MEMORY_WARNING: &str = "SPIKE_PILOT_SHOW_MEMORY_WARNING";

/// Hardens the current process. Never fails; the memory warning goes to standard error only
/// when `SPIKE_PILOT_SHOW_MEMORY_WARNING=true`.
///
/// `mlockall(MCL_CURRENT | MCL_FUTURE)` is only attempted when locked memory is unlimited
/// (e.g. root): with a finite `RLIMIT_MEMLOCK`, locking future mappings could make later
/// allocations fail.
pub fn harden_process() {
    let _ = nix::sys::prctl::set_dumpable(false);
    let _ = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    if !lock_memory() && show_warning() {
        let _ = writeln!(
            std::io::stderr(),
            "Memory locking is not available. Consider disabling swap to enhance security."
        );
    }
}

fn lock_memory() -> bool {
    use nix::sys::mman::{MlockAllFlags, mlockall};
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    let unlimited =
        matches!(getrlimit(Resource::RLIMIT_MEMLOCK), Ok((soft, _)) if soft == RLIM_INFINITY);
    if !(unlimited || nix::unistd::geteuid().is_root()) {
        return false;
    }
    mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE).is_ok()
}

fn show_warning() -> bool {
    std::env::var(ENV_SHOW_MEMORY_WARNING)
        .map(|v| v.trim().eq_ignore_ascii_case("true"))
        .unwrap_or(false)
}
