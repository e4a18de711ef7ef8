//! SPIKE Bootstrap: generate the root key, split it, seed the keepers, verify Nexus.
//!
//! A one-shot (docs/protocol.md#bootstrap-and-keepers). [`run`] does, in order:
//!
//! 1. nothing for a `memory` backend; nothing when the done-marker exists (unless `force`);
//! 2. obtain the SVID and check it is a Bootstrap ID;
//! 3. ask Nexus `GET /v1/sys/health` (our extension): already initialized → write the
//!    marker and stop without re-keying; `501` (never bootstrapped) or no health route (a Go
//!    Nexus) → go on; with `force`, go on only if Nexus reports it holds no data;
//! 4. generate a root key, split it (Shamir over the P-256 field, SPIKE-compatible) and
//!    deliver share *i* to the keeper at position *i* with retries and backoff; the keeper
//!    must present the SPIFFE ID its URL is pinned to (by default
//!    `spiffe://<keeper root>/spike/keeper/<i>`) in the TLS handshake, before its share is
//!    sent;
//! 5. verify Nexus (docs/protocol.md#root-key-shards-and-recovery-files): it must decrypt a random text sealed with the new key (503 is
//!    retried until `verification_timeout`; a wrong hash fails at once);
//! 6. write the done-marker atomically. The root key is zeroized on drop.
//!
//! Failures map to distinct exit codes ([`BootstrapError::exit_code`]).
//!
//! # Layout
//!
//! - [`config`][]: [`BootstrapConfig`] from TOML + `SPIKE_*` variables, every key documented.
//! - [`marker`][]: the done-marker.
//! - [`error`][]: [`BootstrapError`] and the exit-code table.
//! - `lib.rs`: [`run`], [`decide`], [`deliver_shards`], [`verify_nexus`].

pub mod config;
pub mod error;
pub mod marker;

use std::path::PathBuf;
use std::time::Duration;

use spike_client::{ClientError, ClientOptions, HealthResponse, KeeperClient, NexusClient};
use spike_crypto::{Cipher, RootKey, shamir};
use spike_identity::Identity;
use spike_proto::{ShardBytes, TrustRoots};
use tokio::time::Instant;

pub use config::{BootstrapConfig, KeeperTarget, RetryPolicy};
pub use error::BootstrapError;

/// What a successful [`run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nexus uses the memory backend: there is nothing to bootstrap.
    MemoryBackend,
    /// The done-marker exists; nothing was done.
    AlreadyBootstrapped {
        /// The marker.
        marker: PathBuf,
    },
    /// Nexus reported it is already initialized; the marker was written, nothing re-keyed.
    NexusAlreadyInitialized {
        /// The marker.
        marker: PathBuf,
    },
    /// A new root key was delivered and verified.
    Bootstrapped {
        /// The marker.
        marker: PathBuf,
        /// Keepers seeded.
        keepers: usize,
    },
}

/// What to do after asking Nexus's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Generate and deliver a new root key.
    Proceed,
    /// Nexus already has a root key: record that and stop.
    AlreadyInitialized,
}

/// Decides from Nexus's health answer (`None`: no health route, e.g. a Go Nexus).
///
/// # Errors
/// [`BootstrapError::ForceRefused`] when `force` is set but Nexus is initialized and does not
/// report `"has_data": false`.
pub fn decide(
    nexus_url: &str,
    health: Option<&HealthResponse>,
    force: bool,
) -> Result<Decision, BootstrapError> {
    let Some(health) = health else {
        return Ok(Decision::Proceed);
    };
    if health.status == 501 {
        return Ok(Decision::Proceed);
    }
    let initialized = health.status == 200 || health.flag("initialized").unwrap_or(true);
    if !initialized {
        return Ok(Decision::Proceed);
    }
    if !force {
        return Ok(Decision::AlreadyInitialized);
    }
    match health.flag("has_data") {
        Some(false) => Ok(Decision::Proceed),
        Some(true) => Err(BootstrapError::ForceRefused {
            url: nexus_url.to_owned(),
            reason: "reports that it holds data".to_owned(),
        }),
        None => Err(BootstrapError::ForceRefused {
            url: nexus_url.to_owned(),
            reason: format!(
                "is initialized (health status {}) and does not say whether it holds data",
                health.status
            ),
        }),
    }
}

/// Runs the whole bootstrap (see the crate docs).
///
/// # Errors
/// A [`BootstrapError`] whose [`BootstrapError::exit_code`] says what failed.
pub async fn run(config: &BootstrapConfig) -> Result<Outcome, BootstrapError> {
    match config.timeout {
        Some(limit) => tokio::time::timeout(limit, run_inner(config))
            .await
            .unwrap_or(Err(BootstrapError::Timeout(limit))),
        None => run_inner(config).await,
    }
}

async fn run_inner(config: &BootstrapConfig) -> Result<Outcome, BootstrapError> {
    if config.memory_backend {
        tracing::info!("Nexus uses the memory backend: nothing to bootstrap");
        return Ok(Outcome::MemoryBackend);
    }
    let marker = config.marker_path();
    if marker::exists(&marker) && !config.force {
        return Ok(Outcome::AlreadyBootstrapped { marker });
    }
    let settings = spike_daemon::common::IdentitySettings {
        endpoint: config.spiffe_endpoint_socket.clone(),
        spiffe_id: config.spiffe_id.clone(),
        timeout: config.spiffe_timeout,
    };
    // Accept peers from every trust domain our trust roots name (not only our own).
    let identity =
        spike_daemon::identity::connect(&settings, &config.trust_roots, config::TRUST_ROLES)
            .await?;
    spike_daemon::identity::check_own_role(
        &identity,
        &config.trust_roots,
        spike_proto::Role::Bootstrap,
    )
    .map_err(|e| BootstrapError::NotBootstrap {
        id: e.id,
        roots: e.roots,
    })?;
    let options = client_options(config);
    let nexus_url = config.nexus_api_url.to_string();
    let nexus = NexusClient::new(
        &identity,
        config.nexus_api_url.clone(),
        &config.trust_roots,
        options.clone(),
    )
    .map_err(|e| nexus_error(&nexus_url, &e))?;

    let health = nexus_health(&nexus, &config.keeper_retry).await?;
    let info = |reason| marker::MarkerInfo {
        nexus_api_url: nexus_url.clone(),
        shares: config.shares,
        threshold: config.threshold,
        reason,
    };
    if decide(&nexus_url, health.as_ref(), config.force)? == Decision::AlreadyInitialized {
        tracing::info!(nexus = %nexus_url, "Nexus is already initialized; not re-keying");
        marker::write(&marker, &info("nexus already initialized"))?;
        return Ok(Outcome::NexusAlreadyInitialized { marker });
    }

    let root_key = RootKey::generate().map_err(|e| BootstrapError::Crypto(e.to_string()))?;
    deliver_shards(
        &identity,
        &config.keepers,
        config.threshold,
        &config.trust_roots,
        &config.keeper_retry,
        &options,
        &root_key,
    )
    .await?;
    tracing::info!(
        keepers = config.keepers.len(),
        "all keepers hold their shard"
    );
    verify_nexus(&nexus, &root_key, config.verification_timeout).await?;
    drop(root_key);
    tracing::info!(nexus = %nexus_url, "Nexus verified the root key");
    marker::write(&marker, &info("bootstrapped"))?;
    Ok(Outcome::Bootstrapped {
        marker,
        keepers: config.keepers.len(),
    })
}

/// HTTP client options from the config.
fn client_options(config: &BootstrapConfig) -> ClientOptions {
    ClientOptions {
        request_timeout: config.http_client_timeout,
        max_idle_connections: 2,
        ..ClientOptions::default()
    }
}

/// Asks Nexus's health, retrying while it is unreachable. `None` when Nexus has no health
/// route.
async fn nexus_health(
    nexus: &NexusClient,
    retry: &RetryPolicy,
) -> Result<Option<HealthResponse>, BootstrapError> {
    let url = nexus.base_url().to_string();
    let mut delay = retry.initial_interval;
    let mut attempt = 1;
    loop {
        match nexus.health().await {
            // A Nexus on PostgreSQL that cannot reach its database cannot tell whether the
            // cluster was bootstrapped: wait for it, never re-key blindly.
            Ok(health)
                if health.is_supported()
                    && health.flag("backend_reachable") == Some(false)
                    && attempt < retry.max_attempts =>
            {
                tracing::warn!(
                    nexus = %url,
                    attempt,
                    "Nexus cannot reach its database yet; waiting to learn whether the cluster \
                     is initialized"
                );
            }
            Ok(health)
                if health.is_supported() && health.flag("backend_reachable") == Some(false) =>
            {
                return Err(BootstrapError::Nexus {
                    url: url.clone(),
                    detail: "cannot reach its database (backend_reachable: false), so it cannot \
                             tell whether the cluster is already initialized; refusing to re-key \
                             blindly: fix PostgreSQL (docs/ha.md) and run bootstrap again"
                        .to_owned(),
                });
            }
            Ok(health) if health.is_supported() => return Ok(Some(health)),
            Ok(health) => {
                tracing::warn!(
                    nexus = %url,
                    status = health.status,
                    "Nexus has no health route (a Go Nexus?); cannot tell whether it is already \
                     initialized, proceeding as SPIKE does"
                );
                return Ok(None);
            }
            Err(err) if err.is_unreachable() && attempt < retry.max_attempts => {
                tracing::warn!(nexus = %url, attempt, error = %err, "Nexus not reachable yet");
            }
            Err(err) => {
                return Err(BootstrapError::Nexus {
                    url: url.clone(),
                    detail: format!(
                        "cannot check whether it is already initialized (refusing to re-key \
                         blindly): {err}"
                    ),
                });
            }
        }
        attempt += 1;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(retry.max_interval);
    }
}

/// Splits `root_key` and delivers share *i* (1-based) to `keepers[i-1]`, all keepers in
/// parallel, each with retries and exponential backoff bounded by `retry`. A keeper must
/// present its pinned SPIFFE ID (or, unpinned, any Keeper ID) in the TLS handshake before its
/// shard is sent; a mismatch is [`BootstrapError::KeeperRejected`] (exit 6), never retried.
///
/// The keeper count is the share count. Public so tests (and tools) can seed keepers with a
/// known key.
///
/// # Errors
/// [`BootstrapError::KeeperCountMismatch`] / [`BootstrapError::InvalidThreshold`] for bad
/// parameters, [`BootstrapError::KeeperRejected`] (exit 6) for SPIFFE rejections,
/// [`BootstrapError::KeeperUnreachable`] (exit 7) when retries run out. The first failure in
/// keeper order is returned.
pub async fn deliver_shards(
    identity: &Identity,
    keepers: &[KeeperTarget],
    threshold: u16,
    roots: &TrustRoots,
    retry: &RetryPolicy,
    options: &ClientOptions,
    root_key: &RootKey,
) -> Result<(), BootstrapError> {
    let shares = u16::try_from(keepers.len())
        .ok()
        .filter(|n| (1..=shamir::MAX_SHARES).contains(n))
        .ok_or(BootstrapError::KeeperCountMismatch {
            keepers: keepers.len(),
            shares: 0,
        })?;
    if threshold == 0 || threshold > shares {
        return Err(BootstrapError::InvalidThreshold { threshold, shares });
    }
    let mut deliveries = Vec::with_capacity(keepers.len());
    for (index, target) in keepers.iter().enumerate() {
        let url = &target.url;
        let id = index + 1;
        let share_id = u16::try_from(id).unwrap_or(u16::MAX);
        let shard = shamir::share_for(root_key, share_id, shares, threshold)
            .map_err(|e| BootstrapError::Crypto(e.to_string()))?;
        let client = KeeperClient::pinned(
            identity,
            url.clone(),
            target.spiffe_id.clone(),
            roots,
            options.clone(),
        )
        .map_err(|e| BootstrapError::KeeperUnreachable {
            id,
            url: url.to_string(),
            attempts: 0,
            last: e.to_string(),
        })?;
        deliveries.push(async move { deliver_one(id, &client, &shard, retry).await });
    }
    for result in futures::future::join_all(deliveries).await {
        result?;
    }
    Ok(())
}

async fn deliver_one(
    id: usize,
    client: &KeeperClient,
    shard: &spike_crypto::Shard,
    retry: &RetryPolicy,
) -> Result<(), BootstrapError> {
    let url = client.base_url().to_string();
    let mut attempts = 0;
    let mut last = String::from("no attempt made");
    let attempt_all = async {
        let mut delay = retry.initial_interval;
        loop {
            attempts += 1;
            match client
                .contribute(ShardBytes::new(*shard.expose_secret()))
                .await
            {
                Ok(()) => return Ok(()),
                Err(err) => {
                    if let Some(rejected) = keeper_rejection(id, client, &err) {
                        return Err(rejected);
                    }
                    tracing::warn!(keeper = id, url = %url, attempt = attempts, error = %err, "shard delivery failed");
                    last = err.to_string();
                    if !err.is_unreachable()
                        && !matches!(err, ClientError::NotReady { .. } | ClientError::Peer { .. })
                    {
                        // 400 and similar: retrying the same request cannot help.
                        return Err(None);
                    }
                }
            }
            if attempts >= retry.max_attempts {
                return Err(None);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(retry.max_interval);
        }
    };
    let outcome = tokio::time::timeout(retry.overall, attempt_all).await;
    match outcome {
        Ok(Ok(())) => {
            tracing::info!(keeper = id, url = %url, "shard delivered");
            Ok(())
        }
        Ok(Err(Some(rejected))) => Err(rejected),
        Ok(Err(None)) => Err(BootstrapError::KeeperUnreachable {
            id,
            url,
            attempts,
            last,
        }),
        Err(_) => Err(BootstrapError::KeeperUnreachable {
            id,
            url,
            attempts,
            last: format!(
                "gave up after keeper_timeout {:?} (last error: {last})",
                retry.overall
            ),
        }),
    }
}

/// Maps a SPIFFE-level refusal to exit 6; `None` for anything else.
fn keeper_rejection(
    id: usize,
    client: &KeeperClient,
    err: &ClientError,
) -> Option<Option<BootstrapError>> {
    let url = client.base_url().to_string();
    let detail = match err {
        ClientError::ServerRejected { reason, .. } => format!(
            "{} ({reason}); check keeper_peers, keeper_identity and the trust roots",
            client.identity_mismatch(err).unwrap_or_default()
        ),
        ClientError::RejectedByServer { alert, .. } => format!(
            "the keeper rejected our SVID during the TLS handshake ({alert}); check \
             SPIKE_TRUST_ROOT_BOOTSTRAP on the keeper"
        ),
        ClientError::Unauthorized { .. } => {
            "the keeper answered 401: it does not accept this Bootstrap ID".to_owned()
        }
        _ => return None,
    };
    Some(Some(BootstrapError::KeeperRejected { id, url, detail }))
}

/// The docs/protocol.md#root-key-shards-and-recovery-files proof: Nexus must decrypt a random text sealed with `root_key` and return its
/// SHA-256. Non-200 answers (503 while Nexus collects shards) and connection errors are
/// retried with backoff (500 ms doubling to 60 s) until `timeout`; a wrong hash fails at
/// once.
///
/// # Errors
/// [`BootstrapError::Nexus`] (exit 8).
pub async fn verify_nexus(
    nexus: &NexusClient,
    root_key: &RootKey,
    timeout: Duration,
) -> Result<(), BootstrapError> {
    let url = nexus.base_url().to_string();
    let fail = |detail: String| BootstrapError::Nexus {
        url: url.clone(),
        detail,
    };
    let text =
        spike_crypto::verify::random_text().map_err(|e| BootstrapError::Crypto(e.to_string()))?;
    let (nonce, ciphertext) = Cipher::new(root_key)
        .seal(text.as_bytes())
        .map_err(|e| BootstrapError::Crypto(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(500);
    loop {
        match nexus.bootstrap_verify(&nonce, &ciphertext).await {
            Ok(hash) if spike_crypto::verify::hash_matches(text.as_bytes(), &hash) => return Ok(()),
            Ok(_) => {
                return Err(fail(
                    "verification failed: Nexus decrypted the probe to a different value (it \
                     holds a different root key)"
                        .to_owned(),
                ));
            }
            Err(err) if err.is_tls_rejection() => {
                return Err(fail(format!("verification failed: {err}")));
            }
            Err(err) => {
                if Instant::now() + delay > deadline {
                    return Err(fail(format!(
                        "verification did not succeed within {timeout:?} (last error: {err})"
                    )));
                }
                tracing::info!(nexus = %url, error = %err, "Nexus not verified yet; retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

fn nexus_error(url: &str, err: &ClientError) -> BootstrapError {
    BootstrapError::Nexus {
        url: url.to_owned(),
        detail: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(status: u16, body: &str) -> HealthResponse {
        HealthResponse {
            status,
            body: serde_json::from_str(body).unwrap(),
        }
    }

    #[test]
    fn health_decisions() {
        let url = "https://nexus:8553";
        assert_eq!(decide(url, None, false).unwrap(), Decision::Proceed);
        assert_eq!(decide(url, None, true).unwrap(), Decision::Proceed);
        let never = health(501, r#"{"initialized":false,"sealed":true}"#);
        assert_eq!(decide(url, Some(&never), false).unwrap(), Decision::Proceed);
        assert_eq!(decide(url, Some(&never), true).unwrap(), Decision::Proceed);
        let unsealed = health(200, r#"{"initialized":true,"has_data":true}"#);
        assert_eq!(
            decide(url, Some(&unsealed), false).unwrap(),
            Decision::AlreadyInitialized
        );
        let err = decide(url, Some(&unsealed), true).unwrap_err();
        assert_eq!(err.exit_code(), 9);
        assert!(err.to_string().contains("orphan"), "{err}");
        let sealed = health(503, r#"{"initialized":true}"#);
        assert_eq!(
            decide(url, Some(&sealed), false).unwrap(),
            Decision::AlreadyInitialized
        );
        assert_eq!(decide(url, Some(&sealed), true).unwrap_err().exit_code(), 9);
        let empty = health(200, r#"{"initialized":true,"has_data":false}"#);
        assert_eq!(decide(url, Some(&empty), true).unwrap(), Decision::Proceed);
        let sealed_unknown = health(503, "null");
        assert_eq!(
            decide(url, Some(&sealed_unknown), false).unwrap(),
            Decision::AlreadyInitialized
        );
    }
}
