//! Input validation rules (`sdk:validation/validation.go`; docs/protocol.md#secrets, docs/protocol.md#policy-routes, docs/protocol.md#conventions, docs/protocol.md#limits).
//!
//! Each function returns [`ProtoError::Invalid`] naming the rule, never the value. Regexes
//! are the Go ones, rewritten only where Rust's syntax differs (`[` escaped inside classes).
//! Lengths are in bytes, as in Go.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

use crate::ProtoError;
use crate::policy::Permission;

/// Maximum length of a secret path or a policy path pattern (bytes).
pub const MAX_PATH_LEN: usize = 500;
/// Maximum length of a policy name, a secret value key or a policy get/delete id (bytes).
pub const MAX_NAME_LEN: usize = 250;

// The patterns are constants exercised by the unit tests below. Should one ever fail to
// compile, it matches nothing (fail closed) instead of panicking.
type Pattern = LazyLock<Option<Regex>>;

fn compile(pattern: &str) -> Option<Regex> {
    Regex::new(pattern).ok()
}

fn matches(re: &Pattern, s: &str) -> bool {
    re.as_ref().is_some_and(|re| re.is_match(s))
}

static NAME: Pattern = LazyLock::new(|| compile(r"^[a-zA-Z0-9\-_ ]+$"));
static SPIFFE_ID_PATTERN: Pattern = LazyLock::new(|| {
    compile(r"^\^?spiffe://[\\a-zA-Z0-9.\-*()+?\[\]]+(/[\\/a-zA-Z0-9._\-*()+?\[\]]+)*\$?$")
});
static RAW_SPIFFE_ID: Pattern =
    LazyLock::new(|| compile(r"^spiffe://[a-zA-Z0-9.\-]+(/[a-zA-Z0-9._\-]+)*$"));
static PATH_PATTERN: Pattern = LazyLock::new(|| compile(r"^[a-zA-Z0-9._\-/^$()?+*|\[\]{}\\]+$"));
static PATH: Pattern = LazyLock::new(|| compile(r"^[a-zA-Z0-9._\-/()?+*|\[\]{}\\]+$"));

fn check(ok: bool, what: &'static str) -> Result<(), ProtoError> {
    if ok {
        Ok(())
    } else {
        Err(ProtoError::Invalid { what })
    }
}

/// A policy name, secret value key or policy id: `^[a-zA-Z0-9-_ ]+$`, 1..=250 bytes
/// (Go `ValidateName`). No dots.
pub fn name(s: &str) -> Result<(), ProtoError> {
    check(
        !s.is_empty() && s.len() <= MAX_NAME_LEN && matches(&NAME, s),
        "name",
    )
}

/// A secret path: `^[a-zA-Z0-9._\-/()?+*|[\]{}\\]+$`, 1..=500 bytes (Go `ValidatePath`).
/// Paths are opaque: a leading `/` is allowed and significant.
pub fn secret_path(s: &str) -> Result<(), ProtoError> {
    check(
        !s.is_empty() && s.len() <= MAX_PATH_LEN && matches(&PATH, s),
        "secret path",
    )
}

/// Every key of a secret's values map must be a valid [`name`]. Values are unrestricted and
/// an empty map is valid.
pub fn secret_value_keys(values: &BTreeMap<String, String>) -> Result<(), ProtoError> {
    for key in values.keys() {
        check(name(key).is_ok(), "secret value key")?;
    }
    Ok(())
}

/// A policy SPIFFE-ID pattern (Go `ValidateSPIFFEIDPattern`): must start with `spiffe://` or
/// `^spiffe://`; `|`, `{}`, inner `^`/`$` are rejected. No length limit.
pub fn spiffe_id_pattern(s: &str) -> Result<(), ProtoError> {
    check(matches(&SPIFFE_ID_PATTERN, s), "SPIFFE ID pattern")
}

/// A policy path pattern: `^[a-zA-Z0-9._\-/^$()?+*|[\]{}\\]+$`, 1..=500 bytes
/// (Go `ValidatePathPattern`).
pub fn path_pattern(s: &str) -> Result<(), ProtoError> {
    check(
        !s.is_empty() && s.len() <= MAX_PATH_LEN && matches(&PATH_PATTERN, s),
        "path pattern",
    )
}

/// A peer SPIFFE ID as checked inside handlers (docs/protocol.md#conventions):
/// `^spiffe://[a-zA-Z0-9.-]+(/[a-zA-Z0-9._-]+)*$`. IDs failing this get 401.
pub fn peer_spiffe_id(s: &str) -> Result<(), ProtoError> {
    check(matches(&RAW_SPIFFE_ID, s), "SPIFFE ID")
}

/// A policy's permission list: non-empty, each one of `read`, `write`, `list`, `execute`,
/// `super` (exact, case-sensitive); duplicates allowed and kept.
pub fn permissions<S: AsRef<str>>(perms: &[S]) -> Result<Vec<Permission>, ProtoError> {
    check(!perms.is_empty(), "permissions")?;
    perms
        .iter()
        .map(|p| {
            Permission::from_wire(p.as_ref()).ok_or(ProtoError::Invalid { what: "permission" })
        })
        .collect()
}

/// A restore shard id: `1..=max_share_count` (`SPIKE_NEXUS_SHAMIR_MAX_SHARE_COUNT`, 1000).
pub fn restore_id(id: i64, max_share_count: u32) -> Result<(), ProtoError> {
    check(
        id >= 1 && id <= i64::from(max_share_count),
        "restore shard id",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "db-creds_1", "with space", "A-Z_0-9", &"x".repeat(250)] {
            assert!(name(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "a.b", "a/b", "ä", "a\n", "a\tb", &"x".repeat(251)] {
            assert!(name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths() {
        for ok in [
            "tenants/demo/db/creds",
            "/leading/slash",
            "a.b-c_d",
            "weird()?+*|[]{}\\",
            &"p".repeat(500),
        ] {
            assert!(secret_path(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "a b",
            "a:b",
            "a^b",
            "a$",
            "a=b",
            "a,b",
            "a@b",
            "a#b",
            "a%b",
            "a&b",
            "a;b",
            "a<b",
            "a>b",
            "a\nb",
            &"p".repeat(501),
        ] {
            assert!(secret_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn path_patterns() {
        for ok in [
            "^tenants/acme/.*$",
            "spike/system/acl",
            "a|b",
            "x{2}",
            ".*",
            "(a)?+[b]\\",
        ] {
            assert!(path_pattern(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "a b", "a,b", "a:b", &"p".repeat(501)] {
            assert!(path_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spiffe_id_patterns() {
        for ok in [
            "spiffe://example.org/web",
            "^spiffe://example\\.org/web$",
            "spiffe://example.org/.*",
            "^spiffe://example\\.org/workload/[a-z]+$",
            "spiffe://*",
        ] {
            assert!(spiffe_id_pattern(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            ".*",
            "example.org/web",
            "spiffe://a|b",
            "spiffe://a/b{1,2}",
            "spiffe://a/^b",
            "spiffe://a$/b",
            "^^spiffe://a",
            "spiffe://",
            "spiffe://a b",
        ] {
            assert!(spiffe_id_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn peer_ids() {
        for ok in [
            "spiffe://spike.ist/spike/nexus",
            "spiffe://a-b.c/x_y/z.1",
            "spiffe://td",
        ] {
            assert!(peer_spiffe_id(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "spiffe://",
            "spiffe://a_b/x",
            "spiffe://a/~x",
            "spiffe://a/%41",
            "spiffe://a:8/x",
            "spiffe://a//x",
            "spiffe://a/x/",
            "https://a/x",
        ] {
            assert!(peer_spiffe_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn permission_lists() {
        assert_eq!(
            permissions(&["read", "super", "read"]).unwrap(),
            vec![Permission::Read, Permission::Super, Permission::Read]
        );
        assert!(permissions::<&str>(&[]).is_err());
        assert!(permissions(&["Read"]).is_err());
        assert!(permissions(&["read", "admin"]).is_err());
        assert!(permissions(&["execute", "list", "write"]).is_ok());
    }

    #[test]
    fn restore_ids() {
        assert!(restore_id(1, 1000).is_ok());
        assert!(restore_id(1000, 1000).is_ok());
        assert!(restore_id(0, 1000).is_err());
        assert!(restore_id(-1, 1000).is_err());
        assert!(restore_id(1001, 1000).is_err());
    }

    #[test]
    fn value_keys() {
        let mut m = BTreeMap::new();
        assert!(secret_value_keys(&m).is_ok());
        m.insert("user name".to_owned(), "x".to_owned());
        assert!(secret_value_keys(&m).is_ok());
        m.insert("a.b".to_owned(), "x".to_owned());
        assert!(secret_value_keys(&m).is_err());
    }
}
