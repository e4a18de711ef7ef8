//! Pilot configuration: a TOML file plus environment variables (docs/config.md), parsed into [`Config`].
//!
//! Precedence, highest first: command-line flag (`--nexus-url`), environment variable,
//! configuration file, default. The file is `--config <file>` (must exist), else
//! `$XDG_CONFIG_HOME/spike/config.toml` (`~/.config/spike/config.toml`), else
//! `/etc/spike/pilot.toml`; a missing default file is not an error.
//!
//! | file key | environment | default |
//! |---|---|---|
//! | `nexus_url` | `SPIKE_NEXUS_API_URL` | `https://localhost:8553` |
//! | `spiffe_endpoint_socket` | `SPIFFE_ENDPOINT_SOCKET` | `unix:///tmp/spire-agent/public/api.sock` |
//! | `trust_root_nexus` | `SPIKE_TRUST_ROOT_NEXUS` | `spike.ist` |
//! | `timeout` (request) | `SPIKE_HTTP_CLIENT_TIMEOUT` | `30s` |
//! | `spiffe_timeout` | `SPIKE_SPIFFE_SOURCE_TIMEOUT` | `10s` |
//! | `spiffe_id` | `SPIKE_PILOT_SPIFFE_ID` | first SVID |
//!
//! Durations are Go duration strings (`300ms`, `1m30s`) or integer seconds.
//!
//! The Nexus URL may be a comma-separated list of instances sharing one store
//! (`https://nexus-a:8553, https://nexus-b:8553`): blanks around entries are ignored, each
//! entry must be an https URL, and empty entries, duplicates and more than
//! [`MAX_NEXUS_URLS`] entries are refused ([`parse_nexus_urls`]). How Pilot moves between
//! them is [`crate::failover`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use spike_client::BaseUrl;
use spike_proto::TrustRoots;
use spike_proto::spiffe_id::ENV_TRUST_ROOT_NEXUS;

pub use crate::failover::MAX_NEXUS_URLS;

/// Default Nexus URL (docs/config.md).
pub const DEFAULT_NEXUS_URL: &str = "https://localhost:8553";
/// Default request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on obtaining the SVID from the Workload API.
pub const DEFAULT_SPIFFE_TIMEOUT: Duration = Duration::from_secs(10);
/// The system-wide configuration file.
pub const SYSTEM_CONFIG: &str = "/etc/spike/pilot.toml";

/// `SPIKE_NEXUS_API_URL`.
pub const ENV_NEXUS_URL: &str = "SPIKE_NEXUS_API_URL";
/// `SPIFFE_ENDPOINT_SOCKET`.
pub const ENV_ENDPOINT: &str = "SPIFFE_ENDPOINT_SOCKET";
/// `SPIKE_HTTP_CLIENT_TIMEOUT`.
pub const ENV_TIMEOUT: &str = "SPIKE_HTTP_CLIENT_TIMEOUT";
/// `SPIKE_SPIFFE_SOURCE_TIMEOUT`.
pub const ENV_SPIFFE_TIMEOUT: &str = "SPIKE_SPIFFE_SOURCE_TIMEOUT";
/// `SPIKE_PILOT_SPIFFE_ID`: pick this SVID when the agent returns several.
pub const ENV_SPIFFE_ID: &str = "SPIKE_PILOT_SPIFFE_ID";

/// The environment (the process, or a map in tests): one definition, shared with the daemons.
pub use spike_proto::env::{EnvSource, MapEnv, ProcessEnv};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file named by `--config` does not exist or cannot be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("invalid configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error.
        message: String,
    },
    /// A value is invalid.
    #[error("invalid {key} {value:?} (from {origin}): {reason}")]
    Invalid {
        /// The key or variable name.
        key: &'static str,
        /// The value as given.
        value: String,
        /// Where it came from.
        origin: String,
        /// Why it is invalid.
        reason: String,
    },
}

/// The raw configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    nexus_url: Option<String>,
    spiffe_endpoint_socket: Option<String>,
    trust_root_nexus: Option<String>,
    timeout: Option<DurationValue>,
    spiffe_timeout: Option<DurationValue>,
    spiffe_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DurationValue {
    Seconds(u64),
    Text(String),
}

impl DurationValue {
    fn text(&self) -> String {
        match self {
            Self::Seconds(s) => s.to_string(),
            Self::Text(t) => t.clone(),
        }
    }
}

/// The parsed configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Nexus base URLs, in the order to try them ([`crate::failover`]); never empty.
    pub nexus_urls: Vec<BaseUrl>,
    /// Workload API endpoint (`unix:...` or `tcp:...`).
    pub endpoint: String,
    /// Trust roots; only the Nexus entry matters to Pilot (server authorization).
    pub trust_roots: TrustRoots,
    /// Request timeout (each Nexus call).
    pub timeout: Duration,
    /// Bound on obtaining the SVID.
    pub spiffe_timeout: Duration,
    /// The SVID to use when the agent returns several.
    pub spiffe_id: Option<String>,
    /// The configuration file that was read, if any.
    pub file: Option<PathBuf>,
}

impl Config {
    /// Loads the configuration: `explicit` file (must exist) or the default locations, the
    /// environment, and the `--nexus-url` flag.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or variable at fault.
    pub fn load(
        explicit: Option<&Path>,
        nexus_url_flag: Option<&str>,
        env: &dyn EnvSource,
    ) -> Result<Self, ConfigError> {
        let (file, path) = read_file(explicit, env)?;
        let origin_file = |key: &str| {
            path.as_ref()
                .map_or_else(|| key.to_owned(), |p| format!("{key} in {}", p.display()))
        };

        // nexus_url
        let (url_text, url_origin) = if let Some(flag) = nexus_url_flag {
            (flag.to_owned(), "--nexus-url".to_owned())
        } else if let Some(v) = env.non_empty(ENV_NEXUS_URL) {
            (v, ENV_NEXUS_URL.to_owned())
        } else if let Some(v) = file.nexus_url.clone() {
            (v, origin_file("nexus_url"))
        } else {
            (DEFAULT_NEXUS_URL.to_owned(), "default".to_owned())
        };
        let nexus_urls = parse_nexus_urls(&url_text).map_err(|reason| ConfigError::Invalid {
            key: "nexus_url",
            value: url_text.clone(),
            origin: url_origin,
            reason,
        })?;

        // endpoint
        let endpoint = env
            .non_empty(ENV_ENDPOINT)
            .or_else(|| file.spiffe_endpoint_socket.clone())
            .unwrap_or_else(|| spike_identity::DEFAULT_ENDPOINT.to_owned())
            .trim()
            .to_owned();
        if !(endpoint.starts_with("unix:") || endpoint.starts_with("tcp:")) {
            return Err(ConfigError::Invalid {
                key: "spiffe_endpoint_socket",
                value: endpoint,
                origin: ENV_ENDPOINT.to_owned(),
                reason: "must start with unix: or tcp:".to_owned(),
            });
        }

        // trust roots: SPIKE_TRUST_ROOT_* from the environment, Nexus also from the file.
        let file_root = file.trust_root_nexus.clone();
        let trust_roots = TrustRoots::from_lookup(|name| {
            let value = env.non_empty(name);
            if name == ENV_TRUST_ROOT_NEXUS {
                value.or_else(|| file_root.clone())
            } else {
                value
            }
        })
        .map_err(|e| ConfigError::Invalid {
            key: "trust_root_nexus",
            value: env
                .var(ENV_TRUST_ROOT_NEXUS)
                .or(file_root.clone())
                .unwrap_or_default(),
            origin: ENV_TRUST_ROOT_NEXUS.to_owned(),
            reason: e.to_string(),
        })?;

        let timeout = duration_setting(
            env,
            ENV_TIMEOUT,
            file.timeout.as_ref(),
            "timeout",
            &origin_file("timeout"),
            DEFAULT_TIMEOUT,
        )?;
        let spiffe_timeout = duration_setting(
            env,
            ENV_SPIFFE_TIMEOUT,
            file.spiffe_timeout.as_ref(),
            "spiffe_timeout",
            &origin_file("spiffe_timeout"),
            DEFAULT_SPIFFE_TIMEOUT,
        )?;
        let spiffe_id = env.non_empty(ENV_SPIFFE_ID).or(file.spiffe_id.clone());
        if let Some(id) = &spiffe_id
            && spike_identity::SpiffeId::new(id).is_err()
        {
            return Err(ConfigError::Invalid {
                key: "spiffe_id",
                value: id.clone(),
                origin: ENV_SPIFFE_ID.to_owned(),
                reason: "not a SPIFFE ID".to_owned(),
            });
        }
        Ok(Self {
            nexus_urls,
            endpoint,
            trust_roots,
            timeout,
            spiffe_timeout,
            spiffe_id,
            file: path,
        })
    }
}

/// Parses the Nexus URL setting: one https URL, or a comma-separated list of them (blanks
/// around entries ignored). A single URL is parsed exactly as before.
///
/// # Errors
/// Why the value is refused, naming the entry at fault: an invalid URL, an empty entry, a
/// URL listed twice (same host, port and path), or more than [`MAX_NEXUS_URLS`] entries.
pub fn parse_nexus_urls(text: &str) -> Result<Vec<BaseUrl>, String> {
    if !text.contains(',') {
        return BaseUrl::parse(text)
            .map(|url| vec![url])
            .map_err(|e| e.to_string());
    }
    let entries: Vec<&str> = text.split(',').map(str::trim).collect();
    if entries.len() > MAX_NEXUS_URLS {
        return Err(format!(
            "{} URLs listed; at most {MAX_NEXUS_URLS} are accepted",
            entries.len()
        ));
    }
    let mut urls: Vec<BaseUrl> = Vec::with_capacity(entries.len());
    for (n, entry) in entries.iter().enumerate() {
        let position = n + 1;
        if entry.is_empty() {
            return Err(format!(
                "entry {position} of the comma-separated list is empty"
            ));
        }
        let url = BaseUrl::parse(entry).map_err(|e| format!("entry {position}: {e}"))?;
        if let Some(first) = urls.iter().position(|u| same_instance(u, &url)) {
            return Err(format!(
                "entry {position} ({entry:?}) repeats entry {} ({:?})",
                first + 1,
                urls[first].as_str()
            ));
        }
        urls.push(url);
    }
    Ok(urls)
}

/// Whether two URLs name the same server: host (case-insensitive), port and path prefix.
fn same_instance(a: &BaseUrl, b: &BaseUrl) -> bool {
    a.host().eq_ignore_ascii_case(b.host())
        && a.port() == b.port()
        && a.request_target("/", None) == b.request_target("/", None)
}

fn duration_setting(
    env: &dyn EnvSource,
    var: &'static str,
    file_value: Option<&DurationValue>,
    key: &'static str,
    file_origin: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let (text, origin) = if let Some(v) = env.non_empty(var) {
        (v, var.to_owned())
    } else if let Some(v) = file_value {
        (v.text(), file_origin.to_owned())
    } else {
        return Ok(default);
    };
    match parse_duration(&text) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(ConfigError::Invalid {
            key,
            value: text,
            origin,
            reason: "expected a positive duration such as 10s, 1m30s or 500ms".to_owned(),
        }),
    }
}

fn read_file(
    explicit: Option<&Path>,
    env: &dyn EnvSource,
) -> Result<(ConfigFile, Option<PathBuf>), ConfigError> {
    let path = match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => default_paths(env).into_iter().find(|p| p.is_file()),
    };
    let Some(path) = path else {
        return Ok((ConfigFile::default(), None));
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let file = parse_file(&text).map_err(|message| ConfigError::Parse {
        path: path.clone(),
        message,
    })?;
    Ok((file, Some(path)))
}

fn parse_file(text: &str) -> Result<ConfigFile, String> {
    toml::from_str(text).map_err(|e| e.message().to_owned())
}

/// The default configuration file locations, in search order.
pub fn default_paths(env: &dyn EnvSource) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(xdg) = env.non_empty("XDG_CONFIG_HOME") {
        out.push(PathBuf::from(xdg).join("spike").join("config.toml"));
    } else if let Some(home) = env.non_empty("HOME") {
        out.push(
            PathBuf::from(home)
                .join(".config")
                .join("spike")
                .join("config.toml"),
        );
    }
    out.push(PathBuf::from(SYSTEM_CONFIG));
    out
}

/// Parses a Go duration (`1.5h`, `2h45m`, `300ms`, `1.5s`; units ns, us, µs, ms, s, m, h) with
/// the parser the daemons use ([`spike_proto::duration::parse_go_duration`]), or a plain integer
/// number of seconds (a Pilot extension; Go requires a unit). Surrounding blanks are ignored.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let s = text.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    spike_proto::duration::parse_go_duration(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> MapEnv {
        MapEnv::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        // Fractions, as Go reads them (exactly, not through a float).
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("0.1s"), Some(Duration::from_millis(100)));
        assert_eq!(
            parse_duration("1m0.25s"),
            Some(Duration::from_millis(60_250))
        );
        assert_eq!(parse_duration("2h45m"), Some(Duration::from_secs(9900)));
        assert_eq!(parse_duration("1µs"), Some(Duration::from_micros(1)));
        assert_eq!(parse_duration(" 10s "), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in ["", "s", "10x", "-1s", "1s2", "1..5s", "5d", "1 s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn defaults_without_file() {
        let dir = tempfile::tempdir().unwrap();
        let xdg = dir.path().to_str().unwrap();
        let c = Config::load(None, None, &env(&[("XDG_CONFIG_HOME", xdg)])).unwrap();
        assert_eq!(c.nexus_urls[0].as_str(), DEFAULT_NEXUS_URL);
        assert_eq!(c.endpoint, spike_identity::DEFAULT_ENDPOINT);
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.spiffe_timeout, DEFAULT_SPIFFE_TIMEOUT);
        assert!(c.trust_roots.is_nexus("spiffe://spike.ist/spike/nexus"));
    }

    #[test]
    fn file_then_env_then_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pilot.toml");
        std::fs::write(
            &path,
            "nexus_url = \"https://file:1\"\nspiffe_endpoint_socket = \"unix:/f.sock\"\n\
             trust_root_nexus = \"file.test\"\ntimeout = \"5s\"\nspiffe_timeout = 3\n",
        )
        .unwrap();
        let c = Config::load(Some(&path), None, &env(&[])).unwrap();
        assert_eq!(c.nexus_urls[0].as_str(), "https://file:1");
        assert_eq!(c.endpoint, "unix:/f.sock");
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.spiffe_timeout, Duration::from_secs(3));
        assert!(c.trust_roots.is_nexus("spiffe://file.test/spike/nexus"));
        assert_eq!(c.file.as_deref(), Some(path.as_path()));

        let e = env(&[
            (ENV_NEXUS_URL, "https://env:2"),
            (ENV_ENDPOINT, "unix:/e.sock"),
            (ENV_TRUST_ROOT_NEXUS, "env.test"),
            (ENV_TIMEOUT, "1m"),
        ]);
        let c = Config::load(Some(&path), None, &e).unwrap();
        assert_eq!(c.nexus_urls[0].as_str(), "https://env:2");
        assert_eq!(c.endpoint, "unix:/e.sock");
        assert_eq!(c.timeout, Duration::from_secs(60));
        assert!(c.trust_roots.is_nexus("spiffe://env.test/spike/nexus"));
        assert!(!c.trust_roots.is_nexus("spiffe://file.test/spike/nexus"));

        let c = Config::load(Some(&path), Some("https://flag:3"), &e).unwrap();
        assert_eq!(c.nexus_urls[0].as_str(), "https://flag:3");
    }

    #[test]
    fn url_lists() {
        let urls = |text: &str| {
            parse_nexus_urls(text).map(|v| v.iter().map(|u| u.as_str().to_owned()).collect())
        };
        assert_eq!(
            urls(" https://a:1 , https://b:2,https://c "),
            Ok(vec![
                "https://a:1".to_owned(),
                "https://b:2".to_owned(),
                "https://c".to_owned()
            ])
        );
        assert_eq!(urls(" https://a:1 "), Ok(vec!["https://a:1".to_owned()]));
        // One URL: the message is the URL parser's, as before.
        assert_eq!(
            urls("http://a:1"),
            Err(BaseUrl::parse("http://a:1").unwrap_err().to_string())
        );

        let err = urls("https://a:1,,https://b:2").unwrap_err();
        assert!(err.contains("entry 2") && err.contains("empty"), "{err}");
        let err = urls("https://a:1,").unwrap_err();
        assert!(err.contains("entry 2") && err.contains("empty"), "{err}");
        let err = urls("https://a:1, http://b:2").unwrap_err();
        assert!(
            err.contains("entry 2") && err.contains("http://b:2") && err.contains("https"),
            "{err}"
        );
        let err = urls("https://a:1,https://B:2, https://A:1/").unwrap_err();
        assert!(
            err.contains("entry 3") && err.contains("repeats entry 1"),
            "{err}"
        );
        let err = urls("https://a,https://a:443").unwrap_err();
        assert!(err.contains("repeats entry 1"), "{err}");
        // Same host and port, different path prefix (behind a proxy): two instances.
        assert!(urls("https://p:1/a,https://p:1/b").is_ok());

        let many: Vec<String> = (1..=MAX_NEXUS_URLS + 1)
            .map(|i| format!("https://n{i}:8553"))
            .collect();
        let err = urls(&many.join(",")).unwrap_err();
        assert!(err.contains(&format!("at most {MAX_NEXUS_URLS}")), "{err}");
        assert!(urls(&many[..MAX_NEXUS_URLS].join(",")).is_ok());
    }

    #[test]
    fn url_list_from_every_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pilot.toml");
        std::fs::write(&path, "nexus_url = \"https://f1:1, https://f2:2\"\n").unwrap();
        let c = Config::load(Some(&path), None, &env(&[])).unwrap();
        assert_eq!(c.nexus_urls.len(), 2);
        let e = env(&[(ENV_NEXUS_URL, "https://e1:1,https://e2:2,https://e3:3")]);
        let c = Config::load(Some(&path), None, &e).unwrap();
        assert_eq!(c.nexus_urls.len(), 3);
        assert_eq!(c.nexus_urls[2].as_str(), "https://e3:3");
        let c = Config::load(Some(&path), Some("https://x:1,https://y:1"), &e).unwrap();
        assert_eq!(c.nexus_urls[1].as_str(), "https://y:1");

        let e = env(&[(ENV_NEXUS_URL, "https://e1:1,https://e1:1")]);
        let err = Config::load(Some(&path), None, &e).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(ENV_NEXUS_URL)
                && text.contains("\"https://e1:1,https://e1:1\"")
                && text.contains("repeats entry 1"),
            "{text}"
        );
        let err = Config::load(Some(&path), Some("https://x:1, "), &env(&[])).unwrap_err();
        assert!(
            err.to_string().contains("--nexus-url") && err.to_string().contains("empty"),
            "{err}"
        );
    }

    #[test]
    fn xdg_file_is_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("spike")).unwrap();
        std::fs::write(
            dir.path().join("spike/config.toml"),
            "nexus_url = \"https://xdg:9\"\n",
        )
        .unwrap();
        let c = Config::load(
            None,
            None,
            &env(&[("XDG_CONFIG_HOME", dir.path().to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(c.nexus_urls[0].as_str(), "https://xdg:9");
    }

    #[test]
    fn clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let err = Config::load(Some(&missing), None, &env(&[])).unwrap_err();
        assert!(err.to_string().contains("nope.toml"), "{err}");

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "nexus_uri = \"https://x:1\"\n").unwrap();
        let err = Config::load(Some(&bad), None, &env(&[])).unwrap_err();
        assert!(
            err.to_string().contains("bad.toml") && err.to_string().contains("nexus_uri"),
            "{err}"
        );

        let err = Config::load(
            Some(&missing),
            None,
            &env(&[(ENV_NEXUS_URL, "http://plain:1")]),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));

        let ok_dir = env(&[("XDG_CONFIG_HOME", dir.path().to_str().unwrap())]);
        let mut with = ok_dir.clone();
        with.insert(ENV_NEXUS_URL, "http://plain:1");
        let err = Config::load(None, None, &with).unwrap_err();
        assert!(
            err.to_string().contains(ENV_NEXUS_URL) && err.to_string().contains("https"),
            "{err}"
        );

        let mut with = ok_dir.clone();
        with.insert(ENV_TIMEOUT, "soon");
        let err = Config::load(None, None, &with).unwrap_err();
        assert!(err.to_string().contains(ENV_TIMEOUT), "{err}");

        let mut with = ok_dir;
        with.insert(ENV_ENDPOINT, "/tmp/agent.sock");
        let err = Config::load(None, None, &with).unwrap_err();
        assert!(err.to_string().contains("unix:"), "{err}");
    }
}
