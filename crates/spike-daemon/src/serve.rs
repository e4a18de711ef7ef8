//! [`serve_mtls`]: the one mTLS accept loop of the SPIKE daemons (Nexus API, Keeper API), plus
//! the per-connection HTTP/1.1 driver ([`serve_connection`]) and the connection set
//! ([`Connections`]) that Nexus's plain listeners reuse.
//!
//! One task per connection; a [`Semaphore`] caps connections (further ones wait in the listen
//! backlog); the TLS handshake (with the acceptor's timeout and peer authorizer) runs in the
//! connection's task, so a slow client never blocks the loop; the peer's [`PeerId`] is in every
//! request's extensions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use spike_identity::{MtlsAcceptor, PeerId};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::handshake::HandshakeFailureLog;
use crate::shutdown::GraceExpired;

/// Pause after a failed `accept` (e.g. `EMFILE`, out of file descriptors) before trying again:
/// a fixed 100 ms, long enough for connections to close and free descriptors, short enough to
/// be invisible to clients waiting in the backlog.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Limits of [`serve_mtls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// The listener's name in logs (`SPIKE Nexus API`, `SPIKE Keeper API`).
    pub name: &'static str,
    /// Most concurrent connections (at least one); further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Bound on reading a request's headers; also closes idle keep-alive connections.
    pub read_header_timeout: Duration,
    /// Time open connections get after shutdown starts (see [`Connections::drain`]).
    pub shutdown_grace: Duration,
}

/// The connection tasks of one listener. On shutdown, [`Connections::drain`] gives them the
/// grace period and then drops whatever is still open.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    tracker: TaskTracker,
    /// Cancelled when the grace period expired: the still-open connections are dropped.
    cut_off: CancellationToken,
}

impl Connections {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns one connection's task.
    pub fn spawn<F>(&self, conn: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cut_off = self.cut_off.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                biased;
                () = cut_off.cancelled() => {}
                () = conn => {}
            }
        });
    }

    /// Number of open connections.
    #[must_use]
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Whether no connection is open.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Waits for every connection to finish, at most `grace` (call it once the shutdown token
    /// was cancelled, so connections are already finishing their in-flight request). Connections
    /// still open after `grace` are dropped (their tasks end) before this returns.
    ///
    /// # Errors
    /// [`GraceExpired`] when connections had to be dropped.
    pub async fn drain(self, name: &'static str, grace: Duration) -> Result<(), GraceExpired> {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
        {
            return Ok(());
        }
        tracing::warn!(
            listener = name,
            ?grace,
            open = self.tracker.len(),
            "connections outlived the shutdown grace period; dropping them"
        );
        self.cut_off.cancel();
        self.tracker.wait().await;
        Err(GraceExpired { grace })
    }
}

/// Serves one connection with HTTP/1.1 until it closes or `shutdown` is cancelled; then it
/// finishes its in-flight request and closes. `peer`, if any, goes into every request's
/// extensions.
pub async fn serve_connection<IO>(
    io: IO,
    router: Router,
    peer: Option<PeerId>,
    shutdown: CancellationToken,
    read_header_timeout: Duration,
    peer_addr: Option<SocketAddr>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(Body::new);
        if let Some(peer) = &peer {
            req.extensions_mut().insert(peer.clone());
        }
        router.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(read_header_timeout)
        .serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        match peer_addr {
            Some(addr) => {
                tracing::debug!(peer_addr = %addr, %error, "connection ended with an error");
            }
            None => tracing::debug!(%error, "connection ended with an error"),
        }
    }
}

/// Serves `router` on `listener` over mTLS until `shutdown` is cancelled, then lets open
/// connections finish their in-flight request within the grace period.
///
/// - Each accepted connection first takes a slot of `options.max_connections` (a
///   [`Semaphore`]), gets `TCP_NODELAY`, and runs in its own task: the TLS handshake (bounded
///   by `acceptor`'s handshake timeout; its authorizer refuses unwanted peers), then HTTP/1.1
///   with `options.read_header_timeout` and the peer's [`PeerId`] in the request extensions.
/// - A failed handshake calls `on_handshake_failure` (e.g. a metric counter) and is logged
///   through a [`HandshakeFailureLog`] (`warn` once per peer address per minute).
/// - A failed `accept` is logged at `warn` and retried after [`ACCEPT_BACKOFF`] (fixed 100 ms).
/// - Shutdown: the loop stops accepting and closes the listener, handshakes in progress are
///   abandoned, and every connection finishes its in-flight request and closes. Connections
///   still open `options.shutdown_grace` after cancellation are dropped, and that is an
///   error ([`GraceExpired`]), the same semantic as [`crate::shutdown::Tasks::join`].
///
/// # Errors
/// [`GraceExpired`] when connections were dropped because they outlived the grace period.
pub async fn serve_mtls<H>(
    listener: TcpListener,
    acceptor: MtlsAcceptor,
    router: Router,
    options: ServeOptions,
    on_handshake_failure: H,
    shutdown: CancellationToken,
) -> Result<(), GraceExpired>
where
    H: Fn() + Clone + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let failures = HandshakeFailureLog::new(options.name);
    let connections = Connections::new();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, addr) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(listener = options.name, %error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(peer_addr = %addr, %error, "cannot set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let router = router.clone();
        let token = shutdown.clone();
        let failures = failures.clone();
        let on_handshake_failure = on_handshake_failure.clone();
        connections.spawn(async move {
            let _permit = permit;
            let handshake = tokio::select! {
                () = token.cancelled() => return,
                handshake = acceptor.accept(tcp) => handshake,
            };
            let (tls, peer) = match handshake {
                Ok(accepted) => accepted,
                Err(error) => {
                    on_handshake_failure();
                    failures.report(addr, &error.describe());
                    return;
                }
            };
            serve_connection(
                tls,
                router,
                Some(peer),
                token,
                options.read_header_timeout,
                Some(addr),
            )
            .await;
        });
    }
    drop(listener);
    connections
        .drain(options.name, options.shutdown_grace)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_connections_that_finish_in_time() {
        let connections = Connections::new();
        connections.spawn(tokio::time::sleep(Duration::from_secs(2)));
        let start = tokio::time::Instant::now();
        assert_eq!(
            connections.drain("test", Duration::from_secs(5)).await,
            Ok(())
        );
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn drain_drops_connections_that_outlive_the_grace_period() {
        let connections = Connections::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        connections.spawn(async move {
            let _tx = tx;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let start = tokio::time::Instant::now();
        let result = connections
            .clone()
            .drain("test", Duration::from_secs(5))
            .await;
        assert_eq!(
            result,
            Err(GraceExpired {
                grace: Duration::from_secs(5)
            })
        );
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        // The connection's task really ended (its sender was dropped).
        assert!(rx.await.is_err());
        assert!(connections.is_empty());
    }
}
