//! [`serve_mtls`]: the one mTLS accept loop of the SPIKE daemons (Nexus API, Keeper API), plus
//! the per-connection HTTP/1.1 driver ([`serve_connection`]) and the connection set
//! ([`Connections`]) that Nexus's plain listeners reuse.
//!
//! One task per connection; the TLS handshake (with the acceptor's timeout and peer authorizer)
//! runs in the connection's task, so a slow client never blocks the loop; the peer's [`PeerId`]
//! is in every request's extensions. Every connection and request is bounded in time and
//! memory by the listener's [`Limits`] (see [`crate::limits`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use spike_identity::{MtlsAcceptor, PeerId, peer_certificate_expiry};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::handshake::HandshakeFailureLog;
use crate::limits::{
    ConnectionPass, DeadlineBody, EventCounter, EvictingSlots, Limits, PeerTable, Refused,
    WriteDeadline, connection_lifetime,
};
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
    /// Connection, time and memory limits ([`crate::limits`]).
    pub limits: Limits,
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

/// The largest read buffer of one connection (headers must fit in it; hyper's default is
/// 400 KiB). With `max_connections` connections this bounds the listener's buffer memory.
pub const MAX_READ_BUFFER: usize = 64 * 1024;

/// One connection's identity and its place in the listener's accounting.
#[derive(Debug)]
pub struct ConnectionContext {
    /// The authenticated peer, put into every request's extensions (`None`: plain listener).
    pub peer: Option<PeerId>,
    /// The admitted connection: request bodies are reserved against its peer's budget
    /// (`None`: no body budget, for listeners whose routes never read a body).
    pub pass: Option<ConnectionPass>,
    /// How long the connection may live before it is closed after its in-flight request.
    pub lifetime: Duration,
    /// The peer's address, for logs.
    pub peer_addr: Option<SocketAddr>,
}

/// A `503` for a request refused before its body was read (budgets full).
fn busy(refused: &Refused) -> Response<Body> {
    let mut resp = Response::new(Body::from(format!("server busy: {refused}; retry later\n")));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// Serves one connection with HTTP/1.1 until it closes, `shutdown` is cancelled or its
/// lifetime ends; then it finishes its in-flight request and closes.
///
/// Every request body gets a deadline ([`Limits::body_deadline`]) and, when the connection has
/// a [`ConnectionPass`], a reservation of body memory taken before the body is read (a refusal
/// is a `503` with `Retry-After: 1`). Writes that make no progress for `write_timeout` close the
/// connection.
pub async fn serve_connection<IO>(
    io: IO,
    router: Router,
    cx: ConnectionContext,
    limits: Limits,
    shutdown: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ConnectionContext {
        peer,
        pass,
        lifetime,
        peer_addr,
    } = cx;
    let pass = pass.map(Arc::new);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let announced = req.body().size_hint().exact();
        let reserved = match &pass {
            Some(pass) => pass
                .reserve_body(limits.body_reservation(announced))
                .map(Some),
            None => Ok(None),
        };
        let deadline = limits.body_deadline(announced);
        let mut req = req.map(|b| Body::new(DeadlineBody::new(b, deadline)));
        if let Some(peer) = &peer {
            req.extensions_mut().insert(peer.clone());
        }
        let router = router.clone();
        async move {
            match reserved {
                Ok(reservation) => {
                    let resp = router.oneshot(req).await;
                    drop(reservation);
                    resp
                }
                Err(refused) => {
                    tracing::debug!(%refused, "request refused before its body was read");
                    Ok(busy(&refused))
                }
            }
        }
    });
    let io = WriteDeadline::new(io, limits.write_timeout);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_header_timeout)
        .max_buf_size(MAX_READ_BUFFER)
        .serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let expired = tokio::time::sleep(lifetime);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        () = expired => {
            tracing::debug!(?peer_addr, ?lifetime, "connection lifetime reached; closing after the in-flight request");
            conn.as_mut().graceful_shutdown();
            // The in-flight request gets as long as a body and a response may take, no more.
            let last = limits
                .body_deadline(None)
                .saturating_add(limits.write_timeout);
            match tokio::time::timeout(last, conn).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::debug!(?peer_addr, "in-flight request outlived the connection lifetime; dropped");
                    Ok(())
                }
            }
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
/// - Each accepted connection gets `TCP_NODELAY` and its own task, and takes a handshake slot
///   ([`EvictingSlots`]: `max_handshakes` in all, `max_handshakes_per_ip` per source IP; when
///   full, the pending handshake that has sent the fewest bytes is dropped). The TLS handshake is bounded by
///   `acceptor`'s timeout, and its authorizer refuses unwanted peers.
/// - An authenticated connection must then be admitted ([`PeerTable`]: `max_connections` in
///   all, `max_connections_per_peer` per SPIFFE ID), or it is closed. Only authenticated peers
///   hold connection slots.
/// - It is served by [`serve_connection`] with the peer's [`PeerId`] in the request
///   extensions, for at most `max_connection_lifetime` and never past the peer certificate's
///   `notAfter`.
/// - A failed handshake calls `on_handshake_failure` (e.g. a metric counter) and is logged
///   through a [`HandshakeFailureLog`] (`warn` once per peer address per minute). Dropped
///   handshakes and refused connections are summarised at `warn` at most once per minute.
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
    let name = options.name;
    let limits = options.limits;
    let handshakes = EvictingSlots::new(limits.max_handshakes, limits.max_handshakes_per_ip);
    // Accepted connections that have not sent a byte yet wait here, not in a handshake slot.
    let silent = EvictingSlots::new(
        limits.max_handshakes.saturating_mul(4),
        limits.max_handshakes_per_ip.saturating_mul(4),
    );
    let table = PeerTable::new(limits);
    let refusals = Arc::new(EventCounter::new(Duration::from_secs(60)));
    let failures = HandshakeFailureLog::new(name);
    let connections = Connections::new();
    loop {
        let (tcp, addr) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(listener = name, %error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(peer_addr = %addr, %error, "cannot set TCP_NODELAY");
        }
        let handshakes = handshakes.clone();
        let silent = silent.clone();
        let acceptor = acceptor.clone();
        let router = router.clone();
        let token = shutdown.clone();
        let failures = failures.clone();
        let table = table.clone();
        let refusals = Arc::clone(&refusals);
        let on_handshake_failure = on_handshake_failure.clone();
        connections.spawn(async move {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
            let mut waiting = crate::limits::pending_bytes(fd);
            // Until it holds a handshake slot, a connection holds a place in the larger pool
            // of waiting connections (the slowest dropped first), so waiting is bounded too.
            let (queued, dropped) = silent.take_with_progress(Some(addr.ip()), waiting);
            report_dropped(name, &silent, dropped, limits);
            let deadline = tokio::time::sleep(limits.handshake_timeout);
            tokio::pin!(deadline);
            if waiting == 0 {
                // Wait for real bytes: `readable()` may wake without data, and `try_io` clears
                // that readiness when the peek finds nothing.
                let first_bytes = async {
                    loop {
                        tcp.readable().await?;
                        match tcp.try_io(tokio::io::Interest::READABLE, || {
                            crate::limits::peek_pending(fd)
                        }) {
                            Ok(n) => return Ok::<u64, std::io::Error>(n as u64),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) => return Err(e),
                        }
                    }
                };
                waiting = tokio::select! {
                    () = token.cancelled() => return,
                    () = queued.evicted() => return,
                    () = &mut deadline => return,
                    first = first_bytes => match first {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    },
                };
                queued.credit(waiting);
            }
            // A handshake slot: slow holders make room; while every holder is a real
            // handshake in progress, wait for one to finish.
            let (ticket, dropped) = tokio::select! {
                () = token.cancelled() => return,
                () = queued.evicted() => return,
                () = &mut deadline => return,
                taken = handshakes.take_patient(Some(addr.ip()), waiting, EVICTABLE_BELOW) => taken,
            };
            drop(queued);
            report_dropped(name, &handshakes, dropped, limits);
            let tcp = ticket.counting(tcp);
            let handshake = tokio::select! {
                () = token.cancelled() => return,
                () = ticket.evicted() => return,
                handshake = acceptor.accept(tcp) => handshake,
            };
            drop(ticket);
            let (tls, peer) = match handshake {
                Ok(accepted) => accepted,
                Err(error) => {
                    on_handshake_failure();
                    failures.report(addr, &error.describe());
                    return;
                }
            };
            let pass = match table.admit(Some(&peer)) {
                Ok(pass) => pass,
                Err(refused) => {
                    if let Some(n) = refusals.record() {
                        tracing::warn!(
                            listener = name,
                            peer_addr = %addr,
                            %refused,
                            refused_connections = n,
                            "{name}: closed a new connection of {peer} from {addr}: {refused} \
                             ({n} refused since the last line; summarised once a minute)"
                        );
                    }
                    return;
                }
            };
            let not_after = peer_certificate_expiry(tls.get_ref().1);
            let cx = ConnectionContext {
                peer: Some(peer),
                pass: Some(pass),
                lifetime: connection_lifetime(limits.max_connection_lifetime, not_after),
                peer_addr: Some(addr),
            };
            serve_connection(tls, router, cx, limits, token).await;
        });
    }
    drop(listener);
    connections.drain(name, options.shutdown_grace).await
}

/// A pending handshake receiving fewer bytes per second than this (counting at least one
/// second) may be dropped for a newcomer: a real client sends its ClientHello (about 250 bytes
/// from rustls, more from Go) at once; an idle or trickling one does not. One that sent a hello
/// and then stalled becomes droppable within about two seconds.
const EVICTABLE_BELOW: u64 = 128;

/// Logs dropped pending connections at `warn`, summarised once a minute per pool.
fn report_dropped(name: &'static str, slots: &EvictingSlots, dropped: usize, limits: Limits) {
    if dropped > 0
        && let Some(n) = slots.record_evictions(dropped)
    {
        tracing::warn!(
            listener = name,
            dropped = n,
            "{name}: dropped {n} pending connection(s), the slowest first: {} ({}) or {} ({}) \
             were waiting for or in the TLS handshake (idle or slow clients; summarised once \
             a minute)",
            crate::limits::keys::MAX_HANDSHAKES,
            limits.max_handshakes,
            crate::limits::keys::MAX_HANDSHAKES_PER_IP,
            limits.max_handshakes_per_ip,
        );
    }
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
