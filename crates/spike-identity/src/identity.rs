//! [`Identity`]: the workload's X.509-SVID and trust bundles from the SPIFFE Workload API.

use std::sync::Arc;
use std::time::Duration;

use spiffe::x509_source::SvidPicker;
use spiffe::{
    SpiffeId, TrustDomain, WorkloadApiClient, X509Bundle, X509BundleSet, X509Source,
    X509SourceError, X509SourceUpdates, X509Svid,
};

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
    pub(crate) source: Material,
    pub(crate) endpoint: String,
    pub(crate) initial_id: SpiffeId,
    pub(crate) trust_domains: Option<Vec<TrustDomain>>,
    pub(crate) rejects: RejectLog,
}

/// Where the SVID and bundles come from.
#[derive(Debug)]
pub(crate) enum Material {
    /// A live `X509Source`: a Workload API stream kept open, rotating in the background.
    Live(X509Source),
    /// One answer of the Workload API, fetched once ([`Identity::fetch_once`]); no stream is
    /// left open.
    Snapshot {
        /// The selected SVID.
        svid: Arc<X509Svid>,
        /// The trust bundles of that answer.
        bundles: Arc<X509BundleSet>,
    },
}

impl Material {
    /// The current SVID, if any.
    pub(crate) fn try_svid(&self) -> Option<Arc<X509Svid>> {
        match self {
            Self::Live(source) => source.try_svid(),
            Self::Snapshot { svid, .. } => Some(Arc::clone(svid)),
        }
    }

    /// The current bundle of `td`, if any.
    pub(crate) fn try_bundle_for_trust_domain(&self, td: &TrustDomain) -> Option<Arc<X509Bundle>> {
        match self {
            Self::Live(source) => source.try_bundle_for_trust_domain(td),
            Self::Snapshot { bundles, .. } => bundles.get(td),
        }
    }
}

/// Rotation notifications of an [`Identity`] ([`Identity::updates`]).
#[derive(Debug)]
pub struct IdentityUpdates(Option<X509SourceUpdates>);

impl IdentityUpdates {
    /// Waits for the next SVID or bundle change and returns its sequence number.
    ///
    /// # Errors
    /// [`IdentityError::NoSvid`] with `Closed` once the source is shut down, and at once for
    /// a one-shot identity ([`Identity::fetch_once`]), which never changes.
    pub async fn changed(&mut self) -> Result<u64, IdentityError> {
        match &mut self.0 {
            Some(updates) => updates.changed().await.map_err(IdentityError::NoSvid),
            None => Err(IdentityError::NoSvid(X509SourceError::Closed)),
        }
    }
}

/// The expiry (`notAfter`) of an SVID's leaf certificate, as Unix seconds.
pub(crate) fn svid_expiry_unix(svid: &X509Svid) -> Option<i64> {
    let der = svid.leaf().as_bytes();
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The expiry of an SVID as RFC 3339 (UTC) for logs, or `unknown`.
pub(crate) fn svid_expiry_text(svid: &X509Svid) -> String {
    svid_expiry_unix(svid)
        .and_then(|t| x509_parser::time::ASN1Time::from_timestamp(t).ok())
        .map_or_else(|| "unknown".to_owned(), |t| t.to_string())
}

/// Unix seconds now.
fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Picks the SVID of one Workload API answer: `expected`, else the first (default) one.
fn pick(svids: &[Arc<X509Svid>], expected: Option<&SpiffeId>) -> Option<Arc<X509Svid>> {
    match expected {
        Some(id) => svids.iter().find(|s| s.spiffe_id() == id).cloned(),
        None => svids.first().cloned(),
    }
}

/// Backoff bounds of [`Identity::fetch_once`] while the agent has no identity for us yet.
const FETCH_RETRY_MIN: Duration = Duration::from_millis(100);
const FETCH_RETRY_MAX: Duration = Duration::from_secs(1);

impl Identity {
    /// Fetches the SVID and bundles once with a unary-style call (`FetchX509SVID`, first
    /// answer only) and keeps no Workload API stream open: for short-lived processes such as
    /// the `spike` CLI. The SVID does not rotate; TLS configurations built from it present it
    /// until the process ends.
    ///
    /// A long-lived [`X509Source`] ([`Identity::connect_with`]) opens a second, watching
    /// stream right after its first answer; a process that exits a few milliseconds later
    /// cancels that stream while the agent is still attesting it, which SPIRE logs as an
    /// error (`context canceled`). Here the only call has completed attestation and answered
    /// before it is closed, which SPIRE treats as a normal end of the stream.
    ///
    /// Waits at most `options.timeout`, retrying while the agent has no (usable, expected)
    /// SVID for this workload.
    ///
    /// # Errors
    /// As [`Identity::connect_with`]: [`IdentityError::Timeout`] naming the endpoint,
    /// [`IdentityError::InvalidEndpoint`] for a malformed endpoint.
    pub async fn fetch_once(options: IdentityOptions) -> Result<Self, IdentityError> {
        let env = std::env::var(ENDPOINT_ENV).ok();
        let endpoint = resolve_endpoint(options.endpoint.as_deref(), env.as_deref());
        let timeout = options.timeout;
        let timeout_error = || IdentityError::Timeout {
            endpoint: endpoint.clone(),
            timeout,
            expected: options.expected_id.as_ref().map(ToString::to_string),
        };
        if let Err(source) = spiffe::transport::Endpoint::parse(&endpoint) {
            return Err(IdentityError::InvalidEndpoint {
                endpoint,
                source: X509SourceError::Source(spiffe::WorkloadApiError::Endpoint(source)),
            });
        }
        tracing::debug!(endpoint = %endpoint, ?timeout, "fetching the X.509-SVID once");
        let attempts = async {
            let mut backoff = FETCH_RETRY_MIN;
            loop {
                match fetch_snapshot(&endpoint, options.expected_id.as_ref()).await {
                    Ok(found) => return found,
                    Err(reason) => {
                        tracing::debug!(endpoint = %endpoint, %reason, "no usable SVID yet");
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(FETCH_RETRY_MAX);
            }
        };
        let (svid, bundles) = tokio::time::timeout(timeout, attempts)
            .await
            .map_err(|_| timeout_error())?;
        let initial_id = svid.spiffe_id().clone();
        tracing::info!(
            spiffe_id = %initial_id,
            endpoint = %endpoint,
            expires = %svid_expiry_text(&svid),
            "obtained X.509-SVID (one-shot fetch)"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                source: Material::Snapshot { svid, bundles },
                endpoint,
                initial_id,
                trust_domains: options.trust_domains,
                rejects: RejectLog::default(),
            }),
        })
    }

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
        tracing::info!(
            spiffe_id = %initial_id,
            endpoint = %endpoint,
            expires = %svid_expiry_text(&svid),
            "obtained X.509-SVID {initial_id} (expires {})",
            svid_expiry_text(&svid)
        );
        let identity = Self {
            inner: Arc::new(Inner {
                source: Material::Live(source),
                endpoint,
                initial_id,
                trust_domains,
                rejects: RejectLog::default(),
            }),
        };
        identity.spawn_rotation_log(svid);
        Ok(identity)
    }

    /// Logs every SVID rotation at `info` (SPIFFE ID and new expiry, never key material)
    /// until the source closes. Needs a Tokio runtime; without one nothing is logged.
    fn spawn_rotation_log(&self, first: Arc<X509Svid>) {
        let Material::Live(source) = &self.inner.source else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut updates = source.updated();
        // A weak handle: the task must not keep the source (and its stream) alive.
        let inner = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            let mut last = first;
            while updates.changed().await.is_ok() {
                let Some(inner) = inner.upgrade() else { return };
                let Some(svid) = inner.source.try_svid() else {
                    continue;
                };
                if Arc::ptr_eq(&svid, &last) || svid.leaf().as_bytes() == last.leaf().as_bytes() {
                    // A bundle-only update.
                    continue;
                }
                let expires = svid_expiry_text(&svid);
                tracing::info!(
                    spiffe_id = %svid.spiffe_id(),
                    expires = %expires,
                    "X.509-SVID rotated: now presenting {} (expires {expires})",
                    svid.spiffe_id()
                );
                last = svid;
            }
        });
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
        match &self.inner.source {
            Material::Live(source) => source.svid().map_err(IdentityError::NoSvid),
            Material::Snapshot { svid, .. } => Ok(Arc::clone(svid)),
        }
    }

    /// The underlying `X509Source`; `None` for a one-shot identity ([`Identity::fetch_once`]).
    pub fn x509_source(&self) -> Option<&X509Source> {
        match &self.inner.source {
            Material::Live(source) => Some(source),
            Material::Snapshot { .. } => None,
        }
    }

    /// The endpoint this identity was obtained from.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// A receiver of rotation notifications: `updates().changed().await` resolves after the
    /// next SVID or bundle change.
    pub fn updates(&self) -> IdentityUpdates {
        match &self.inner.source {
            Material::Live(source) => IdentityUpdates(Some(source.updated())),
            Material::Snapshot { .. } => IdentityUpdates(None),
        }
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
        match &self.inner.source {
            Material::Live(source) => source.is_healthy(),
            Material::Snapshot { svid, .. } => {
                svid_expiry_unix(svid).is_some_and(|expiry| expiry > now_unix())
            }
        }
    }

    /// Stops the background Workload API watcher (all clones are affected); nothing to do
    /// for a one-shot identity.
    pub async fn shutdown(&self) {
        if let Material::Live(source) = &self.inner.source {
            source.shutdown().await;
        }
    }
}

/// One `FetchX509SVID` call: the first answer, then the stream is closed.
async fn fetch_snapshot(
    endpoint: &str,
    expected: Option<&SpiffeId>,
) -> Result<(Arc<X509Svid>, Arc<X509BundleSet>), String> {
    let client = WorkloadApiClient::connect_to(endpoint)
        .await
        .map_err(|e| e.to_string())?;
    let context = client
        .fetch_x509_context()
        .await
        .map_err(|e| e.to_string())?;
    let svid = pick(context.svids(), expected).ok_or_else(|| {
        expected.map_or_else(
            || "the answer holds no SVID".to_owned(),
            |id| format!("the answer holds no SVID for {id}"),
        )
    })?;
    if svid_expiry_unix(&svid).is_none_or(|expiry| expiry <= now_unix()) {
        return Err(format!("the SVID for {} has expired", svid.spiffe_id()));
    }
    Ok((svid, Arc::clone(context.bundle_set())))
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

    #[tokio::test]
    async fn svid_expiry_is_read_from_the_leaf() {
        let pki = spike_testkit::TestPki::new().unwrap();
        let server = spike_testkit::WorkloadApiServer::start_in_tempdir(
            &pki,
            &["spiffe://spike.test/spike/nexus"],
        )
        .unwrap();
        let identity = Identity::fetch_once(IdentityOptions {
            endpoint: Some(server.endpoint()),
            timeout: Duration::from_secs(5),
            ..IdentityOptions::default()
        })
        .await
        .unwrap();
        let svid = identity.current_svid().unwrap();
        let expiry = svid_expiry_unix(&svid).unwrap();
        let validity = i64::try_from(spike_testkit::ca::SVID_VALIDITY.as_secs()).unwrap();
        let now = now_unix();
        assert!(
            expiry > now + validity - 120 && expiry <= now + validity + 120,
            "expiry {expiry}, now {now}"
        );
        let text = svid_expiry_text(&svid);
        assert_ne!(text, "unknown");
        assert!(text.contains(&time_year(expiry)), "{text}");
    }

    /// The calendar year of a Unix time (for a loose check of the formatted expiry).
    fn time_year(unix: i64) -> String {
        x509_parser::time::ASN1Time::from_timestamp(unix)
            .unwrap()
            .to_datetime()
            .year()
            .to_string()
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
