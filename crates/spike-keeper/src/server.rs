//! The mTLS accept loop serving an axum [`Router`]: one task per connection, the peer's
//! SPIFFE ID as a request extension, a connection cap, handshake and header timeouts, and
//! graceful shutdown with a grace period.
//!
//! Small enough to copy: Nexus uses the same pattern.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use spike_daemon::handshake::HandshakeFailureLog;
use spike_daemon::shutdown::{CancellationToken, GraceExpired};
use spike_identity::MtlsAcceptor;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// Limits of [`serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// Bound on reading a request's headers; also closes idle keep-alive connections.
    pub read_header_timeout: Duration,
    /// Most concurrent connections; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Time in-flight requests get after shutdown starts.
    pub shutdown_grace_period: Duration,
}

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` over mTLS until `shutdown` is cancelled, then lets open
/// connections finish their current request within the grace period.
///
/// The handshake (with `acceptor`'s timeout and authorizer) runs in the connection's own
/// task, so a slow client never blocks the loop. Handlers find the peer's
/// [`spike_identity::PeerId`] in the request extensions.
///
/// # Errors
/// [`GraceExpired`] when connections were still open after the grace period (they are
/// dropped).
pub async fn serve(
    listener: TcpListener,
    acceptor: MtlsAcceptor,
    router: Router,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> Result<(), GraceExpired> {
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let failures = HandshakeFailureLog::new("SPIKE Keeper API");
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, addr) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let token = shutdown.clone();
        let failures = failures.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let handshake = tokio::select! {
                () = token.cancelled() => return,
                hs = acceptor.accept(tcp) => hs,
            };
            let (tls, peer) = match handshake {
                Ok(ok) => ok,
                Err(err) => {
                    failures.report(addr, &err.describe());
                    return;
                }
            };
            let service = hyper::service::service_fn(move |mut req| {
                req.extensions_mut().insert(peer.clone());
                router.clone().oneshot(req)
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(options.read_header_timeout);
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = token.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = result {
                tracing::debug!(peer_addr = %addr, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracker.close();
    match tokio::time::timeout(options.shutdown_grace_period, tracker.wait()).await {
        Ok(()) => Ok(()),
        Err(_) => {
            tracing::warn!(
                grace = ?options.shutdown_grace_period,
                open = tracker.len(),
                "connections outlived the shutdown grace period"
            );
            Err(GraceExpired {
                grace: options.shutdown_grace_period,
            })
        }
    }
}
