//! Our own accept loops: the mTLS API listener, the plain health socket and the metrics
//! listener.
//!
//! The API loop accepts TCP, takes a connection slot from a [`Semaphore`] (the cap), and
//! hands the connection to its own task, which runs the mTLS handshake (any SVID chaining to
//! the trust bundle, §3.2) and then serves HTTP/1.1 with the caller's [`PeerId`] inserted in
//! every request's extensions. On cancellation the loop stops accepting, each connection
//! finishes its in-flight request and closes, and the loop waits at most the grace period.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use spike_daemon::handshake::HandshakeFailureLog;
use spike_identity::{MtlsAcceptor, PeerId};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::metrics::Metrics;

/// Settings shared by the accept loops.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Most concurrent connections.
    pub max_connections: usize,
    /// HTTP header read timeout.
    pub read_header_timeout: Duration,
    /// How long in-flight connections get after cancellation.
    pub grace: Duration,
}

/// Serves one connection until it closes or `token` is cancelled (then gracefully).
async fn serve_connection<IO>(
    io: IO,
    router: Router,
    peer: Option<PeerId>,
    token: CancellationToken,
    read_header_timeout: Duration,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let mut req = req.map(Body::new);
        if let Some(peer) = &peer {
            req.extensions_mut().insert(peer.clone());
        }
        router.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(read_header_timeout)
        .serve_connection(TokioIo::new(io), svc);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = token.cancelled() => {
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error during shutdown");
            }
        }
    }
}

async fn drain(tracker: TaskTracker, grace: Duration) {
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            ?grace,
            "connections still open after the shutdown grace period"
        );
    }
}

/// The mTLS API accept loop. Returns when `token` is cancelled and connections drained.
///
/// Every failed TLS handshake is counted in `metrics`
/// (`spike_nexus_tls_handshake_failures_total`) and logged at `warn` once per peer address
/// per minute ([`HandshakeFailureLog`]) with the address, the cause and, for a client
/// rejected by SPIFFE policy, its SPIFFE ID.
///
/// # Errors
/// Never fails on per-connection errors (they are logged); returns `Ok` on cancellation.
pub async fn serve_api(
    listener: TcpListener,
    acceptor: MtlsAcceptor,
    router: Router,
    options: ServeOptions,
    metrics: Metrics,
    token: CancellationToken,
) -> Result<(), std::io::Error> {
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let tracker = TaskTracker::new();
    let failures = HandshakeFailureLog::new("SPIKE Nexus API");
    loop {
        let permit = tokio::select! {
            () = token.cancelled() => break,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, addr) = tokio::select! {
            () = token.cancelled() => break,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let token = token.clone();
        let failures = failures.clone();
        let metrics = metrics.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let accepted = tokio::select! {
                () = token.cancelled() => return,
                r = acceptor.accept(tcp) => r,
            };
            let (tls, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    metrics.record_handshake_failure();
                    failures.report(addr, &e.describe());
                    return;
                }
            };
            serve_connection(tls, router, Some(peer), token, options.read_header_timeout).await;
        });
    }
    drain(tracker, options.grace).await;
    Ok(())
}

/// A plain HTTP accept loop over a unix socket (the health socket).
///
/// # Errors
/// Never fails on per-connection errors; returns `Ok` on cancellation.
pub async fn serve_unix(
    listener: UnixListener,
    router: Router,
    options: ServeOptions,
    token: CancellationToken,
) -> Result<(), std::io::Error> {
    let l = &listener;
    let accept = move || async move { l.accept().await.map(|(s, _)| s) };
    serve_plain(accept, "the health socket", router, options, token).await
}

/// A plain HTTP accept loop over TCP (the metrics listener).
///
/// # Errors
/// Never fails on per-connection errors; returns `Ok` on cancellation.
pub async fn serve_plain_tcp(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    token: CancellationToken,
) -> Result<(), std::io::Error> {
    let l = &listener;
    let accept = move || async move { l.accept().await.map(|(s, _)| s) };
    serve_plain(accept, "the metrics listener", router, options, token).await
}

/// The accept loop shared by the plain (no TLS, no peer ID) listeners.
async fn serve_plain<S, F, Fut>(
    mut accept: F,
    what: &'static str,
    router: Router,
    options: ServeOptions,
    token: CancellationToken,
) -> Result<(), std::io::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<S>>,
{
    let tracker = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            () = token.cancelled() => break,
            r = accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on {what}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tracker.spawn(serve_connection(
            stream,
            router.clone(),
            None,
            token.clone(),
            options.read_header_timeout,
        ));
    }
    drain(tracker, options.grace).await;
    Ok(())
}
