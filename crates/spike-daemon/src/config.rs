//! Configuration loading shared by the daemons: one TOML file plus an explicit map of SPIKE's
//! environment variables onto config keys, Go durations and Go listen addresses.
//!
//! The daemon's raw `ConfigFile` type carries `#[serde(deny_unknown_fields)]`; [`load`] turns
//! figment's errors into a [`ConfigError`] that names each bad key and where it came from (the
//! file path or the environment variable), and never prints the value of a key whose name looks
//! secret.
//!
//! Environment values are parsed the way figment's own `Env` provider does: `8553` becomes an
//! integer, `true`/`false` a boolean, anything else a string (quote it, `"123"`, to force a
//! string).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serializer};

pub use crate::common::{Alias, Deprecation};
pub use crate::env::{EnvSource, MapEnv, ProcessEnv};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file named on the command line could not be opened.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// One or more keys are unknown, missing or have a bad value.
    #[error("{}", display_issues(issues))]
    Invalid {
        /// Every problem found, in the order figment reported them.
        issues: Vec<ConfigIssue>,
    },
}

/// One problem with one configuration key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The dotted key path (`listen.api`); empty for a problem with the whole document.
    pub key: String,
    /// Where the value came from: a file path, `environment variable SPIKE_...`, or `defaults`.
    pub origin: String,
    /// What is wrong, without the value when the key looks secret.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{} (in {})", self.message, self.origin)
        } else {
            write!(
                f,
                "key `{}`: {} (in {})",
                self.key, self.message, self.origin
            )
        }
    }
}

fn display_issues(issues: &[ConfigIssue]) -> String {
    match issues {
        [one] => format!("invalid configuration: {one}"),
        many => {
            let mut s = format!("invalid configuration ({} problems):", many.len());
            for issue in many {
                s.push_str("\n  - ");
                s.push_str(&issue.to_string());
            }
            s
        }
    }
}

/// Loads `T` from an optional TOML `file`, then overlays the environment variables named in
/// `env_map` (`(SPIKE_VAR, "dotted.config.key")`) that are set in `env`; env wins over the file,
/// and both win over `T`'s serde defaults.
///
/// # Errors
///
/// [`ConfigError::Read`] when `file` cannot be opened; [`ConfigError::Invalid`] for TOML syntax
/// errors, unknown keys (with `deny_unknown_fields`), missing keys and bad values.
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    env: &dyn EnvSource,
    env_map: &[(&str, &str)],
) -> Result<T, ConfigError> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        // figment silently ignores a missing file; an operator who names one means it.
        std::fs::File::open(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        figment = figment.merge(Toml::file_exact(path));
    }
    extract(with_env(figment, env, env_map))
}

/// Like [`load`], with the TOML given as a string (`origin` names it in errors).
///
/// # Errors
///
/// As [`load`], except that there is no file to read.
pub fn load_str<T: DeserializeOwned>(
    toml: &str,
    origin: &str,
    env: &dyn EnvSource,
    env_map: &[(&str, &str)],
) -> Result<T, ConfigError> {
    let figment = Figment::new().merge(NamedToml {
        text: toml.to_owned(),
        origin: origin.to_owned(),
    });
    extract(with_env(figment, env, env_map))
}

/// A loaded configuration with the deprecated keys that were used to write it.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    /// The configuration.
    pub value: T,
    /// Deprecated keys found (their values were used under the new names); the daemon logs
    /// them at `warn` once logging is up, and `check-config` prints them on stderr.
    pub deprecations: Vec<Deprecation>,
}

/// Like [`load`], and every deprecated key of `aliases` found in the file is read as its new
/// key and reported in [`Loaded::deprecations`]. Environment variables map onto the new keys
/// directly.
///
/// # Errors
///
/// As [`load`]; also [`ConfigError::Invalid`] naming both keys when a file sets a deprecated
/// key and its replacement.
pub fn load_with_aliases<T: DeserializeOwned>(
    file: Option<&Path>,
    env: &dyn EnvSource,
    env_map: &[(&str, &str)],
    aliases: &[Alias],
) -> Result<Loaded<T>, ConfigError> {
    let mut figment = Figment::new();
    let mut deprecations = Vec::new();
    if let Some(path) = file {
        std::fs::File::open(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let toml = Toml::file_exact(path);
        let origin = path.display().to_string();
        let data = match toml.data() {
            Ok(map) => Ok(rename_aliases(map, aliases, &origin, &mut deprecations)?),
            Err(e) => Err(e),
        };
        figment = figment.merge(Prepared {
            metadata: toml.metadata(),
            data,
        });
    }
    let value = extract(with_env(figment, env, env_map))?;
    Ok(Loaded {
        value,
        deprecations,
    })
}

/// Like [`load_with_aliases`], with the TOML given as a string (`origin` names it).
///
/// # Errors
///
/// As [`load_with_aliases`], except that there is no file to read.
pub fn load_str_with_aliases<T: DeserializeOwned>(
    toml: &str,
    origin: &str,
    env: &dyn EnvSource,
    env_map: &[(&str, &str)],
    aliases: &[Alias],
) -> Result<Loaded<T>, ConfigError> {
    let mut deprecations = Vec::new();
    let provider = NamedToml {
        text: toml.to_owned(),
        origin: origin.to_owned(),
    };
    let data = match provider.data() {
        Ok(map) => Ok(rename_aliases(map, aliases, origin, &mut deprecations)?),
        Err(e) => Err(e),
    };
    let figment = Figment::new().merge(Prepared {
        metadata: provider.metadata(),
        data,
    });
    let value = extract(with_env(figment, env, env_map))?;
    Ok(Loaded {
        value,
        deprecations,
    })
}

/// Renames the top-level deprecated keys of one provider's data to their new names.
fn rename_aliases(
    mut map: Map<Profile, Dict>,
    aliases: &[Alias],
    origin: &str,
    found: &mut Vec<Deprecation>,
) -> Result<Map<Profile, Dict>, ConfigError> {
    let mut issues = Vec::new();
    for dict in map.values_mut() {
        for alias in aliases {
            let Some(value) = dict.remove(alias.old) else {
                continue;
            };
            if dict.contains_key(alias.new) {
                issues.push(ConfigIssue {
                    key: alias.new.to_owned(),
                    origin: origin.to_owned(),
                    message: format!(
                        "both `{}` and its deprecated alias `{}` are set; keep only `{}`",
                        alias.new, alias.old, alias.new
                    ),
                });
                continue;
            }
            dict.insert(alias.new.to_owned(), value);
            found.push(Deprecation {
                old: alias.old,
                new: alias.new,
                origin: origin.to_owned(),
            });
        }
    }
    if issues.is_empty() {
        Ok(map)
    } else {
        Err(ConfigError::Invalid { issues })
    }
}

/// Data read (and alias-renamed) ahead of time, under the original provider's metadata.
struct Prepared {
    metadata: Metadata,
    data: Result<Map<Profile, Dict>, figment::Error>,
}

impl Provider for Prepared {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.data.clone()
    }
}

fn with_env(mut figment: Figment, env: &dyn EnvSource, env_map: &[(&str, &str)]) -> Figment {
    for (var, key) in env_map {
        if let Some(value) = env.var(var) {
            figment = figment.merge(EnvVar {
                var: (*var).to_owned(),
                key: (*key).to_owned(),
                value,
            });
        }
    }
    figment
}

fn extract<T: DeserializeOwned>(figment: Figment) -> Result<T, ConfigError> {
    figment.extract::<T>().map_err(|e| ConfigError::Invalid {
        issues: e.into_iter().map(issue_from).collect(),
    })
}

/// TOML text with a caller-chosen origin name.
struct NamedToml {
    text: String,
    origin: String,
}

impl Provider for NamedToml {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.origin.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Toml::string(&self.text).data()
    }
}

/// One SPIKE environment variable mapped onto one config key.
struct EnvVar {
    var: String,
    key: String,
    value: String,
}

impl Provider for EnvVar {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("environment variable {}", self.var))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let value: Value = self.value.parse().unwrap_or_else(|never| match never {});
        let mut value = value;
        for segment in self.key.rsplit('.') {
            let mut dict = Dict::new();
            dict.insert(segment.to_owned(), value);
            value = Value::from(dict);
        }
        let mut map = Map::new();
        map.insert(Profile::Default, value.into_dict().unwrap_or_default());
        Ok(map)
    }
}

/// Names of keys whose values must never appear in messages.
const SECRET_HINTS: &[&str] = &[
    "secret",
    "password",
    "passwd",
    "token",
    "key",
    "credential",
    "shard",
    "private",
    "seed",
];

/// Whether a config key's last segment looks like it holds a secret.
#[must_use]
pub fn is_secret_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    SECRET_HINTS.iter().any(|hint| last.contains(hint))
}

fn issue_from(err: figment::Error) -> ConfigIssue {
    use figment::error::Kind;

    let mut key = err.path.join(".");
    // figment's path sometimes already ends with the field (unknown fields), sometimes not.
    let push = |key: &mut String, field: &str| {
        if key.rsplit('.').next() == Some(field) {
            return;
        }
        if !key.is_empty() {
            key.push('.');
        }
        key.push_str(field);
    };
    let origin = match &err.metadata {
        Some(md) => match md.source.as_ref().and_then(|s| s.file_path()) {
            Some(path) => path.display().to_string(),
            None => md.name.to_string(),
        },
        None => "defaults".to_owned(),
    };
    let secret = is_secret_key(&key);
    let message = match &err.kind {
        Kind::UnknownField(field, expected) => {
            push(&mut key, field);
            if expected.is_empty() {
                "unknown key".to_owned()
            } else {
                format!("unknown key, expected one of: {}", expected.join(", "))
            }
        }
        Kind::MissingField(field) => {
            push(&mut key, field);
            "missing key".to_owned()
        }
        Kind::DuplicateField(field) => {
            push(&mut key, field);
            "duplicate key".to_owned()
        }
        Kind::InvalidType(_, expected) if secret => {
            format!("invalid type (value not shown), expected {expected}")
        }
        Kind::InvalidValue(_, expected) if secret => {
            format!("invalid value (value not shown), expected {expected}")
        }
        Kind::InvalidType(actual, expected) => {
            format!("invalid type: found {actual}, expected {expected}")
        }
        Kind::InvalidValue(actual, expected) => {
            format!("invalid value: found {actual}, expected {expected}")
        }
        Kind::UnknownVariant(_, expected) if secret => {
            format!(
                "unknown variant (value not shown), expected one of: {}",
                expected.join(", ")
            )
        }
        Kind::Message(_) if secret => "invalid value (value not shown)".to_owned(),
        other => other.to_string(),
    };
    ConfigIssue {
        key,
        origin,
        message,
    }
}

// ---------------------------------------------------------------------------------------------
// Go durations (the parser is shared with the `spike` CLI through spike-proto)

pub use spike_proto::duration::{GoDurationError, format_go_duration, parse_go_duration};

/// A [`Duration`] read from and written as a Go duration string; use it as a config field type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub Duration);

impl From<GoDuration> for Duration {
    fn from(d: GoDuration) -> Self {
        d.0
    }
}

impl FromStr for GoDuration {
    type Err = GoDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_go_duration(s).map(GoDuration)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_go_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        go_duration::deserialize(deserializer).map(GoDuration)
    }
}

impl serde::Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        go_duration::serialize(&self.0, serializer)
    }
}

/// `#[serde(with = "spike_daemon::config::go_duration")]` for a [`Duration`] field written as a
/// Go duration string.
pub mod go_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Reads a Go duration string.
    ///
    /// # Errors
    ///
    /// The deserializer's error carrying the [`super::GoDurationError`] message.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        super::parse_go_duration(&s).map_err(serde::de::Error::custom)
    }

    /// Writes a Go duration string.
    ///
    /// # Errors
    ///
    /// The serializer's error.
    pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_go_duration(*d))
    }
}

// ---------------------------------------------------------------------------------------------
// Go listen addresses

/// Why a listen address was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListenAddrError {
    /// Not `:port`, `ip:port` or `[ipv6]:port`.
    #[error("invalid listen address {input:?}: expected :PORT, IP:PORT or [IPV6]:PORT")]
    Invalid {
        /// The rejected input.
        input: String,
    },
}

/// Parses a listen address as SPIKE's Go daemons accept it in `SPIKE_NEXUS_TLS_PORT` /
/// `SPIKE_KEEPER_TLS_PORT`: `:8553` (all IPv4 interfaces, `0.0.0.0:8553`), `127.0.0.1:8553` or
/// `[::1]:8553`. Host names are not resolved.
///
/// # Errors
///
/// [`ListenAddrError::Invalid`].
pub fn parse_listen_addr(input: &str) -> Result<SocketAddr, ListenAddrError> {
    let invalid = || ListenAddrError::Invalid {
        input: input.to_owned(),
    };
    let s = input.trim();
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| invalid())?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    s.parse().map_err(|_| invalid())
}

/// `#[serde(with = "spike_daemon::config::listen_addr")]` for a [`SocketAddr`] field that also
/// accepts Go's `:PORT` form.
pub mod listen_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Reads `:PORT`, `IP:PORT` or `[IPV6]:PORT`.
    ///
    /// # Errors
    ///
    /// The deserializer's error carrying the [`super::ListenAddrError`] message.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        super::parse_listen_addr(&s).map_err(serde::de::Error::custom)
    }

    /// Writes `IP:PORT`.
    ///
    /// # Errors
    ///
    /// The serializer's error.
    pub fn serialize<S: Serializer>(addr: &SocketAddr, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addrs_accept_go_forms() {
        assert_eq!(
            parse_listen_addr(":8553"),
            Ok("0.0.0.0:8553".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("127.0.0.1:1"),
            Ok("127.0.0.1:1".parse().unwrap())
        );
        assert_eq!(parse_listen_addr("[::1]:2"), Ok("[::1]:2".parse().unwrap()));
        for bad in ["8553", ":", ":99999", "localhost:8553", ""] {
            assert!(parse_listen_addr(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secret_key_names() {
        assert!(is_secret_key("auth.api_token"));
        assert!(is_secret_key("root_key"));
        assert!(is_secret_key("db.Password"));
        assert!(!is_secret_key("keeper.peers"));
        assert!(!is_secret_key("listen.api"));
        // Only the last segment counts.
        assert!(!is_secret_key("secrets.max_versions"));
    }
}
