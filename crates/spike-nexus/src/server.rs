//! The plain (no TLS, no peer ID) accept loops: the health unix socket and the metrics
//! listener. The mTLS API listener is [`spike_daemon::serve::serve_mtls`], shared with Keeper.
//!
//! Both loops use the same per-connection driver (header, body and write deadlines, connection
//! lifetime), accept backoff and shutdown semantics as the API listener: on cancellation the
//! loop stops accepting, each connection finishes its in-flight request and closes, and
//! connections still open after the grace period are dropped ([`GraceExpired`]).
//!
//! Each loop holds at most `max_connections` connections (`health_max_connections`,
//! `metrics_max_connections`). When full, a new connection drops the one that has sent the
//! fewest bytes, the oldest among equals ([`EvictingSlots`]): a probe sends its request at
//! once, so idle connections piled up by a local client are the ones that go, and
//! `spike-ready.service`'s probe still gets through.
//! Their routes never read a request body, so no body budget applies.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::time::Duration;

use axum::Router;
use spike_daemon::limits::{EvictingSlots, Limits, pending_bytes};
use spike_daemon::serve::{ACCEPT_BACKOFF, ConnectionContext, Connections, serve_connection};
use spike_daemon::shutdown::GraceExpired;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

/// Settings of the plain accept loops.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Header, body and write deadlines and the connection lifetime (the API's).
    pub limits: Limits,
    /// Connections held at once; when full, the least active is dropped (at least 1).
    pub max_connections: usize,
    /// How long in-flight connections get after cancellation.
    pub grace: Duration,
}

/// A plain HTTP accept loop over a unix socket (the health socket).
///
/// # Errors
/// [`GraceExpired`] when connections outlived the grace period; per-connection errors are
/// only logged.
pub async fn serve_unix(
    listener: UnixListener,
    router: Router,
    options: ServeOptions,
    token: CancellationToken,
) -> Result<(), GraceExpired> {
    let l = &listener;
    let accept = move || async move {
        l.accept().await.map(|(s, _)| {
            let waiting = pending_bytes(s.as_raw_fd());
            (s, None, waiting)
        })
    };
    serve_plain(accept, "the health socket", router, options, token).await
}

/// A plain HTTP accept loop over TCP (the metrics listener).
///
/// # Errors
/// [`GraceExpired`] when connections outlived the grace period; per-connection errors are
/// only logged.
pub async fn serve_plain_tcp(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    token: CancellationToken,
) -> Result<(), GraceExpired> {
    let l = &listener;
    let accept = move || async move {
        l.accept().await.map(|(s, a)| {
            let waiting = pending_bytes(s.as_raw_fd());
            (s, Some(a), waiting)
        })
    };
    serve_plain(accept, "the metrics listener", router, options, token).await
}

/// The accept loop shared by the plain listeners.
async fn serve_plain<S, F, Fut>(
    mut accept: F,
    what: &'static str,
    router: Router,
    options: ServeOptions,
    token: CancellationToken,
) -> Result<(), GraceExpired>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = std::io::Result<(S, Option<SocketAddr>, u64)>>,
{
    let connections = Connections::new();
    let slots = EvictingSlots::new(options.max_connections, options.max_connections);
    loop {
        let (stream, peer_addr, waiting) = tokio::select! {
            () = token.cancelled() => break,
            r = accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on {what}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let (ticket, dropped) = slots.take_with_progress(peer_addr.map(|a| a.ip()), waiting);
        if dropped > 0
            && let Some(n) = slots.record_evictions(dropped)
        {
            tracing::warn!(
                dropped = n,
                "{what}: dropped {n} connection(s), the least active first: {} were open (idle \
                 clients; summarised once a minute)",
                options.max_connections
            );
        }
        let cx = ConnectionContext {
            peer: None,
            pass: None,
            lifetime: options.limits.max_connection_lifetime,
            peer_addr,
        };
        let stream = ticket.counting(stream);
        let conn = serve_connection(stream, router.clone(), cx, options.limits, token.clone());
        connections.spawn(async move {
            tokio::select! {
                () = ticket.evicted() => {}
                () = conn => {}
            }
        });
    }
    connections.drain(what, options.grace).await
}
