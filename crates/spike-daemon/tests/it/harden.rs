//! Hardening changes the whole process (and `mlockall` would lock the test harness), so each
//! case runs in a child: this test binary re-executed with a filter for `child_probe`, which does
//! nothing unless `CHILD_ENV` is set.

use std::process::Command;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::stat::{Mode, umask};
use spike_daemon::harden::{HardenError, HardenPolicy, MlockOutcome, harden};

const CHILD_ENV: &str = "SPIKE_DAEMON_TEST_HARDEN_CHILD";
const LIMIT_ENV: &str = "SPIKE_DAEMON_TEST_MEMLOCK_LIMIT";
const REQUIRE_ENV: &str = "SPIKE_DAEMON_TEST_REQUIRE_MLOCK";

fn has_cap_ipc_lock() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    let bits = u64::from_str_radix(eff, 16).unwrap();
    bits & (1 << 14) != 0 // CAP_IPC_LOCK
}

#[test]
fn child_probe() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    if let Some(limit) = std::env::var_os(LIMIT_ENV) {
        let limit: u64 = limit.to_str().unwrap().parse().unwrap();
        setrlimit(Resource::RLIMIT_MEMLOCK, limit, limit).unwrap();
    }
    let require = std::env::var_os(REQUIRE_ENV).is_some();
    let policy = HardenPolicy {
        lock_memory: true,
        require_mlock: require,
    };
    let cap = has_cap_ipc_lock();
    match harden(policy) {
        Ok(report) => {
            assert!(!nix::sys::prctl::get_dumpable().unwrap(), "still dumpable");
            assert_eq!(getrlimit(Resource::RLIMIT_CORE).unwrap(), (0, 0));
            assert_eq!(umask(Mode::from_bits_truncate(0o077)).bits(), 0o077);
            match report.mlock {
                MlockOutcome::Locked => {
                    assert!(report.warnings.is_empty());
                    let status = std::fs::read_to_string("/proc/self/status").unwrap();
                    let locked = status.lines().find(|l| l.starts_with("VmLck:")).unwrap();
                    assert_ne!(locked.split_whitespace().nth(1), Some("0"), "{locked}");
                    println!("CHILD-RESULT locked cap={cap}");
                }
                MlockOutcome::Failed { .. } => {
                    assert_eq!(report.warnings.len(), 1);
                    println!("CHILD-RESULT warned cap={cap} {}", report.warnings[0]);
                }
                MlockOutcome::Declined { .. } => {
                    assert_eq!(report.warnings.len(), 1);
                    // Nothing was locked, so allocations past the cap still succeed.
                    let big = vec![1u8; 8 << 20];
                    assert_eq!(big.iter().map(|b| usize::from(*b)).sum::<usize>(), 8 << 20);
                    println!("CHILD-RESULT declined cap={cap} {}", report.warnings[0]);
                }
                MlockOutcome::Skipped => panic!("mlock was requested"),
            }
        }
        Err(HardenError::Mlock(msg)) => println!("CHILD-RESULT refused cap={cap} {msg}"),
        Err(e) => panic!("hardening failed: {e}"),
    }
}

/// Runs `child_probe` in a fresh process; `drop_ipc_lock` removes CAP_IPC_LOCK with `setpriv`
/// when that tool exists (as root, mlockall otherwise ignores RLIMIT_MEMLOCK).
fn run_child(envs: &[(&str, &str)], drop_ipc_lock: bool) -> String {
    let exe = std::env::current_exe().unwrap();
    let args = [
        "--exact",
        "harden::child_probe",
        "--nocapture",
        "--test-threads=1",
    ];
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let mut cmd = match (drop_ipc_lock, setpriv) {
        (true, Some(setpriv)) => {
            let mut c = Command::new(setpriv);
            c.arg("--bounding-set=-ipc_lock").arg(&exe);
            c
        }
        _ => Command::new(&exe),
    };
    cmd.args(args).env(CHILD_ENV, "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.find("CHILD-RESULT").map(|i| l[i..].to_owned()))
        .unwrap_or_else(|| panic!("child did not report:\n{stdout}"))
}

#[test]
fn hardening_applies_every_protection() {
    let line = run_child(&[], false);
    // With an unlimited or large enough memlock budget, or CAP_IPC_LOCK, memory is locked;
    // otherwise the report carries a warning. Both are valid; the child checked the rest.
    assert!(
        line.starts_with("CHILD-RESULT locked")
            || line.starts_with("CHILD-RESULT warned")
            || line.starts_with("CHILD-RESULT declined"),
        "{line}"
    );
}

#[test]
fn a_capped_memlock_limit_is_declined_with_a_clear_warning_or_error() {
    let line = run_child(&[(LIMIT_ENV, "65536")], true);
    if line.contains("cap=true") {
        // Still privileged (no setpriv): mlockall ignores the limit; nothing more to check.
        assert!(line.starts_with("CHILD-RESULT locked"), "{line}");
        return;
    }
    // Under a cap, locking is declined (never attempted), so load cannot turn into
    // allocation failures; the warning names the fix.
    assert!(line.starts_with("CHILD-RESULT declined"), "{line}");
    assert!(line.contains("RLIMIT_MEMLOCK is 64 KiB"), "{line}");
    assert!(line.contains("LimitMEMLOCK=infinity"), "{line}");
    // A cap larger than the process needs today is declined too: it grows under load.
    let line = run_child(&[(LIMIT_ENV, "4194304")], true);
    assert!(line.starts_with("CHILD-RESULT declined"), "{line}");

    let line = run_child(&[(LIMIT_ENV, "65536"), (REQUIRE_ENV, "1")], true);
    assert!(line.starts_with("CHILD-RESULT refused"), "{line}");
    assert!(line.contains("RLIMIT_MEMLOCK is 64 KiB"), "{line}");
}
