//! The built `spike` binary: data only on stdout, errors only on stderr, and bounded failures
//! when the Workload API or Nexus is unreachable (docs/compatibility.md#compatibility-testing live CLI tests).

use std::io::Read as _;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use spike_testkit::{TestPki, WorkloadApiServer};
use tokio::time::Instant;

/// Runs the binary with a clean environment plus `env`, failing the test if it does not
/// exit within `bound`.
fn run_bounded(args: &[&str], env: &[(&str, String)], bound: Duration) -> (Output, Duration) {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spike"));
    cmd.args(args)
        .env_clear()
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stdout = Vec::new();
            let mut stderr = Vec::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_end(&mut stdout)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_end(&mut stderr)
                .unwrap();
            return (
                Output {
                    status,
                    stdout,
                    stderr,
                },
                start.elapsed(),
            );
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            panic!("spike {args:?} did not exit within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn nonexistent_socket_fails_fast_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = format!("unix://{}/agent.sock", dir.path().display());
    for args in [
        &["secret", "get", "a/b"][..],
        &["policy", "list"],
        &["status"],
        &["operator", "recover"],
    ] {
        let (out, took) = run_bounded(
            args,
            &[("SPIFFE_ENDPOINT_SOCKET", socket.clone())],
            Duration::from_secs(20),
        );
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("No SPIFFE identity"), "{err}");
        assert!(err.contains(&socket), "{err}");
        assert!(out.stdout.is_empty(), "{args:?} wrote to stdout");
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }
}

#[test]
fn silent_socket_fails_within_the_spiffe_timeout() {
    // A path that exists but where no Workload API answers: bounded by spiffe_timeout.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let socket = format!("unix:{}", path.display());
    let (out, took) = run_bounded(
        &["secret", "list"],
        &[
            ("SPIFFE_ENDPOINT_SOCKET", socket.clone()),
            ("SPIKE_SPIFFE_SOURCE_TIMEOUT", "1s".to_owned()),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("No SPIFFE identity") && err.contains(&socket),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_nexus_reports_connect_failure_within_20s() {
    let pki = TestPki::new().unwrap();
    let pilot = pki.id("spike/pilot/role/superuser");
    let agent = WorkloadApiServer::start_in_tempdir(&pki, &[pilot.as_str()]).unwrap();
    let env = vec![
        ("SPIFFE_ENDPOINT_SOCKET", agent.endpoint()),
        ("SPIKE_NEXUS_API_URL", "https://127.0.0.1:1".to_owned()),
        ("SPIKE_TRUST_ROOT_NEXUS", pki.trust_domain().to_owned()),
    ];
    let (out, took) = tokio::task::spawn_blocking(move || {
        run_bounded(&["secret", "get", "a/b"], &env, Duration::from_secs(20))
    })
    .await
    .unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("Failed to connect to SPIKE Nexus at https://127.0.0.1:1"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(out.stdout.is_empty());
    assert!(took < Duration::from_secs(20), "took {took:?}");
    drop(agent);
}

#[test]
fn usage_errors_use_stderr_only() {
    let (out, _) = run_bounded(&["secret", "get"], &[], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("Usage"));

    let (out, _) = run_bounded(&["completions", "bash"], &[], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty());
    assert!(!out.stdout.is_empty());
}
