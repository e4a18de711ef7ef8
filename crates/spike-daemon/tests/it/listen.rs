use std::os::fd::{AsFd, RawFd};

use nix::fcntl::{FcntlArg, fcntl};
use spike_daemon::MapEnv;
use spike_daemon::listen::{ListenError, ListenFds, ListenerOrigin, take_listeners};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Duplicates each socket to consecutive fd numbers starting at `base`, as systemd lays them out
/// from 3. The duplicates are owned by nobody until handed to `ListenFds`.
fn place_consecutively(base: RawFd, fds: &[&dyn AsFd]) -> RawFd {
    let first = fcntl(fds[0].as_fd(), FcntlArg::F_DUPFD(base)).unwrap();
    for (i, fd) in fds.iter().enumerate().skip(1) {
        let want = first + RawFd::try_from(i).unwrap();
        let got = fcntl(fd.as_fd(), FcntlArg::F_DUPFD(want)).unwrap();
        assert_eq!(got, want, "fd numbers must be consecutive");
    }
    first
}

fn activation_env(count: usize, names: &str) -> MapEnv {
    MapEnv::from([
        ("LISTEN_PID", std::process::id().to_string()),
        ("LISTEN_FDS", count.to_string()),
        ("LISTEN_FDNAMES", names.to_owned()),
    ])
}

#[tokio::test]
async fn activated_tcp_and_unix_sockets_are_served_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("health.sock");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let unix = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let first = place_consecutively(700, &[&tcp, &unix]);
    // The originals close; only the activation fds keep the sockets alive.
    drop((tcp, unix));

    let env = activation_env(2, "api:health");
    let mut fds = ListenFds::from_env_with(&env, std::process::id(), first).unwrap();
    let mut names: Vec<_> = fds.names().map(str::to_owned).collect();
    names.sort();
    assert_eq!(names, ["api", "health"]);

    let (api, origin) = fds
        .tcp_or_bind("api", "127.0.0.1:1".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(origin, ListenerOrigin::Activated { fd: first });
    assert_eq!(api.local_addr().unwrap(), tcp_addr);
    let client = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(tcp_addr).await.unwrap();
        s.write_all(b"ping").await.unwrap();
    });
    let (mut conn, _) = api.accept().await.unwrap();
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    client.await.unwrap();

    let (health, origin) = fds
        .unix_or_bind("health", &dir.path().join("unused.sock"))
        .unwrap();
    assert_eq!(origin, ListenerOrigin::Activated { fd: first + 1 });
    assert!(!dir.path().join("unused.sock").exists(), "no fallback bind");
    let path = sock_path.clone();
    let client = tokio::spawn(async move {
        let mut s = tokio::net::UnixStream::connect(path).await.unwrap();
        s.write_all(b"pong").await.unwrap();
    });
    let (mut conn, _) = health.accept().await.unwrap();
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    client.await.unwrap();

    assert!(fds.is_empty());
    assert!(fds.into_unclaimed().is_empty());
}

#[tokio::test]
async fn a_socket_of_the_wrong_family_is_refused() {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let first = place_consecutively(760, &[&tcp]);
    drop(tcp);
    let env = activation_env(1, "health");
    let mut fds = ListenFds::from_env_with(&env, std::process::id(), first).unwrap();
    let err = fds.take_unix("health").unwrap_err();
    assert!(
        matches!(err, ListenError::WrongKind { ref name, want: "unix", .. } if name == "health"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_connected_socket_is_not_a_listener() {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = std::net::TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
    let first = place_consecutively(780, &[&stream]);
    let env = activation_env(1, "api");
    let mut fds = ListenFds::from_env_with(&env, std::process::id(), first).unwrap();
    assert!(matches!(
        fds.take_tcp("api"),
        Err(ListenError::WrongKind { want: "TCP", .. })
    ));
}

#[tokio::test]
async fn duplicate_names_are_reported() {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let first = place_consecutively(800, &[&a, &b]);
    drop((a, b));
    let env = activation_env(2, "api:api");
    let mut fds = ListenFds::from_env_with(&env, std::process::id(), first).unwrap();
    assert!(matches!(
        fds.take_tcp("api"),
        Err(ListenError::Duplicate { count: 2, .. })
    ));
}

#[test]
fn a_regular_file_is_not_adopted() {
    let file = tempfile::tempfile().unwrap();
    let first = place_consecutively(820, &[&file]);
    let env = activation_env(1, "api");
    let err = ListenFds::from_env_with(&env, std::process::id(), first).unwrap_err();
    assert!(
        matches!(err, ListenError::BadFd { fd, .. } if fd == first),
        "{err:?}"
    );
}

#[tokio::test]
async fn unclaimed_names_are_listed() {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let first = place_consecutively(840, &[&a]);
    drop(a);
    let env = activation_env(1, "metrics");
    let mut fds = ListenFds::from_env_with(&env, std::process::id(), first).unwrap();
    assert!(fds.take_tcp("api").unwrap().is_none());
    assert_eq!(fds.into_unclaimed(), ["metrics"]);
}

#[tokio::test]
async fn without_activation_the_configured_addresses_are_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut fds = ListenFds::from_env_with(&MapEnv::new(), std::process::id(), 3).unwrap();
    let (tcp, origin) = fds
        .tcp_or_bind("api", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(origin, ListenerOrigin::Bound);
    assert_ne!(tcp.local_addr().unwrap().port(), 0);

    // A stale socket file from a crashed run is replaced.
    let path = dir.path().join("health.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let (unix, origin) = fds.unix_or_bind("health", &path).unwrap();
    assert_eq!(origin, ListenerOrigin::Bound);
    let client = tokio::spawn({
        let path = path.clone();
        async move { tokio::net::UnixStream::connect(path).await.unwrap() }
    });
    unix.accept().await.unwrap();
    client.await.unwrap();

    // Anything else in the way is an error, and is left alone.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    assert!(matches!(
        fds.unix_or_bind("health", &file),
        Err(ListenError::Bind { .. })
    ));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    // A busy TCP address is a bind error naming it.
    let busy = tcp.local_addr().unwrap();
    let err = fds.tcp_or_bind("api", busy).await.unwrap_err();
    assert!(err.to_string().contains(&busy.to_string()), "{err}");
}

#[test]
fn process_fds_can_be_taken_only_once() {
    // The test process was not socket-activated: the first take yields nothing.
    let first = take_listeners();
    let second = take_listeners();
    assert!(first.unwrap().is_empty());
    assert!(matches!(second, Err(ListenError::AlreadyTaken)));
}
