//! Keeper configuration: a TOML file plus SPIKE's environment variables.
//!
//! Every key, its default and the environment variable that overrides it:
//!
//! | Key | Default | Env | Meaning |
//! |---|---|---|---|
//! | `listen` | `":8443"` | `SPIKE_KEEPER_TLS_PORT` | listen address (`:PORT`, `IP:PORT`, `[IPV6]:PORT`); ignored when systemd passes a socket named `api` |
//! | `spiffe_endpoint_socket` | unset (`unix:///tmp/spire-agent/public/api.sock`) | `SPIFFE_ENDPOINT_SOCKET` | Workload API endpoint |
//! | `spiffe_id` | unset | `SPIKE_KEEPER_SPIFFE_ID` | pick this SVID when the agent returns several |
//! | `spiffe_timeout` (deprecated alias `spiffe_source_timeout`) | `"30s"` | `SPIKE_SPIFFE_SOURCE_TIMEOUT` | bounded wait for the first SVID |
//! | `trust_roots.nexus` | `"spike.ist"` | `SPIKE_TRUST_ROOT_NEXUS` | comma list; callers allowed to contribute and read the shard |
//! | `trust_roots.keeper` | `"spike.ist"` | `SPIKE_TRUST_ROOT_KEEPER` | comma list; our own ID must be a keeper under one of them |
//! | `trust_roots.bootstrap` | `"spike.ist"` | `SPIKE_TRUST_ROOT_BOOTSTRAP` | comma list; callers allowed to contribute |
//! | `max_handshakes` | `64` | — | connections in the TLS handshake; when full the oldest is dropped |
//! | `max_handshakes_per_ip` | `32` | — | the same, per source IP |
//! | `handshake_timeout` | `"10s"` | — | bound on one TLS handshake |
//! | `max_connections` | `256` | — | authenticated connections; more are closed after the handshake |
//! | `max_connections_per_peer` | `64` | — | authenticated connections of one SPIFFE ID |
//! | `read_header_timeout` | `"10s"` | `SPIKE_HTTP_SERVER_READ_HEADER_TIMEOUT` | bound on reading request headers (also idle keep-alive) |
//! | `request_body_limit` (deprecated alias `max_body_bytes`) | `65536` | — | request body limit; larger bodies get 400 |
//! | `request_body_timeout` | `"10s"` | — | time to read one body, plus one second per `request_body_min_rate` bytes |
//! | `request_body_min_rate` | `65536` | — | bytes per second a body must at least arrive at |
//! | `request_body_budget` | `1048576` | — | request body bytes in memory, all peers; more get 503 |
//! | `request_body_budget_per_peer` | `524288` | — | request body bytes in memory, one SPIFFE ID |
//! | `write_timeout` | `"10s"` | — | a response write with no progress this long closes the connection |
//! | `max_connection_lifetime` | `"10m"` | — | a connection closes after this (and at the peer certificate's expiry) |
//! | `shutdown_grace` (deprecated alias `shutdown_grace_period`) | `"10s"` | — | time in-flight requests get after SIGTERM |
//! | `require_mlock` | `false` | — | fail at startup when `mlockall` is refused (else warn) |
//! | `shard_sealing` | `"off"` | — | `off` (RAM only, as SPIKE), `host`, `tpm2`, `host+tpm2`, `auto`: keep the shard across restarts, sealed to this machine ([`crate::sealing`]) |
//! | `shard_sealing_pcrs` | `[]` | — | TPM2 PCRs the sealing key is bound to (0..=23; only with a TPM2 mode) |
//! | `keeper_id` | unset | `SPIKE_KEEPER_ID` | this keeper's id (the unit sets `%i`), bound into the sealed file; needed with sealing on |
//! | `state_directory` | unset | `STATE_DIRECTORY` (first entry) | where the sealed shard is kept (systemd's `StateDirectory=` sets it); needed with sealing on |
//! | `log_level` | unset (`SPIKE_SYSTEM_LOG_LEVEL`, else `WARN`) | — | `DEBUG`, `INFO`, `WARN`, `ERROR` |
//! | `log_target` | `"auto"` | — | `auto` (journald under systemd, else stderr), `journald`, `stderr` |
//!
//! The shared keys (`spiffe_*`, `[trust_roots]`, `request_body_limit`, `shutdown_grace`) and
//! their deprecated aliases are defined once in [`spike_daemon::common`]; a deprecated key is
//! read as its new name and reported in [`KeeperConfig::deprecations`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use spike_daemon::EnvSource;
pub use spike_daemon::common::TrustRootsFile;
use spike_daemon::common::{
    Alias, CommonConfigError, Deprecation, IDENTITY_ALIASES, IdentitySettings, SERVER_ALIASES,
};
use spike_daemon::config::{GoDuration, Loaded, parse_listen_addr};
use spike_daemon::limits::{Limits, RawLimits};
use spike_daemon::logging::{LogLevel, LogOptions, LogTarget};
use spike_identity::SpiffeId;
use spike_proto::TrustRoots;
use spike_proto::spiffe_id::{
    ENV_TRUST_ROOT_BOOTSTRAP, ENV_TRUST_ROOT_KEEPER, ENV_TRUST_ROOT_NEXUS, Role,
};

use crate::error::KeeperError;
use crate::sealing::{SealingSettings, ShardSealing};

/// SPIKE environment variables and the config keys they set.
pub const ENV_MAP: &[(&str, &str)] = &[
    ("SPIKE_KEEPER_TLS_PORT", "listen"),
    ("SPIFFE_ENDPOINT_SOCKET", "spiffe_endpoint_socket"),
    ("SPIKE_KEEPER_SPIFFE_ID", "spiffe_id"),
    ("SPIKE_SPIFFE_SOURCE_TIMEOUT", "spiffe_timeout"),
    (ENV_TRUST_ROOT_NEXUS, "trust_roots.nexus"),
    (ENV_TRUST_ROOT_KEEPER, "trust_roots.keeper"),
    (ENV_TRUST_ROOT_BOOTSTRAP, "trust_roots.bootstrap"),
    (
        "SPIKE_HTTP_SERVER_READ_HEADER_TIMEOUT",
        "read_header_timeout",
    ),
    ("SPIKE_KEEPER_ID", "keeper_id"),
    ("STATE_DIRECTORY", "state_directory"),
];

/// Deprecated keys the keeper still reads (see [`spike_daemon::common`]).
pub const ALIASES: &[Alias] = &[IDENTITY_ALIASES[0], SERVER_ALIASES[0], SERVER_ALIASES[1]];

/// The roles whose `[trust_roots]` the keeper reads: its own, and its callers'.
pub const TRUST_ROLES: &[Role] = &[Role::Nexus, Role::Keeper, Role::Bootstrap];

/// The raw configuration file (see the module docs for every key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// Listen address.
    pub listen: String,
    /// Workload API endpoint.
    pub spiffe_endpoint_socket: Option<String>,
    /// Expected own SPIFFE ID.
    pub spiffe_id: Option<String>,
    /// Bounded wait for the first SVID.
    pub spiffe_timeout: GoDuration,
    /// Trust roots per role.
    pub trust_roots: TrustRootsFile,
    /// Connections in the TLS handshake.
    pub max_handshakes: usize,
    /// Connections in the TLS handshake from one IP.
    pub max_handshakes_per_ip: usize,
    /// TLS handshake bound.
    pub handshake_timeout: GoDuration,
    /// Authenticated connection cap.
    pub max_connections: usize,
    /// Authenticated connections of one SPIFFE ID.
    pub max_connections_per_peer: usize,
    /// Request header read bound.
    pub read_header_timeout: GoDuration,
    /// Request body limit.
    pub request_body_limit: usize,
    /// Base time to read a body.
    pub request_body_timeout: GoDuration,
    /// Minimum body rate in bytes per second.
    pub request_body_min_rate: u64,
    /// Request body bytes in memory, all peers.
    pub request_body_budget: usize,
    /// Request body bytes in memory, one peer.
    pub request_body_budget_per_peer: usize,
    /// Bound on a write with no progress.
    pub write_timeout: GoDuration,
    /// Longest life of a connection.
    pub max_connection_lifetime: GoDuration,
    /// Shutdown grace period.
    pub shutdown_grace: GoDuration,
    /// Fail when `mlockall` is refused.
    pub require_mlock: bool,
    /// Shard sealing mode.
    pub shard_sealing: ShardSealing,
    /// TPM2 PCRs of the seal.
    pub shard_sealing_pcrs: Vec<u32>,
    /// This keeper's id (a string or an integer: `SPIKE_KEEPER_ID=2` reads as a number).
    pub keeper_id: Option<KeeperIdValue>,
    /// Where the sealed shard is kept.
    pub state_directory: Option<String>,
    /// Log level.
    pub log_level: Option<LogLevel>,
    /// Log destination.
    pub log_target: LogTarget,
}

impl Default for ConfigFile {
    fn default() -> Self {
        Self {
            listen: ":8443".to_owned(),
            spiffe_endpoint_socket: None,
            spiffe_id: None,
            spiffe_timeout: GoDuration(Duration::from_secs(30)),
            trust_roots: TrustRootsFile::default(),
            max_handshakes: 64,
            max_handshakes_per_ip: 32,
            handshake_timeout: GoDuration(Duration::from_secs(10)),
            max_connections: 256,
            max_connections_per_peer: 64,
            read_header_timeout: GoDuration(Duration::from_secs(10)),
            request_body_limit: 64 * 1024,
            request_body_timeout: GoDuration(Duration::from_secs(10)),
            request_body_min_rate: 64 * 1024,
            request_body_budget: 1024 * 1024,
            request_body_budget_per_peer: 512 * 1024,
            write_timeout: GoDuration(Duration::from_secs(10)),
            max_connection_lifetime: GoDuration(Duration::from_secs(600)),
            shutdown_grace: GoDuration(Duration::from_secs(10)),
            require_mlock: false,
            shard_sealing: ShardSealing::Off,
            shard_sealing_pcrs: Vec::new(),
            keeper_id: None,
            state_directory: None,
            log_level: None,
            log_target: LogTarget::Auto,
        }
    }
}

impl ConfigFile {
    /// The limit keys' values.
    #[must_use]
    pub fn raw_limits(&self) -> RawLimits {
        spike_daemon::raw_limits!(self)
    }
}

/// A keeper id as written: `"2"` or `2`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum KeeperIdValue {
    /// Written as a string.
    Text(String),
    /// Written as an integer.
    Number(u64),
}

impl KeeperIdValue {
    fn into_string(self) -> String {
        match self {
            Self::Text(s) => s,
            Self::Number(n) => n.to_string(),
        }
    }
}

/// The validated keeper configuration.
#[derive(Debug, Clone)]
pub struct KeeperConfig {
    /// Address to bind when no socket is passed by systemd.
    pub listen: SocketAddr,
    /// Workload API endpoint (`None`: `SPIFFE_ENDPOINT_SOCKET` or the default).
    pub spiffe_endpoint_socket: Option<String>,
    /// Which SVID to use when the agent returns several.
    pub spiffe_id: Option<SpiffeId>,
    /// Bounded wait for the first SVID.
    pub spiffe_timeout: Duration,
    /// Trust roots for the role checks.
    pub trust_roots: TrustRoots,
    /// The listener's connection, time and memory limits.
    pub limits: Limits,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Fail at startup when `mlockall` is refused.
    pub require_mlock: bool,
    /// Shard sealing mode and PCRs.
    pub sealing: SealingSettings,
    /// This keeper's id (`None` outside a unit; required with sealing on, at start).
    pub keeper_id: Option<String>,
    /// Where the sealed shard is kept (`None` outside a unit; required with sealing on).
    pub state_directory: Option<PathBuf>,
    /// Logging options.
    pub log: LogOptions,
    /// Deprecated keys the file used (log them at `warn` once logging is up).
    pub deprecations: Vec<Deprecation>,
}

impl Default for KeeperConfig {
    fn default() -> Self {
        // The defaults are valid by construction; a failure here would be a bug caught by
        // the unit tests, so fall back to the most conservative values anyway.
        Self::try_from(ConfigFile::default()).unwrap_or_else(|_| Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            spiffe_endpoint_socket: None,
            spiffe_id: None,
            spiffe_timeout: Duration::from_secs(30),
            trust_roots: TrustRoots::default(),
            limits: Limits::from_defaults(ConfigFile::default().raw_limits()),
            shutdown_grace: Duration::from_secs(10),
            require_mlock: false,
            sealing: SealingSettings::default(),
            keeper_id: None,
            state_directory: None,
            log: LogOptions::default(),
            deprecations: Vec::new(),
        })
    }
}

impl KeeperConfig {
    /// Loads the optional TOML `file`, overlays the SPIKE variables of `env` and validates.
    ///
    /// # Errors
    /// [`KeeperError::Config`] or [`KeeperError::InvalidConfig`] naming the key.
    pub fn load(file: Option<&Path>, env: &dyn EnvSource) -> Result<Self, KeeperError> {
        Self::from_loaded(spike_daemon::config::load_with_aliases(
            file, env, ENV_MAP, ALIASES,
        )?)
    }

    /// Loads from TOML text (tests, `check-config` on generated files).
    ///
    /// # Errors
    /// As [`KeeperConfig::load`].
    pub fn from_toml(toml: &str, env: &dyn EnvSource) -> Result<Self, KeeperError> {
        Self::from_loaded(spike_daemon::config::load_str_with_aliases(
            toml, "config", env, ENV_MAP, ALIASES,
        )?)
    }

    fn from_loaded(loaded: Loaded<ConfigFile>) -> Result<Self, KeeperError> {
        let mut config = Self::try_from(loaded.value)?;
        config.deprecations = loaded.deprecations;
        Ok(config)
    }
}

impl TryFrom<ConfigFile> for KeeperConfig {
    type Error = KeeperError;

    fn try_from(raw: ConfigFile) -> Result<Self, Self::Error> {
        let listen = parse_listen_addr(&raw.listen).map_err(|e| KeeperError::InvalidConfig {
            key: "listen",
            message: e.to_string(),
        })?;
        let common = |e: CommonConfigError| KeeperError::InvalidConfig {
            key: e.key,
            message: e.message,
        };
        let identity = IdentitySettings::parse(
            raw.spiffe_endpoint_socket.as_deref(),
            raw.spiffe_id.as_deref(),
            raw.spiffe_timeout.0,
        )
        .map_err(common)?;
        let trust_roots = raw.trust_roots.resolve(TRUST_ROLES).map_err(common)?;
        let limits = Limits::parse(raw.raw_limits()).map_err(common)?;
        let sealing = SealingSettings::parse(raw.shard_sealing, &raw.shard_sealing_pcrs)
            .map_err(|(key, message)| KeeperError::InvalidConfig { key, message })?;
        let keeper_id = raw
            .keeper_id
            .map(KeeperIdValue::into_string)
            .filter(|id| !id.trim().is_empty())
            .map(|id| {
                let ok = id.len() <= 64
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
                if ok {
                    Ok(id)
                } else {
                    Err(KeeperError::InvalidConfig {
                        key: "keeper_id",
                        message: "at most 64 of A-Z a-z 0-9 _ -".to_owned(),
                    })
                }
            })
            .transpose()?;
        let state_directory = raw
            .state_directory
            .filter(|d| !d.trim().is_empty())
            .map(|d| {
                // systemd joins several StateDirectory= entries with ':'; the first is ours.
                let first = d.split(':').next().unwrap_or_default();
                let path = PathBuf::from(first);
                if path.is_absolute() {
                    Ok(path)
                } else {
                    Err(KeeperError::InvalidConfig {
                        key: "state_directory",
                        message: format!("{d:?} is not an absolute path"),
                    })
                }
            })
            .transpose()?;
        Ok(Self {
            listen,
            spiffe_endpoint_socket: identity.endpoint,
            spiffe_id: identity.spiffe_id,
            spiffe_timeout: identity.timeout,
            trust_roots,
            limits,
            shutdown_grace: raw.shutdown_grace.0,
            require_mlock: raw.require_mlock,
            sealing,
            keeper_id,
            state_directory,
            log: LogOptions {
                level: raw.log_level,
                target: raw.log_target,
            },
            deprecations: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use spike_daemon::MapEnv;

    use super::*;

    #[test]
    fn deprecated_keys_keep_working_with_a_warning() {
        let env = MapEnv::new();
        let c = KeeperConfig::from_toml(
            "spiffe_source_timeout = \"7s\"\nmax_body_bytes = 2048\nshutdown_grace_period = \"3s\"\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.spiffe_timeout, Duration::from_secs(7));
        assert_eq!(c.limits.request_body_limit, 2048);
        assert_eq!(c.shutdown_grace, Duration::from_secs(3));
        let news: Vec<_> = c.deprecations.iter().map(|d| (d.old, d.new)).collect();
        assert_eq!(
            news,
            [
                ("spiffe_source_timeout", "spiffe_timeout"),
                ("max_body_bytes", "request_body_limit"),
                ("shutdown_grace_period", "shutdown_grace"),
            ]
        );
        assert!(
            c.deprecations[1]
                .to_string()
                .contains("`request_body_limit`")
        );

        let c = KeeperConfig::from_toml(
            "spiffe_timeout = \"7s\"\nrequest_body_limit = 2048\nshutdown_grace = \"3s\"\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.spiffe_timeout, Duration::from_secs(7));
        assert_eq!(c.limits.request_body_limit, 2048);
        assert_eq!(c.shutdown_grace, Duration::from_secs(3));
        assert!(c.deprecations.is_empty());
    }

    #[test]
    fn old_and_new_key_together_are_an_error() {
        let err = KeeperConfig::from_toml(
            "max_body_bytes = 2048\nrequest_body_limit = 4096\n",
            &MapEnv::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`max_body_bytes`") && err.contains("`request_body_limit`"),
            "{err}"
        );
    }

    #[test]
    fn env_sets_the_new_key_and_wins_over_an_old_one() {
        let env = MapEnv::new().with("SPIKE_SPIFFE_SOURCE_TIMEOUT", "9s");
        let c = KeeperConfig::from_toml("spiffe_source_timeout = \"7s\"\n", &env).unwrap();
        assert_eq!(c.spiffe_timeout, Duration::from_secs(9));
        assert_eq!(c.deprecations.len(), 1);
    }

    #[test]
    fn unused_trust_roots_are_rejected() {
        let err = KeeperConfig::from_toml("[trust_roots]\npilot = \"a.org\"\n", &MapEnv::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("trust_roots.pilot"), "{err}");
    }

    #[test]
    fn defaults_are_spike_defaults() {
        let c = KeeperConfig::from_toml("", &MapEnv::new()).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8443".parse().unwrap());
        assert!(c.trust_roots.is_nexus("spiffe://spike.ist/spike/nexus"));
        assert!(
            c.trust_roots
                .is_bootstrap("spiffe://spike.ist/spike/bootstrap")
        );
        assert_eq!(c.limits.request_body_limit, 65536);
        assert!(!c.require_mlock);
        assert_eq!(c.limits.read_header_timeout, Duration::from_secs(10));
        let d = KeeperConfig::default();
        assert_eq!(d.listen, c.listen);
    }

    #[test]
    fn env_overrides_file() {
        let env = MapEnv::new()
            .with("SPIKE_KEEPER_TLS_PORT", "127.0.0.1:9443")
            .with("SPIKE_TRUST_ROOT_NEXUS", "a.org, b.org")
            .with("SPIKE_HTTP_SERVER_READ_HEADER_TIMEOUT", "3s");
        let c = KeeperConfig::from_toml(
            "listen = \":1\"\nrequire_mlock = true\n[trust_roots]\nbootstrap = \"c.org\"\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9443".parse().unwrap());
        assert!(c.trust_roots.is_nexus("spiffe://b.org/spike/nexus"));
        assert!(!c.trust_roots.is_nexus("spiffe://spike.ist/spike/nexus"));
        assert!(c.trust_roots.is_bootstrap("spiffe://c.org/spike/bootstrap"));
        assert_eq!(c.limits.read_header_timeout, Duration::from_secs(3));
        assert!(c.require_mlock);
    }

    #[test]
    fn sealing_keys() {
        let env = MapEnv::new()
            .with("SPIKE_KEEPER_ID", "2")
            .with("STATE_DIRECTORY", "/var/lib/spike-keeper/2");
        let c = KeeperConfig::from_toml(
            "shard_sealing = \"host+tpm2\"\nshard_sealing_pcrs = [7]\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.sealing.mode, ShardSealing::HostTpm2);
        assert_eq!(c.sealing.pcrs, [7]);
        assert_eq!(c.keeper_id.as_deref(), Some("2"));
        assert_eq!(
            c.state_directory.as_deref(),
            Some(Path::new("/var/lib/spike-keeper/2"))
        );
        let d = KeeperConfig::from_toml("", &MapEnv::new()).unwrap();
        assert_eq!(d.sealing, SealingSettings::default());
        assert!(!d.sealing.mode.is_on());
        for (toml, key) in [
            ("shard_sealing = \"tpm\"", "shard_sealing"),
            (
                "shard_sealing = \"host\"\nshard_sealing_pcrs = [7]",
                "shard_sealing_pcrs",
            ),
            (
                "shard_sealing = \"tpm2\"\nshard_sealing_pcrs = [99]",
                "shard_sealing_pcrs",
            ),
            ("keeper_id = \"../x\"", "keeper_id"),
            ("keeper_id = \"..\"", "keeper_id"),
            ("state_directory = \"relative\"", "state_directory"),
            ("state_directory = \":/b\"", "state_directory"),
        ] {
            let err = KeeperConfig::from_toml(toml, &MapEnv::new())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let env = MapEnv::new();
        let err = KeeperConfig::from_toml("listen = \"8443\"", &env).unwrap_err();
        assert!(err.to_string().contains("`listen`"), "{err}");
        let err = KeeperConfig::from_toml("lisen = \":1\"", &env).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let err = KeeperConfig::from_toml("[trust_roots]\nnexus = \"a,\"", &env).unwrap_err();
        assert!(err.to_string().contains("trust_roots"), "{err}");
        let err = KeeperConfig::from_toml("max_connections = 0", &env).unwrap_err();
        assert!(err.to_string().contains("max_connections"), "{err}");
        let err = KeeperConfig::from_toml("handshake_timeout = \"5\"", &env).unwrap_err();
        assert!(err.to_string().contains("handshake_timeout"), "{err}");
        let err = KeeperConfig::from_toml("spiffe_id = \"not an id\"", &env).unwrap_err();
        assert!(err.to_string().contains("spiffe_id"), "{err}");
    }
}
