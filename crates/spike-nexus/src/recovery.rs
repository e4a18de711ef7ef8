//! Keeper recovery and sync (docs/protocol.md#bootstrap-and-keepers).
//!
//! At start (sqlite/lite) [`run`] asks every keeper for its shard, retrying forever with
//! exponential backoff (initial and max interval from the config, ×2, jitter ±50 %). Shards
//! are collected across attempts by keeper id (the 1-based position in the keeper list);
//! invalid ones (zero, ≥ the group order) are skipped with a log line. Once `threshold`
//! distinct shards are there, they are combined and the key goes through
//! [`NexusState::unseal`], which verifies it against the database's key check; if it does not
//! match, other subsets of the collected shards are tried, then the shards are discarded and
//! collection starts over. When the store cannot be opened (full disk, permissions), the
//! shards are discarded too and collected again on the next round, so the unseal is retried
//! with backoff until it succeeds. Operator restore uses the same unseal path; the loop
//! notices.
//!
//! Once unsealed: every keeper gets its shard at once, then every `keeper_update_interval`;
//! keepers are probed every `keeper_probe_interval`, and one that answers it holds no shard
//! (400 on `/v1/store/shard`) or a different one is re-seeded immediately. Reachability is
//! recorded for health and metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use spike_client::{BaseUrl, ClientError, ClientOptions, KeeperClient};
use spike_crypto::{RootKey, Shard, ShardValue, shamir};
use spike_identity::Identity;
use spike_proto::ShardBytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, KeeperPeer};
use crate::state::{NexusState, ORIGIN_KEEPERS, UnsealError};

/// Most threshold-subsets tried when a combination does not match the database.
const MAX_COMBINATIONS: usize = 32;

/// Clients for every configured keeper.
#[derive(Debug, Clone)]
pub struct Keepers {
    clients: Vec<(KeeperPeer, KeeperClient)>,
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
    /// mTLS clients (server must be a Keeper) for every keeper in `config`.
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
                let client =
                    KeeperClient::new(identity, base, &config.trust_roots, options.clone())
                        .map_err(err)?;
                Ok((peer.clone(), client))
            })
            .collect::<Result<Vec<_>, RecoveryError>>()?;
        Ok(Keepers { clients })
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

/// The index sets of size `k` out of `n`, in lexicographic order, at most `limit` of them.
fn combinations(n: usize, k: usize, limit: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    if k == 0 || k > n {
        return out;
    }
    let mut idx: Vec<usize> = (0..k).collect();
    loop {
        out.push(idx.clone());
        if out.len() >= limit {
            return out;
        }
        let Some(i) = (0..k).rev().find(|&i| idx[i] != i + n - k) else {
            return out;
        };
        idx[i] += 1;
        for j in i + 1..k {
            idx[j] = idx[j - 1] + 1;
        }
    }
}

enum Fetched {
    Shard(Shard),
    Empty,
    Invalid,
    Unreachable,
}

async fn fetch(state: &NexusState, keepers: &Keepers) -> Vec<(u16, Fetched)> {
    let calls = keepers.clients.iter().map(|(peer, client)| async move {
        let result = match client.shard().await {
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

/// Tries threshold-subsets of `collected` until one unseals. Returns true when unsealed.
async fn try_unseal(state: &NexusState, collected: &BTreeMap<u16, Shard>, threshold: u16) -> bool {
    let shards: Vec<&Shard> = collected.values().collect();
    for combo in combinations(shards.len(), usize::from(threshold), MAX_COMBINATIONS) {
        let subset: Vec<Shard> = combo
            .iter()
            .filter_map(|&i| shards.get(i).map(|s| s.duplicate_secret()))
            .collect();
        let key = match shamir::combine(&subset, threshold) {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(error = %e, "cannot combine keeper shards");
                continue;
            }
        };
        match state.unseal(key, ORIGIN_KEEPERS).await {
            Ok(()) => return true,
            Err(UnsealError::WrongKey) => {
                let ids: Vec<u16> = subset.iter().map(Shard::id).collect();
                tracing::error!(
                    ?ids,
                    "shards from these keepers reconstruct a key that does not open the database (stale shards?)"
                );
            }
            Err(e) => {
                // The state remembers the failure (health `store_error`, STATUS) and logs it
                // at error level when it changes; the shards are collected again on the next
                // round, so the unseal is retried until the store opens (e.g. once disk space
                // is freed).
                tracing::debug!(error = %e, "unseal failed; retrying on the next round");
                return false;
            }
        }
    }
    false
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
            if try_unseal(state, &collected, threshold).await {
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

async fn push_one(state: &NexusState, key: &RootKey, peer: &KeeperPeer, client: &KeeperClient) {
    let Some(shard) = shard_for(key, state.config(), peer.id) else {
        return;
    };
    match client.contribute(shard).await {
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

async fn push_all(state: &NexusState, keepers: &Keepers) {
    let Some(unsealed) = state.unsealed() else {
        return;
    };
    let Some(key) = unsealed.root_key.as_ref() else {
        return;
    };
    let calls = keepers
        .clients
        .iter()
        .map(|(peer, client)| push_one(state, key, peer, client));
    futures::future::join_all(calls).await;
}

/// Probes every keeper; re-seeds one that is empty or holds a different shard.
async fn probe_all(state: &NexusState, keepers: &Keepers) {
    let Some(unsealed) = state.unsealed() else {
        return;
    };
    let Some(key) = unsealed.root_key.as_ref() else {
        return;
    };
    let fetched = fetch(state, keepers).await;
    for ((peer, client), (_, got)) in keepers.clients.iter().zip(fetched) {
        let reseed = match got {
            Fetched::Shard(shard) => shard_for(key, state.config(), peer.id)
                .is_some_and(|want| want.as_bytes() != shard.expose_secret()),
            Fetched::Empty | Fetched::Invalid => true,
            Fetched::Unreachable => false,
        };
        if reseed {
            tracing::info!(keeper = %peer.url, shard_id = peer.id, "keeper has no (or a stale) shard; re-seeding it");
            push_one(state, key, peer, client).await;
        }
    }
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
            () = state.push_requested() => push_all(&state, &keepers).await,
            _ = full.tick() => push_all(&state, &keepers).await,
            _ = probe.tick() => probe_all(&state, &keepers).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_are_complete_and_bounded() {
        assert_eq!(
            combinations(3, 2, 100),
            vec![vec![0, 1], vec![0, 2], vec![1, 2]]
        );
        assert_eq!(combinations(2, 2, 100), vec![vec![0, 1]]);
        assert_eq!(combinations(4, 1, 100).len(), 4);
        assert_eq!(combinations(5, 3, 100).len(), 10);
        assert_eq!(combinations(5, 3, 4).len(), 4);
        assert!(combinations(2, 3, 100).is_empty());
    }

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
