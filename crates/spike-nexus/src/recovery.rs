//! Keeper recovery and sync (docs/protocol.md#bootstrap-and-keepers).
//!
//! At start (sqlite/lite) [`run`] asks every keeper for its shard, retrying forever with
//! exponential backoff (initial and max interval from the config, ×2, jitter ±50 %). Shards
//! are collected across attempts by keeper id (the 1-based position in the keeper list);
//! invalid ones (zero, ≥ the group order) are skipped with a log line. Once `threshold`
//! distinct shards are there, Nexus checks that they agree on one root key
//! ([`crate::keys::agreement`]: every shard received must be the share of the reconstructed
//! key). A key they agree on goes through [`NexusState::unseal`], which verifies it against
//! the database's key check (lite: the key-check file, written the first time). When they
//! disagree, Nexus records a [`Disagreement`] (health, `STATUS=`, log name the keepers and the
//! way out) and unseals only with a candidate key that an existing key check confirms; without
//! a key check it stays sealed. Then the shards are discarded and collection starts over. When the store cannot be opened (full disk, permissions), the
//! shards are discarded too and collected again on the next round, so the unseal is retried
//! with backoff until it succeeds. Operator restore uses the same unseal path; the loop
//! notices.
//!
//! Once unsealed: every keeper gets its shard at once, then every `keeper_update_interval`;
//! keepers are probed every `keeper_probe_interval`, and one that answers it holds no shard
//! (400 on `/v1/store/shard`) is re-seeded immediately. Before any push the keepers' shards are
//! read: if one holds a shard that does not fit the live key, nothing is pushed to anyone
//! (a [`Disagreement`]) until the shards agree again or an operator restore confirms the key.
//! Reachability is recorded for health and metrics.
//!
//! Every keeper call (recovery fetch, push, probe) requires the keeper to present the SPIFFE
//! ID its URL is pinned to (`keeper_peers`, docs/config.md), checked in the TLS handshake
//! before anything is sent; a mismatch is logged with both IDs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use spike_client::{BaseUrl, ClientError, ClientOptions, KeeperClient};
use spike_crypto::{RootKey, Shard, ShardValue, shamir};
use spike_identity::Identity;
use spike_proto::ShardBytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, KeeperPeer};
use crate::keys::{self, Agreement};
use crate::state::{Disagreement, NexusState, ORIGIN_KEEPERS, UnsealError};

/// Most threshold-subsets tried when a combination does not match the database.
const MAX_COMBINATIONS: usize = 32;

/// Clients for every configured keeper.
#[derive(Debug, Clone)]
pub struct Keepers {
    clients: Vec<(KeeperPeer, KeeperClient)>,
    /// Per keeper: an identity mismatch was logged at `warn` (log again only after it
    /// cleared).
    mismatch_logged: Arc<[AtomicBool]>,
}

/// Why the keeper clients could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// A keeper URL or the TLS client configuration is unusable.
    #[error("keeper {url}: {source}")]
    Client {
        /// The keeper URL.
        url: String,
        /// The client error.
        #[source]
        source: Box<ClientError>,
    },
}

impl Keepers {
    /// mTLS clients for every keeper in `config`; each requires the keeper's pinned SPIFFE ID
    /// (or, unpinned, any Keeper ID).
    ///
    /// # Errors
    /// [`RecoveryError::Client`] for a bad URL or TLS configuration.
    pub fn new(identity: &Identity, config: &Config) -> Result<Keepers, RecoveryError> {
        let options = ClientOptions::with_timeout(config.keeper_timeout);
        let clients = config
            .keepers
            .iter()
            .map(|peer| {
                let err = |source| RecoveryError::Client {
                    url: peer.url.clone(),
                    source: Box::new(source),
                };
                let base = BaseUrl::parse(&peer.url).map_err(err)?;
                let client = KeeperClient::pinned(
                    identity,
                    base,
                    peer.spiffe_id.clone(),
                    &config.trust_roots,
                    options.clone(),
                )
                .map_err(err)?;
                Ok((peer.clone(), client))
            })
            .collect::<Result<Vec<_>, RecoveryError>>()?;
        let mismatch_logged = clients.iter().map(|_| AtomicBool::new(false)).collect();
        Ok(Keepers {
            clients,
            mismatch_logged,
        })
    }

    /// Logs a keeper presenting the wrong SPIFFE ID (at `warn` once, then at `debug` until
    /// it presents the right one); returns whether `err` was such a mismatch.
    fn note_identity(
        &self,
        index: usize,
        client: &KeeperClient,
        result: Result<(), &ClientError>,
    ) -> bool {
        let Some(flag) = self.mismatch_logged.get(index) else {
            return false;
        };
        let mismatch = result.err().and_then(|e| client.identity_mismatch(e));
        match mismatch {
            Some(text) => {
                if flag.swap(true, Ordering::Relaxed) {
                    tracing::debug!(keeper = %client.base_url(), "{text}");
                } else {
                    tracing::warn!(keeper = %client.base_url(), "keeper identity mismatch: {text}");
                }
                true
            }
            None => {
                if result.is_ok() && flag.swap(false, Ordering::Relaxed) {
                    tracing::info!(keeper = %client.base_url(), "the keeper presents its pinned SPIFFE ID again");
                }
                false
            }
        }
    }
}

/// Exponential backoff with ±50 % jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `initial`, doubles up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            next: initial.min(max),
            max,
        }
    }

    /// The next delay (jittered).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let mut b = [0u8; 4];
        let r = if getrandom::fill(&mut b).is_ok() {
            f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
        } else {
            0.5
        };
        base.mul_f64(0.5 + r)
    }
}

/// Validates one keeper shard: non-zero and a valid scalar.
fn valid_shard(id: u16, bytes: &ShardBytes) -> Option<Shard> {
    if bytes.is_zero() {
        return None;
    }
    let shard = Shard::new(id, ShardValue::new(*bytes.as_bytes()));
    shamir::combine(std::slice::from_ref(&shard), 1).ok()?;
    Some(shard)
}

enum Fetched {
    Shard(Shard),
    Empty,
    Invalid,
    Unreachable,
}

async fn fetch(state: &NexusState, keepers: &Keepers) -> Vec<(u16, Fetched)> {
    let calls = keepers.clients.iter().enumerate().map(|(index, (peer, client))| async move {
        let answer = client.shard().await;
        keepers.note_identity(index, client, answer.as_ref().map(drop));
        let result = match answer {
            Ok(bytes) => match valid_shard(peer.id, &bytes) {
                Some(shard) => Fetched::Shard(shard),
                None if bytes.is_zero() => Fetched::Empty,
                None => {
                    tracing::warn!(keeper = %peer.url, shard_id = peer.id, "keeper returned an invalid shard; skipping it");
                    Fetched::Invalid
                }
            },
            Err(ClientError::BadRequest { .. }) => Fetched::Empty,
            Err(e) => {
                tracing::debug!(keeper = %peer.url, error = %e, "keeper unreachable");
                Fetched::Unreachable
            }
        };
        (peer.id, result)
    });
    let results = futures::future::join_all(calls).await;
    for (id, r) in &results {
        match r {
            Fetched::Shard(_) => state.set_keeper_health(*id, true, true),
            Fetched::Empty | Fetched::Invalid => state.set_keeper_health(*id, true, false),
            Fetched::Unreachable => state.set_keeper_health(*id, false, false),
        }
    }
    results
}

/// Unseals with the key the collected shards agree on; when they disagree, records that and
/// tries only candidates an existing key check confirms. Returns true when unsealed.
async fn try_unseal(state: &NexusState, collected: &BTreeMap<u16, Shard>) -> bool {
    let config = Arc::clone(state.config());
    let shards: Vec<&Shard> = collected.values().collect();
    match keys::agreement(&shards, config.shares, config.threshold, MAX_COMBINATIONS) {
        Agreement::TooFew => false,
        Agreement::Agreed(key) => {
            match state.unseal(key, ORIGIN_KEEPERS).await {
                Ok(()) => {
                    state.set_disagreement(None);
                    true
                }
                Err(UnsealError::WrongKey) => {
                    let check = if state.is_lite() {
                        format!(
                            "lite's key-check file {}",
                            keys::lite_keycheck_path(&config.data_dir).display()
                        )
                    } else {
                        "the database's key check".to_owned()
                    };
                    // Logged (at error) and put on STATUS and health when it changes.
                    state.set_disagreement(Some(Disagreement {
                        misfits: collected.keys().copied().collect(),
                        refused_by: Some(check),
                    }));
                    false
                }
                Err(e) => {
                    // The state remembers the failure (health `store_error`, STATUS) and logs
                    // it at error level when it changes; the shards are collected again on the
                    // next round, so the unseal is retried until the store opens (e.g. once
                    // disk space is freed).
                    tracing::debug!(error = %e, "unseal failed; retrying on the next round");
                    false
                }
            }
        }
        Agreement::Disagree {
            candidates,
            misfits,
        } => {
            state.set_disagreement(Some(Disagreement::misfits(misfits)));
            if !state.has_key_check() {
                // Nothing tells which key is right: stay sealed, push nothing.
                return false;
            }
            for key in candidates {
                match state.unseal_checked(key, ORIGIN_KEEPERS).await {
                    Ok(()) => return true,
                    Err(UnsealError::WrongKey | UnsealError::NoKeyCheck) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "unseal failed; retrying on the next round");
                        return false;
                    }
                }
            }
            false
        }
    }
}

/// Collects shards from keepers until unsealed (by them or by operator restore) or cancelled.
async fn recover(state: &NexusState, keepers: &Keepers, token: &CancellationToken) {
    let config = Arc::clone(state.config());
    let threshold = config.threshold;
    let mut backoff = Backoff::new(
        config.recovery_initial_interval,
        config.recovery_max_interval,
    );
    let mut unsealed = state.watch_unsealed();
    let mut collected: BTreeMap<u16, Shard> = BTreeMap::new();
    loop {
        if state.is_unsealed() || token.is_cancelled() {
            return;
        }
        for (id, fetched) in fetch(state, keepers).await {
            match fetched {
                Fetched::Shard(shard) => {
                    collected.insert(id, shard);
                }
                Fetched::Empty | Fetched::Invalid => {
                    collected.remove(&id);
                }
                Fetched::Unreachable => {}
            }
        }
        if state.is_unsealed() {
            return;
        }
        state.set_collected(collected.len().min(usize::from(threshold)));
        if collected.len() >= usize::from(threshold) {
            if try_unseal(state, &collected).await {
                return;
            }
            collected.clear();
            state.set_collected(0);
        }
        let delay = backoff.next_delay();
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
            _ = unsealed.changed() => {}
        }
    }
}

fn shard_for(key: &RootKey, config: &Config, id: u16) -> Option<ShardBytes> {
    match shamir::share_for(key, id, config.shares, config.threshold) {
        Ok(shard) => Some(ShardBytes::new(*shard.expose_secret())),
        Err(e) => {
            tracing::warn!(shard_id = id, error = %e, "failed to find share for keeper");
            None
        }
    }
}

async fn push_one(
    state: &NexusState,
    keepers: &Keepers,
    index: usize,
    key: &RootKey,
    peer: &KeeperPeer,
    client: &KeeperClient,
) {
    let Some(shard) = shard_for(key, state.config(), peer.id) else {
        return;
    };
    let result = client.contribute(shard).await;
    if keepers.note_identity(index, client, result.as_ref().copied()) {
        state.set_keeper_health(peer.id, false, false);
        return;
    }
    match result {
        Ok(()) => {
            tracing::debug!(keeper = %peer.url, shard_id = peer.id, "shard pushed");
            state.set_keeper_health(peer.id, true, true);
        }
        Err(e) => {
            tracing::warn!(keeper = %peer.url, error = %e, "pushing the shard failed");
            if e.is_unreachable() {
                state.set_keeper_health(peer.id, false, false);
            }
        }
    }
}

/// Reads every keeper's shard, then pushes: to the empty ones (probe), or to every reachable
/// one (`full`, the periodic push). If any keeper holds a shard that does not fit the live
/// key, nothing is pushed to anyone (a [`Disagreement`]), unless an operator restore
/// confirmed the key, which overwrites the misfits.
async fn sync(state: &NexusState, keepers: &Keepers, full: bool) {
    let Some(unsealed) = state.unsealed() else {
        return;
    };
    let Some(key) = unsealed.root_key.as_ref() else {
        return;
    };
    let operator = state.take_operator_push();
    let config = Arc::clone(state.config());
    let fetched = fetch(state, keepers).await;
    let mut misfits = Vec::new();
    let mut targets = Vec::new();
    for (index, ((peer, client), (_, got))) in keepers.clients.iter().zip(fetched).enumerate() {
        match got {
            Fetched::Shard(shard) => {
                if !keys::fits(key, &shard, config.shares, config.threshold) {
                    misfits.push(peer.id);
                    if operator {
                        targets.push((index, peer, client, "holds a shard of another key"));
                    }
                } else if full {
                    targets.push((index, peer, client, ""));
                }
            }
            Fetched::Empty | Fetched::Invalid => {
                targets.push((index, peer, client, "has no shard"));
            }
            Fetched::Unreachable => {}
        }
    }
    if !misfits.is_empty() && !operator {
        state.set_disagreement(Some(Disagreement::misfits(misfits)));
        return;
    }
    if operator && !misfits.is_empty() {
        tracing::warn!(keepers = ?misfits, "operator restore confirmed the root key: overwriting the shards that do not fit it");
    }
    state.set_disagreement(None);
    let calls = targets.into_iter().map(|(index, peer, client, why)| async move {
        if !why.is_empty() {
            tracing::info!(keeper = %peer.url, shard_id = peer.id, "keeper {why}; re-seeding it");
        }
        push_one(state, keepers, index, key, peer, client).await;
    });
    futures::future::join_all(calls).await;
}

/// The keeper task: recovery until unsealed, then periodic sync. Returns when cancelled.
/// Memory mode has no keepers and returns at once.
///
/// # Errors
/// Never fails today; the signature fits [`spike_daemon::shutdown::Tasks`].
pub async fn run(
    state: NexusState,
    keepers: Keepers,
    token: CancellationToken,
) -> Result<(), RecoveryError> {
    if state.is_memory() || keepers.clients.is_empty() {
        return Ok(());
    }
    recover(&state, &keepers, &token).await;
    if token.is_cancelled() {
        return Ok(());
    }
    let config = Arc::clone(state.config());
    let now = Instant::now();
    let mut full = tokio::time::interval_at(
        now + config.keeper_update_interval,
        config.keeper_update_interval,
    );
    let mut probe = tokio::time::interval_at(
        now + config.keeper_probe_interval,
        config.keeper_probe_interval,
    );
    full.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = token.cancelled() => return Ok(()),
            () = state.push_requested() => sync(&state, &keepers, true).await,
            _ = full.tick() => sync(&state, &keepers, true).await,
            _ = probe.tick() => sync(&state, &keepers, false).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(2));
        let d1 = b.next_delay();
        assert!(d1 >= Duration::from_millis(250) && d1 <= Duration::from_millis(750));
        let _ = b.next_delay();
        let _ = b.next_delay();
        let d4 = b.next_delay();
        assert!(d4 >= Duration::from_secs(1) && d4 <= Duration::from_secs(3));
    }

    #[test]
    fn invalid_shards_are_rejected() {
        assert!(valid_shard(1, &ShardBytes::new([0; 32])).is_none());
        assert!(valid_shard(1, &ShardBytes::new([0xff; 32])).is_none());
        assert!(valid_shard(1, &ShardBytes::new([7; 32])).is_some());
        assert!(valid_shard(0, &ShardBytes::new([7; 32])).is_none());
    }

    #[tokio::test]
    async fn join_all_keeps_order() {
        let futs = (0..5u64).map(|i| async move {
            tokio::time::sleep(Duration::from_millis(10 * (5 - i))).await;
            i
        });
        assert_eq!(futures::future::join_all(futs).await, vec![0, 1, 2, 3, 4]);
    }
}
