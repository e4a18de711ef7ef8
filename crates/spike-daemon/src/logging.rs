//! Tracing setup for the daemons' `main`: journald with structured fields when the service runs
//! under systemd with its stderr connected to the journal, plain text on stderr otherwise.
//!
//! Only binaries call [`init`]; libraries never install a subscriber. Field names live in
//! [`log_keys`]; audit events use the target [`AUDIT_TARGET`] and are always enabled at `INFO`,
//! whatever the level, unless `RUST_LOG` says otherwise about that target.

use std::fmt;
use std::os::fd::AsFd;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::env::EnvSource;

/// The tracing target of audit events (`tracing::info!(target: AUDIT_TARGET, ...)`).
pub const AUDIT_TARGET: &str = "spike::audit";

/// SPIKE's log-level variable: `DEBUG`/`INFO`/`WARN`/`ERROR`, case-insensitive.
pub const LOG_LEVEL_ENV: &str = "SPIKE_SYSTEM_LOG_LEVEL";

/// Prefix of user fields in the journal: `peer_spiffe_id` becomes `SPIKE_PEER_SPIFFE_ID`, so
/// `journalctl SPIKE_PEER_SPIFFE_ID=spiffe://...` finds the events.
pub const JOURNAL_FIELD_PREFIX: &str = "SPIKE";

/// Field names used in log and audit events; use these constants, never string literals.
pub mod log_keys {
    /// SPIFFE ID of the mTLS peer.
    pub const PEER_SPIFFE_ID: &str = "peer_spiffe_id";
    /// Socket address of the peer.
    pub const PEER_ADDR: &str = "peer_addr";
    /// Authorization action (`read`, `write`, `list`, `super`, ...).
    pub const ACTION: &str = "action";
    /// Secret or policy path the request is about.
    pub const PATH: &str = "path";
    /// HTTP status code of the response.
    pub const STATUS: &str = "status";
    /// SPIKE error code of a failed request.
    pub const ERROR_CODE: &str = "error_code";
    /// Per-request correlation ID.
    pub const REQUEST_ID: &str = "request_id";
    /// Request duration in milliseconds.
    pub const DURATION_MS: &str = "duration_ms";
    /// Route (API path + action query) that served the request.
    pub const ROUTE: &str = "route";
    /// HTTP method.
    pub const METHOD: &str = "method";
    /// Policy name or ID.
    pub const POLICY: &str = "policy";
    /// Secret version.
    pub const VERSION: &str = "version";
    /// Keeper ID or URL.
    pub const KEEPER: &str = "keeper";
    /// Shard ID.
    pub const SHARD_ID: &str = "shard_id";
    /// Name of a daemon task (listener, svid_watcher, keeper_sync, ...).
    pub const TASK: &str = "task";
    /// Listen address or socket name.
    pub const LISTEN: &str = "listen";
    /// Seal state (`sealed`, `unsealed`, `uninitialized`).
    pub const SEAL_STATE: &str = "seal_state";
    /// Error text of a failure.
    pub const ERROR: &str = "error";
}

/// A log level as SPIKE spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Everything (not in SPIKE; for development).
    Trace,
    /// `DEBUG`.
    Debug,
    /// `INFO`.
    Info,
    /// `WARN` (SPIKE's default).
    Warn,
    /// `ERROR`.
    Error,
}

impl LogLevel {
    /// SPIKE's default level (`WARN`).
    pub const DEFAULT: LogLevel = LogLevel::Warn;

    fn as_directive(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_directive().to_ascii_uppercase())
    }
}

/// An unknown log level name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log level {0:?}: expected DEBUG, INFO, WARN or ERROR")]
pub struct LogLevelError(pub String);

impl FromStr for LogLevel {
    type Err = LogLevelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "trace" => Ok(LogLevel::Trace),
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            _ => Err(LogLevelError(s.to_owned())),
        }
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for LogLevel {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Where log events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// journald when [`journal_stream_is_stderr`] and the journal socket answers, else stderr.
    #[default]
    Auto,
    /// journald; fail if it is not reachable.
    Journald,
    /// Plain text on stderr.
    Stderr,
}

/// What [`init`] should do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// The configured level; `None` falls back to `SPIKE_SYSTEM_LOG_LEVEL`, then `WARN`.
    /// `RUST_LOG`, when set, overrides both with full `EnvFilter` directives.
    pub level: Option<LogLevel>,
    /// Where events go.
    pub target: LogTarget,
}

/// The sink [`init`] chose, for the daemon to log once at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogSink {
    /// Native journald protocol with structured fields.
    Journald,
    /// Text on stderr.
    Stderr,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// `SPIKE_SYSTEM_LOG_LEVEL` holds an unknown level.
    #[error("{LOG_LEVEL_ENV}: {0}")]
    Level(#[from] LogLevelError),
    /// `RUST_LOG` holds invalid filter directives.
    #[error("RUST_LOG: {0}")]
    Filter(String),
    /// journald was required but is not reachable.
    #[error("journald is not reachable: {0}")]
    Journald(#[source] std::io::Error),
    /// A global subscriber was already installed (init called twice).
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInstalled(String),
}

/// Builds the filter directives: `RUST_LOG` verbatim when set; else the level from `options`,
/// `SPIKE_SYSTEM_LOG_LEVEL` or `WARN`, plus `spike::audit=info` so audit events are never
/// filtered out by a quiet level.
///
/// # Errors
///
/// [`LogError::Level`] for an unknown `SPIKE_SYSTEM_LOG_LEVEL`.
pub fn filter_directives(options: &LogOptions, env: &dyn EnvSource) -> Result<String, LogError> {
    if let Some(rust_log) = env.var("RUST_LOG").filter(|s| !s.trim().is_empty()) {
        if rust_log.contains(AUDIT_TARGET) {
            return Ok(rust_log);
        }
        return Ok(format!("{rust_log},{AUDIT_TARGET}=info"));
    }
    let level = match options.level {
        Some(level) => level,
        None => match env.var(LOG_LEVEL_ENV).filter(|s| !s.trim().is_empty()) {
            Some(s) => s.parse()?,
            None => LogLevel::DEFAULT,
        },
    };
    let audit = level.min(LogLevel::Info);
    Ok(format!(
        "{},{AUDIT_TARGET}={}",
        level.as_directive(),
        audit.as_directive()
    ))
}

/// Whether `JOURNAL_STREAM` (`<dev>:<inode>`, set by systemd) names the file that is this
/// process's stderr, i.e. whether stderr goes to the journal.
#[must_use]
pub fn journal_stream_is_stderr(env: &dyn EnvSource) -> bool {
    let Some(value) = env.var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let stderr = std::io::stderr();
    match nix::sys::stat::fstat(stderr.as_fd()) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}

/// Installs the global tracing subscriber. Call once, from `main`, before anything logs.
///
/// # Errors
///
/// [`LogError`] for a bad level or filter, an unreachable journal with
/// [`LogTarget::Journald`], or a second call.
pub fn init(options: &LogOptions, env: &dyn EnvSource) -> Result<LogSink, LogError> {
    let directives = filter_directives(options, env)?;
    let filter = EnvFilter::try_new(&directives).map_err(|e| LogError::Filter(e.to_string()))?;

    let journald = match options.target {
        LogTarget::Stderr => None,
        LogTarget::Journald => Some(journald_layer().map_err(LogError::Journald)?),
        LogTarget::Auto if journal_stream_is_stderr(env) => journald_layer().ok(),
        LogTarget::Auto => None,
    };
    let registry = tracing_subscriber::registry().with(filter);
    match journald {
        Some(layer) => {
            registry
                .with(layer)
                .try_init()
                .map_err(|e| LogError::AlreadyInstalled(e.to_string()))?;
            Ok(LogSink::Journald)
        }
        None => {
            registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(false),
                )
                .try_init()
                .map_err(|e| LogError::AlreadyInstalled(e.to_string()))?;
            Ok(LogSink::Stderr)
        }
    }
}

fn journald_layer() -> std::io::Result<tracing_journald::Layer> {
    Ok(tracing_journald::layer()?.with_field_prefix(Some(JOURNAL_FIELD_PREFIX.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::MapEnv;

    #[test]
    fn levels_parse_case_insensitively() {
        assert_eq!("debug".parse(), Ok(LogLevel::Debug));
        assert_eq!("INFO".parse(), Ok(LogLevel::Info));
        assert_eq!("Warn".parse(), Ok(LogLevel::Warn));
        assert_eq!(" ERROR ".parse(), Ok(LogLevel::Error));
        assert_eq!(
            "loud".parse::<LogLevel>(),
            Err(LogLevelError("loud".into()))
        );
        assert_eq!(LogLevel::Warn.to_string(), "WARN");
    }

    #[test]
    fn directives_prefer_rust_log_then_config_then_spike_env() {
        let opts = LogOptions::default();
        assert_eq!(
            filter_directives(&opts, &MapEnv::new()).unwrap(),
            "warn,spike::audit=info"
        );
        let env = MapEnv::from([(LOG_LEVEL_ENV, "debug")]);
        assert_eq!(
            filter_directives(&opts, &env).unwrap(),
            "debug,spike::audit=debug"
        );
        let configured = LogOptions {
            level: Some(LogLevel::Error),
            ..LogOptions::default()
        };
        assert_eq!(
            filter_directives(&configured, &env).unwrap(),
            "error,spike::audit=info"
        );
        let env = env.with("RUST_LOG", "spike_nexus=trace");
        assert_eq!(
            filter_directives(&configured, &env).unwrap(),
            "spike_nexus=trace,spike::audit=info"
        );
        let env = MapEnv::from([("RUST_LOG", "spike::audit=off")]);
        assert_eq!(filter_directives(&opts, &env).unwrap(), "spike::audit=off");
        let bad = MapEnv::from([(LOG_LEVEL_ENV, "chatty")]);
        assert!(matches!(
            filter_directives(&opts, &bad),
            Err(LogError::Level(_))
        ));
    }

    #[test]
    fn journal_stream_must_match_stderr() {
        assert!(!journal_stream_is_stderr(&MapEnv::new()));
        assert!(!journal_stream_is_stderr(&MapEnv::from([(
            "JOURNAL_STREAM",
            "garbage"
        )])));
        let st = nix::sys::stat::fstat(std::io::stderr().as_fd()).unwrap();
        let matching = format!("{}:{}", st.st_dev, st.st_ino);
        assert!(journal_stream_is_stderr(&MapEnv::from([(
            "JOURNAL_STREAM",
            matching.as_str()
        )])));
        let other = format!("{}:{}", st.st_dev, st.st_ino.wrapping_add(1));
        assert!(!journal_stream_is_stderr(&MapEnv::from([(
            "JOURNAL_STREAM",
            other.as_str()
        )])));
    }
}
