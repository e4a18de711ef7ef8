//! Nexus configuration: a TOML file plus SPIKE's environment variables (docs/config.md).
//!
//! [`ConfigFile`] is the raw, serde-shaped document (`deny_unknown_fields`); [`Config`] is the
//! validated, typed result, built with `TryFrom<ConfigFile>`. Environment variables win over
//! the file, and both win over the defaults. [`load`] reads both through an [`EnvSource`], so
//! tests never touch the process environment.
//!
//! Deliberate difference from Go SPIKE: an unknown `SPIKE_NEXUS_BACKEND_STORE` value is an
//! error naming the value (Go silently falls back to `sqlite`); likewise malformed numbers and
//! durations are errors instead of silently using the default.
//!
//! The keys Nexus shares with Keeper and Bootstrap (`spiffe_*`, `[trust_roots]`,
//! `request_body_limit`, `shutdown_grace`) and their deprecated aliases are defined once in
//! [`spike_daemon::common`]; a deprecated key is read as its new name and reported in
//! [`Config::deprecations`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use spike_daemon::EnvSource;
pub use spike_daemon::common::TrustRootsFile;
use spike_daemon::common::{
    Alias, CommonConfigError, Deprecation, IDENTITY_ALIASES, IdentitySettings, KeeperPin,
    SERVER_ALIASES,
};
pub use spike_daemon::common::{KeeperIdentity, KeeperPeerEntry, KeeperPeersFile};
use spike_daemon::config::{ConfigError, GoDuration, parse_listen_addr};
use spike_daemon::limits::{Limits, RawLimits};
use spike_daemon::logging::{LogLevel, LogOptions, LogTarget};
use spike_identity::SpiffeId;
use spike_proto::spiffe_id::{Role, TrustRoots};

use crate::store::BackendKind;

/// `(environment variable, config key)` pairs read on top of the file.
pub const ENV_MAP: &[(&str, &str)] = &[
    ("SPIKE_NEXUS_TLS_PORT", "listen"),
    ("SPIKE_NEXUS_BACKEND_STORE", "backend_store"),
    ("SPIKE_NEXUS_KEEPER_PEERS", "keeper_peers"),
    ("SPIKE_NEXUS_KEEPER_IDENTITY", "keeper_identity"),
    ("SPIKE_NEXUS_SHAMIR_SHARES", "shamir_shares"),
    ("SPIKE_NEXUS_SHAMIR_THRESHOLD", "shamir_threshold"),
    (
        "SPIKE_NEXUS_SHAMIR_MAX_SHARE_COUNT",
        "shamir_max_share_count",
    ),
    (
        "SPIKE_NEXUS_KEEPER_UPDATE_INTERVAL",
        "keeper_update_interval",
    ),
    ("SPIKE_NEXUS_MAX_SECRET_VERSIONS", "max_secret_versions"),
    (
        "SPIKE_NEXUS_CRYPTO_MAX_CIPHERTEXT_SIZE",
        "crypto_max_ciphertext_size",
    ),
    ("SPIKE_NEXUS_DATA_DIR", "data_dir"),
    ("SPIKE_TRUST_ROOT_NEXUS", "trust_roots.nexus"),
    ("SPIKE_TRUST_ROOT_KEEPER", "trust_roots.keeper"),
    ("SPIKE_TRUST_ROOT_BOOTSTRAP", "trust_roots.bootstrap"),
    ("SPIKE_TRUST_ROOT_PILOT", "trust_roots.pilot"),
    (
        "SPIKE_TRUST_ROOT_LITE_WORKLOAD",
        "trust_roots.lite_workload",
    ),
    ("SPIFFE_ENDPOINT_SOCKET", "spiffe_endpoint_socket"),
    ("SPIKE_NEXUS_SPIFFE_ID", "spiffe_id"),
    ("SPIKE_SPIFFE_SOURCE_TIMEOUT", "spiffe_timeout"),
    ("SPIKE_SYSTEM_LOG_LEVEL", "log_level"),
    (
        "SPIKE_HTTP_SERVER_READ_HEADER_TIMEOUT",
        "read_header_timeout",
    ),
    // Documented by SPIKE but never wired in Go (docs/compatibility.md); here it caps the recovery backoff.
    ("SPIKE_NEXUS_RECOVERY_MAX_INTERVAL", "recovery_max_interval"),
];

/// Deprecated keys Nexus still reads (see [`spike_daemon::common`]).
pub const ALIASES: &[Alias] = &[IDENTITY_ALIASES[0], SERVER_ALIASES[0], SERVER_ALIASES[1]];

/// Default data directory when neither the config nor `STATE_DIRECTORY` names one.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/spike-nexus";
/// Default runtime directory (the health socket lives in `<dir>/spike-nexus/health.sock`).
pub const DEFAULT_RUNTIME_DIR: &str = "/run";
/// Name of the SQLite database file inside the data directory.
pub const DB_FILE_NAME: &str = "spike.db";

/// A keeper list as written in TOML (array of URLs or `{ url, spiffe_id }` tables) or in
/// `SPIKE_NEXUS_KEEPER_PEERS` (comma list of URLs).
pub type PeerList = KeeperPeersFile;

/// The raw configuration document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// mTLS API listen address (`:8553`, `IP:PORT`).
    pub listen: String,
    /// `sqlite`, `postgres`, `lite` or `memory` (case-insensitive).
    pub backend_store: String,
    /// The `postgres` backend's settings (`[postgres]`; docs/ha.md).
    pub postgres: PostgresFile,
    /// Keeper base URLs, optionally pinned to SPIFFE IDs; the shard id of a keeper is its
    /// 1-based position.
    pub keeper_peers: Option<PeerList>,
    /// `position` (default: keeper *i* must present `…/spike/keeper/<i>`) or `role` (any
    /// Keeper ID, as SPIKE).
    pub keeper_identity: String,
    /// Total number of shards (must equal the keeper count in sqlite/lite mode).
    pub shamir_shares: u16,
    /// Shards needed to reconstruct the root key.
    pub shamir_threshold: u16,
    /// Upper bound of an operator-restore shard id.
    pub shamir_max_share_count: u32,
    /// Period of the shard re-push to every keeper.
    pub keeper_update_interval: GoDuration,
    /// How often each keeper is probed (reachability; an empty keeper is re-seeded at once).
    pub keeper_probe_interval: GoDuration,
    /// Timeout of one call to a keeper.
    pub keeper_timeout: GoDuration,
    /// Versions kept per secret.
    pub max_secret_versions: u64,
    /// Cipher and verify size limit in bytes.
    pub crypto_max_ciphertext_size: usize,
    /// Data directory; the database is `<dir>/spike.db`.
    pub data_dir: Option<PathBuf>,
    /// Trust roots per role.
    pub trust_roots: TrustRootsFile,
    /// SPIFFE Workload API endpoint (`unix:///...`).
    pub spiffe_endpoint_socket: Option<String>,
    /// Use the SVID with this SPIFFE ID when the agent returns several.
    pub spiffe_id: Option<String>,
    /// How long to wait for the first SVID at startup.
    pub spiffe_timeout: GoDuration,
    /// Unix socket serving only the health routes without TLS; `""` disables it.
    pub health_socket: Option<PathBuf>,
    /// Prometheus listen address; `""` disables it.
    pub metrics_listen: String,
    /// Connections of the health socket; when full, the oldest is dropped.
    pub health_max_connections: usize,
    /// Connections of the metrics listener; when full, the oldest is dropped.
    pub metrics_max_connections: usize,
    /// Connections in the TLS handshake; when full, the oldest is dropped.
    pub max_handshakes: usize,
    /// Connections in the TLS handshake from one source IP.
    pub max_handshakes_per_ip: usize,
    /// TLS handshake timeout.
    pub handshake_timeout: GoDuration,
    /// Authenticated connections on the API listener.
    pub max_connections: usize,
    /// Authenticated connections of one SPIFFE ID.
    pub max_connections_per_peer: usize,
    /// HTTP header read timeout (Go's `ReadHeaderTimeout`).
    pub read_header_timeout: GoDuration,
    /// Maximum request body size in bytes (larger bodies get 400).
    pub request_body_limit: usize,
    /// Base time to read one request body.
    pub request_body_timeout: GoDuration,
    /// Bytes per second a request body must at least arrive at.
    pub request_body_min_rate: u64,
    /// Request body bytes in memory, all peers.
    pub request_body_budget: usize,
    /// Request body bytes in memory, one SPIFFE ID.
    pub request_body_budget_per_peer: usize,
    /// Bound on a response write with no progress.
    pub write_timeout: GoDuration,
    /// Longest life of one connection.
    pub max_connection_lifetime: GoDuration,
    /// Time in-flight requests get after SIGTERM.
    pub shutdown_grace: GoDuration,
    /// First retry interval of the keeper recovery loop.
    pub recovery_initial_interval: GoDuration,
    /// Maximum retry interval of the keeper recovery loop.
    pub recovery_max_interval: GoDuration,
    /// Log level (`DEBUG`, `INFO`, `WARN`, `ERROR`).
    pub log_level: Option<LogLevel>,
    /// Log target (`auto`, `journald`, `stderr`).
    pub log_target: LogTarget,
    /// Require `mlockall` to succeed.
    pub require_mlock: bool,
}

impl Default for ConfigFile {
    fn default() -> Self {
        Self {
            listen: ":8553".to_owned(),
            backend_store: "sqlite".to_owned(),
            postgres: PostgresFile::default(),
            keeper_peers: None,
            keeper_identity: "position".to_owned(),
            shamir_shares: 3,
            shamir_threshold: 2,
            shamir_max_share_count: 1000,
            keeper_update_interval: GoDuration(Duration::from_secs(300)),
            keeper_probe_interval: GoDuration(Duration::from_secs(30)),
            keeper_timeout: GoDuration(Duration::from_secs(10)),
            max_secret_versions: 10,
            crypto_max_ciphertext_size: 65536,
            data_dir: None,
            trust_roots: TrustRootsFile::default(),
            spiffe_endpoint_socket: None,
            spiffe_id: None,
            spiffe_timeout: GoDuration(Duration::from_secs(30)),
            health_socket: None,
            metrics_listen: "127.0.0.1:9553".to_owned(),
            health_max_connections: 32,
            metrics_max_connections: 32,
            max_handshakes: 256,
            max_handshakes_per_ip: 128,
            handshake_timeout: GoDuration(Duration::from_secs(10)),
            max_connections: 1024,
            max_connections_per_peer: 256,
            read_header_timeout: GoDuration(Duration::from_secs(10)),
            request_body_limit: 4 << 20,
            request_body_timeout: GoDuration(Duration::from_secs(10)),
            request_body_min_rate: 256 * 1024,
            request_body_budget: 64 << 20,
            request_body_budget_per_peer: 16 << 20,
            write_timeout: GoDuration(Duration::from_secs(10)),
            max_connection_lifetime: GoDuration(Duration::from_secs(600)),
            shutdown_grace: GoDuration(Duration::from_secs(10)),
            recovery_initial_interval: GoDuration(Duration::from_millis(500)),
            recovery_max_interval: GoDuration(Duration::from_secs(60)),
            log_level: None,
            log_target: LogTarget::Auto,
            require_mlock: false,
        }
    }
}

/// The `[postgres]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresFile {
    /// The systemd credential holding the connection string.
    pub credential: String,
    /// The CA bundle that verifies the server (TCP hosts).
    pub ca_file: Option<PathBuf>,
    /// Pooled connections per instance.
    pub pool_size: usize,
    /// The bound of every database operation.
    pub timeout: GoDuration,
}

impl Default for PostgresFile {
    fn default() -> Self {
        Self {
            credential: DEFAULT_DB_CREDENTIAL.to_owned(),
            ca_file: None,
            pool_size: 16,
            timeout: GoDuration(Duration::from_secs(5)),
        }
    }
}

/// The default name of the credential holding the PostgreSQL connection string.
pub const DEFAULT_DB_CREDENTIAL: &str = "nexus-db";
/// The largest connection string read from the credential.
pub const MAX_CONNINFO_BYTES: u64 = 16 * 1024;
/// The largest `postgres.pool_size`.
pub const MAX_POOL_SIZE: usize = 256;

/// The `postgres` backend's checked settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// The systemd credential (a file name in `$CREDENTIALS_DIRECTORY`) holding the
    /// connection string.
    pub credential: String,
    /// `$CREDENTIALS_DIRECTORY`, when set.
    pub credentials_directory: Option<PathBuf>,
    /// The CA bundle that verifies the server (TCP hosts).
    pub ca_file: Option<PathBuf>,
    /// Pooled connections per instance.
    pub pool_size: usize,
    /// The bound of every database operation.
    pub timeout: Duration,
}

impl PostgresConfig {
    /// Reads the connection string from the credential. It is never taken from argv or the
    /// environment: it may hold a password.
    ///
    /// # Errors
    /// [`NexusConfigError::Value`] naming the credential and the way to provide it.
    pub fn read_conninfo(&self) -> Result<zeroize::Zeroizing<String>, NexusConfigError> {
        use std::io::Read;
        let bad = |message: String| NexusConfigError::Value {
            key: "postgres.credential",
            message,
        };
        let Some(dir) = &self.credentials_directory else {
            return Err(bad(format!(
                "CREDENTIALS_DIRECTORY is not set, so the connection string cannot be read: \
                 start Nexus from its unit with LoadCredential={}:FILE (docs/ha.md)",
                self.credential
            )));
        };
        let path = dir.join(&self.credential);
        let file = std::fs::File::open(&path).map_err(|e| {
            bad(format!(
                "cannot read credential {:?} ({}): {e}; add LoadCredential={}:FILE to the unit \
                 (docs/ha.md)",
                self.credential,
                path.display(),
                self.credential
            ))
        })?;
        let mut text = zeroize::Zeroizing::new(String::new());
        file.take(MAX_CONNINFO_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| bad(format!("credential {:?}: {e}", self.credential)))?;
        if text.len() as u64 > MAX_CONNINFO_BYTES {
            return Err(bad(format!(
                "credential {:?} is larger than {MAX_CONNINFO_BYTES} bytes",
                self.credential
            )));
        }
        if text.trim().is_empty() {
            return Err(bad(format!("credential {:?} is empty", self.credential)));
        }
        Ok(text)
    }
}

/// `check-config` for the `postgres` backend: when the credential is at hand
/// (`$CREDENTIALS_DIRECTORY` set, as under the unit), reads the connection string and checks
/// its rules and the CA file without connecting. Without it (a build sandbox, a shell) there
/// is nothing more to check: Nexus checks at start.
///
/// # Errors
/// The credential cannot be read, or the connection string or CA file breaks a rule.
pub fn check_postgres(config: &Config) -> Result<(), NexusConfigError> {
    if config.backend != BackendKind::Postgres || config.postgres.credentials_directory.is_none() {
        return Ok(());
    }
    let pg = &config.postgres;
    let conninfo = pg.read_conninfo()?;
    crate::store::postgres::check_connection(
        &pg.credential,
        &conninfo,
        pg.ca_file.as_deref(),
        pg.timeout,
    )
    .map_err(|e| NexusConfigError::Value {
        key: "postgres.credential",
        message: e.to_string(),
    })
}

fn parse_postgres(
    raw: PostgresFile,
    credentials_directory: Option<PathBuf>,
) -> Result<PostgresConfig, NexusConfigError> {
    let value = |key: &'static str, message: &str| NexusConfigError::Value {
        key,
        message: message.to_owned(),
    };
    let credential = raw.credential.trim().to_owned();
    if credential.is_empty()
        || credential == "."
        || credential == ".."
        || credential.contains('/')
        || credential.contains('\0')
    {
        return Err(value(
            "postgres.credential",
            "must be a credential name (a file name, no '/')",
        ));
    }
    if raw.pool_size == 0 || raw.pool_size > MAX_POOL_SIZE {
        return Err(value(
            "postgres.pool_size",
            &format!("must be between 1 and {MAX_POOL_SIZE}"),
        ));
    }
    let timeout = raw.timeout.0;
    if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(300) {
        return Err(value("postgres.timeout", "must be between 1s and 5m"));
    }
    Ok(PostgresConfig {
        credential,
        credentials_directory,
        ca_file: raw.ca_file.filter(|p| !p.as_os_str().is_empty()),
        pool_size: raw.pool_size,
        timeout,
    })
}

impl ConfigFile {
    /// The API listener's limit keys.
    #[must_use]
    pub fn raw_limits(&self) -> RawLimits {
        spike_daemon::raw_limits!(self)
    }
}

/// One configured keeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeeperPeer {
    /// Shard id: the 1-based position in the list.
    pub id: u16,
    /// Base URL, e.g. `https://keeper-1:8443`.
    pub url: String,
    /// The SPIFFE ID the keeper must present (`None`: any Keeper ID, `keeper_identity =
    /// "role"`).
    pub spiffe_id: Option<SpiffeId>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// mTLS API listen address.
    pub listen: SocketAddr,
    /// Backend mode.
    pub backend: BackendKind,
    /// The `postgres` backend's settings (used with `backend_store = "postgres"` only).
    pub postgres: PostgresConfig,
    /// Keepers in shard-id order (empty in memory mode).
    pub keepers: Vec<KeeperPeer>,
    /// Total shards.
    pub shares: u16,
    /// Shards needed.
    pub threshold: u16,
    /// Upper bound of a restore shard id.
    pub max_share_count: u32,
    /// Full re-push period.
    pub keeper_update_interval: Duration,
    /// Keeper probe period.
    pub keeper_probe_interval: Duration,
    /// Timeout of one keeper call.
    pub keeper_timeout: Duration,
    /// Versions kept per secret.
    pub max_secret_versions: u64,
    /// Cipher/verify size limit.
    pub max_ciphertext_size: usize,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Trust roots per role.
    pub trust_roots: TrustRoots,
    /// Workload API endpoint (`None`: `SPIFFE_ENDPOINT_SOCKET` or the default).
    pub spiffe_endpoint: Option<String>,
    /// Which SVID to use when the agent returns several.
    pub spiffe_id: Option<SpiffeId>,
    /// First-SVID timeout.
    pub spiffe_timeout: Duration,
    /// Health socket path, if enabled.
    pub health_socket: Option<PathBuf>,
    /// Metrics listen address, if enabled.
    pub metrics_listen: Option<SocketAddr>,
    /// Connections of the health socket (at least 1).
    pub health_max_connections: usize,
    /// Connections of the metrics listener (at least 1).
    pub metrics_max_connections: usize,
    /// The API listener's connection, time and memory limits.
    pub limits: Limits,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Recovery backoff start.
    pub recovery_initial_interval: Duration,
    /// Recovery backoff cap.
    pub recovery_max_interval: Duration,
    /// Logging options.
    pub log: LogOptions,
    /// Require `mlockall`.
    pub require_mlock: bool,
    /// Deprecated keys the file used (log them at `warn` once logging is up).
    pub deprecations: Vec<Deprecation>,
}

impl Config {
    /// The SQLite database path, `<data_dir>/spike.db`.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join(DB_FILE_NAME)
    }

    /// The trust domains of every configured trust root (the part before the first `/`),
    /// deduplicated: peers from these domains are accepted at the TLS layer.
    pub fn trust_domain_names(&self) -> Vec<String> {
        self.trust_roots
            .trust_domain_names(&spike_proto::spiffe_id::Role::ALL)
    }

    /// Settings that work but weaken the root key's protection (keepers accepted by role
    /// alone, threshold 1): printed by `check-config` and logged at every start.
    pub fn warnings(&self) -> Vec<String> {
        let pins: Vec<KeeperPin> = self
            .keepers
            .iter()
            .map(|k| KeeperPin {
                url: k.url.clone(),
                spiffe_id: k.spiffe_id.clone(),
            })
            .collect();
        let threshold = if self.backend == BackendKind::Memory {
            // Memory mode splits no key.
            0
        } else {
            self.threshold
        };
        spike_daemon::common::keeper_warnings(&pins, threshold)
    }
}

/// The config spelling of a backend.
pub fn backend_name(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Memory => "memory",
        BackendKind::Lite => "lite",
        BackendKind::Postgres => "postgres",
        _ => "sqlite",
    }
}

/// Why the configuration is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NexusConfigError {
    /// The file or environment could not be read or parsed.
    #[error(transparent)]
    Load(#[from] ConfigError),
    /// `backend_store` holds an unknown value.
    #[error(
        "backend_store (SPIKE_NEXUS_BACKEND_STORE) = {0:?} is not one of sqlite, postgres, lite, memory"
    )]
    UnknownBackend(String),
    /// A listen address is malformed.
    #[error("{key}: {message}")]
    Listen {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The keeper list is unusable.
    #[error("keeper_peers (SPIKE_NEXUS_KEEPER_PEERS): {0}")]
    Keepers(String),
    /// Shares/threshold are inconsistent.
    #[error("shamir: {0}")]
    Shamir(String),
    /// A trust root list is malformed.
    #[error("trust_roots: {0}")]
    TrustRoots(String),
    /// A key shared by the daemons has a bad value.
    #[error(transparent)]
    Common(#[from] CommonConfigError),
    /// Another value is out of range.
    #[error("{key}: {message}")]
    Value {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn parse_backend(s: &str) -> Result<BackendKind, NexusConfigError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "sqlite" => Ok(BackendKind::Sqlite),
        "lite" => Ok(BackendKind::Lite),
        "postgres" => Ok(BackendKind::Postgres),
        "memory" => Ok(BackendKind::Memory),
        _ => Err(NexusConfigError::UnknownBackend(s.to_owned())),
    }
}

fn parse_keepers(
    list: Option<&PeerList>,
    mode: &str,
    roots: &TrustRoots,
) -> Result<Vec<KeeperPeer>, NexusConfigError> {
    let mode = KeeperIdentity::parse(mode)?;
    let pins = spike_daemon::common::keeper_pins(list, mode, roots)
        .map_err(|e| NexusConfigError::Keepers(e.message))?;
    let mut out: Vec<KeeperPeer> = Vec::with_capacity(pins.len());
    for (index, pin) in pins.into_iter().enumerate() {
        let url = pin.url;
        let uri: http::Uri = url
            .parse()
            .map_err(|_| NexusConfigError::Keepers(format!("{url:?} is not a URL")))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none_or(str::is_empty) {
            return Err(NexusConfigError::Keepers(format!(
                "{url:?} must be an https URL with a host"
            )));
        }
        if out.iter().any(|k| k.url == url) {
            return Err(NexusConfigError::Keepers(format!(
                "{url:?} is listed twice"
            )));
        }
        let id = u16::try_from(index + 1)
            .map_err(|_| NexusConfigError::Keepers("too many keepers".to_owned()))?;
        out.push(KeeperPeer {
            id,
            url,
            spiffe_id: pin.spiffe_id,
        });
    }
    Ok(out)
}

fn positive(key: &'static str, d: Duration) -> Result<Duration, NexusConfigError> {
    if d.is_zero() {
        return Err(NexusConfigError::Value {
            key,
            message: "must be greater than zero".to_owned(),
        });
    }
    Ok(d)
}

impl TryFrom<ConfigFile> for Config {
    type Error = NexusConfigError;

    fn try_from(raw: ConfigFile) -> Result<Self, Self::Error> {
        let listen = parse_listen_addr(&raw.listen).map_err(|e| NexusConfigError::Listen {
            key: "listen (SPIKE_NEXUS_TLS_PORT)",
            message: e.to_string(),
        })?;
        let backend = parse_backend(&raw.backend_store)?;
        let postgres = parse_postgres(raw.postgres.clone(), None)?;
        let trust_roots = raw.trust_roots.resolve(&Role::ALL)?;
        let keepers = parse_keepers(
            raw.keeper_peers.as_ref(),
            &raw.keeper_identity,
            &trust_roots,
        )?;
        let (shares, threshold) = (raw.shamir_shares, raw.shamir_threshold);
        if threshold == 0 || threshold > shares {
            return Err(NexusConfigError::Shamir(format!(
                "threshold {threshold} must be between 1 and shares ({shares})"
            )));
        }
        if shares > spike_crypto::shamir::MAX_SHARES {
            return Err(NexusConfigError::Shamir(format!(
                "shares {shares} exceeds {}",
                spike_crypto::shamir::MAX_SHARES
            )));
        }
        if backend != BackendKind::Memory {
            if keepers.is_empty() {
                return Err(NexusConfigError::Keepers(format!(
                    "required for the {} backend",
                    backend_name(backend)
                )));
            }
            if keepers.len() != usize::from(shares) {
                return Err(NexusConfigError::Shamir(format!(
                    "{} keepers configured but shares = {shares}; they must be equal",
                    keepers.len()
                )));
            }
        }
        if raw.max_secret_versions == 0 {
            return Err(NexusConfigError::Value {
                key: "max_secret_versions",
                message: "must be at least 1".to_owned(),
            });
        }
        if raw.crypto_max_ciphertext_size == 0 {
            return Err(NexusConfigError::Value {
                key: "crypto_max_ciphertext_size",
                message: "must be at least 1".to_owned(),
            });
        }
        if raw.shamir_max_share_count == 0 {
            return Err(NexusConfigError::Value {
                key: "shamir_max_share_count",
                message: "must be at least 1".to_owned(),
            });
        }
        let limits = Limits::parse(raw.raw_limits())?;
        for (key, n) in [
            ("health_max_connections", raw.health_max_connections),
            ("metrics_max_connections", raw.metrics_max_connections),
        ] {
            if n == 0 {
                return Err(NexusConfigError::Value {
                    key,
                    message: "must be at least 1".to_owned(),
                });
            }
        }
        let metrics_listen = match raw.metrics_listen.trim() {
            "" => None,
            s => Some(parse_listen_addr(s).map_err(|e| NexusConfigError::Listen {
                key: "metrics_listen",
                message: e.to_string(),
            })?),
        };
        let health_socket = match raw.health_socket {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p),
            None => Some(
                Path::new(DEFAULT_RUNTIME_DIR)
                    .join("spike-nexus")
                    .join("health.sock"),
            ),
        };
        let identity = IdentitySettings::parse(
            raw.spiffe_endpoint_socket.as_deref(),
            raw.spiffe_id.as_deref(),
            raw.spiffe_timeout.0,
        )?;
        Ok(Config {
            listen,
            backend,
            postgres,
            keepers,
            shares,
            threshold,
            max_share_count: raw.shamir_max_share_count,
            keeper_update_interval: positive(
                "keeper_update_interval",
                raw.keeper_update_interval.0,
            )?,
            keeper_probe_interval: positive("keeper_probe_interval", raw.keeper_probe_interval.0)?,
            keeper_timeout: positive("keeper_timeout", raw.keeper_timeout.0)?,
            max_secret_versions: raw.max_secret_versions,
            max_ciphertext_size: raw.crypto_max_ciphertext_size,
            data_dir: raw
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            trust_roots,
            spiffe_endpoint: identity.endpoint,
            spiffe_id: identity.spiffe_id,
            spiffe_timeout: identity.timeout,
            health_socket,
            metrics_listen,
            health_max_connections: raw.health_max_connections,
            metrics_max_connections: raw.metrics_max_connections,
            limits,
            shutdown_grace: raw.shutdown_grace.0,
            recovery_initial_interval: positive(
                "recovery_initial_interval",
                raw.recovery_initial_interval.0,
            )?,
            recovery_max_interval: positive("recovery_max_interval", raw.recovery_max_interval.0)?,
            log: LogOptions {
                level: raw.log_level,
                target: raw.log_target,
            },
            require_mlock: raw.require_mlock,
            deprecations: Vec::new(),
        })
    }
}

/// Loads the configuration from an optional TOML file and the environment.
///
/// Defaults that come from systemd's environment are filled in here: `data_dir` from the first
/// entry of `STATE_DIRECTORY`, the health socket from `RUNTIME_DIRECTORY`
/// (`$RUNTIME_DIRECTORY/health.sock`).
///
/// # Errors
/// [`NexusConfigError`] naming the key (and, for env values, the variable).
pub fn load(file: Option<&Path>, env: &dyn EnvSource) -> Result<Config, NexusConfigError> {
    let loaded =
        spike_daemon::config::load_with_aliases::<ConfigFile>(file, env, ENV_MAP, ALIASES)?;
    let mut raw = loaded.value;
    if raw.data_dir.is_none() {
        raw.data_dir = env
            .var("STATE_DIRECTORY")
            .and_then(|s| s.split(':').next().map(str::to_owned))
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
    }
    if raw.health_socket.is_none()
        && let Some(dir) = env
            .var("RUNTIME_DIRECTORY")
            .and_then(|s| s.split(':').next().map(str::to_owned))
            .filter(|s| !s.is_empty())
    {
        raw.health_socket = Some(PathBuf::from(dir).join("health.sock"));
    }
    let mut config = Config::try_from(raw)?;
    config.postgres.credentials_directory = env
        .var("CREDENTIALS_DIRECTORY")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    config.deprecations = loaded.deprecations;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use spike_daemon::MapEnv;

    use super::*;

    fn env3() -> MapEnv {
        MapEnv::new().with(
            "SPIKE_NEXUS_KEEPER_PEERS",
            "https://k1:8443,https://k2:8443, https://k3:8443",
        )
    }

    #[test]
    fn defaults_with_keepers() {
        let cfg = load(None, &env3()).unwrap();
        assert_eq!(cfg.backend, BackendKind::Sqlite);
        assert_eq!(cfg.listen, "0.0.0.0:8553".parse().unwrap());
        assert_eq!(cfg.keepers.len(), 3);
        assert_eq!(cfg.keepers[2].id, 3);
        assert_eq!(cfg.keepers[2].url, "https://k3:8443");
        assert_eq!((cfg.shares, cfg.threshold), (3, 2));
        assert_eq!(
            cfg.db_path(),
            PathBuf::from("/var/lib/spike-nexus/spike.db")
        );
        assert_eq!(
            cfg.health_socket,
            Some(PathBuf::from("/run/spike-nexus/health.sock"))
        );
        assert_eq!(cfg.metrics_listen, Some("127.0.0.1:9553".parse().unwrap()));
        assert_eq!(cfg.keeper_update_interval, Duration::from_secs(300));
    }

    #[test]
    fn env_values_and_systemd_dirs() {
        let env = env3()
            .with("SPIKE_NEXUS_BACKEND_STORE", "LITE")
            .with("SPIKE_NEXUS_TLS_PORT", "127.0.0.1:9000")
            .with("SPIKE_NEXUS_KEEPER_UPDATE_INTERVAL", "1m30s")
            .with("SPIKE_NEXUS_MAX_SECRET_VERSIONS", "4")
            .with("SPIKE_TRUST_ROOT_PILOT", "a.org, b.org")
            .with("STATE_DIRECTORY", "/var/lib/x:/var/lib/y")
            .with("RUNTIME_DIRECTORY", "/run/spike-nexus");
        let cfg = load(None, &env).unwrap();
        assert_eq!(cfg.backend, BackendKind::Lite);
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.keeper_update_interval, Duration::from_secs(90));
        assert_eq!(cfg.max_secret_versions, 4);
        assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/x"));
        assert_eq!(
            cfg.health_socket,
            Some(PathBuf::from("/run/spike-nexus/health.sock"))
        );
        assert!(
            cfg.trust_roots
                .is_pilot_superuser("spiffe://b.org/spike/pilot/role/superuser")
        );
        assert_eq!(
            cfg.trust_domain_names(),
            vec!["spike.ist", "a.org", "b.org"]
        );
    }

    #[test]
    fn unknown_backend_is_an_error_naming_the_value() {
        let env = env3().with("SPIKE_NEXUS_BACKEND_STORE", "mysql");
        let err = load(None, &env).unwrap_err();
        assert!(err.to_string().contains("\"mysql\""), "{err}");
    }

    #[test]
    fn the_postgres_table_is_checked_and_the_credential_comes_from_systemd() {
        let dir = tempfile::tempdir().unwrap();
        let env = env3()
            .with("SPIKE_NEXUS_BACKEND_STORE", "postgres")
            .with("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap());
        let cfg = load(None, &env).unwrap();
        assert_eq!(cfg.backend, BackendKind::Postgres);
        assert_eq!(cfg.postgres.credential, "nexus-db");
        assert_eq!(cfg.postgres.pool_size, 16);
        let missing = cfg.postgres.read_conninfo().unwrap_err().to_string();
        assert!(
            missing.contains("LoadCredential=nexus-db:FILE"),
            "{missing}"
        );
        std::fs::write(dir.path().join("nexus-db"), "host=/run/postgresql\n").unwrap();
        assert_eq!(
            cfg.postgres.read_conninfo().unwrap().as_str(),
            "host=/run/postgresql\n"
        );
        std::fs::write(dir.path().join("nexus-db"), " \n").unwrap();
        assert!(cfg.postgres.read_conninfo().is_err());
        let no_dir = load(None, &env3().with("SPIKE_NEXUS_BACKEND_STORE", "postgres")).unwrap();
        let e = no_dir.postgres.read_conninfo().unwrap_err().to_string();
        assert!(e.contains("CREDENTIALS_DIRECTORY is not set"), "{e}");
        for (toml, key) in [
            (
                "[postgres]\ncredential = \"../etc/shadow\"\n",
                "postgres.credential",
            ),
            ("[postgres]\npool_size = 0\n", "postgres.pool_size"),
            ("[postgres]\npool_size = 1000\n", "postgres.pool_size"),
            ("[postgres]\ntimeout = \"0s\"\n", "postgres.timeout"),
            ("[postgres]\ntimeout = \"500us\"\n", "postgres.timeout"),
            ("[postgres]\ntimeout = \"1h\"\n", "postgres.timeout"),
            ("[postgres]\nurl = \"postgres://u:pw@h/db\"\n", "url"),
        ] {
            let file = dir.path().join("nexus.toml");
            std::fs::write(&file, toml).unwrap();
            let e = load(Some(&file), &env).unwrap_err().to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
    }

    #[test]
    fn keeper_rules() {
        let bad = [
            "",
            "http://k1:8443,https://k2,https://k3",
            "https://k1,https://k1,https://k3",
            "https://k1,,https://k3",
            "https://k1,https://k2",
        ];
        for peers in bad {
            let env = MapEnv::new().with("SPIKE_NEXUS_KEEPER_PEERS", peers);
            assert!(load(None, &env).is_err(), "{peers:?}");
        }
        // memory mode needs none
        let env = MapEnv::new().with("SPIKE_NEXUS_BACKEND_STORE", "memory");
        assert!(load(None, &env).unwrap().keepers.is_empty());
    }

    #[test]
    fn keepers_are_pinned_by_position_by_table_or_by_role_with_a_warning() {
        // The env form (URLs only) is pinned by position under the keeper trust root.
        let cfg = load(None, &env3().with("SPIKE_TRUST_ROOT_KEEPER", "td.org")).unwrap();
        let ids: Vec<String> = cfg
            .keepers
            .iter()
            .map(|k| k.spiffe_id.as_ref().unwrap().to_string())
            .collect();
        assert_eq!(
            ids,
            [
                "spiffe://td.org/spike/keeper/1",
                "spiffe://td.org/spike/keeper/2",
                "spiffe://td.org/spike/keeper/3"
            ]
        );
        assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nexus.toml");
        std::fs::write(
            &path,
            "keeper_peers = [{ url = \"https://a:1\", spiffe_id = \"spiffe://spike.ist/spike/keeper/x\" }, \
             \"https://b:1\", \"https://c:1\"]\n",
        )
        .unwrap();
        let cfg = load(Some(&path), &MapEnv::new()).unwrap();
        assert_eq!(
            cfg.keepers[0].spiffe_id.as_ref().unwrap().to_string(),
            "spiffe://spike.ist/spike/keeper/x"
        );
        assert_eq!(
            cfg.keepers[1].spiffe_id.as_ref().unwrap().to_string(),
            "spiffe://spike.ist/spike/keeper/2"
        );

        // Two keepers expecting one ID, or a pin that is not a Keeper ID: refused.
        for bad in [
            "keeper_peers = [{ url = \"https://a:1\", spiffe_id = \"spiffe://spike.ist/spike/keeper/2\" }, \"https://b:1\", \"https://c:1\"]\n",
            "keeper_peers = [{ url = \"https://a:1\", spiffe_id = \"spiffe://spike.ist/spike/nexus\" }, \"https://b:1\", \"https://c:1\"]\n",
            "keeper_peers = [{ url = \"https://a:1\" }, \"https://b:1\", \"https://c:1\"]\n",
            "keeper_identity = \"nobody\"\nkeeper_peers = [\"https://a:1\", \"https://b:1\", \"https://c:1\"]\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(load(Some(&path), &MapEnv::new()).is_err(), "{bad}");
        }

        // Role only (SPIKE): accepted, and warned about.
        let cfg = load(None, &env3().with("SPIKE_NEXUS_KEEPER_IDENTITY", "role")).unwrap();
        assert!(cfg.keepers.iter().all(|k| k.spiffe_id.is_none()));
        let warnings = cfg.warnings();
        assert!(
            warnings.len() == 1 && warnings[0].contains("by role alone"),
            "{warnings:?}"
        );
    }

    #[test]
    fn threshold_one_is_accepted_with_a_warning() {
        let cfg = load(None, &env3().with("SPIKE_NEXUS_SHAMIR_THRESHOLD", "1")).unwrap();
        assert_eq!(cfg.threshold, 1);
        let warnings = cfg.warnings();
        assert!(
            warnings.iter().any(|w| w.contains("shamir_threshold = 1")),
            "{warnings:?}"
        );
        let cfg = load(
            None,
            &MapEnv::new()
                .with("SPIKE_NEXUS_BACKEND_STORE", "memory")
                .with("SPIKE_NEXUS_SHAMIR_THRESHOLD", "1"),
        )
        .unwrap();
        assert!(cfg.warnings().is_empty(), "memory mode splits no key");
    }

    #[test]
    fn shamir_rules() {
        let env = env3().with("SPIKE_NEXUS_SHAMIR_THRESHOLD", "4");
        assert!(load(None, &env).is_err());
        let env = env3().with("SPIKE_NEXUS_SHAMIR_THRESHOLD", "0");
        assert!(load(None, &env).is_err());
        let env = env3().with("SPIKE_NEXUS_SHAMIR_SHARES", "x");
        assert!(load(None, &env).is_err());
    }

    #[test]
    fn deprecated_keys_and_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nexus.toml");
        let env = MapEnv::new().with("SPIKE_NEXUS_BACKEND_STORE", "memory");
        std::fs::write(
            &path,
            "spiffe_source_timeout = \"7s\"\nmax_body_bytes = 2048\nshutdown_grace_period = \"3s\"\n",
        )
        .unwrap();
        let cfg = load(Some(&path), &env).unwrap();
        assert_eq!(cfg.spiffe_timeout, Duration::from_secs(7));
        assert_eq!(cfg.limits.request_body_limit, 2048);
        assert_eq!(cfg.shutdown_grace, Duration::from_secs(3));
        let pairs: Vec<_> = cfg.deprecations.iter().map(|d| (d.old, d.new)).collect();
        assert_eq!(
            pairs,
            [
                ("spiffe_source_timeout", "spiffe_timeout"),
                ("max_body_bytes", "request_body_limit"),
                ("shutdown_grace_period", "shutdown_grace"),
            ]
        );
        let text = cfg.deprecations[0].to_string();
        assert!(text.contains("`spiffe_timeout`") && text.contains(&path.display().to_string()));

        std::fs::write(
            &path,
            "shutdown_grace = \"1s\"\nshutdown_grace_period = \"3s\"\n",
        )
        .unwrap();
        let err = load(Some(&path), &env).unwrap_err().to_string();
        assert!(
            err.contains("`shutdown_grace`") && err.contains("`shutdown_grace_period`"),
            "{err}"
        );
    }

    #[test]
    fn spiffe_id_and_timeout_from_env() {
        let env = MapEnv::new()
            .with("SPIKE_NEXUS_BACKEND_STORE", "memory")
            .with("SPIKE_NEXUS_SPIFFE_ID", "spiffe://a.org/spike/nexus")
            .with("SPIKE_SPIFFE_SOURCE_TIMEOUT", "12s");
        let cfg = load(None, &env).unwrap();
        assert_eq!(
            cfg.spiffe_id.map(|i| i.to_string()).as_deref(),
            Some("spiffe://a.org/spike/nexus")
        );
        assert_eq!(cfg.spiffe_timeout, Duration::from_secs(12));
        assert!(cfg.deprecations.is_empty());
        let env = env.with("SPIKE_NEXUS_SPIFFE_ID", "not-an-id");
        assert!(
            load(None, &env)
                .unwrap_err()
                .to_string()
                .contains("spiffe_id")
        );
    }

    #[test]
    fn toml_file_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nexus.toml");
        std::fs::write(
            &path,
            "backend_store = \"memory\"\nmetrics_listen = \"\"\nhealth_socket = \"\"\n\
             keeper_peers = [\"https://a\"]\n[trust_roots]\nnexus = \"example.org\"\n",
        )
        .unwrap();
        let cfg = load(Some(&path), &MapEnv::new()).unwrap();
        assert_eq!(cfg.backend, BackendKind::Memory);
        assert_eq!(cfg.metrics_listen, None);
        assert_eq!(cfg.health_socket, None);
        assert!(cfg.trust_roots.is_nexus("spiffe://example.org/spike/nexus"));
        std::fs::write(&path, "bogus = 1\n").unwrap();
        assert!(load(Some(&path), &MapEnv::new()).is_err());
    }
}
