//! `abuse`: the harness end to end against a Nexus child process (the `spike-nexus` binary
//! that `cargo test --workspace` builds next to this test's directory).
//!
//! This checks the harness, not Nexus: a short no-policy flood with a loose bound, which
//! today's Nexus survives. The real gate is `spike-bench abuse --smoke` (scripts/test.sh).

use std::time::Duration;

use spike_bench::abuse::{self, AbuseOptions, Attack, Profile};
use spike_bench::nexus_proc::NexusLaunch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_policy_flood_against_a_nexus_child() {
    let bin = abuse::default_nexus_bin().unwrap();
    if !bin.is_file() {
        // `cargo test -p spike-bench` alone does not build other packages' binaries.
        eprintln!(
            "skipped: {} is not built (cargo build -p spike-nexus, or cargo test --workspace)",
            bin.display()
        );
        return;
    }
    let launch = NexusLaunch {
        bin,
        unit_limits: true,
        overrides: Profile::Smoke.overrides(),
    };
    let options = AbuseOptions {
        attacks: vec![Attack::NoPolicyFlood],
        connections: Some(4),
        baseline: Duration::from_millis(500),
        duration: Duration::from_secs(1),
        ramp: Duration::from_millis(500),
        p99_bound: Duration::from_secs(10),
        progress: false,
        ..AbuseOptions::new(Profile::Smoke, launch)
    };
    let report = abuse::run(&options).await.unwrap();
    assert_eq!(report.scenarios.len(), 1);
    let s = &report.scenarios[0];
    assert!(s.passed(), "{}", s.human());
    assert!(
        s.baseline.requests > 0 && s.under_attack.requests > 0,
        "{s:?}"
    );
    assert!(s.attacker.denied > 0, "the attacker was not denied: {s:?}");
    assert_eq!(s.attacker.requests, s.attacker.denied, "{s:?}");
    assert!(s.nexus_exit.is_none() && s.recovered, "{s:?}");
    assert!(s.nexus_rss_before_kib.is_some_and(|k| k > 1024), "{s:?}");
    // The unit's limits reached the child: no CAP_IPC_LOCK, memlock as the unit sets it
    // (unlimited) or as far as this machine's hard limit allows.
    assert_eq!(s.nexus_limits.cap_ipc_lock, Some(false), "{s:?}");
    let (memlock_here, _) = spike_bench::nexus_proc::unit_limits_here().unwrap();
    if memlock_here != nix::libc::RLIM_INFINITY {
        assert_eq!(s.nexus_limits.memlock_bytes, Some(memlock_here), "{s:?}");
    }
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["scenarios"][0]["attack"], "no-policy-flood");
    assert!(json["scenarios"][0]["under_attack"]["latency"]["p99_us"].is_u64());
}
