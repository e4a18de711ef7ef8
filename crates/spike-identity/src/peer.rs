//! Per-connection peer identity and handshake helpers with timeouts.
//!
//! A server accepts TCP (or unix) connections itself, spawns one task per connection and
//! calls [`MtlsAcceptor::accept`] there, so a slow handshake never blocks the accept loop.
//! The returned [`PeerId`] is `Clone + Send + Sync`, ready to be inserted into each
//! request's extensions by a hyper/axum service wrapper.

use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, CommonState, ServerConfig};
use rustls_pki_types::ServerName;
use spiffe::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::HandshakeError;

/// The default bound on one TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The authenticated SPIFFE ID of the peer of one connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerId(SpiffeId);

impl PeerId {
    /// Wraps an ID (tests, or callers that authenticated a peer otherwise).
    pub fn new(id: SpiffeId) -> Self {
        Self(id)
    }

    /// The peer's SPIFFE ID.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.0
    }

    /// Unwraps the SPIFFE ID.
    pub fn into_inner(self) -> SpiffeId {
        self.0
    }
}

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The SPIFFE ID in the URI SAN of the peer's leaf certificate, if the handshake has
/// completed and the leaf carries exactly one SPIFFE ID. Accepts `&ServerConnection` and
/// `&ClientConnection` through deref.
pub fn peer_spiffe_id(conn: &CommonState) -> Option<SpiffeId> {
    let leaf = conn.peer_certificates()?.first()?;
    spiffe::cert::spiffe_id_from_der(leaf).ok()
}

/// The expiry (`notAfter`) of the peer's leaf certificate, if the handshake has completed and
/// the certificate parses. Servers bound a connection's life by it, so a kept-alive connection
/// never outlives the credential it was authenticated with.
pub fn peer_certificate_expiry(conn: &CommonState) -> Option<std::time::SystemTime> {
    let leaf = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Accepts mTLS connections with a handshake timeout and returns the peer's ID.
#[derive(Clone)]
pub struct MtlsAcceptor {
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for MtlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsAcceptor")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl MtlsAcceptor {
    /// An acceptor for `config` (from [`crate::Identity::server_config`]).
    pub fn new(config: Arc<ServerConfig>, handshake_timeout: Duration) -> Self {
        Self {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            handshake_timeout,
        }
    }

    /// Runs the server handshake on `io`.
    ///
    /// # Errors
    /// [`HandshakeError::Timeout`], [`HandshakeError::Tls`] (including rejected peers) or
    /// [`HandshakeError::NoPeerId`].
    pub async fn accept<IO>(
        &self,
        io: IO,
    ) -> Result<(tokio_rustls::server::TlsStream<IO>, PeerId), HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(io))
            .await
            .map_err(|_| HandshakeError::Timeout(self.handshake_timeout))?
            .map_err(HandshakeError::Tls)?;
        let peer = peer_spiffe_id(stream.get_ref().1).ok_or(HandshakeError::NoPeerId)?;
        Ok((stream, PeerId(peer)))
    }
}

/// Opens mTLS connections with a handshake timeout and returns the server's ID.
#[derive(Clone)]
pub struct MtlsConnector {
    connector: tokio_rustls::TlsConnector,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for MtlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsConnector")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl MtlsConnector {
    /// A connector for `config` (from [`crate::Identity::client_config`]).
    pub fn new(config: Arc<ClientConfig>, handshake_timeout: Duration) -> Self {
        Self {
            connector: tokio_rustls::TlsConnector::from(config),
            handshake_timeout,
        }
    }

    /// Runs the client handshake on `io`. The server name only fills SNI; it is not
    /// verified (the server is authenticated by its SPIFFE ID).
    ///
    /// # Errors
    /// As [`MtlsAcceptor::accept`].
    pub async fn connect<IO>(
        &self,
        server_name: ServerName<'static>,
        io: IO,
    ) -> Result<(tokio_rustls::client::TlsStream<IO>, PeerId), HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = tokio::time::timeout(
            self.handshake_timeout,
            self.connector.connect(server_name, io),
        )
        .await
        .map_err(|_| HandshakeError::Timeout(self.handshake_timeout))?
        .map_err(HandshakeError::Tls)?;
        let peer = peer_spiffe_id(stream.get_ref().1).ok_or(HandshakeError::NoPeerId)?;
        Ok((stream, PeerId(peer)))
    }
}
