//! Bootstrap configuration: a TOML file plus SPIKE's environment variables.
//!
//! | Key | Default | Env | Meaning |
//! |---|---|---|---|
//! | `nexus_api_url` | `"https://localhost:8553"` | `SPIKE_NEXUS_API_URL` | Nexus base URL |
//! | `keeper_peers` | — (required) | `SPIKE_NEXUS_KEEPER_PEERS` | keeper base URLs (list, or a comma-separated string), or `{ url, spiffe_id }` tables pinning a URL to an ID; keeper id = 1-based position, same order as Nexus |
//! | `keeper_identity` | `"position"` | `SPIKE_NEXUS_KEEPER_IDENTITY` | ID required of a keeper given by URL alone: `position` = `spiffe://<keeper root>/spike/keeper/<i>`; `role` = any Keeper ID (SPIKE; warned) |
//! | `shamir_shares` | `3` | `SPIKE_NEXUS_SHAMIR_SHARES` | total shares; must equal the keeper count |
//! | `shamir_threshold` | `2` | `SPIKE_NEXUS_SHAMIR_THRESHOLD` | shares needed; `1..=shamir_shares` |
//! | `backend_store` | `"sqlite"` | `SPIKE_NEXUS_BACKEND_STORE` | `memory` needs no bootstrap (exit 0); `sqlite`/`lite` (and unknown values, as Go) proceed |
//! | `keeper_timeout` | `"30s"` | `SPIKE_BOOTSTRAP_KEEPER_TIMEOUT` | bound on delivering one shard, retries included |
//! | `keeper_max_retries` | `5` | `SPIKE_BOOTSTRAP_KEEPER_MAX_RETRIES` | attempts per keeper |
//! | `keeper_retry_initial_interval` | `"2s"` | `SPIKE_BOOTSTRAP_KEEPER_RETRY_INITIAL_INTERVAL` | first backoff |
//! | `keeper_retry_max_interval` | `"30s"` | `SPIKE_BOOTSTRAP_KEEPER_RETRY_MAX_INTERVAL` | backoff cap |
//! | `verification_timeout` | `"30m"` | `SPIKE_BOOTSTRAP_INIT_VERIFICATION_TIMEOUT` | how long to retry Nexus verification |
//! | `timeout` | `"0"` (none) | `SPIKE_BOOTSTRAP_TIMEOUT` | bound on the whole run |
//! | `force` | `false` | `SPIKE_BOOTSTRAP_FORCE` | re-key even with a done-marker, only if Nexus holds no data |
//! | `state_dir` | `$STATE_DIRECTORY`, else `"/var/lib/spike-bootstrap"` | — | where the done-marker lives |
//! | `spiffe_endpoint_socket` | unset | `SPIFFE_ENDPOINT_SOCKET` | Workload API endpoint |
//! | `spiffe_id` | unset | `SPIKE_BOOTSTRAP_SPIFFE_ID` | pick this SVID when the agent returns several |
//! | `spiffe_timeout` (deprecated alias `spiffe_source_timeout`) | `"30s"` | `SPIKE_SPIFFE_SOURCE_TIMEOUT` | bounded wait for the SVID |
//! | `http_client_timeout` | `"60s"` | `SPIKE_HTTP_CLIENT_TIMEOUT` | bound on one HTTP request |
//! | `trust_roots.nexus` / `.keeper` / `.bootstrap` | `"spike.ist"` | `SPIKE_TRUST_ROOT_NEXUS` / `_KEEPER` / `_BOOTSTRAP` | comma lists for the role checks |
//!
//! The keys Bootstrap shares with the daemons (`spiffe_*`, `[trust_roots]`) and their
//! deprecated aliases are defined once in [`spike_daemon::common`]; a deprecated key is read as
//! its new name and reported in [`BootstrapConfig::deprecations`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use spike_client::BaseUrl;
use spike_daemon::EnvSource;
pub use spike_daemon::common::TrustRootsFile;
use spike_daemon::common::{Alias, Deprecation, IDENTITY_ALIASES, IdentitySettings, KeeperPin};
pub use spike_daemon::common::{KeeperIdentity, KeeperPeerEntry, KeeperPeersFile};
use spike_daemon::config::{GoDuration, Loaded};
use spike_identity::SpiffeId;
use spike_proto::TrustRoots;
use spike_proto::spiffe_id::{
    ENV_TRUST_ROOT_BOOTSTRAP, ENV_TRUST_ROOT_KEEPER, ENV_TRUST_ROOT_NEXUS, Role,
};

use crate::error::BootstrapError;

/// The default state directory when systemd sets no `STATE_DIRECTORY`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/spike-bootstrap";

/// SPIKE environment variables and the config keys they set.
pub const ENV_MAP: &[(&str, &str)] = &[
    ("SPIKE_NEXUS_API_URL", "nexus_api_url"),
    ("SPIKE_NEXUS_KEEPER_PEERS", "keeper_peers"),
    ("SPIKE_NEXUS_KEEPER_IDENTITY", "keeper_identity"),
    ("SPIKE_NEXUS_SHAMIR_SHARES", "shamir_shares"),
    ("SPIKE_NEXUS_SHAMIR_THRESHOLD", "shamir_threshold"),
    ("SPIKE_NEXUS_BACKEND_STORE", "backend_store"),
    ("SPIKE_BOOTSTRAP_KEEPER_TIMEOUT", "keeper_timeout"),
    ("SPIKE_BOOTSTRAP_KEEPER_MAX_RETRIES", "keeper_max_retries"),
    (
        "SPIKE_BOOTSTRAP_KEEPER_RETRY_INITIAL_INTERVAL",
        "keeper_retry_initial_interval",
    ),
    (
        "SPIKE_BOOTSTRAP_KEEPER_RETRY_MAX_INTERVAL",
        "keeper_retry_max_interval",
    ),
    (
        "SPIKE_BOOTSTRAP_INIT_VERIFICATION_TIMEOUT",
        "verification_timeout",
    ),
    ("SPIKE_BOOTSTRAP_TIMEOUT", "timeout"),
    ("SPIKE_BOOTSTRAP_FORCE", "force"),
    ("SPIFFE_ENDPOINT_SOCKET", "spiffe_endpoint_socket"),
    ("SPIKE_BOOTSTRAP_SPIFFE_ID", "spiffe_id"),
    ("SPIKE_SPIFFE_SOURCE_TIMEOUT", "spiffe_timeout"),
    ("SPIKE_HTTP_CLIENT_TIMEOUT", "http_client_timeout"),
    (ENV_TRUST_ROOT_NEXUS, "trust_roots.nexus"),
    (ENV_TRUST_ROOT_KEEPER, "trust_roots.keeper"),
    (ENV_TRUST_ROOT_BOOTSTRAP, "trust_roots.bootstrap"),
];

/// Deprecated keys Bootstrap still reads (see [`spike_daemon::common`]).
pub const ALIASES: &[Alias] = IDENTITY_ALIASES;

/// The roles whose `[trust_roots]` Bootstrap reads: its own, and its peers'.
pub const TRUST_ROLES: &[Role] = &[Role::Nexus, Role::Keeper, Role::Bootstrap];

/// The raw configuration file (see the module docs for every key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// Nexus base URL.
    pub nexus_api_url: String,
    /// Keeper base URLs, optionally pinned to SPIFFE IDs.
    pub keeper_peers: Option<KeeperPeersFile>,
    /// `position` or `role` (see the module docs).
    pub keeper_identity: String,
    /// Total shares.
    pub shamir_shares: i64,
    /// Shares needed.
    pub shamir_threshold: i64,
    /// Nexus backend store.
    pub backend_store: String,
    /// Per-keeper delivery bound.
    pub keeper_timeout: GoDuration,
    /// Attempts per keeper.
    pub keeper_max_retries: u32,
    /// First backoff.
    pub keeper_retry_initial_interval: GoDuration,
    /// Backoff cap.
    pub keeper_retry_max_interval: GoDuration,
    /// Verification retry bound.
    pub verification_timeout: GoDuration,
    /// Whole-run bound (0 = none).
    pub timeout: GoDuration,
    /// Re-key even when bootstrapped (only if Nexus holds no data).
    #[serde(deserialize_with = "go_bool")]
    pub force: bool,
    /// Done-marker directory.
    pub state_dir: Option<PathBuf>,
    /// Workload API endpoint.
    pub spiffe_endpoint_socket: Option<String>,
    /// Expected own SPIFFE ID.
    pub spiffe_id: Option<String>,
    /// Bounded wait for the SVID.
    pub spiffe_timeout: GoDuration,
    /// Bound on one HTTP request.
    pub http_client_timeout: GoDuration,
    /// Trust roots per role.
    pub trust_roots: TrustRootsFile,
}

impl Default for ConfigFile {
    fn default() -> Self {
        Self {
            nexus_api_url: "https://localhost:8553".to_owned(),
            keeper_peers: None,
            keeper_identity: "position".to_owned(),
            shamir_shares: 3,
            shamir_threshold: 2,
            backend_store: "sqlite".to_owned(),
            keeper_timeout: GoDuration(Duration::from_secs(30)),
            keeper_max_retries: 5,
            keeper_retry_initial_interval: GoDuration(Duration::from_secs(2)),
            keeper_retry_max_interval: GoDuration(Duration::from_secs(30)),
            verification_timeout: GoDuration(Duration::from_secs(30 * 60)),
            timeout: GoDuration(Duration::ZERO),
            force: false,
            state_dir: None,
            spiffe_endpoint_socket: None,
            spiffe_id: None,
            spiffe_timeout: GoDuration(Duration::from_secs(30)),
            http_client_timeout: GoDuration(Duration::from_secs(60)),
            trust_roots: TrustRootsFile::default(),
        }
    }
}

/// A boolean, or a string where exactly `"true"` (trimmed, any case) is true, like SPIKE.
fn go_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Bool(bool),
        Text(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::Bool(b) => b,
        Either::Text(s) => s.trim().eq_ignore_ascii_case("true"),
    })
}

/// Backoff and bounds for delivering shards to keepers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts (at least 1).
    pub max_attempts: u32,
    /// First pause between attempts.
    pub initial_interval: Duration,
    /// Largest pause.
    pub max_interval: Duration,
    /// Bound on all attempts for one keeper.
    pub overall: Duration,
}

/// One keeper to seed: its URL and the SPIFFE ID it must present (`None`: any Keeper ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeeperTarget {
    /// Base URL.
    pub url: BaseUrl,
    /// The exact SPIFFE ID required in the TLS handshake, if pinned.
    pub spiffe_id: Option<SpiffeId>,
}

impl KeeperTarget {
    /// A keeper accepted by role alone (any Keeper ID).
    pub fn any_keeper(url: BaseUrl) -> Self {
        Self {
            url,
            spiffe_id: None,
        }
    }
}

/// The validated bootstrap configuration.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    /// Nexus base URL.
    pub nexus_api_url: BaseUrl,
    /// Keepers; keeper id = index + 1.
    pub keepers: Vec<KeeperTarget>,
    /// Total shares (= keeper count).
    pub shares: u16,
    /// Shares needed.
    pub threshold: u16,
    /// Nexus runs the in-memory backend (nothing to bootstrap).
    pub memory_backend: bool,
    /// Keeper delivery retries.
    pub keeper_retry: RetryPolicy,
    /// How long to retry verification.
    pub verification_timeout: Duration,
    /// Whole-run bound, if any.
    pub timeout: Option<Duration>,
    /// Re-key even when bootstrapped (only if Nexus holds no data).
    pub force: bool,
    /// Done-marker directory.
    pub state_dir: PathBuf,
    /// Workload API endpoint.
    pub spiffe_endpoint_socket: Option<String>,
    /// Which SVID to use when the agent returns several.
    pub spiffe_id: Option<SpiffeId>,
    /// Bounded wait for the SVID.
    pub spiffe_timeout: Duration,
    /// Bound on one HTTP request.
    pub http_client_timeout: Duration,
    /// Role trust roots.
    pub trust_roots: TrustRoots,
    /// Deprecated keys the file used (log them at `warn` once logging is up).
    pub deprecations: Vec<Deprecation>,
}

impl BootstrapConfig {
    /// Loads the optional TOML `file`, overlays the SPIKE variables of `env` and validates.
    /// `STATE_DIRECTORY` (set by systemd's `StateDirectory=`) supplies the default state dir.
    ///
    /// # Errors
    /// [`BootstrapError::Config`], [`BootstrapError::InvalidConfig`],
    /// [`BootstrapError::KeeperCountMismatch`] or [`BootstrapError::InvalidThreshold`].
    pub fn load(file: Option<&Path>, env: &dyn EnvSource) -> Result<Self, BootstrapError> {
        let loaded = spike_daemon::config::load_with_aliases(file, env, ENV_MAP, ALIASES)?;
        Self::from_loaded(loaded, env)
    }

    /// Loads from TOML text; see [`BootstrapConfig::load`].
    ///
    /// # Errors
    /// As [`BootstrapConfig::load`].
    pub fn from_toml(toml: &str, env: &dyn EnvSource) -> Result<Self, BootstrapError> {
        let loaded =
            spike_daemon::config::load_str_with_aliases(toml, "config", env, ENV_MAP, ALIASES)?;
        Self::from_loaded(loaded, env)
    }

    fn from_loaded(
        loaded: Loaded<ConfigFile>,
        env: &dyn EnvSource,
    ) -> Result<Self, BootstrapError> {
        let mut config = Self::from_raw(loaded.value, env)?;
        config.deprecations = loaded.deprecations;
        Ok(config)
    }

    /// Settings that work but weaken the root key's protection (keepers accepted by role
    /// alone, threshold 1): printed by `check-config` and logged at every run.
    pub fn warnings(&self) -> Vec<String> {
        let pins: Vec<KeeperPin> = self
            .keepers
            .iter()
            .map(|k| KeeperPin {
                url: k.url.to_string(),
                spiffe_id: k.spiffe_id.clone(),
            })
            .collect();
        let threshold = if self.memory_backend {
            0
        } else {
            self.threshold
        };
        spike_daemon::common::keeper_warnings(&pins, threshold)
    }

    /// The path of the done-marker.
    pub fn marker_path(&self) -> PathBuf {
        self.state_dir.join(crate::marker::MARKER_NAME)
    }

    fn from_raw(raw: ConfigFile, env: &dyn EnvSource) -> Result<Self, BootstrapError> {
        let invalid =
            |key: &'static str, message: String| BootstrapError::InvalidConfig { key, message };
        let nexus_api_url = BaseUrl::parse(&raw.nexus_api_url)
            .map_err(|e| invalid("nexus_api_url", e.to_string()))?;
        let trust_roots = raw
            .trust_roots
            .resolve(TRUST_ROLES)
            .map_err(|e| invalid(e.key, e.message))?;
        let mode =
            KeeperIdentity::parse(&raw.keeper_identity).map_err(|e| invalid(e.key, e.message))?;
        let pins = spike_daemon::common::keeper_pins(raw.keeper_peers.as_ref(), mode, &trust_roots)
            .map_err(|e| invalid(e.key, e.message))?;
        if pins.is_empty() {
            return Err(invalid(
                "keeper_peers",
                "no keepers configured (set keeper_peers or SPIKE_NEXUS_KEEPER_PEERS)".to_owned(),
            ));
        }
        let mut keepers: Vec<KeeperTarget> = Vec::with_capacity(pins.len());
        let mut seen = HashSet::new();
        for pin in pins {
            let url =
                BaseUrl::parse(&pin.url).map_err(|e| invalid("keeper_peers", e.to_string()))?;
            if !seen.insert(url.clone()) {
                return Err(invalid(
                    "keeper_peers",
                    format!("duplicate keeper {}", pin.url),
                ));
            }
            keepers.push(KeeperTarget {
                url,
                spiffe_id: pin.spiffe_id,
            });
        }
        let shares = u16::try_from(raw.shamir_shares)
            .ok()
            .filter(|s| (1..=spike_crypto::shamir::MAX_SHARES).contains(s));
        let threshold = u16::try_from(raw.shamir_threshold).unwrap_or(0);
        let Some(shares) = shares else {
            return Err(BootstrapError::InvalidThreshold {
                threshold,
                shares: u16::try_from(raw.shamir_shares.max(0)).unwrap_or(u16::MAX),
            });
        };
        if keepers.len() != usize::from(shares) {
            return Err(BootstrapError::KeeperCountMismatch {
                keepers: keepers.len(),
                shares,
            });
        }
        if raw.shamir_threshold < 1 || raw.shamir_threshold > i64::from(shares) {
            return Err(BootstrapError::InvalidThreshold {
                threshold: u16::try_from(raw.shamir_threshold.max(0)).unwrap_or(u16::MAX),
                shares,
            });
        }
        let identity = IdentitySettings::parse(
            raw.spiffe_endpoint_socket.as_deref(),
            raw.spiffe_id.as_deref(),
            raw.spiffe_timeout.0,
        )
        .map_err(|e| invalid(e.key, e.message))?;
        if raw.keeper_retry_initial_interval.0 > raw.keeper_retry_max_interval.0 {
            return Err(invalid(
                "keeper_retry_initial_interval",
                "must not exceed keeper_retry_max_interval".to_owned(),
            ));
        }
        for (key, d) in [
            ("keeper_timeout", raw.keeper_timeout),
            ("http_client_timeout", raw.http_client_timeout),
            ("verification_timeout", raw.verification_timeout),
        ] {
            if d.0.is_zero() {
                return Err(invalid(key, "must be greater than zero".to_owned()));
            }
        }
        let state_dir = raw.state_dir.unwrap_or_else(|| {
            env.var("STATE_DIRECTORY")
                .and_then(|s| s.split(':').next().map(str::to_owned))
                .filter(|s| !s.is_empty())
                .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), PathBuf::from)
        });
        Ok(Self {
            nexus_api_url,
            keepers,
            shares,
            threshold: u16::try_from(raw.shamir_threshold).unwrap_or(1),
            memory_backend: raw.backend_store.trim().eq_ignore_ascii_case("memory"),
            keeper_retry: RetryPolicy {
                max_attempts: raw.keeper_max_retries.max(1),
                initial_interval: raw.keeper_retry_initial_interval.0,
                max_interval: raw.keeper_retry_max_interval.0,
                overall: raw.keeper_timeout.0,
            },
            verification_timeout: raw.verification_timeout.0,
            timeout: Some(raw.timeout.0).filter(|d| !d.is_zero()),
            force: raw.force,
            state_dir,
            spiffe_endpoint_socket: identity.endpoint,
            spiffe_id: identity.spiffe_id,
            spiffe_timeout: identity.timeout,
            http_client_timeout: raw.http_client_timeout.0,
            trust_roots,
            deprecations: Vec::new(),
        })
    }
}
