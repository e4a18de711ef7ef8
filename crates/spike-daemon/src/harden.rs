//! Process hardening at startup, before any secret is in memory: not dumpable, no core files,
//! umask 077, and (by policy) all memory locked against swapping.
//!
//! Everything goes through `nix`; there is no `unsafe` here. The unit adds `LimitCORE=0`,
//! `MemorySwapMax=0` and `UMask=0077` on top (design docs/protocol.md#root-key-shards-and-recovery-files); this is the belt to those braces, and
//! the only protection when the daemon is started by hand.
//!
//! `mlockall(MCL_CURRENT | MCL_FUTURE)` is attempted only when locked memory is **unbounded**:
//! `RLIMIT_MEMLOCK` is infinite, or the process has `CAP_IPC_LOCK`. Under a finite cap, every
//! later allocation (heap, thread stacks, TLS buffers) would count against it, and once load
//! reaches the cap the kernel refuses new mappings and Rust aborts on allocation failure: a
//! client could turn load into a crash. So memory is bounded by the cgroup instead (the units
//! set `LimitMEMLOCK=infinity` with `MemoryMax=`, `MemorySwapMax=0`), and the daemons' own
//! limits ([`crate::limits`]) keep their memory well below it. When locking is declined or
//! refused, [`harden`] returns a report with a warning for the binary to log, or an error when
//! [`HardenPolicy::require_mlock`] is set.

use std::fmt;

use nix::errno::Errno;
use nix::sys::mman::{MlockAllFlags, mlockall};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::stat::{Mode, umask};

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HardenPolicy {
    /// Attempt `mlockall(MCL_CURRENT | MCL_FUTURE)`.
    pub lock_memory: bool,
    /// Treat a refused `mlockall` as an error instead of a warning.
    pub require_mlock: bool,
}

impl Default for HardenPolicy {
    /// Lock memory, warn when that is refused.
    fn default() -> Self {
        Self {
            lock_memory: true,
            require_mlock: false,
        }
    }
}

/// The outcome of the memory-locking step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlockOutcome {
    /// All current and future pages are locked.
    Locked,
    /// Not attempted ([`HardenPolicy::lock_memory`] was false).
    Skipped,
    /// Not attempted: locked memory is capped (`RLIMIT_MEMLOCK` finite, no `CAP_IPC_LOCK`), and
    /// locking every future page under a cap turns load into allocation failures.
    Declined {
        /// The soft `RLIMIT_MEMLOCK` in bytes.
        memlock_limit: u64,
    },
    /// Refused by the kernel.
    Failed {
        /// The errno (`ENOMEM` when `RLIMIT_MEMLOCK` is too small, `EPERM` without privilege).
        errno: Errno,
        /// The soft `RLIMIT_MEMLOCK` in bytes, `None` for unlimited or unknown.
        memlock_limit: Option<u64>,
    },
}

/// What [`harden`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardenReport {
    /// The umask that was in force before (now 077).
    pub previous_umask: u32,
    /// The memory-locking outcome.
    pub mlock: MlockOutcome,
    /// Messages for the daemon to log at `WARN` (one per degraded protection).
    pub warnings: Vec<String>,
}

/// A protection that could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HardenError {
    /// `prctl(PR_SET_DUMPABLE, 0)` failed.
    #[error("prctl(PR_SET_DUMPABLE, 0) failed: {0}")]
    Dumpable(Errno),
    /// `setrlimit(RLIMIT_CORE, 0)` failed.
    #[error("setrlimit(RLIMIT_CORE, 0) failed: {0}")]
    CoreLimit(Errno),
    /// `mlockall` was refused and the policy requires it.
    #[error("{0}")]
    Mlock(String),
}

/// Applies the protections in order: not dumpable, `RLIMIT_CORE` 0, umask 077, then memory
/// locking as `policy` says. Call it early in `main`, before the runtime starts and before
/// secrets exist.
///
/// # Errors
///
/// [`HardenError`] when a protection that cannot fail in a sane environment fails, or when
/// `mlockall` is refused and `policy.require_mlock` is set.
pub fn harden(policy: HardenPolicy) -> Result<HardenReport, HardenError> {
    nix::sys::prctl::set_dumpable(false).map_err(HardenError::Dumpable)?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(HardenError::CoreLimit)?;
    let previous_umask = umask(Mode::from_bits_truncate(0o077)).bits();

    let mlock = if !policy.lock_memory {
        MlockOutcome::Skipped
    } else if let (Some(limit), false) = (memlock_limit(), has_cap_ipc_lock()) {
        MlockOutcome::Declined {
            memlock_limit: limit,
        }
    } else {
        match mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE) {
            Ok(()) => MlockOutcome::Locked,
            Err(errno) => MlockOutcome::Failed {
                errno,
                memlock_limit: memlock_limit(),
            },
        }
    };
    evaluate(policy, previous_umask, mlock)
}

/// Turns an mlock outcome into a report or, when required, an error.
fn evaluate(
    policy: HardenPolicy,
    previous_umask: u32,
    mlock: MlockOutcome,
) -> Result<HardenReport, HardenError> {
    let mut warnings = Vec::new();
    let message = match mlock {
        MlockOutcome::Failed {
            errno,
            memlock_limit,
        } => Some(mlock_failure_message(errno, memlock_limit)),
        MlockOutcome::Declined { memlock_limit } => Some(mlock_declined_message(memlock_limit)),
        MlockOutcome::Locked | MlockOutcome::Skipped => None,
    };
    if let Some(message) = message {
        if policy.require_mlock {
            return Err(HardenError::Mlock(message));
        }
        warnings.push(message);
    }
    Ok(HardenReport {
        previous_umask,
        mlock,
        warnings,
    })
}

fn memlock_limit() -> Option<u64> {
    let (soft, _hard) = getrlimit(Resource::RLIMIT_MEMLOCK).ok()?;
    (soft != nix::libc::RLIM_INFINITY).then_some(soft)
}

/// Whether `CAP_IPC_LOCK` (capability 14) is in the effective set (`CapEff` in
/// `/proc/self/status`); with it, `RLIMIT_MEMLOCK` does not apply.
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        if self.0 >= MIB && self.0.is_multiple_of(MIB) {
            write!(f, "{} MiB", self.0 / MIB)
        } else if self.0 >= KIB && self.0.is_multiple_of(KIB) {
            write!(f, "{} KiB", self.0 / KIB)
        } else {
            write!(f, "{} bytes", self.0)
        }
    }
}

fn mlock_failure_message(errno: Errno, limit: Option<u64>) -> String {
    let limit = match limit {
        Some(bytes) => format!("RLIMIT_MEMLOCK is {}", Bytes(bytes)),
        None => "RLIMIT_MEMLOCK is unlimited".to_owned(),
    };
    format!(
        "mlockall(MCL_CURRENT|MCL_FUTURE) failed ({errno}; {limit}): secrets in this process \
         may be swapped to disk. Raise LimitMEMLOCK= in the unit (or grant CAP_IPC_LOCK), and \
         keep MemorySwapMax=0"
    )
}

fn mlock_declined_message(limit: u64) -> String {
    format!(
        "memory not locked: RLIMIT_MEMLOCK is {} and CAP_IPC_LOCK is absent, and locking every \
         future page under a cap would make allocations fail (an abort) once load reaches it; \
         secrets in this process may be swapped to disk. Set LimitMEMLOCK=infinity with a \
         MemoryMax= in the unit (the shipped units do), and keep MemorySwapMax=0",
        Bytes(limit)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capped_lock_is_declined_with_the_fix() {
        let declined = MlockOutcome::Declined {
            memlock_limit: 256 << 20,
        };
        let report = evaluate(HardenPolicy::default(), 0o022, declined).unwrap();
        let w = &report.warnings[0];
        assert!(w.contains("RLIMIT_MEMLOCK is 256 MiB"), "{w}");
        assert!(w.contains("LimitMEMLOCK=infinity"), "{w}");
        let required = HardenPolicy {
            lock_memory: true,
            require_mlock: true,
        };
        assert!(matches!(
            evaluate(required, 0o022, declined),
            Err(HardenError::Mlock(_))
        ));
    }

    #[test]
    fn refused_mlock_is_a_warning_by_default() {
        let failed = MlockOutcome::Failed {
            errno: Errno::ENOMEM,
            memlock_limit: Some(8 * 1024 * 1024),
        };
        let report = evaluate(HardenPolicy::default(), 0o022, failed).unwrap();
        assert_eq!(report.mlock, failed);
        assert_eq!(report.warnings.len(), 1);
        let w = &report.warnings[0];
        assert!(w.contains("RLIMIT_MEMLOCK is 8 MiB"), "{w}");
        assert!(w.contains("ENOMEM"), "{w}");
        assert!(w.contains("LimitMEMLOCK="), "{w}");
    }

    #[test]
    fn refused_mlock_is_an_error_when_required() {
        let failed = MlockOutcome::Failed {
            errno: Errno::EPERM,
            memlock_limit: None,
        };
        let policy = HardenPolicy {
            lock_memory: true,
            require_mlock: true,
        };
        let err = evaluate(policy, 0o022, failed).unwrap_err();
        assert!(
            matches!(&err, HardenError::Mlock(m) if m.contains("unlimited")),
            "{err}"
        );
    }

    #[test]
    fn success_and_skip_carry_no_warning() {
        for outcome in [MlockOutcome::Locked, MlockOutcome::Skipped] {
            let report = evaluate(HardenPolicy::default(), 0o022, outcome).unwrap();
            assert!(report.warnings.is_empty());
        }
    }

    #[test]
    fn byte_sizes_read_well() {
        assert_eq!(Bytes(65536).to_string(), "64 KiB");
        assert_eq!(Bytes(8 << 20).to_string(), "8 MiB");
        assert_eq!(Bytes(1000).to_string(), "1000 bytes");
    }
}
