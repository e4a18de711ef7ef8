//! [`Session`]: the configuration plus a lazily obtained SPIFFE identity and Nexus client.
//!
//! Commands validate their input first and only then ask for [`Session::nexus`], so argument
//! and input errors never need the Workload API. Both connection steps are bounded: the
//! SVID by `spiffe_timeout`, each request by `timeout`. The SVID is fetched with one
//! Workload API call that is closed after its answer, so the SPIRE agent sees a clean end
//! of the stream rather than a cancelled one.

use std::path::Path;
use std::time::Duration;

use spike_client::{ClientError, ClientOptions, NexusClient};
use spike_identity::{Identity, IdentityError, IdentityOptions, SpiffeId};
use spike_proto::Role;

use crate::config::Config;
use crate::errors::{PilotError, is_sealed};
use crate::output::StatusReport;

/// Upper bound on the connect and TLS handshake phases.
const MAX_CONNECT: Duration = Duration::from_secs(10);

/// Upper bound on the health look-up that explains a `state_not_ready` answer.
const MAX_HEALTH_PROBE: Duration = Duration::from_secs(3);

/// One CLI invocation's connection state.
pub struct Session {
    config: Config,
    identity: Option<Identity>,
    nexus: Option<NexusClient>,
}

impl Session {
    /// A session that has not connected yet.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            identity: None,
            nexus: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This workload's SPIFFE ID, once connected.
    pub fn own_id(&self) -> Option<String> {
        self.identity.as_ref().map(|i| i.own_id().to_string())
    }

    /// Wraps a client error with the context needed for its message.
    pub fn api_error(&self, source: ClientError) -> PilotError {
        PilotError::Api {
            nexus_url: self.config.nexus_url.to_string(),
            own_id: self.own_id(),
            source: Box::new(source),
        }
    }

    /// Makes a `state_not_ready` (HTTP 503) answer precise: asks Nexus's health once (best
    /// effort, bounded) and returns [`PilotError::Sealed`] naming the state and the way out
    /// (bootstrap, keepers, `spike-operator restore` after a power cut, store error). Any
    /// other error, or a health look-up that fails, is returned unchanged (its message then
    /// is the generic sealed text). Called once for every command, at the edge.
    pub async fn explain(&self, err: PilotError) -> PilotError {
        let PilotError::Api { source, .. } = &err else {
            return err;
        };
        if !is_sealed(source) {
            return err;
        }
        let Some(nexus) = &self.nexus else {
            return err;
        };
        let bound = self.config.timeout.min(MAX_HEALTH_PROBE);
        let health = match tokio::time::timeout(bound, nexus.health()).await {
            Ok(Ok(health)) if health.is_supported() => health,
            // No health route (a Go Nexus), a failed or a slow look-up: the generic text.
            Ok(Ok(_)) | Ok(Err(_)) | Err(_) => return err,
        };
        let nexus_url = self.config.nexus_url.to_string();
        let report = StatusReport::from_health(&nexus_url, health.status, &health.body);
        let state = report.sealed_state().unwrap_or_else(|| {
            // It unsealed between the request and the health look-up.
            "unsealed now, but was sealed when the request arrived; try again".to_owned()
        });
        PilotError::Sealed { nexus_url, state }
    }

    /// The Nexus client, obtaining the SVID first if needed.
    ///
    /// # Errors
    /// [`PilotError::Identity`] when the Workload API gives no SVID in time,
    /// [`PilotError::Api`] when the TLS configuration cannot be built.
    pub async fn nexus(&mut self) -> Result<NexusClient, PilotError> {
        if let Some(client) = &self.nexus {
            return Ok(client.clone());
        }
        let identity = match &self.identity {
            Some(identity) => identity.clone(),
            None => {
                let identity = connect_identity(&self.config).await?;
                self.identity = Some(identity.clone());
                identity
            }
        };
        let timeout = self.config.timeout;
        let options = ClientOptions {
            connect_timeout: timeout.min(MAX_CONNECT),
            handshake_timeout: timeout.min(MAX_CONNECT),
            response_header_timeout: timeout,
            request_timeout: timeout,
            ..ClientOptions::default()
        };
        let client = NexusClient::new(
            &identity,
            self.config.nexus_url.clone(),
            &self.config.trust_roots,
            options,
        )
        .map_err(|e| self.api_error(e))?;
        self.nexus = Some(client.clone());
        Ok(client)
    }

    /// Releases the identity. The SVID was fetched once ([`Identity::fetch_once`]), so no
    /// Workload API stream is open by now; this also stops a watcher if one ever was.
    pub async fn close(self) {
        if let Some(identity) = self.identity {
            identity.shutdown().await;
        }
    }
}

/// The filesystem path of a `unix:` endpoint.
pub fn unix_socket_path(endpoint: &str) -> Option<&str> {
    let rest = endpoint.strip_prefix("unix:")?;
    Some(rest.strip_prefix("//").unwrap_or(rest))
}

async fn connect_identity(config: &Config) -> Result<Identity, PilotError> {
    let endpoint = config.endpoint.clone();
    let fail = |reason: String| PilotError::Identity {
        endpoint: endpoint.clone(),
        reason,
    };
    if let Some(path) = unix_socket_path(&endpoint)
        && !Path::new(path).exists()
    {
        return Err(fail(
            "does not exist: no socket at that path (is the SPIRE agent running? set \
             SPIFFE_ENDPOINT_SOCKET or spiffe_endpoint_socket in the configuration file)"
                .to_owned(),
        ));
    }
    let domains: Vec<String> = config
        .trust_roots
        .roots(Role::Nexus)
        .iter()
        .filter_map(|root| root.as_str().split('/').next().map(str::to_owned))
        .collect();
    let trust_domains = spike_identity::parse_trust_domains(&domains)
        .map_err(|e| fail(format!("cannot be used: {e}")))?;
    let expected_id = match &config.spiffe_id {
        Some(id) => Some(
            SpiffeId::new(id).map_err(|e| fail(format!("cannot be used: bad SPIFFE ID: {e}")))?,
        ),
        None => None,
    };
    let options = IdentityOptions {
        endpoint: Some(endpoint.clone()),
        timeout: config.spiffe_timeout,
        expected_id,
        trust_domains: Some(trust_domains),
    };
    // One FetchX509SVID call, closed after its first answer: a CLI that lives for a second
    // must not leave SPIRE a watching stream to cancel mid-attestation at exit (the agent
    // logs each such cancel as an error).
    Identity::fetch_once(options)
        .await
        .map_err(|err| match err {
            IdentityError::Timeout {
                timeout, expected, ..
            } => fail(format!(
                "gave no usable X.509-SVID{} within {timeout:?} (is the SPIRE agent running, is \
                 the socket reachable, and is this workload registered?)",
                expected.map(|id| format!(" for {id}")).unwrap_or_default()
            )),
            other => fail(format!("failed: {other}")),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths() {
        assert_eq!(unix_socket_path("unix:///tmp/a.sock"), Some("/tmp/a.sock"));
        assert_eq!(unix_socket_path("unix:/tmp/a.sock"), Some("/tmp/a.sock"));
        assert_eq!(unix_socket_path("tcp://127.0.0.1:1"), None);
    }
}
