//! Regex policies and the access check (docs/protocol.md#policies of the wire spec).
//!
//! Patterns are RE2-style regular expressions matched **unanchored**
//! (`is_match`, like Go's `MatchString`). The `regex` crate is used with its
//! default Unicode mode: the classes `\d`, `\w`, `\s` are wider than RE2's
//! ASCII ones, which makes no difference for the ASCII-only paths and SPIFFE
//! IDs the API accepts.
//!
//! The reserved `spike/system/*` rule (docs/protocol.md#policies) is applied on upsert
//! ([`Policy::new`]) and again at evaluation time ([`Policy::grants`]), so a
//! policy stored before the rule existed cannot escalate.

use regex::{Regex, RegexBuilder};
use time::OffsetDateTime;

use super::{ModelError, PatternField};

/// The system path guarding policy management.
pub const RESERVED_ACL: &str = "spike/system/acl";
/// The system path guarding secret listing.
pub const RESERVED_SECRET: &str = "spike/system/secret";
/// The system path guarding the cipher routes.
pub const RESERVED_CIPHER: &str = "spike/system/cipher/exec";
/// The reserved paths, in the order the upsert check visits them.
pub const RESERVED_PATHS: [&str; 3] = [RESERVED_ACL, RESERVED_SECRET, RESERVED_CIPHER];

/// The probe SPIKE uses to recognize deliberate wildcard SPIFFE-ID patterns.
pub const IDENTITY_PROBE: &str = "spike-arbitrary-probe-value";

/// Upper bound for a compiled pattern (program and DFA cache), so a hostile
/// pattern cannot exhaust memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A policy permission: the wire type, with its names and parsing, lives in spike-proto.
pub use spike_proto::policy::{Permission, UnknownPermission};

/// A policy: who (SPIFFE-ID pattern) may do what (permissions) where (path pattern).
///
/// The fields are public for reading; the compiled patterns are private and
/// built by the constructors, so change a policy by building a new one.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The unique name.
    pub name: String,
    /// The SPIFFE-ID regular expression (unanchored).
    pub spiffeid_pattern: String,
    /// The path regular expression (unanchored).
    pub path_pattern: String,
    /// The granted permissions.
    pub permissions: Vec<Permission>,
    /// When the policy was first created.
    pub created_at: OffsetDateTime,
    /// When the policy was last upserted.
    pub updated_at: OffsetDateTime,
    id_regex: Regex,
    path_regex: Regex,
    /// `policyMayReachReservedPath` for each of [`RESERVED_PATHS`].
    may_reach_reserved: [bool; 3],
}

impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.spiffeid_pattern == other.spiffeid_pattern
            && self.path_pattern == other.path_pattern
            && self.permissions == other.permissions
            && self.created_at == other.created_at
            && self.updated_at == other.updated_at
    }
}

impl Eq for Policy {}

impl Policy {
    /// Builds a policy for an upsert: compiles both patterns and applies the
    /// docs/protocol.md#policies reserved-path rule.
    ///
    /// # Errors
    ///
    /// [`ModelError::EmptyName`], [`ModelError::InvalidRegex`], or
    /// [`ModelError::ReservedPathBySubstring`] when the unanchored path
    /// pattern matches a reserved path (first hit in [`RESERVED_PATHS`]
    /// order) that the policy may not reach.
    pub fn new(
        name: String,
        spiffeid_pattern: String,
        path_pattern: String,
        permissions: Vec<Permission>,
        created_at: OffsetDateTime,
        updated_at: OffsetDateTime,
    ) -> Result<Policy, ModelError> {
        let policy = Self::from_stored(
            name,
            spiffeid_pattern,
            path_pattern,
            permissions,
            created_at,
            updated_at,
        )?;
        if let Some(i) = RESERVED_PATHS
            .iter()
            .position(|p| policy.path_regex.is_match(p))
            && !policy.may_reach_reserved[i]
        {
            return Err(ModelError::ReservedPathBySubstring {
                path: RESERVED_PATHS[i],
            });
        }
        Ok(policy)
    }

    /// Rebuilds a stored policy: compiles both patterns but skips the
    /// upsert-time reserved-path rejection (the evaluation-time check in
    /// [`Policy::grants`] still applies). Used when loading from a backend.
    ///
    /// # Errors
    ///
    /// [`ModelError::EmptyName`] or [`ModelError::InvalidRegex`].
    pub fn from_stored(
        name: String,
        spiffeid_pattern: String,
        path_pattern: String,
        permissions: Vec<Permission>,
        created_at: OffsetDateTime,
        updated_at: OffsetDateTime,
    ) -> Result<Policy, ModelError> {
        if name.is_empty() {
            return Err(ModelError::EmptyName);
        }
        let id_regex = compile(&spiffeid_pattern, PatternField::SpiffeId)?;
        let path_regex = compile(&path_pattern, PatternField::Path)?;
        let may_reach_reserved = RESERVED_PATHS.map(|reserved| {
            policy_may_reach_reserved_path(&spiffeid_pattern, &path_pattern, reserved)
        });
        Ok(Policy {
            name,
            spiffeid_pattern,
            path_pattern,
            permissions,
            created_at,
            updated_at,
            id_regex,
            path_regex,
            may_reach_reserved,
        })
    }

    /// docs/protocol.md#policies for this one policy: both patterns match, the reserved-path rule
    /// allows it, and the permissions contain `super` or every wanted one.
    pub fn grants(&self, peer_id: &str, path: &str, wants: &[Permission]) -> bool {
        if !self.id_regex.is_match(peer_id) || !self.path_regex.is_match(path) {
            return false;
        }
        if let Some(i) = RESERVED_PATHS.iter().position(|p| *p == path)
            && !self.may_reach_reserved[i]
        {
            // SPIKE logs "ignoring substring-only policy for reserved path".
            return false;
        }
        permissions_satisfy(&self.permissions, wants)
    }

    /// Whether this policy could grant `wants` to `peer_id` on some path: the ID pattern
    /// matches and the permissions suffice (the path is not known yet).
    pub fn may_grant(&self, peer_id: &str, wants: &[Permission]) -> bool {
        self.id_regex.is_match(peer_id) && permissions_satisfy(&self.permissions, wants)
    }
}

/// `ValidatePolicyPermissions`: `super` is a joker, otherwise every wanted permission must be present.
pub fn permissions_satisfy(have: &[Permission], wants: &[Permission]) -> bool {
    have.contains(&Permission::Super) || wants.iter().all(|w| have.contains(w))
}

fn build(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
}

fn compile(pattern: &str, which: PatternField) -> Result<Regex, ModelError> {
    build(pattern).map_err(|e| ModelError::InvalidRegex {
        which,
        msg: regex_reason(&e),
    })
}

/// The compiler's reason without the pattern: `regex::Error`'s own text quotes the
/// pattern, which is request input (issue 12 L3: no request fragment reaches a log line or
/// an error answer). A syntax error keeps only its `error: <kind>` line.
fn regex_reason(e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(limit) => {
            format!("the compiled pattern exceeds the size limit of {limit} bytes")
        }
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("error: "))
            .map_or_else(
                || "syntax error".to_owned(),
                |kind| format!("syntax error: {kind}"),
            ),
        _ => "invalid pattern".to_owned(),
    }
}

/// `asFullMatch(p)`: compiles `^(?:p)$`; `None` when it does not compile.
pub fn as_full_match(pattern: &str) -> Option<Regex> {
    build(&format!("^(?:{pattern})$")).ok()
}

/// `patternIsAnchored(p)`: the string starts with `^` and ends with `$`.
pub fn pattern_is_anchored(pattern: &str) -> bool {
    pattern.starts_with('^') && pattern.ends_with('$')
}

/// `patternDescribesPath(p, path)`: `asFullMatch(p)` matches `path`.
pub fn pattern_describes_path(pattern: &str, path: &str) -> bool {
    as_full_match(pattern).is_some_and(|re| re.is_match(path))
}

/// `patternIsPreciseIdentity(p)`: anchored, or a deliberate wildcard
/// (`asFullMatch(p)` matches [`IDENTITY_PROBE`]).
pub fn pattern_is_precise_identity(pattern: &str) -> bool {
    pattern_is_anchored(pattern) || pattern_describes_path(pattern, IDENTITY_PROBE)
}

/// `policyMayReachReservedPath`: the path pattern fully describes `reserved`
/// and the SPIFFE-ID pattern is a precise identity.
pub fn policy_may_reach_reserved_path(
    spiffeid_pattern: &str,
    path_pattern: &str,
    reserved: &str,
) -> bool {
    pattern_describes_path(path_pattern, reserved) && pattern_is_precise_identity(spiffeid_pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANCHORED_ADMIN: &str = r"^spiffe://example\.org/admin$";

    fn policy(id: &str, path: &str, perms: &[Permission]) -> Result<Policy, ModelError> {
        let now = OffsetDateTime::UNIX_EPOCH;
        Policy::new("p".into(), id.into(), path.into(), perms.to_vec(), now, now)
    }

    #[test]
    fn substring_path_patterns_reaching_reserved_paths_are_rejected() {
        for (pattern, reached) in [
            ("acl", RESERVED_ACL),
            ("system", RESERVED_ACL),
            ("spike", RESERVED_ACL),
            ("secret", RESERVED_SECRET),
            ("exec", RESERVED_CIPHER),
        ] {
            let err = policy(ANCHORED_ADMIN, pattern, &[Permission::Super]).unwrap_err();
            assert_eq!(
                err,
                ModelError::ReservedPathBySubstring { path: reached },
                "{pattern}"
            );
        }
    }

    #[test]
    fn anchored_path_with_unanchored_id_is_rejected() {
        let err = policy(
            r"spiffe://example\.org/admin",
            "^spike/system/acl$",
            &[Permission::Super],
        )
        .unwrap_err();
        assert_eq!(
            err,
            ModelError::ReservedPathBySubstring { path: RESERVED_ACL }
        );
    }

    #[test]
    fn fully_anchored_reserved_policy_is_precise() {
        let p = policy(ANCHORED_ADMIN, "^spike/system/acl$", &[Permission::Write]).unwrap();
        assert!(p.grants(
            "spiffe://example.org/admin",
            RESERVED_ACL,
            &[Permission::Write]
        ));
        assert!(!p.grants(
            "spiffe://example.org/admin-attacker",
            RESERVED_ACL,
            &[Permission::Write]
        ));
        assert!(!p.grants(
            "spiffe://example.org/admin",
            RESERVED_ACL,
            &[Permission::Read]
        ));
        assert!(!p.grants(
            "spiffe://example.org/admin",
            RESERVED_SECRET,
            &[Permission::Write]
        ));
    }

    #[test]
    fn deliberate_wildcards_are_allowed_and_reach_reserved_paths() {
        let p = policy(".*", ".*", &[Permission::Super]).unwrap();
        for reserved in RESERVED_PATHS {
            assert!(p.grants("spiffe://example.org/anyone", reserved, &[Permission::Read]));
        }
        assert!(p.grants(
            "spiffe://x/y",
            "any/path",
            &[Permission::Write, Permission::List]
        ));
    }

    #[test]
    fn prefix_pattern_outside_system_is_allowed() {
        let p = policy(ANCHORED_ADMIN, "^tenants/acme/", &[Permission::Read]).unwrap();
        assert!(p.grants(
            "spiffe://example.org/admin",
            "tenants/acme/db/creds",
            &[Permission::Read]
        ));
        assert!(!p.grants(
            "spiffe://example.org/admin",
            "tenants/other/db",
            &[Permission::Read]
        ));
    }

    #[test]
    fn legacy_stored_substring_policy_cannot_reach_reserved_paths() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let p = Policy::from_stored(
            "legacy".into(),
            "example".into(),
            "acl".into(),
            vec![Permission::Super],
            now,
            now,
        )
        .unwrap();
        assert!(!p.grants(
            "spiffe://example.org/admin",
            RESERVED_ACL,
            &[Permission::Write]
        ));
        // It still works for ordinary paths it matches.
        assert!(p.grants(
            "spiffe://example.org/admin",
            "team/acl-list",
            &[Permission::Write]
        ));
    }

    #[test]
    fn anchoring_predicates() {
        assert!(!pattern_is_anchored("^a$|acl"));
        assert!(pattern_is_anchored("^spike/system/.*$"));
        for yes in ["spike/system/acl", "^spike/system/.*$", ".*"] {
            assert!(pattern_describes_path(yes, RESERVED_ACL), "{yes}");
        }
        for no in ["acl", "system", "^spike", "acl$"] {
            assert!(!pattern_describes_path(no, RESERVED_ACL), "{no}");
        }
        assert!(pattern_is_precise_identity(".*"));
        assert!(pattern_is_precise_identity(ANCHORED_ADMIN));
        assert!(!pattern_is_precise_identity(r"spiffe://example\.org/admin"));
        assert!(!pattern_describes_path("(", RESERVED_ACL));
    }

    #[test]
    fn matching_is_unanchored_substring_search() {
        let p = policy(".*", "app/config", &[Permission::Read]).unwrap();
        assert!(p.grants("spiffe://e/x", "private-app/configs/x", &[Permission::Read]));
        let p = policy(r"^spiffe://example\.org/web$", ".*", &[Permission::Read]).unwrap();
        assert!(!p.grants("spiffe://example.org/web2", "a", &[Permission::Read]));
    }

    #[test]
    fn permission_rules() {
        assert!(permissions_satisfy(
            &[Permission::Super],
            &[Permission::Read, Permission::Write]
        ));
        assert!(permissions_satisfy(
            &[Permission::Read, Permission::Write],
            &[Permission::Read, Permission::Write]
        ));
        assert!(!permissions_satisfy(
            &[Permission::Read],
            &[Permission::Read, Permission::Write]
        ));
        assert!(!permissions_satisfy(&[], &[Permission::Read]));
    }

    #[test]
    fn invalid_and_oversized_regexes_are_typed_errors() {
        let err = policy("(", ".*", &[]).unwrap_err();
        assert!(matches!(
            err,
            ModelError::InvalidRegex {
                which: PatternField::SpiffeId,
                ..
            }
        ));
        let err = policy(".*", "[z-a]", &[]).unwrap_err();
        // The reason names the kind of error, never the pattern (request input).
        let text = err.to_string();
        assert!(!text.contains("[z-a]"), "{text}");
        assert!(text.contains("invalid character class range"), "{text}");
        assert!(matches!(
            err,
            ModelError::InvalidRegex {
                which: PatternField::Path,
                ..
            }
        ));
        let err = policy(".*", r"(\w{1000}){1000}", &[]).unwrap_err();
        assert!(matches!(
            err,
            ModelError::InvalidRegex {
                which: PatternField::Path,
                ..
            }
        ));
    }

    #[test]
    fn empty_name_is_rejected() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let err =
            Policy::new(String::new(), ".*".into(), "a".into(), vec![], now, now).unwrap_err();
        assert_eq!(err, ModelError::EmptyName);
    }

    #[test]
    fn permission_names_round_trip() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), p);
        }
        assert!("reed".parse::<Permission>().is_err());
        assert!("Read".parse::<Permission>().is_err());
    }
}
