//! `init` installs a process-global subscriber, so it runs in a child process (this binary
//! re-executed with a filter for `child_logs`), and the parent reads the child's stderr.

use std::process::Command;

use spike_daemon::MapEnv;
use spike_daemon::logging::{AUDIT_TARGET, LogOptions, LogSink, LogTarget, init, log_keys};

const CHILD_ENV: &str = "SPIKE_DAEMON_TEST_LOGGING_CHILD";

#[test]
fn child_logs() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // JOURNAL_STREAM does not match stderr (a pipe), so Auto must pick stderr.
    let env = MapEnv::from([
        ("SPIKE_SYSTEM_LOG_LEVEL", "warn"),
        ("JOURNAL_STREAM", "1:1"),
    ]);
    let sink = init(&LogOptions::default(), &env).unwrap();
    assert_eq!(sink, LogSink::Stderr);
    tracing::info!("info-is-filtered");
    tracing::warn!(peer_spiffe_id = "spiffe://spike.ist/pilot", "warn-is-shown");
    tracing::info!(target: AUDIT_TARGET, action = "read", path = "a/b", status = 200u16, "audit-is-shown");
    assert_eq!(log_keys::PEER_SPIFFE_ID, "peer_spiffe_id");
    // A second init must fail cleanly, not panic.
    assert!(init(&LogOptions::default(), &MapEnv::new()).is_err());
    let forced = LogOptions {
        target: LogTarget::Stderr,
        ..LogOptions::default()
    };
    assert!(init(&forced, &MapEnv::new()).is_err());
}

#[test]
fn stderr_logging_filters_by_level_but_keeps_audit() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "logging::child_logs",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stderr}");
    assert!(!stderr.contains("info-is-filtered"), "{stderr}");
    assert!(stderr.contains("warn-is-shown"), "{stderr}");
    assert!(
        stderr.contains("peer_spiffe_id=\"spiffe://spike.ist/pilot\""),
        "{stderr}"
    );
    assert!(stderr.contains("audit-is-shown"), "{stderr}");
    assert!(stderr.contains("spike::audit"), "{stderr}");
}
