//! The Nexus side of the shared test cluster: [`spike_testkit::cluster`] (the world with every
//! role identity, keepers, Nexus, typed clients, `eventually`) plus raw HTTP helpers only these
//! tests need (raw POSTs through a client's mTLS connection, the health socket, metrics).

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use spike_client::{NexusClient, RawResponse};

pub(crate) use spike_testkit::cluster::{
    BOOTSTRAP, KEEPERS, KeeperHandle, LITE, NEXUS, NexusHandle, RECOVER, RESTORE, SUPERUSER,
    WORKLOAD, World, dead_keepers, eventually, roots, urls,
};
pub(crate) use std::time::Duration;

/// A raw POST through the client's mTLS connection.
pub(crate) async fn post(
    client: &NexusClient,
    path: &str,
    action: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> RawResponse {
    client
        .http()
        .request(http::Method::POST, path, action, content_type, body.into())
        .await
        .unwrap()
}

pub(crate) async fn post_json(
    client: &NexusClient,
    path: &str,
    action: Option<&str>,
    body: &str,
) -> RawResponse {
    post(
        client,
        path,
        action,
        Some("application/json"),
        body.to_owned(),
    )
    .await
}

pub(crate) fn body_json(raw: &RawResponse) -> serde_json::Value {
    serde_json::from_slice(&raw.body).unwrap_or(serde_json::Value::Null)
}

pub(crate) fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// GET over the plain health unix socket.
pub(crate) async fn unix_get(socket: &Path, target: &str) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// GET over plain TCP (metrics).
pub(crate) async fn tcp_get(addr: std::net::SocketAddr, target: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}
