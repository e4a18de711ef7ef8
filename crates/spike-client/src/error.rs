//! [`ClientError`]: what went wrong with one request, and where.

use std::time::Duration;

use spike_proto::ErrorCode;

/// [`ClientError::Timeout`] phase: opening the TCP connection.
pub const PHASE_CONNECT: &str = "connect";
/// [`ClientError::Timeout`] phase: the TLS handshake.
pub const PHASE_HANDSHAKE: &str = "TLS handshake";
/// [`ClientError::Timeout`] phase: waiting for the response head after sending.
pub const PHASE_RESPONSE_HEADERS: &str = "response headers";
/// [`ClientError::Timeout`] phase: the whole request after it was handed to the connection
/// (the request timeout expired while sending it or reading the answer).
pub const PHASE_REQUEST: &str = "request";

/// Why a request to a SPIKE server failed.
///
/// Every variant names the URL it concerns. Non-200 statuses are mapped from the status code
/// alone, as the Go clients do (docs/protocol.md#conventions): 404 → [`ClientError::NotFound`], 401 →
/// [`ClientError::Unauthorized`], 400 → [`ClientError::BadRequest`], 503 →
/// [`ClientError::NotReady`], anything else → [`ClientError::Peer`].
/// [`ClientError::error_code`] gives the SPIKE error code a Go client would report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL is not `https://host[:port][/path]`.
    #[error("invalid SPIKE URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The TLS client configuration could not be built from the identity.
    #[error("cannot build the mTLS client configuration: {0}")]
    Identity(#[source] spike_identity::IdentityError),
    /// The request body could not be encoded (not expected for SPIKE types).
    #[error("cannot encode the request to {url}: {source}")]
    Encode {
        /// The request URL.
        url: String,
        /// The serializer error.
        #[source]
        source: serde_json::Error,
    },
    /// The TCP connection could not be opened.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The server URL.
        url: String,
        /// The I/O error (refused, unreachable, DNS failure, ...).
        #[source]
        source: std::io::Error,
    },
    /// Our side rejected the server during the TLS handshake: its SVID did not verify or its
    /// SPIFFE ID is not the expected role.
    #[error(
        "TLS handshake with {url} failed: the server was rejected{} ({reason})",
        presented.as_ref().map(|id| format!(" (it presented SPIFFE ID {id})")).unwrap_or_default()
    )]
    ServerRejected {
        /// The server URL.
        url: String,
        /// The SPIFFE ID the server presented, when it had one.
        presented: Option<String>,
        /// The verifier's reason.
        reason: String,
    },
    /// The server rejected us during or right after the TLS handshake (a TLS alert): our
    /// SVID is not trusted there or our SPIFFE ID is not authorized by its handshake policy.
    #[error(
        "{url} rejected our TLS client certificate ({alert}); is our SPIFFE ID allowed there \
         and do the trust roots match?"
    )]
    RejectedByServer {
        /// The server URL.
        url: String,
        /// The TLS alert received.
        alert: String,
    },
    /// The TLS handshake failed for another reason (protocol or I/O error).
    #[error("TLS handshake with {url} failed: {source}")]
    Handshake {
        /// The server URL.
        url: String,
        /// The handshake error.
        #[source]
        source: spike_identity::HandshakeError,
    },
    /// A phase of the request did not finish in time.
    #[error("{phase} with {url} timed out after {after:?}")]
    Timeout {
        /// The server URL.
        url: String,
        /// Which phase: [`PHASE_CONNECT`], [`PHASE_HANDSHAKE`], [`PHASE_RESPONSE_HEADERS`] or
        /// [`PHASE_REQUEST`]. When the request timeout expires before the request was handed
        /// to a connection, the phase is the one that was under way (connect or handshake).
        phase: &'static str,
        /// The bound that expired.
        after: Duration,
    },
    /// The HTTP exchange failed after the connection was established (connection reset,
    /// malformed response, ...).
    #[error("HTTP request to {url} failed: {source}")]
    Transport {
        /// The request URL.
        url: String,
        /// The hyper error.
        #[source]
        source: hyper::Error,
    },
    /// A new connection was closed by the server before the request could be sent.
    #[error("{url}: the server closed the connection before the request was sent")]
    ConnectionClosed {
        /// The request URL.
        url: String,
    },
    /// The response body was larger than the configured limit.
    #[error("response from {url} exceeds {limit} bytes")]
    ResponseTooLarge {
        /// The request URL.
        url: String,
        /// The configured limit.
        limit: usize,
    },
    /// HTTP 404 (`api_not_found`).
    #[error("{url}: not found (HTTP 404)")]
    NotFound {
        /// The request URL.
        url: String,
    },
    /// HTTP 401 (`access_unauthorized`).
    #[error("{url}: unauthorized (HTTP 401)")]
    Unauthorized {
        /// The request URL.
        url: String,
    },
    /// HTTP 400 (`api_bad_request`).
    #[error("{url}: bad request (HTTP 400)")]
    BadRequest {
        /// The request URL.
        url: String,
    },
    /// HTTP 503 (`state_not_ready`): Nexus has no root key yet.
    #[error("{url}: not ready (HTTP 503)")]
    NotReady {
        /// The request URL.
        url: String,
    },
    /// Any other non-200 status (`net_peer_connection`).
    #[error("{url}: unexpected status {status}")]
    Peer {
        /// The request URL.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// A 200 response whose body carries a non-empty `err` code.
    #[error("{url}: server answered with error code {code}")]
    Api {
        /// The request URL.
        url: String,
        /// The code from the body.
        code: ErrorCode,
    },
    /// A 200 response whose body is not the expected JSON (`data_unmarshal_failure`).
    #[error("cannot decode the response from {url}: {source}")]
    Decode {
        /// The request URL.
        url: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A 200 response that lacks a field the route always returns.
    #[error("response from {url} lacks the {field:?} field")]
    MissingField {
        /// The request URL.
        url: String,
        /// The missing field.
        field: &'static str,
    },
}

impl ClientError {
    /// The SPIKE error code a Go client reports for this failure (docs/protocol.md#conventions): status codes map to
    /// `api_not_found`, `access_unauthorized`, `api_bad_request`, `state_not_ready`; other
    /// statuses and all connection failures to `net_peer_connection`; undecodable bodies to
    /// `data_unmarshal_failure`; a body `err` to itself.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ClientError::NotFound { .. } => ErrorCode::ApiNotFound,
            ClientError::Unauthorized { .. } => ErrorCode::AccessUnauthorized,
            ClientError::BadRequest { .. } => ErrorCode::ApiBadRequest,
            ClientError::NotReady { .. } => ErrorCode::StateNotReady,
            ClientError::Api { code, .. } => code.clone(),
            ClientError::Decode { .. } | ClientError::MissingField { .. } => {
                ErrorCode::DataUnmarshalFailure
            }
            ClientError::Encode { .. } => ErrorCode::DataMarshalFailure,
            ClientError::ResponseTooLarge { .. } => ErrorCode::NetReadingResponseBody,
            ClientError::InvalidUrl { .. } => ErrorCode::NetUrlJoinPathFailed,
            ClientError::Identity(_) => ErrorCode::SpiffeNilX509Source,
            ClientError::Connect { .. }
            | ClientError::ServerRejected { .. }
            | ClientError::RejectedByServer { .. }
            | ClientError::Handshake { .. }
            | ClientError::Timeout { .. }
            | ClientError::Transport { .. }
            | ClientError::ConnectionClosed { .. }
            | ClientError::Peer { .. } => ErrorCode::NetPeerConnection,
        }
    }

    /// The HTTP status, for errors that came from one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::NotFound { .. } => Some(404),
            ClientError::Unauthorized { .. } => Some(401),
            ClientError::BadRequest { .. } => Some(400),
            ClientError::NotReady { .. } => Some(503),
            ClientError::Peer { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the failure is about identity/authorization at the TLS layer (either side
    /// rejected the other); retrying will not help until configuration changes.
    pub fn is_tls_rejection(&self) -> bool {
        matches!(
            self,
            ClientError::ServerRejected { .. } | ClientError::RejectedByServer { .. }
        )
    }

    /// Whether the request certainly never reached the server's HTTP layer, so sending it
    /// to another server cannot repeat it: the TCP connection was not opened (refused,
    /// unreachable, name resolution), the TLS handshake failed or either side rejected the
    /// other's identity, a timeout expired while connecting or in the handshake, or a new
    /// connection closed before the request was written. Also true for errors raised before
    /// anything was sent (URL, encoding, TLS configuration).
    ///
    /// False when the request was (or may have been) written: a broken connection or a
    /// timeout while waiting for the answer ([`ClientError::Transport`], a `Timeout` in the
    /// `"response headers"` or `"request"` phase), and for every answer from the server.
    pub fn is_unsent(&self) -> bool {
        match self {
            ClientError::Timeout { phase, .. } => {
                matches!(*phase, PHASE_CONNECT | PHASE_HANDSHAKE)
            }
            ClientError::InvalidUrl { .. }
            | ClientError::Identity(_)
            | ClientError::Encode { .. }
            | ClientError::Connect { .. }
            | ClientError::ServerRejected { .. }
            | ClientError::RejectedByServer { .. }
            | ClientError::Handshake { .. }
            | ClientError::ConnectionClosed { .. } => true,
            ClientError::Transport { .. }
            | ClientError::ResponseTooLarge { .. }
            | ClientError::NotFound { .. }
            | ClientError::Unauthorized { .. }
            | ClientError::BadRequest { .. }
            | ClientError::NotReady { .. }
            | ClientError::Peer { .. }
            | ClientError::Api { .. }
            | ClientError::Decode { .. }
            | ClientError::MissingField { .. } => false,
        }
    }

    /// Whether the server could not be reached or did not answer in time (connect,
    /// handshake I/O, timeout, broken connection): worth retrying with backoff.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::Timeout { .. }
                | ClientError::Transport { .. }
                | ClientError::ConnectionClosed { .. }
                | ClientError::Handshake { .. }
        )
    }
}
