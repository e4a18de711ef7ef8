//! [`BootstrapError`] and its exit codes.

use std::path::PathBuf;

/// Why bootstrap refused or failed. [`BootstrapError::exit_code`] gives the process status.
///
/// | Exit | Meaning |
/// |---|---|
/// | 0 | bootstrapped, or nothing to do (marker present, Nexus already initialized, memory backend) |
/// | 1 | other failure (marker write, randomness, whole-run timeout) |
/// | 3 | the number of keepers differs from `shamir_shares` |
/// | 4 | `shamir_threshold` is not in `1..=shamir_shares` |
/// | 5 | our SPIFFE identity is unavailable or not a Bootstrap ID |
/// | 6 | a keeper's SPIFFE ID was rejected (or the keeper rejected ours) |
/// | 7 | a keeper stayed unreachable (or refused the shard) after all retries |
/// | 8 | Nexus could not be checked or verified (unreachable, wrong key, timeout) |
/// | 9 | `--force` refused: Nexus holds (or may hold) data the new key would orphan |
/// | 64 | invalid configuration |
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    /// The configuration could not be loaded (file, syntax, unknown or mistyped keys).
    #[error(transparent)]
    Config(#[from] spike_daemon::config::ConfigError),
    /// A configuration value is well-typed but invalid.
    #[error("invalid configuration: key `{key}`: {message}")]
    InvalidConfig {
        /// The config key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Keeper count and share count differ (Go: "keeper count mismatch").
    #[error(
        "{keepers} keeper(s) configured (keeper_peers / SPIKE_NEXUS_KEEPER_PEERS) but shamir_shares \
         (SPIKE_NEXUS_SHAMIR_SHARES) is {shares}: every share needs exactly one keeper"
    )]
    KeeperCountMismatch {
        /// Keepers configured.
        keepers: usize,
        /// Shares configured.
        shares: u16,
    },
    /// The threshold is outside `1..=shares`.
    #[error(
        "shamir_threshold (SPIKE_NEXUS_SHAMIR_THRESHOLD) is {threshold} but must be between 1 and \
         shamir_shares ({shares})"
    )]
    InvalidThreshold {
        /// The threshold.
        threshold: u16,
        /// The share count.
        shares: u16,
    },
    /// The SVID could not be obtained.
    #[error("cannot obtain our SPIFFE identity: {0}")]
    Identity(#[from] spike_identity::IdentityError),
    /// Our SPIFFE ID is not a Bootstrap ID.
    #[error(
        "this workload's SPIFFE ID {id} is not a SPIKE Bootstrap ID (expected \
         spiffe://<root>/spike/bootstrap for a root in SPIKE_TRUST_ROOT_BOOTSTRAP = {roots})"
    )]
    NotBootstrap {
        /// Our SPIFFE ID.
        id: String,
        /// The configured bootstrap roots.
        roots: String,
    },
    /// A keeper failed SPIFFE authorization at the TLS layer (either direction) or refused
    /// us with 401.
    #[error("keeper {id} at {url}: {detail}")]
    KeeperRejected {
        /// The keeper's 1-based id (position in the peer list).
        id: usize,
        /// The keeper URL.
        url: String,
        /// What happened, including the presented SPIFFE ID when known.
        detail: String,
    },
    /// A keeper could not be reached (or did not accept the shard) within the retries.
    #[error(
        "failed to reach keeper {id} at {url} after {attempts} attempt(s): {last}; ensure all \
         keepers are running and rerun bootstrap"
    )]
    KeeperUnreachable {
        /// The keeper's 1-based id.
        id: usize,
        /// The keeper URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: String,
    },
    /// Nexus could not be asked whether it is initialized, or did not verify the key.
    #[error("Nexus at {url}: {detail}")]
    Nexus {
        /// The Nexus URL.
        url: String,
        /// What happened.
        detail: String,
    },
    /// `--force` refused because Nexus has (or may have) data.
    #[error(
        "refusing to force a new root key: Nexus at {url} {reason}; a new root key would orphan \
         every secret and policy encrypted under the current one. Wipe Nexus's data first (or \
         restore the old key with `spike operator restore`)"
    )]
    ForceRefused {
        /// The Nexus URL.
        url: String,
        /// What Nexus reported.
        reason: String,
    },
    /// The done-marker could not be written.
    #[error("cannot write the done-marker {}: {source}", path.display())]
    Marker {
        /// The marker path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Randomness or key splitting failed.
    #[error("key generation failed: {0}")]
    Crypto(String),
    /// The whole run exceeded `timeout` (SPIKE_BOOTSTRAP_TIMEOUT).
    #[error("bootstrap did not finish within {0:?} (timeout / SPIKE_BOOTSTRAP_TIMEOUT)")]
    Timeout(std::time::Duration),
}

impl BootstrapError {
    /// The process exit status for this error (see the table on the type).
    pub fn exit_code(&self) -> u8 {
        match self {
            BootstrapError::Config(_) | BootstrapError::InvalidConfig { .. } => 64,
            BootstrapError::KeeperCountMismatch { .. } => 3,
            BootstrapError::InvalidThreshold { .. } => 4,
            BootstrapError::Identity(_) | BootstrapError::NotBootstrap { .. } => 5,
            BootstrapError::KeeperRejected { .. } => 6,
            BootstrapError::KeeperUnreachable { .. } => 7,
            BootstrapError::Nexus { .. } => 8,
            BootstrapError::ForceRefused { .. } => 9,
            BootstrapError::Marker { .. }
            | BootstrapError::Crypto(_)
            | BootstrapError::Timeout(_) => 1,
        }
    }
}
