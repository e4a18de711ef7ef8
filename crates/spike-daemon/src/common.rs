//! The configuration edge every SPIKE daemon shares: one key name per concept, the deprecated
//! spellings that still work, the `[trust_roots]` table, and the typed identity settings.
//!
//! The daemons keep flat TOML documents (`spiffe_timeout = "30s"`, not a nested table), so the
//! shared keys are not a serde `flatten`ed struct (serde cannot combine `flatten` with
//! `deny_unknown_fields`). Instead every daemon's raw `ConfigFile` names its shared fields with
//! the constants of [`keys`], renames deprecated keys through [`crate::config::load_with_aliases`]
//! with [`IDENTITY_ALIASES`] / [`SERVER_ALIASES`], and turns them into typed values with
//! [`TrustRootsFile::resolve`] and [`IdentitySettings::parse`].
//!
//! | Concept | Key | Deprecated alias | Used by |
//! |---|---|---|---|
//! | Workload API endpoint | `spiffe_endpoint_socket` | — | Nexus, Keeper, Bootstrap |
//! | own SPIFFE ID | `spiffe_id` | — | Nexus, Keeper, Bootstrap |
//! | wait for the first SVID | `spiffe_timeout` | `spiffe_source_timeout` | Nexus, Keeper, Bootstrap |
//! | trust roots per role | `[trust_roots]` | — | Nexus, Keeper, Bootstrap |
//! | request body limit | `request_body_limit` | `max_body_bytes` | Nexus, Keeper |
//! | shutdown grace period | `shutdown_grace` | `shutdown_grace_period` | Nexus, Keeper |
//! | keepers and their pinned SPIFFE IDs | `keeper_peers` ([`keeper_pins`]) | — | Nexus, Bootstrap |
//! | ID expected of a keeper given by URL | `keeper_identity` ([`KeeperIdentity`]) | — | Nexus, Bootstrap |

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use spike_identity::SpiffeId;
use spike_proto::spiffe_id::{
    ENV_TRUST_ROOT_BOOTSTRAP, ENV_TRUST_ROOT_KEEPER, ENV_TRUST_ROOT_LITE_WORKLOAD,
    ENV_TRUST_ROOT_NEXUS, ENV_TRUST_ROOT_PILOT, Role, TrustRoots,
};

/// The one name of each shared key.
pub mod keys {
    /// Workload API endpoint (`unix:///...`).
    pub const SPIFFE_ENDPOINT_SOCKET: &str = "spiffe_endpoint_socket";
    /// The SVID to use when the agent returns several.
    pub const SPIFFE_ID: &str = "spiffe_id";
    /// Bounded wait for the first X.509-SVID.
    pub const SPIFFE_TIMEOUT: &str = "spiffe_timeout";
    /// The `[trust_roots]` table.
    pub const TRUST_ROOTS: &str = "trust_roots";
    /// Largest request body in bytes.
    pub const REQUEST_BODY_LIMIT: &str = "request_body_limit";
    /// Time in-flight requests get after SIGTERM.
    pub const SHUTDOWN_GRACE: &str = "shutdown_grace";
    /// Keeper base URLs (optionally pinned to SPIFFE IDs).
    pub const KEEPER_PEERS: &str = "keeper_peers";
    /// How a keeper given by URL alone is identified (`position` or `role`).
    pub const KEEPER_IDENTITY: &str = "keeper_identity";
}

/// A deprecated key that still works as a spelling of `new`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alias {
    /// The deprecated key.
    pub old: &'static str,
    /// The key to use instead.
    pub new: &'static str,
}

/// Deprecated spellings of the identity keys (every daemon).
pub const IDENTITY_ALIASES: &[Alias] = &[Alias {
    old: "spiffe_source_timeout",
    new: keys::SPIFFE_TIMEOUT,
}];

/// Deprecated spellings of the server keys (Nexus and Keeper).
pub const SERVER_ALIASES: &[Alias] = &[
    Alias {
        old: "max_body_bytes",
        new: keys::REQUEST_BODY_LIMIT,
    },
    Alias {
        old: "shutdown_grace_period",
        new: keys::SHUTDOWN_GRACE,
    },
];

/// A deprecated key found while loading: the value was used under its new name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deprecation {
    /// The deprecated key as written.
    pub old: &'static str,
    /// The key to write instead.
    pub new: &'static str,
    /// Where it was written (the file path or the origin name).
    pub origin: String,
}

impl fmt::Display for Deprecation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "configuration key `{}` (in {}) is deprecated; rename it to `{}` (same meaning)",
            self.old, self.origin, self.new
        )
    }
}

/// Why a shared key has an unusable value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct CommonConfigError {
    /// The key (dotted for `trust_roots.*`).
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

/// `[trust_roots]`: comma lists as in the `SPIKE_TRUST_ROOT_*` variables; unset means
/// `spike.ist`. A daemon reads only the roles it checks, see [`TrustRootsFile::resolve`].
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TrustRootsFile {
    /// `SPIKE_TRUST_ROOT_NEXUS`.
    pub nexus: Option<String>,
    /// `SPIKE_TRUST_ROOT_KEEPER`.
    pub keeper: Option<String>,
    /// `SPIKE_TRUST_ROOT_BOOTSTRAP`.
    pub bootstrap: Option<String>,
    /// `SPIKE_TRUST_ROOT_PILOT` (all three Pilot roles).
    pub pilot: Option<String>,
    /// `SPIKE_TRUST_ROOT_LITE_WORKLOAD`.
    pub lite_workload: Option<String>,
}

/// The `[trust_roots]` keys with the roles they set.
const TRUST_ROOT_KEYS: [(&str, &str, &[Role]); 5] = [
    ("trust_roots.nexus", ENV_TRUST_ROOT_NEXUS, &[Role::Nexus]),
    ("trust_roots.keeper", ENV_TRUST_ROOT_KEEPER, &[Role::Keeper]),
    (
        "trust_roots.bootstrap",
        ENV_TRUST_ROOT_BOOTSTRAP,
        &[Role::Bootstrap],
    ),
    (
        "trust_roots.pilot",
        ENV_TRUST_ROOT_PILOT,
        &[Role::PilotSuperuser, Role::PilotRecover, Role::PilotRestore],
    ),
    (
        "trust_roots.lite_workload",
        ENV_TRUST_ROOT_LITE_WORKLOAD,
        &[Role::LiteWorkload],
    ),
];

impl TrustRootsFile {
    fn value(&self, env_var: &str) -> Option<&String> {
        match env_var {
            ENV_TRUST_ROOT_NEXUS => self.nexus.as_ref(),
            ENV_TRUST_ROOT_KEEPER => self.keeper.as_ref(),
            ENV_TRUST_ROOT_BOOTSTRAP => self.bootstrap.as_ref(),
            ENV_TRUST_ROOT_PILOT => self.pilot.as_ref(),
            ENV_TRUST_ROOT_LITE_WORKLOAD => self.lite_workload.as_ref(),
            _ => None,
        }
    }

    /// The `trust_roots.*` keys a daemon that checks `roles` reads (for docs and drift tests).
    #[must_use]
    pub fn keys_for(roles: &[Role]) -> Vec<&'static str> {
        TRUST_ROOT_KEYS
            .iter()
            .filter(|(_, _, rs)| rs.iter().any(|r| roles.contains(r)))
            .map(|(key, _, _)| *key)
            .collect()
    }

    /// Parses the lists into [`TrustRoots`]. `roles` are the roles the daemon checks; a list
    /// for any other role is an error naming the key (it would be silently ignored otherwise).
    ///
    /// # Errors
    ///
    /// [`CommonConfigError`] for a list set for an unused role, or a malformed list.
    pub fn resolve(&self, roles: &[Role]) -> Result<TrustRoots, CommonConfigError> {
        for (key, var, rs) in TRUST_ROOT_KEYS {
            if self.value(var).is_some() && !rs.iter().any(|r| roles.contains(r)) {
                return Err(CommonConfigError {
                    key,
                    message: format!(
                        "not used by this daemon (it reads only {})",
                        Self::keys_for(roles).join(", ")
                    ),
                });
            }
        }
        TrustRoots::from_lookup(|var| self.value(var).cloned()).map_err(|e| CommonConfigError {
            key: keys::TRUST_ROOTS,
            message: e.to_string(),
        })
    }
}

/// The comma-joined roots consulted for `role` (for messages).
#[must_use]
pub fn roots_list(roots: &TrustRoots, role: Role) -> String {
    roots
        .roots(role)
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The smallest `request_body_limit` a daemon accepts: every SPIKE request body (a
/// contribute request is about 150 bytes, a restore request about 180) fits well inside it.
pub const MIN_REQUEST_BODY_LIMIT: usize = 1024;

/// The typed identity keys: how to reach the Workload API and which SVID to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySettings {
    /// Workload API endpoint (`None`: `SPIFFE_ENDPOINT_SOCKET` or the default).
    pub endpoint: Option<String>,
    /// Which SVID to use when the agent returns several.
    pub spiffe_id: Option<SpiffeId>,
    /// Bounded wait for the first SVID (greater than zero).
    pub timeout: Duration,
}

impl IdentitySettings {
    /// Validates the raw `spiffe_endpoint_socket`, `spiffe_id` and `spiffe_timeout` values;
    /// blank strings mean unset.
    ///
    /// # Errors
    ///
    /// [`CommonConfigError`] naming `spiffe_id` or `spiffe_timeout`.
    pub fn parse(
        endpoint: Option<&str>,
        spiffe_id: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, CommonConfigError> {
        let spiffe_id = spiffe_id
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                SpiffeId::new(s).map_err(|e| CommonConfigError {
                    key: keys::SPIFFE_ID,
                    message: e.to_string(),
                })
            })
            .transpose()?;
        if timeout.is_zero() {
            return Err(CommonConfigError {
                key: keys::SPIFFE_TIMEOUT,
                message: "must be greater than zero".to_owned(),
            });
        }
        Ok(Self {
            endpoint: endpoint.filter(|s| !s.trim().is_empty()).map(str::to_owned),
            spiffe_id,
            timeout,
        })
    }
}

/// One `keeper_peers` entry as written: a bare URL (its expected SPIFFE ID then follows
/// [`KeeperIdentity`]), or a table pinning the URL to an explicit SPIFFE ID.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum KeeperPeerEntry {
    /// `"https://keeper-1:8443"`
    Url(String),
    /// `{ url = "https://keeper-1:8443", spiffe_id = "spiffe://td/spike/keeper/1" }`
    Pinned(PinnedKeeperPeer),
}

impl From<String> for KeeperPeerEntry {
    fn from(url: String) -> Self {
        KeeperPeerEntry::Url(url)
    }
}

/// A keeper URL with the SPIFFE ID it must present.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PinnedKeeperPeer {
    /// Base URL, e.g. `https://keeper-1:8443`.
    pub url: String,
    /// The SPIFFE ID the keeper at `url` must present.
    pub spiffe_id: String,
}

/// `keeper_peers` as written in TOML (array) or in `SPIKE_NEXUS_KEEPER_PEERS` (comma list of
/// URLs).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum KeeperPeersFile {
    /// `"https://a:8443,https://b:8443"`
    Comma(String),
    /// `["https://a:8443", { url = "https://b:8443", spiffe_id = "…" }]`
    List(Vec<KeeperPeerEntry>),
}

impl KeeperPeersFile {
    /// A list of bare URLs.
    pub fn urls<S: AsRef<str>>(urls: &[S]) -> Self {
        KeeperPeersFile::List(
            urls.iter()
                .map(|u| KeeperPeerEntry::Url(u.as_ref().to_owned()))
                .collect(),
        )
    }
}

/// How the SPIFFE ID expected of a keeper given by URL alone is chosen (`keeper_identity`,
/// `SPIKE_NEXUS_KEEPER_IDENTITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeeperIdentity {
    /// `"position"` (default): keeper *i* (1-based position in `keeper_peers`) must present
    /// `spiffe://<first keeper trust root>/spike/keeper/<i>`, the ID `spike-register` and the
    /// NixOS modules issue.
    #[default]
    Position,
    /// `"role"`: any Keeper ID under the keeper trust roots, as SPIKE does. Any keeper can then
    /// collect any other keeper's shard; a warning says so at every start.
    Role,
}

impl KeeperIdentity {
    /// Parses `position` or `role` (case-insensitive); blank means the default.
    ///
    /// # Errors
    /// [`CommonConfigError`] naming `keeper_identity`.
    pub fn parse(s: &str) -> Result<Self, CommonConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "position" => Ok(KeeperIdentity::Position),
            "role" => Ok(KeeperIdentity::Role),
            other => Err(CommonConfigError {
                key: keys::KEEPER_IDENTITY,
                message: format!("{other:?} is not one of position, role"),
            }),
        }
    }
}

/// One keeper after parsing: its URL (trimmed, no trailing `/`) and the SPIFFE ID it must
/// present (`None`: any Keeper ID, [`KeeperIdentity::Role`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeeperPin {
    /// Base URL as written (trimmed, without a trailing `/`).
    pub url: String,
    /// The exact SPIFFE ID required at the TLS handshake, if pinned.
    pub spiffe_id: Option<SpiffeId>,
}

/// The expected ID of keeper `position` (1-based) under `roots`:
/// `spiffe://<first keeper root>/spike/keeper/<position>`.
pub fn keeper_id_for_position(roots: &TrustRoots, position: usize) -> String {
    format!("{}/{position}", roots.id_of(Role::Keeper))
}

/// Parses `keeper_peers` with `keeper_identity` into URL/ID pins, in keeper order.
///
/// Entries must be non-empty; an explicit `spiffe_id` must be a Keeper ID under the keeper
/// trust roots; no two keepers may expect the same ID (each keeper would then be able to
/// collect the other's shard). URL syntax is checked by the daemon.
///
/// # Errors
/// [`CommonConfigError`] naming `keeper_peers`.
pub fn keeper_pins(
    list: Option<&KeeperPeersFile>,
    mode: KeeperIdentity,
    roots: &TrustRoots,
) -> Result<Vec<KeeperPin>, CommonConfigError> {
    let err = |message: String| CommonConfigError {
        key: keys::KEEPER_PEERS,
        message,
    };
    let entries: Vec<(String, Option<String>)> = match list {
        None => return Ok(Vec::new()),
        Some(KeeperPeersFile::Comma(s)) if s.trim().is_empty() => return Ok(Vec::new()),
        Some(KeeperPeersFile::Comma(s)) => {
            s.split(',').map(|p| (p.trim().to_owned(), None)).collect()
        }
        Some(KeeperPeersFile::List(v)) => v
            .iter()
            .map(|e| match e {
                KeeperPeerEntry::Url(u) => (u.trim().to_owned(), None),
                KeeperPeerEntry::Pinned(p) => {
                    (p.url.trim().to_owned(), Some(p.spiffe_id.trim().to_owned()))
                }
            })
            .collect(),
    };
    let mut out: Vec<KeeperPin> = Vec::with_capacity(entries.len());
    for (index, (url, explicit)) in entries.into_iter().enumerate() {
        let position = index + 1;
        if url.is_empty() {
            return Err(err(format!("entry {position} is empty")));
        }
        let url = url.trim_end_matches('/').to_owned();
        let spiffe_id = match (explicit, mode) {
            (Some(id), _) => {
                let parsed = SpiffeId::new(&id)
                    .map_err(|e| err(format!("entry {position}: spiffe_id {id:?}: {e}")))?;
                if !roots.is_keeper(&id) {
                    return Err(err(format!(
                        "entry {position}: spiffe_id {id} is not a Keeper ID under the keeper \
                         trust roots ({})",
                        roots_list(roots, Role::Keeper)
                    )));
                }
                Some(parsed)
            }
            (None, KeeperIdentity::Position) => {
                let id = keeper_id_for_position(roots, position);
                Some(
                    SpiffeId::new(&id)
                        .map_err(|e| err(format!("entry {position}: derived ID {id:?}: {e}")))?,
                )
            }
            (None, KeeperIdentity::Role) => None,
        };
        if let Some(id) = &spiffe_id
            && out.iter().any(|p| p.spiffe_id.as_ref() == Some(id))
        {
            return Err(err(format!(
                "two keepers are pinned to {id}: each keeper needs its own SPIFFE ID"
            )));
        }
        out.push(KeeperPin { url, spiffe_id });
    }
    Ok(out)
}

/// The warnings a keeper set deserves, for `check-config` and the start log: keepers accepted
/// by role alone, and a threshold of 1 (one keeper's shard is the whole root key).
pub fn keeper_warnings(pins: &[KeeperPin], threshold: u16) -> Vec<String> {
    let mut out = Vec::new();
    let role_only: Vec<String> = pins
        .iter()
        .enumerate()
        .filter(|(_, p)| p.spiffe_id.is_none())
        .map(|(i, p)| format!("{} ({})", i + 1, p.url))
        .collect();
    if !role_only.is_empty() {
        out.push(format!(
            "keeper_identity = \"role\": keepers {} are accepted by role alone, so any workload \
             with a Keeper SVID answering at one of these URLs receives that keeper's shard; pin \
             each URL to its ID (keeper_peers = [{{ url = …, spiffe_id = … }}]) or use the \
             default keeper_identity = \"position\" (docs/config.md)",
            role_only.join(", ")
        ));
    }
    if threshold == 1 {
        out.push(
            "shamir_threshold = 1: every keeper holds the whole root key (each shard alone \
             reconstructs it), so one compromised keeper discloses every secret; use 2 or more \
             (docs/config.md)"
                .to_owned(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_roots_resolve_only_used_roles() {
        let file = TrustRootsFile {
            nexus: Some("a.org, b.org".to_owned()),
            ..TrustRootsFile::default()
        };
        let roots = file.resolve(&[Role::Nexus, Role::Keeper]).unwrap();
        assert!(roots.is_nexus("spiffe://b.org/spike/nexus"));
        assert!(roots.is_keeper("spiffe://spike.ist/spike/keeper/1"));
        assert_eq!(roots_list(&roots, Role::Nexus), "a.org,b.org");

        let file = TrustRootsFile {
            pilot: Some("a.org".to_owned()),
            ..TrustRootsFile::default()
        };
        let err = file.resolve(&[Role::Keeper]).unwrap_err();
        assert_eq!(err.key, "trust_roots.pilot");
        assert!(err.message.contains("trust_roots.keeper"), "{err}");

        let file = TrustRootsFile {
            keeper: Some("a,".to_owned()),
            ..TrustRootsFile::default()
        };
        assert_eq!(
            file.resolve(&[Role::Keeper]).unwrap_err().key,
            "trust_roots"
        );
    }

    #[test]
    fn identity_settings() {
        let s = IdentitySettings::parse(Some(" "), Some(""), Duration::from_secs(1)).unwrap();
        assert_eq!((s.endpoint, s.spiffe_id), (None, None));
        let s = IdentitySettings::parse(
            Some("unix:///x"),
            Some(" spiffe://a.org/spike/nexus "),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("unix:///x"));
        assert_eq!(
            s.spiffe_id.map(|i| i.to_string()).as_deref(),
            Some("spiffe://a.org/spike/nexus")
        );
        let err = IdentitySettings::parse(None, Some("nope"), Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.key, "spiffe_id");
        let err = IdentitySettings::parse(None, None, Duration::ZERO).unwrap_err();
        assert_eq!(err.key, "spiffe_timeout");
    }

    #[test]
    fn deprecation_names_both_keys() {
        let d = Deprecation {
            old: "max_body_bytes",
            new: "request_body_limit",
            origin: "/etc/spike/keeper.toml".to_owned(),
        };
        let text = d.to_string();
        assert!(text.contains("`max_body_bytes`") && text.contains("`request_body_limit`"));
    }
}
