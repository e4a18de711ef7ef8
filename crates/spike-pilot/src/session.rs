//! [`Session`]: the configuration plus a lazily obtained SPIFFE identity and Nexus client.
//!
//! Commands validate their input first and only then send a request, so argument
//! and input errors never need the Workload API. Both connection steps are bounded: the
//! SVID by `spiffe_timeout`, each request by `timeout`. Every request goes through
//! [`Session::read`] or [`Session::write`] (or [`Session::read_unless`]), which try the
//! configured Nexus URLs under the rule of [`crate::failover`]. The SVID is fetched with one
//! Workload API call that is closed after its answer, so the SPIRE agent sees a clean end
//! of the stream rather than a cancelled one.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use spike_client::{ClientError, ClientOptions, NexusClient};
use spike_identity::{Identity, IdentityError, IdentityOptions, SpiffeId};
use spike_proto::Role;

use crate::config::Config;
use crate::errors::{PilotError, UrlFailure, is_sealed};
use crate::failover::{self, Call, Outcome};
use crate::output::StatusReport;

/// Upper bound on the connect and TLS handshake phases.
const MAX_CONNECT: Duration = Duration::from_secs(10);

/// The same bound when several Nexus URLs are configured: a host that is powered off (no
/// answer at all) costs this much before the next URL is tried.
const MAX_CONNECT_FAILOVER: Duration = Duration::from_secs(2);

/// Upper bound on the health look-up that explains a `state_not_ready` answer.
const MAX_HEALTH_PROBE: Duration = Duration::from_secs(3);

/// One CLI invocation's connection state.
pub struct Session {
    config: Config,
    identity: Option<Identity>,
    /// One client per configured URL, built on first use.
    clients: Vec<Option<NexusClient>>,
    /// The URL that answered last in this invocation: later requests start there.
    answered: Option<usize>,
}

impl Session {
    /// A session that has not connected yet.
    pub fn new(config: Config) -> Self {
        let clients = vec![None; config.nexus_urls.len()];
        Self {
            config,
            identity: None,
            clients,
            answered: None,
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

    /// The URL at `index` of the configured list, as given.
    fn url(&self, index: usize) -> String {
        self.config
            .nexus_urls
            .get(index)
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    /// Wraps a client error from the Nexus at `nexus_url` with the context for its message.
    pub fn api_error(&self, nexus_url: &str, source: ClientError) -> PilotError {
        PilotError::Api {
            nexus_url: nexus_url.to_owned(),
            own_id: self.own_id(),
            source: Box::new(source),
        }
    }

    /// Refuses a command that must reach one particular instance when several URLs are
    /// configured (`operator restore`: the shards collect in that instance's memory).
    ///
    /// # Errors
    /// [`PilotError::Usage`] naming the URLs and the way out (`--nexus-url`).
    pub fn require_single_url(&self, command: &str) -> Result<(), PilotError> {
        let urls = &self.config.nexus_urls;
        if urls.len() <= 1 {
            return Ok(());
        }
        let list: Vec<&str> = urls.iter().map(spike_client::BaseUrl::as_str).collect();
        Err(PilotError::Usage(format!(
            "Error: {command} talks to one SPIKE Nexus instance, but {} URLs are configured \
             ({}); choose the instance with --nexus-url URL.",
            urls.len(),
            list.join(", ")
        )))
    }

    /// Sends a request that changes nothing stored ([`Call::Read`]) under the failover rule
    /// ([`crate::failover`]); `attempt` gets the client of each URL tried.
    ///
    /// # Errors
    /// [`PilotError::Identity`] without an SVID; [`PilotError::Api`] for the answer (or the
    /// only URL's failure); [`PilotError::NoInstance`] when no URL served it.
    pub async fn read<T, F, Fut>(&mut self, attempt: F) -> Result<T, PilotError>
    where
        F: FnMut(NexusClient) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        self.call(Call::Read, attempt, |_| false)
            .await
            .map(|(_, v)| v)
    }

    /// Sends a request that changes stored state ([`Call::Write`]): it goes to another URL
    /// only when it certainly did not reach the previous one ([`crate::failover`]).
    ///
    /// # Errors
    /// As [`Session::read`], plus [`PilotError::OutcomeUnknown`] when the write may have
    /// reached an instance (several URLs configured).
    pub async fn write<T, F, Fut>(&mut self, attempt: F) -> Result<T, PilotError>
    where
        F: FnMut(NexusClient) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        self.call(Call::Write, attempt, |_| false)
            .await
            .map(|(_, v)| v)
    }

    /// Like [`Session::read`]; an answer for which `unavailable` is true moves on like a
    /// 503 and stands only if no other URL answers better. Returns the URL that answered.
    ///
    /// # Errors
    /// As [`Session::read`].
    pub async fn read_unless<T, F, Fut, U>(
        &mut self,
        attempt: F,
        unavailable: U,
    ) -> Result<(String, T), PilotError>
    where
        F: FnMut(NexusClient) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
        U: Fn(&T) -> bool,
    {
        self.call(Call::Read, attempt, unavailable).await
    }

    /// The one place requests go through: builds the clients, runs [`failover::run`] and
    /// turns its outcome into the URL that answered and the value, or the error.
    async fn call<T, F, Fut, U>(
        &mut self,
        call: Call,
        mut attempt: F,
        unavailable: U,
    ) -> Result<(String, T), PilotError>
    where
        F: FnMut(NexusClient) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
        U: Fn(&T) -> bool,
    {
        let order = failover::order(self.clients.len(), self.answered);
        let mut clients = Vec::with_capacity(self.clients.len());
        for index in 0..self.clients.len() {
            clients.push(self.client(index).await?);
        }
        let outcome = failover::run(
            &order,
            call,
            // `order` holds only indices below the number of URLs, one client each.
            |index| attempt(clients[index].clone()),
            unavailable,
        )
        .await;
        let several = self.clients.len() > 1;
        match outcome {
            Outcome::Answered { index, result } => {
                self.answered = Some(index);
                let url = self.url(index);
                match result {
                    Ok(value) => Ok((url, value)),
                    Err(err) => Err(self.api_error(&url, err)),
                }
            }
            Outcome::Unknown { index, error, .. } if !several => {
                Err(self.api_error(&self.url(index), error))
            }
            Outcome::Unknown {
                index,
                error,
                earlier,
            } => Err(PilotError::OutcomeUnknown {
                nexus_url: self.url(index),
                source: Box::new(error),
                earlier: self.failures(earlier),
            }),
            Outcome::Exhausted(mut skipped) if !several && skipped.len() == 1 => {
                let last = skipped.remove(0);
                Err(self.api_error(&self.url(last.index), last.error))
            }
            Outcome::Exhausted(skipped) => Err(PilotError::NoInstance {
                failures: self.failures(skipped),
            }),
        }
    }

    fn failures(&self, skipped: Vec<failover::Skipped>) -> Vec<UrlFailure> {
        skipped
            .into_iter()
            .map(|s| UrlFailure {
                url: self.url(s.index),
                error: Box::new(s.error),
                state: None,
            })
            .collect()
    }

    /// Makes a `state_not_ready` (HTTP 503) answer precise: asks Nexus's health once (best
    /// effort, bounded) and returns [`PilotError::Sealed`] naming the state and the way out
    /// (bootstrap, keepers, `spike-operator restore` after a power cut, store error). Any
    /// other error, or a health look-up that fails, is returned unchanged (its message then
    /// is the generic sealed text). With several URLs, each 503 line of
    /// [`PilotError::NoInstance`] gets its instance's state the same way. Called once for
    /// every command, at the edge.
    pub async fn explain(&self, err: PilotError) -> PilotError {
        match err {
            PilotError::Api {
                ref source,
                ref nexus_url,
                ..
            } if is_sealed(source) => match self.sealed_state(nexus_url).await {
                Some(state) => PilotError::Sealed {
                    nexus_url: nexus_url.clone(),
                    state,
                },
                None => err,
            },
            PilotError::NoInstance { mut failures } => {
                for failure in &mut failures {
                    if is_sealed(&failure.error) {
                        failure.state = self.sealed_state(&failure.url).await;
                    }
                }
                PilotError::NoInstance { failures }
            }
            other => other,
        }
    }

    /// The sealed state the health of the instance at `nexus_url` reports, if it can be read
    /// in time; a health that says serving reads as the race it is.
    async fn sealed_state(&self, nexus_url: &str) -> Option<String> {
        let nexus = self
            .clients
            .iter()
            .flatten()
            .find(|c| c.base_url().as_str() == nexus_url)?;
        let bound = self.config.timeout.min(MAX_HEALTH_PROBE);
        let health = match tokio::time::timeout(bound, nexus.health()).await {
            Ok(Ok(health)) if health.is_supported() => health,
            // No health route (a Go Nexus), a failed or a slow look-up: the generic text.
            Ok(Ok(_)) | Ok(Err(_)) | Err(_) => return None,
        };
        if health.body.get("backend_reachable") == Some(&serde_json::Value::Bool(false)) {
            // A Nexus on PostgreSQL that cannot reach its database: not a seal.
            let class = health
                .body
                .get("backend_error")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("no answer");
            return Some(format!(
                "cannot reach its database (PostgreSQL: {class}); nothing was written, and it \
                 reconnects by itself (docs/ha.md, \"PostgreSQL unreachable\")"
            ));
        }
        let report = StatusReport::from_health(nexus_url, health.status, &health.body);
        Some(report.sealed_state().unwrap_or_else(|| {
            // It unsealed between the request and the health look-up.
            "unsealed now, but was sealed when the request arrived; try again".to_owned()
        }))
    }

    /// The client of the URL at `index`, obtaining the SVID first if needed.
    ///
    /// # Errors
    /// [`PilotError::Identity`] when the Workload API gives no SVID in time,
    /// [`PilotError::Api`] when the TLS configuration cannot be built.
    async fn client(&mut self, index: usize) -> Result<NexusClient, PilotError> {
        if let Some(Some(client)) = self.clients.get(index) {
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
        let connect = if self.clients.len() > 1 {
            MAX_CONNECT_FAILOVER
        } else {
            MAX_CONNECT
        };
        let options = ClientOptions {
            connect_timeout: timeout.min(connect),
            handshake_timeout: timeout.min(connect),
            response_header_timeout: timeout,
            request_timeout: timeout,
            ..ClientOptions::default()
        };
        let url = self.config.nexus_urls.get(index).cloned().ok_or_else(|| {
            PilotError::failed(format!("Error: no Nexus URL number {}", index + 1))
        })?;
        let client = NexusClient::new(&identity, url.clone(), &self.config.trust_roots, options)
            .map_err(|e| self.api_error(url.as_str(), e))?;
        if let Some(slot) = self.clients.get_mut(index) {
            *slot = Some(client.clone());
        }
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
