//! API paths, `?action=` values and route matching (docs/protocol.md#conventions).
//!
//! Matching is exact: the URL path must equal a route path (no trailing-slash tolerance, no
//! prefixes) and the `action` query value must equal the route's action, where an absent or
//! empty `action` selects the default (action-less) route. Other query parameters are
//! ignored. Every route is `POST`.

use std::borrow::Cow;

/// Nexus: secrets (put; get/delete/undelete/list by action).
pub const NEXUS_SECRETS: &str = "/v1/store/secrets";
/// Nexus: secret metadata (`?action=get`).
pub const NEXUS_SECRETS_METADATA: &str = "/v1/store/secrets/metadata";
/// Nexus: policies (put; get/delete/list by action).
pub const NEXUS_POLICY: &str = "/v1/acl/policy";
/// Nexus: export recovery shards.
pub const NEXUS_OPERATOR_RECOVER: &str = "/v1/operator/recover";
/// Nexus: submit one recovery shard.
pub const NEXUS_OPERATOR_RESTORE: &str = "/v1/operator/restore";
/// Nexus: encrypt (JSON or stream).
pub const NEXUS_CIPHER_ENCRYPT: &str = "/v1/cipher/encrypt";
/// Nexus: decrypt (JSON or stream).
pub const NEXUS_CIPHER_DECRYPT: &str = "/v1/cipher/decrypt";
/// Nexus: bootstrap proof-of-key.
pub const NEXUS_BOOTSTRAP_VERIFY: &str = "/v1/bootstrap/verify";
/// Defined by the Go SDK (`NexusInit`) but routed by nobody; answers 400.
pub const NEXUS_INIT_UNROUTED: &str = "/v1/auth/initialization";

/// Keeper: receive a shard.
pub const KEEPER_CONTRIBUTE: &str = "/v1/store/contribute";
/// Keeper: hand out the held shard.
pub const KEEPER_SHARD: &str = "/v1/store/shard";
/// Defined by the Go SDK (`KeeperKeep`) but routed by nobody; answers 400.
pub const KEEPER_KEEP_UNROUTED: &str = "/v1/store/keep";

/// Name of the query parameter selecting the action.
pub const ACTION_KEY: &str = "action";
/// `?action=get`
pub const ACTION_GET: &str = "get";
/// `?action=delete`
pub const ACTION_DELETE: &str = "delete";
/// `?action=undelete`
pub const ACTION_UNDELETE: &str = "undelete";
/// `?action=list`
pub const ACTION_LIST: &str = "list";
/// `?action=check`: defined by the Go SDK, routed by nobody.
pub const ACTION_CHECK_UNROUTED: &str = "check";
/// `?action=read`: defined by the Go SDK, routed by nobody.
pub const ACTION_READ_UNROUTED: &str = "read";

/// A Nexus route (docs/protocol.md#conventions table, rows 1–15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /v1/store/secrets`: upsert a secret.
    SecretPut,
    /// `POST /v1/store/secrets?action=get`
    SecretGet,
    /// `POST /v1/store/secrets?action=delete`: soft-delete versions.
    SecretDelete,
    /// `POST /v1/store/secrets?action=undelete`
    SecretUndelete,
    /// `POST /v1/store/secrets?action=list`
    SecretList,
    /// `POST /v1/store/secrets/metadata?action=get`
    SecretMetadataGet,
    /// `POST /v1/acl/policy`: upsert a policy.
    PolicyPut,
    /// `POST /v1/acl/policy?action=get`
    PolicyGet,
    /// `POST /v1/acl/policy?action=delete`
    PolicyDelete,
    /// `POST /v1/acl/policy?action=list`
    PolicyList,
    /// `POST /v1/operator/recover`
    OperatorRecover,
    /// `POST /v1/operator/restore`
    OperatorRestore,
    /// `POST /v1/cipher/encrypt`
    CipherEncrypt,
    /// `POST /v1/cipher/decrypt`
    CipherDecrypt,
    /// `POST /v1/bootstrap/verify`
    BootstrapVerify,
}

impl Route {
    /// Every Nexus route, in docs/protocol.md#conventions table order.
    pub const ALL: [Route; 15] = [
        Route::SecretPut,
        Route::SecretGet,
        Route::SecretDelete,
        Route::SecretUndelete,
        Route::SecretList,
        Route::SecretMetadataGet,
        Route::PolicyPut,
        Route::PolicyGet,
        Route::PolicyDelete,
        Route::PolicyList,
        Route::OperatorRecover,
        Route::OperatorRestore,
        Route::CipherEncrypt,
        Route::CipherDecrypt,
        Route::BootstrapVerify,
    ];

    /// Finds the route for an exact URL path and decoded `action` query value
    /// (`None` or `Some("")` = default action). Unknown combinations give `None` (→ 400).
    ///
    /// This ignores the backend mode; check [`Route::available_in_lite`] in `lite` mode, or
    /// use [`Route::parse_for`].
    pub fn parse(path: &str, action: Option<&str>) -> Option<Route> {
        let action = action.filter(|a| !a.is_empty());
        Route::ALL
            .into_iter()
            .find(|r| r.path() == path && r.action() == action)
    }

    /// Like [`Route::parse`], but in `lite` mode only the routes that exist there match.
    pub fn parse_for(lite: bool, path: &str, action: Option<&str>) -> Option<Route> {
        Route::parse(path, action).filter(|r| !lite || r.available_in_lite())
    }

    /// The URL path.
    pub const fn path(self) -> &'static str {
        match self {
            Route::SecretPut
            | Route::SecretGet
            | Route::SecretDelete
            | Route::SecretUndelete
            | Route::SecretList => NEXUS_SECRETS,
            Route::SecretMetadataGet => NEXUS_SECRETS_METADATA,
            Route::PolicyPut | Route::PolicyGet | Route::PolicyDelete | Route::PolicyList => {
                NEXUS_POLICY
            }
            Route::OperatorRecover => NEXUS_OPERATOR_RECOVER,
            Route::OperatorRestore => NEXUS_OPERATOR_RESTORE,
            Route::CipherEncrypt => NEXUS_CIPHER_ENCRYPT,
            Route::CipherDecrypt => NEXUS_CIPHER_DECRYPT,
            Route::BootstrapVerify => NEXUS_BOOTSTRAP_VERIFY,
        }
    }

    /// The `action` query value, `None` for the default action.
    pub const fn action(self) -> Option<&'static str> {
        match self {
            Route::SecretGet | Route::SecretMetadataGet | Route::PolicyGet => Some(ACTION_GET),
            Route::SecretDelete | Route::PolicyDelete => Some(ACTION_DELETE),
            Route::SecretUndelete => Some(ACTION_UNDELETE),
            Route::SecretList | Route::PolicyList => Some(ACTION_LIST),
            Route::SecretPut
            | Route::PolicyPut
            | Route::OperatorRecover
            | Route::OperatorRestore
            | Route::CipherEncrypt
            | Route::CipherDecrypt
            | Route::BootstrapVerify => None,
        }
    }

    /// Path plus query as a Go client builds it, e.g. `/v1/store/secrets?action=get`.
    pub fn path_and_query(self) -> Cow<'static, str> {
        match self.action() {
            None => Cow::Borrowed(self.path()),
            Some(action) => Cow::Owned(format!("{}?{ACTION_KEY}={action}", self.path())),
        }
    }

    /// Whether the route exists when the backend store is `lite` (bootstrap verify,
    /// operator recover/restore, cipher encrypt/decrypt).
    pub const fn available_in_lite(self) -> bool {
        matches!(
            self,
            Route::OperatorRecover
                | Route::OperatorRestore
                | Route::CipherEncrypt
                | Route::CipherDecrypt
                | Route::BootstrapVerify
        )
    }

    /// Whether the readiness gate lets the route through while the root key is missing
    /// (operator recover/restore). The gate matches on the *path* alone, before lookup; see
    /// [`bypasses_readiness_gate`].
    pub const fn bypasses_readiness_gate(self) -> bool {
        matches!(self, Route::OperatorRecover | Route::OperatorRestore)
    }
}

/// The Nexus readiness gate (docs/protocol.md#conventions step 2) exempts these URL paths, whatever the action.
pub fn bypasses_readiness_gate(path: &str) -> bool {
    path == NEXUS_OPERATOR_RECOVER || path == NEXUS_OPERATOR_RESTORE
}

/// A Keeper route (docs/protocol.md#bootstrap-and-keepers). Neither takes an action; any non-empty `action` is a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeeperRoute {
    /// `POST /v1/store/contribute`: store a shard.
    Contribute,
    /// `POST /v1/store/shard`: return the held shard.
    Shard,
}

impl KeeperRoute {
    /// Every Keeper route.
    pub const ALL: [KeeperRoute; 2] = [KeeperRoute::Contribute, KeeperRoute::Shard];

    /// Finds the route for an exact path and `action` (absent or empty only).
    pub fn parse(path: &str, action: Option<&str>) -> Option<KeeperRoute> {
        if action.is_some_and(|a| !a.is_empty()) {
            return None;
        }
        KeeperRoute::ALL.into_iter().find(|r| r.path() == path)
    }

    /// The URL path.
    pub const fn path(self) -> &'static str {
        match self {
            KeeperRoute::Contribute => KEEPER_CONTRIBUTE,
            KeeperRoute::Shard => KEEPER_SHARD,
        }
    }
}

/// Extracts the `action` value from a raw URL query string like Go's
/// `r.URL.Query().Get("action")`: the first well-formed `action=` pair wins, `+` is a space,
/// `%XX` is decoded, and pairs containing `;` or bad escapes are skipped. Returns `None` when
/// absent (an empty value is `Some("")`, which [`Route::parse`] treats as absent too).
pub fn action_from_query(query: Option<&str>) -> Option<String> {
    let query = query?;
    for pair in query.split('&') {
        if pair.is_empty() || pair.contains(';') {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(key) = query_unescape(key) else {
            continue;
        };
        if key != ACTION_KEY.as_bytes() {
            continue;
        }
        let Some(value) = query_unescape(value) else {
            continue;
        };
        return Some(String::from_utf8_lossy(&value).into_owned());
    }
    None
}

/// Go's `url.QueryUnescape` on bytes; `None` on a malformed `%` escape.
fn query_unescape(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = hex_val(*b.get(i + 1)?)?;
                let lo = hex_val(*b.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_round_trips() {
        for r in Route::ALL {
            assert_eq!(Route::parse(r.path(), r.action()), Some(r));
        }
        assert_eq!(
            Route::ALL.iter().filter(|r| r.available_in_lite()).count(),
            5
        );
    }

    #[test]
    fn exact_matching() {
        assert_eq!(
            Route::parse("/v1/store/secrets", None),
            Some(Route::SecretPut)
        );
        assert_eq!(
            Route::parse("/v1/store/secrets", Some("")),
            Some(Route::SecretPut)
        );
        assert_eq!(
            Route::parse("/v1/store/secrets", Some("get")),
            Some(Route::SecretGet)
        );
        assert_eq!(Route::parse("/v1/store/secrets/", None), None);
        assert_eq!(Route::parse("/v1/store/secrets/metadata", None), None);
        assert_eq!(
            Route::parse("/v1/store/secrets/metadata", Some("get")),
            Some(Route::SecretMetadataGet)
        );
        assert_eq!(Route::parse("/v1/store/secrets", Some("GET")), None);
        assert_eq!(Route::parse("/v1/store/secrets", Some("read")), None);
        assert_eq!(Route::parse("/v1/acl/policy", Some("undelete")), None);
        assert_eq!(Route::parse("/v1/cipher/encrypt", Some("get")), None);
        assert_eq!(Route::parse("/v1/auth/initialization", Some("check")), None);
        assert_eq!(Route::parse("/V1/store/secrets", None), None);
        assert_eq!(Route::parse("", None), None);
    }

    #[test]
    fn lite_mode() {
        assert_eq!(
            Route::parse_for(true, "/v1/store/secrets", Some("get")),
            None
        );
        assert_eq!(
            Route::parse_for(true, "/v1/cipher/decrypt", None),
            Some(Route::CipherDecrypt)
        );
        assert_eq!(
            Route::parse_for(false, "/v1/store/secrets", Some("get")),
            Some(Route::SecretGet)
        );
    }

    #[test]
    fn keeper_routes() {
        assert_eq!(
            KeeperRoute::parse("/v1/store/shard", None),
            Some(KeeperRoute::Shard)
        );
        assert_eq!(
            KeeperRoute::parse("/v1/store/contribute", Some("")),
            Some(KeeperRoute::Contribute)
        );
        assert_eq!(KeeperRoute::parse("/v1/store/shard", Some("get")), None);
        assert_eq!(KeeperRoute::parse("/v1/store/keep", None), None);
    }

    #[test]
    fn query_parsing() {
        assert_eq!(action_from_query(None), None);
        assert_eq!(action_from_query(Some("")), None);
        assert_eq!(
            action_from_query(Some("action=get")).as_deref(),
            Some("get")
        );
        assert_eq!(
            action_from_query(Some("x=1&action=list&action=get")).as_deref(),
            Some("list")
        );
        assert_eq!(action_from_query(Some("action=")).as_deref(), Some(""));
        assert_eq!(action_from_query(Some("action")).as_deref(), Some(""));
        assert_eq!(
            action_from_query(Some("act%69on=g%65t")).as_deref(),
            Some("get")
        );
        assert_eq!(
            action_from_query(Some("action=%zz&action=get")).as_deref(),
            Some("get")
        );
        assert_eq!(action_from_query(Some("action=get;x=1")), None);
        assert_eq!(
            action_from_query(Some("action=a+b")).as_deref(),
            Some("a b")
        );
    }

    #[test]
    fn path_and_query() {
        assert_eq!(
            Route::SecretList.path_and_query(),
            "/v1/store/secrets?action=list"
        );
        assert_eq!(Route::CipherEncrypt.path_and_query(), "/v1/cipher/encrypt");
    }
}
