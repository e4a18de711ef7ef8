//! The listeners under slow and greedy clients (spike_daemon::limits): idle connections,
//! callers without a policy, per-peer caps, trickling bodies, connection lifetimes, the health
//! socket. Each test shows a real client still served, and the abusive one cut off.

use std::net::SocketAddr;
use tokio::time::Instant;

use rustls_pki_types::ServerName;
use spike_daemon::config::GoDuration;
use spike_identity::{MtlsConnector, allow_any};
use spike_nexus::config::{Config, ConfigFile};
use spike_testkit::cluster::test_config_file;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UnixStream};

use crate::harness::*;

fn config(w: &World, dir: &str, edit: impl FnOnce(&mut ConfigFile)) -> Config {
    let mut file = test_config_file("memory", &[], &w.path(dir));
    edit(&mut file);
    Config::try_from(file).unwrap()
}

/// An mTLS connection to Nexus as `who`, handshake done.
async fn mtls(
    w: &World,
    who: &str,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let identity = w.identity(who).await.unwrap();
    let connector = MtlsConnector::new(
        identity.client_config(allow_any()).unwrap(),
        Duration::from_secs(5),
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from("nexus").unwrap(), tcp)
        .await
        .unwrap()
        .0
}

/// Reads until the peer closes (or errors), at most `limit`; returns what was read, or
/// `None` if the connection was still open at the limit.
async fn read_until_closed<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Option<String> {
    let mut buf = Vec::new();
    match tokio::time::timeout(limit, s.read_to_end(&mut buf)).await {
        Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
        Err(_) => None,
    }
}

/// How many of `streams` the server has closed (each given 50 ms to show it).
async fn count_closed<S: AsyncRead + Unpin>(streams: &mut [S]) -> usize {
    let mut closed = 0;
    for s in streams {
        if read_until_closed(s, Duration::from_millis(50))
            .await
            .is_some()
        {
            closed += 1;
        }
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_starve_the_handshake() {
    let w = World::new().unwrap();
    let nexus = w
        .start_nexus(config(&w, "idle", |f| {
            f.max_handshakes = 8;
            f.max_handshakes_per_ip = 8;
        }))
        .await
        .unwrap();
    // 64 TCP connections that never send a byte: eight times the handshake slots.
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(nexus.addr).await.unwrap());
    }
    let start = Instant::now();
    let su = w.client(SUPERUSER, &nexus).await.unwrap();
    assert_eq!(su.health().await.unwrap().status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // Silent connections wait in a pool four times max_handshakes (32), the oldest dropped
    // first: at most 32 of the 64 are still open.
    let closed = count_closed(&mut idle).await;
    assert!(
        closed >= 32,
        "only {closed} of 64 idle connections were dropped"
    );
    nexus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_without_a_policy_is_refused_before_its_body() {
    let w = World::new().unwrap();
    let nexus = w.start_nexus(config(&w, "nopolicy", |_| {})).await.unwrap();
    let mut s = mtls(&w, WORKLOAD, nexus.addr).await;
    // Announce a body of the full limit and send none of it: the answer must not wait for it.
    s.write_all(
        b"POST /v1/store/secrets?action=get HTTP/1.1\r\nHost: nexus\r\nContent-Type: \
          application/json\r\nContent-Length: 262144\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("the refusal must not wait for the body")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    // A superuser with the same request shape is served once the body arrives.
    let su = w.client(SUPERUSER, &nexus).await.unwrap();
    let raw = post_json(&su, "/v1/store/secrets", Some("get"), r#"{"path":"a/b"}"#).await;
    assert_eq!(raw.status, 404, "{raw:?}");
    nexus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_cannot_hold_every_connection() {
    let w = World::new().unwrap();
    let nexus = w
        .start_nexus(config(&w, "perpeer", |f| f.max_connections_per_peer = 2))
        .await
        .unwrap();
    let mut held = vec![
        mtls(&w, WORKLOAD, nexus.addr).await,
        mtls(&w, WORKLOAD, nexus.addr).await,
    ];
    let mut third = mtls(&w, WORKLOAD, nexus.addr).await;
    let closed = read_until_closed(&mut third, Duration::from_secs(3)).await;
    assert_eq!(
        closed.as_deref(),
        Some(""),
        "the third connection of one SPIFFE ID is closed"
    );
    // The two admitted ones still work, and another identity is not affected.
    held[0]
        .write_all(b"GET /v1/sys/health HTTP/1.1\r\nHost: nexus\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = held[0].read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let su = w.client(SUPERUSER, &nexus).await.unwrap();
    assert_eq!(su.health().await.unwrap().status, 200);
    // Closing one frees its place.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = mtls(&w, WORKLOAD, nexus.addr).await;
    assert_eq!(
        read_until_closed(&mut again, Duration::from_millis(500)).await,
        None
    );
    nexus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_is_cut_off_at_its_deadline() {
    let w = World::new().unwrap();
    let nexus = w
        .start_nexus(config(&w, "trickle", |f| {
            f.request_body_timeout = GoDuration(Duration::from_secs(1));
        }))
        .await
        .unwrap();
    let mut s = mtls(&w, SUPERUSER, nexus.addr).await;
    s.write_all(
        b"POST /v1/store/secrets?action=get HTTP/1.1\r\nHost: nexus\r\nContent-Type: \
          application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    let start = Instant::now();
    let answer = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("the connection is closed after the body deadline");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    nexus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_ends_at_its_lifetime() {
    let w = World::new().unwrap();
    let nexus = w
        .start_nexus(config(&w, "lifetime", |f| {
            f.max_connection_lifetime = GoDuration(Duration::from_secs(1));
        }))
        .await
        .unwrap();
    let mut s = mtls(&w, SUPERUSER, nexus.addr).await;
    s.write_all(b"GET /v1/sys/health HTTP/1.1\r\nHost: nexus\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Idle, kept alive: closed by the lifetime (1 s), long before the header timeout (10 s).
    let start = Instant::now();
    assert!(
        read_until_closed(&mut s, Duration::from_secs(5))
            .await
            .is_some()
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    nexus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_health_socket_clients_cannot_block_the_probe() {
    let w = World::new().unwrap();
    let nexus = w
        .start_nexus(config(&w, "health", |f| f.health_max_connections = 4))
        .await
        .unwrap();
    let socket = nexus.health_socket.clone().unwrap();
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(UnixStream::connect(&socket).await.unwrap());
    }
    let start = Instant::now();
    let (status, _) = unix_get(&socket, "/v1/sys/health").await;
    assert_eq!(status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let closed = count_closed(&mut idle).await;
    assert!(
        closed >= 36,
        "only {closed} of 40 idle connections were dropped"
    );
    nexus.stop().await.unwrap();
}
