//! Failed TLS handshakes on the mTLS API: every one is counted in
//! `spike_nexus_tls_handshake_failures_total`, even when its log line is rate-limited.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::*;

/// Speaks plain HTTP to the TLS port (no ClientHello, no client certificate) and waits until
/// the server closes the connection.
async fn plain_http_to_tls_port(addr: std::net::SocketAddr) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_handshakes_are_counted_in_metrics() {
    let w = World::new().unwrap();
    let nexus = w
        .start_nexus(w.config("memory", &[], &w.path("hs")).unwrap())
        .await
        .unwrap();
    let metrics = nexus.metrics_addr.unwrap();
    let (_, text) = tcp_get(metrics, "/metrics").await;
    assert!(
        text.contains("# TYPE spike_nexus_tls_handshake_failures_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("spike_nexus_tls_handshake_failures_total 0\n"),
        "{text}"
    );

    // Two failures from the same address: one warn line, two counts.
    plain_http_to_tls_port(nexus.addr).await;
    plain_http_to_tls_port(nexus.addr).await;
    let state = nexus.state.clone();
    eventually(10, "two counted handshake failures", || {
        state.metrics().handshake_failures() == 2
    })
    .await;
    let (_, text) = tcp_get(metrics, "/metrics").await;
    assert!(
        text.contains("spike_nexus_tls_handshake_failures_total 2\n"),
        "{text}"
    );

    // A good client is not counted.
    let su = w.client(SUPERUSER, &nexus).await.unwrap();
    assert_eq!(su.health().await.unwrap().status, 200);
    assert_eq!(nexus.state.metrics().handshake_failures(), 2);
    nexus.stop().await.unwrap();
}
