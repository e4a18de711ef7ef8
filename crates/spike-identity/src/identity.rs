//! [`Identity`]: the workload's X.509-SVID and trust bundles from the SPIFFE Workload API.

use std::sync::Arc;
use std::time::Duration;

use spiffe::x509_source::SvidPicker;
use spiffe::{SpiffeId, TrustDomain, X509Source, X509SourceError, X509SourceUpdates, X509Svid};

use crate::error::IdentityError;
use crate::tls::RejectLog;

/// SPIKE's default Workload API endpoint (SPIRE agent's public socket).
pub const DEFAULT_ENDPOINT: &str = "unix:///tmp/spire-agent/public/api.sock";
/// The environment variable naming the Workload API endpoint.
pub const ENDPOINT_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";
/// The default bounded wait for the first SVID.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Picks the endpoint: the explicit argument, else the environment value, else
/// [`DEFAULT_ENDPOINT`]. Empty strings count as unset.
pub fn resolve_endpoint(explicit: Option<&str>, env_value: Option<&str>) -> String {
    explicit
        .filter(|s| !s.trim().is_empty())
        .or(env_value.filter(|s| !s.trim().is_empty()))
        .unwrap_or(DEFAULT_ENDPOINT)
        .trim()
        .to_owned()
}

/// Options for [`Identity::connect_with`].
#[derive(Debug, Clone)]
pub struct IdentityOptions {
    /// Workload API endpoint; `None` means `SPIFFE_ENDPOINT_SOCKET`, else [`DEFAULT_ENDPOINT`].
    pub endpoint: Option<String>,
    /// Bounded wait for the first usable SVID.
    pub timeout: Duration,
    /// When the agent returns several SVIDs, use the one with this ID (and fail with a
    /// clear error if it never arrives) instead of the first.
    pub expected_id: Option<SpiffeId>,
    /// Trust domains whose peers are accepted. `None` (the default) accepts only the trust
    /// domain of the workload's own SVID, read per handshake.
    pub trust_domains: Option<Vec<TrustDomain>>,
}

impl Default for IdentityOptions {
    fn default() -> Self {
        Self {
            endpoint: None,
            timeout: DEFAULT_CONNECT_TIMEOUT,
            expected_id: None,
            trust_domains: None,
        }
    }
}

#[derive(Debug)]
struct ExactPicker(SpiffeId);

impl SvidPicker for ExactPicker {
    fn pick_svid(&self, svids: &[Arc<X509Svid>]) -> Option<usize> {
        svids.iter().position(|svid| svid.spiffe_id() == &self.0)
    }
}

/// The workload's live SPIFFE identity (SVID + bundles, rotated in the background).
///
/// Cheap to clone; every clone shares one `X509Source`. TLS configurations built from it
/// ([`Identity::server_config`], [`Identity::client_config`]) read the current SVID and
/// bundles on every handshake, so a rotation needs no rebuild.
#[derive(Clone, Debug)]
pub struct Identity {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) source: X509Source,
    pub(crate) endpoint: String,
    pub(crate) initial_id: SpiffeId,
    pub(crate) trust_domains: Option<Vec<TrustDomain>>,
    pub(crate) rejects: RejectLog,
}

impl Identity {
    /// Connects to the Workload API (`endpoint`, else `SPIFFE_ENDPOINT_SOCKET`, else
    /// [`DEFAULT_ENDPOINT`]) and waits at most `timeout` for a usable SVID.
    ///
    /// # Errors
    /// [`IdentityError::Timeout`] naming the endpoint when no SVID arrives in time;
    /// [`IdentityError::InvalidEndpoint`] for a malformed endpoint; [`IdentityError::Source`]
    /// when the agent answers with a non-retryable error.
    pub async fn connect(endpoint: Option<&str>, timeout: Duration) -> Result<Self, IdentityError> {
        Self::connect_with(IdentityOptions {
            endpoint: endpoint.map(str::to_owned),
            timeout,
            ..IdentityOptions::default()
        })
        .await
    }

    /// Connects with full [`IdentityOptions`].
    ///
    /// # Errors
    /// As [`Identity::connect`].
    pub async fn connect_with(options: IdentityOptions) -> Result<Self, IdentityError> {
        let env = std::env::var(ENDPOINT_ENV).ok();
        let endpoint = resolve_endpoint(options.endpoint.as_deref(), env.as_deref());
        let timeout = options.timeout;
        let expected = options.expected_id.as_ref().map(ToString::to_string);
        let timeout_error = || IdentityError::Timeout {
            endpoint: endpoint.clone(),
            timeout,
            expected: expected.clone(),
        };

        let mut builder = X509Source::builder()
            .endpoint(&endpoint)
            .initial_sync_timeout(timeout)
            .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(10));
        if let Some(id) = options.expected_id.clone() {
            builder = builder.picker(ExactPicker(id));
        }
        tracing::debug!(endpoint = %endpoint, ?timeout, "connecting to the SPIFFE Workload API");
        // The outer timeout is a second guard: the source's own timeout bounds only its
        // initial sync, and this call must never hang.
        let built = tokio::time::timeout(timeout + Duration::from_secs(1), builder.build()).await;
        let source = match built {
            Err(_) => return Err(timeout_error()),
            Ok(Ok(source)) => source,
            Ok(Err(X509SourceError::InitialSyncTimeout)) => return Err(timeout_error()),
            Ok(Err(err @ X509SourceError::Source(spiffe::WorkloadApiError::Endpoint(_)))) => {
                return Err(IdentityError::InvalidEndpoint {
                    endpoint,
                    source: err,
                });
            }
            Ok(Err(err)) => {
                return Err(IdentityError::Source {
                    endpoint,
                    source: err,
                });
            }
        };
        Self::from_source_inner(source, endpoint, options.trust_domains)
    }

    /// Wraps an already built `X509Source` (which must hold an SVID).
    ///
    /// # Errors
    /// [`IdentityError::NoSvid`] if the source has no current SVID.
    pub fn from_source(
        source: X509Source,
        trust_domains: Option<Vec<TrustDomain>>,
    ) -> Result<Self, IdentityError> {
        Self::from_source_inner(source, String::from("<external X509Source>"), trust_domains)
    }

    fn from_source_inner(
        source: X509Source,
        endpoint: String,
        trust_domains: Option<Vec<TrustDomain>>,
    ) -> Result<Self, IdentityError> {
        let svid = source.svid().map_err(IdentityError::NoSvid)?;
        let initial_id = svid.spiffe_id().clone();
        tracing::info!(spiffe_id = %initial_id, endpoint = %endpoint, "obtained X.509-SVID");
        Ok(Self {
            inner: Arc::new(Inner {
                source,
                endpoint,
                initial_id,
                trust_domains,
                rejects: RejectLog::default(),
            }),
        })
    }

    /// The workload's own SPIFFE ID (of the current SVID; the first one seen if the source
    /// has none right now).
    pub fn own_id(&self) -> SpiffeId {
        self.inner
            .source
            .try_svid()
            .map_or_else(|| self.inner.initial_id.clone(), |s| s.spiffe_id().clone())
    }

    /// The current SVID.
    ///
    /// # Errors
    /// [`IdentityError::NoSvid`] if the source is closed or holds no usable SVID.
    pub fn current_svid(&self) -> Result<Arc<X509Svid>, IdentityError> {
        self.inner.source.svid().map_err(IdentityError::NoSvid)
    }

    /// The underlying `X509Source`.
    pub fn x509_source(&self) -> &X509Source {
        &self.inner.source
    }

    /// The endpoint this identity was obtained from.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// A receiver of rotation notifications: `updates().changed().await` resolves after the
    /// next SVID or bundle change.
    pub fn updates(&self) -> X509SourceUpdates {
        self.inner.source.updated()
    }

    /// Trust domains accepted for peers: the configured list, else the own SVID's.
    pub fn accepted_trust_domains(&self) -> Vec<TrustDomain> {
        match &self.inner.trust_domains {
            Some(list) => list.clone(),
            None => vec![self.own_id().trust_domain().clone()],
        }
    }

    /// `true` while the source holds a valid, unexpired SVID and is still updating.
    pub fn is_healthy(&self) -> bool {
        self.inner.source.is_healthy()
    }

    /// Stops the background Workload API watcher (all clones are affected).
    pub async fn shutdown(&self) {
        self.inner.source.shutdown().await;
    }
}

/// Parses trust domain names (e.g. from configuration) for [`IdentityOptions::trust_domains`].
///
/// # Errors
/// [`IdentityError::InvalidTrustDomain`] naming the first bad entry.
pub fn parse_trust_domains<S: AsRef<str>>(
    names: impl IntoIterator<Item = S>,
) -> Result<Vec<TrustDomain>, IdentityError> {
    names
        .into_iter()
        .map(|n| {
            TrustDomain::new(n.as_ref()).map_err(|source| IdentityError::InvalidTrustDomain {
                name: n.as_ref().to_owned(),
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_resolution_order() {
        assert_eq!(
            resolve_endpoint(Some("unix:/a"), Some("unix:/b")),
            "unix:/a"
        );
        assert_eq!(resolve_endpoint(None, Some("unix:/b")), "unix:/b");
        assert_eq!(resolve_endpoint(Some(" "), Some("")), DEFAULT_ENDPOINT);
        assert_eq!(resolve_endpoint(None, None), DEFAULT_ENDPOINT);
    }

    #[test]
    fn trust_domains_parse() {
        let tds = parse_trust_domains(["spike.ist", "example.org"]).unwrap();
        assert_eq!(tds.len(), 2);
        assert!(matches!(
            parse_trust_domains(["bad domain!"]),
            Err(IdentityError::InvalidTrustDomain { .. })
        ));
    }
}
