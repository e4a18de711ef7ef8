//! Error types of the identity crate.

use std::time::Duration;

/// Errors obtaining or using the workload's SPIFFE identity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The endpoint string is not a valid Workload API address.
    #[error("invalid SPIFFE Workload API endpoint {endpoint:?}: {source}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was rejected.
        #[source]
        source: spiffe::X509SourceError,
    },
    /// No usable X.509-SVID arrived from the Workload API within the deadline.
    #[error(
        "no usable X.509-SVID{} from the SPIFFE Workload API at {endpoint} within {timeout:?} \
         (is the SPIRE agent running, is the socket reachable, and is this workload registered?)",
        expected.as_ref().map(|id| format!(" for {id}")).unwrap_or_default()
    )]
    Timeout {
        /// The endpoint that was tried.
        endpoint: String,
        /// The bounded wait that expired.
        timeout: Duration,
        /// The SPIFFE ID that was asked for, if any.
        expected: Option<String>,
    },
    /// The Workload API refused or failed in a way that retrying will not fix.
    #[error("SPIFFE Workload API at {endpoint} failed: {source}")]
    Source {
        /// The endpoint that was tried.
        endpoint: String,
        /// The underlying error.
        #[source]
        source: spiffe::X509SourceError,
    },
    /// The source currently holds no usable SVID (closed, withdrawn or expired).
    #[error("no current X.509-SVID: {0}")]
    NoSvid(#[source] spiffe::X509SourceError),
    /// A trust domain name given in the configuration is invalid.
    #[error("invalid trust domain {name:?}: {source}")]
    InvalidTrustDomain {
        /// The name as given.
        name: String,
        /// Why it was rejected.
        #[source]
        source: spiffe::SpiffeIdError,
    },
    /// rustls refused to build a configuration.
    #[error("TLS configuration error: {0}")]
    Tls(#[from] rustls::Error),
}

/// Errors of a single TLS handshake through [`crate::MtlsAcceptor`] or [`crate::MtlsConnector`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The handshake did not finish within the configured timeout.
    #[error("TLS handshake timed out after {0:?}")]
    Timeout(Duration),
    /// The handshake failed (bad certificate, unauthorized peer, I/O error).
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    /// The handshake finished but the peer certificate carries no SPIFFE ID (cannot happen
    /// with this crate's verifiers; kept as a guard).
    #[error("peer presented no SPIFFE ID")]
    NoPeerId,
}

impl HandshakeError {
    /// A one-line cause for the accept loop's log: for a peer rejected by SPIFFE policy after
    /// its certificate was parsed, `client <SPIFFE ID> rejected: <reason>`; otherwise the
    /// error itself (protocol or I/O failure, timeout).
    pub fn describe(&self) -> String {
        match crate::PeerRejected::find(self) {
            Some(crate::PeerRejected(reason, Some(id))) => {
                format!("client {id} rejected: {reason}")
            }
            Some(crate::PeerRejected(reason, None)) => {
                format!("client without a SPIFFE ID rejected: {reason}")
            }
            None => self.to_string(),
        }
    }
}
