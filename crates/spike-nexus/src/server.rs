//! The plain (no TLS, no peer ID) accept loops: the health unix socket and the metrics
//! listener. The mTLS API listener is [`spike_daemon::serve::serve_mtls`], shared with Keeper.
//!
//! Both loops use the same per-connection driver, accept backoff and shutdown semantics as the
//! API listener: on cancellation the loop stops accepting, each connection finishes its
//! in-flight request and closes, and connections still open after the grace period are
//! dropped ([`GraceExpired`]).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use spike_daemon::serve::{ACCEPT_BACKOFF, Connections, serve_connection};
use spike_daemon::shutdown::GraceExpired;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

/// Settings of the plain accept loops.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// HTTP header read timeout.
    pub read_header_timeout: Duration,
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
    let accept = move || async move { l.accept().await.map(|(s, _)| s) };
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
    let accept = move || async move { l.accept().await.map(|(s, _)| s) };
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
    Fut: Future<Output = std::io::Result<S>>,
{
    let connections = Connections::new();
    loop {
        let stream = tokio::select! {
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
        connections.spawn(serve_connection(
            stream,
            router.clone(),
            None,
            token.clone(),
            options.read_header_timeout,
            None,
        ));
    }
    connections.drain(what, options.grace).await
}
