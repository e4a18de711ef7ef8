use std::time::Duration;

use spike_daemon::MapEnv;
use spike_daemon::notify::{Notifier, NotifyState};
use tokio::net::UnixDatagram;
use tokio_util::sync::CancellationToken;

async fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .expect("no notification within 5s")
        .unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[tokio::test]
async fn messages_reach_an_injected_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    let n = Notifier::with_socket(&path);
    assert!(n.is_enabled());

    n.ready().unwrap();
    assert_eq!(recv(&sock).await, "READY=1\n");
    n.status("sealed: waiting for bootstrap (0/3 shards)")
        .unwrap();
    assert_eq!(
        recv(&sock).await,
        "STATUS=sealed: waiting for bootstrap (0/3 shards)\n"
    );
    n.stopping().unwrap();
    assert_eq!(recv(&sock).await, "STOPPING=1\n");
    n.watchdog().unwrap();
    assert_eq!(recv(&sock).await, "WATCHDOG=1\n");
    n.extend_timeout(Duration::from_secs(2)).unwrap();
    assert_eq!(recv(&sock).await, "EXTEND_TIMEOUT_USEC=2000000\n");
    n.notify(&[NotifyState::Ready, NotifyState::Status("up")])
        .unwrap();
    assert_eq!(recv(&sock).await, "READY=1\nSTATUS=up\n");
}

#[tokio::test]
async fn a_status_cannot_inject_assignments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    Notifier::with_socket(&path)
        .status("evil\nREADY=1")
        .unwrap();
    assert_eq!(recv(&sock).await, "STATUS=evil READY=1\n");
}

#[tokio::test]
async fn notify_socket_from_env_path_and_abstract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    let env = MapEnv::from([("NOTIFY_SOCKET", path.to_str().unwrap())]);
    Notifier::from_env_source(&env).ready().unwrap();
    assert_eq!(recv(&sock).await, "READY=1\n");

    use std::os::linux::net::SocketAddrExt;
    let name = format!("spike-daemon-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let abs = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
    abs.set_nonblocking(true).unwrap();
    let abs = UnixDatagram::from_std(abs).unwrap();
    let env = MapEnv::from([("NOTIFY_SOCKET", format!("@{name}"))]);
    Notifier::from_env_source(&env).stopping().unwrap();
    assert_eq!(recv(&abs).await, "STOPPING=1\n");
}

#[test]
fn a_vanished_manager_socket_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let n = Notifier::with_socket(dir.path().join("gone"));
    assert!(n.ready().is_err());
}

#[tokio::test]
async fn watchdog_pings_at_half_the_interval_until_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    let env = MapEnv::from([
        ("NOTIFY_SOCKET", path.to_str().unwrap().to_owned()),
        ("WATCHDOG_USEC", "200000".to_owned()),
        ("WATCHDOG_PID", std::process::id().to_string()),
    ]);
    let n = Notifier::from_env_source(&env);
    assert_eq!(n.watchdog_enabled(), Some(Duration::from_millis(200)));

    let token = CancellationToken::new();
    let start = tokio::time::Instant::now();
    let task = n.spawn_watchdog(token.clone());
    for _ in 0..3 {
        assert_eq!(recv(&sock).await, "WATCHDOG=1\n");
    }
    // First ping at once, then every 100ms.
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    token.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("watchdog task must stop when cancelled")
        .unwrap();
}

#[tokio::test]
async fn watchdog_for_another_pid_is_off() {
    let env = MapEnv::from([
        ("NOTIFY_SOCKET", "/nonexistent".to_owned()),
        ("WATCHDOG_USEC", "200000".to_owned()),
        ("WATCHDOG_PID", (std::process::id() + 1).to_string()),
    ]);
    let n = Notifier::from_env_source(&env);
    assert_eq!(n.watchdog_enabled(), None);
    // Returns at once: nothing to ping.
    tokio::time::timeout(
        Duration::from_secs(5),
        n.run_watchdog(CancellationToken::new()),
    )
    .await
    .unwrap();
}
