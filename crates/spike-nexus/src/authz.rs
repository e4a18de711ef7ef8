//! Per-route authorization (docs/protocol.md#identities-and-authorization, docs/protocol.md#policies): one named guard per route.
//!
//! Policy-gated routes (secrets, policies, cipher): (1) the Pilot superuser is allowed;
//! (2) the lite workload is denied, except for the cipher routes; (3) otherwise a single
//! policy must grant every wanted permission on the route's resource path
//! ([`PolicyCheck::check_access`], docs/protocol.md#policies). Operator recover/restore and bootstrap verify are
//! role-only: exactly the recover, restore or bootstrap role, nobody else (not even the
//! superuser). A peer ID that fails the docs/protocol.md#conventions syntax check is denied everything.

use spike_identity::PeerId;
use spike_proto::Route;
use spike_proto::policy::{SYSTEM_ACL_PATH, SYSTEM_CIPHER_EXEC_PATH, SYSTEM_SECRET_PATH};
use spike_proto::spiffe_id::TrustRoots;

use crate::model::Permission;
use crate::store::Store;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Put (upsert) a secret.
    SecretPut,
    /// Read a secret.
    SecretGet,
    /// Soft-delete secret versions.
    SecretDelete,
    /// Undelete secret versions.
    SecretUndelete,
    /// List secret paths.
    SecretList,
    /// Read secret metadata.
    SecretMetadata,
    /// Put (upsert) a policy.
    PolicyPut,
    /// Read a policy.
    PolicyGet,
    /// Delete a policy.
    PolicyDelete,
    /// List policies.
    PolicyList,
    /// Encrypt with the cipher API.
    CipherEncrypt,
    /// Decrypt with the cipher API.
    CipherDecrypt,
    /// Export recovery shards.
    OperatorRecover,
    /// Submit a recovery shard.
    OperatorRestore,
    /// Bootstrap proof-of-key.
    BootstrapVerify,
}

impl From<Route> for Action {
    fn from(route: Route) -> Self {
        match route {
            Route::SecretPut => Action::SecretPut,
            Route::SecretGet => Action::SecretGet,
            Route::SecretDelete => Action::SecretDelete,
            Route::SecretUndelete => Action::SecretUndelete,
            Route::SecretList => Action::SecretList,
            Route::SecretMetadataGet => Action::SecretMetadata,
            Route::PolicyPut => Action::PolicyPut,
            Route::PolicyGet => Action::PolicyGet,
            Route::PolicyDelete => Action::PolicyDelete,
            Route::PolicyList => Action::PolicyList,
            Route::OperatorRecover => Action::OperatorRecover,
            Route::OperatorRestore => Action::OperatorRestore,
            Route::CipherEncrypt => Action::CipherEncrypt,
            Route::CipherDecrypt => Action::CipherDecrypt,
            Route::BootstrapVerify => Action::BootstrapVerify,
        }
    }
}

impl Action {
    /// The stable name used in logs, audit events and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Action::SecretPut => "secret_put",
            Action::SecretGet => "secret_get",
            Action::SecretDelete => "secret_delete",
            Action::SecretUndelete => "secret_undelete",
            Action::SecretList => "secret_list",
            Action::SecretMetadata => "secret_metadata",
            Action::PolicyPut => "policy_put",
            Action::PolicyGet => "policy_get",
            Action::PolicyDelete => "policy_delete",
            Action::PolicyList => "policy_list",
            Action::CipherEncrypt => "cipher_encrypt",
            Action::CipherDecrypt => "cipher_decrypt",
            Action::OperatorRecover => "operator_recover",
            Action::OperatorRestore => "operator_restore",
            Action::BootstrapVerify => "bootstrap_verify",
        }
    }

    /// The resource path the policy check runs against: the request's secret path for
    /// secret routes, a fixed system path otherwise. `None` for role-only routes.
    pub fn resource_path(self, request_path: &str) -> Option<&str> {
        match self {
            Action::SecretPut
            | Action::SecretGet
            | Action::SecretDelete
            | Action::SecretUndelete
            | Action::SecretMetadata => Some(request_path),
            Action::SecretList => Some(SYSTEM_SECRET_PATH),
            Action::PolicyPut | Action::PolicyGet | Action::PolicyDelete | Action::PolicyList => {
                Some(SYSTEM_ACL_PATH)
            }
            Action::CipherEncrypt | Action::CipherDecrypt => Some(SYSTEM_CIPHER_EXEC_PATH),
            Action::OperatorRecover | Action::OperatorRestore | Action::BootstrapVerify => None,
        }
    }

    /// The permissions a policy must grant.
    pub const fn wants(self) -> &'static [Permission] {
        match self {
            Action::SecretPut | Action::SecretDelete | Action::SecretUndelete => {
                &[Permission::Write]
            }
            Action::SecretGet | Action::SecretMetadata | Action::PolicyGet => &[Permission::Read],
            Action::SecretList | Action::PolicyList => &[Permission::List],
            Action::PolicyPut | Action::PolicyDelete => &[Permission::Write],
            Action::CipherEncrypt | Action::CipherDecrypt => &[Permission::Execute],
            Action::OperatorRecover | Action::OperatorRestore | Action::BootstrapVerify => &[],
        }
    }

    const fn is_cipher(self) -> bool {
        matches!(self, Action::CipherEncrypt | Action::CipherDecrypt)
    }
}

/// The policy check of docs/protocol.md#policies, abstracted so the guard can be tested as a table.
pub trait PolicyCheck {
    /// True if a single policy grants every permission in `wants` (or `super`) to `peer_id`
    /// on `path`.
    fn check_access(&self, peer_id: &str, path: &str, wants: &[Permission]) -> bool;

    /// True if some policy for `peer_id` grants every permission in `wants` (or `super`) on
    /// some path: the necessary condition [`may_be_allowed`] checks before a body is read.
    fn may_grant(&self, peer_id: &str, wants: &[Permission]) -> bool;
}

impl PolicyCheck for Store {
    fn check_access(&self, peer_id: &str, path: &str, wants: &[Permission]) -> bool {
        Store::check_access(self, peer_id, path, wants)
    }

    fn may_grant(&self, peer_id: &str, wants: &[Permission]) -> bool {
        Store::may_grant(self, peer_id, wants)
    }
}

/// No policies at all (sealed or lite mode): every policy check fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPolicies;

impl PolicyCheck for NoPolicies {
    fn check_access(&self, _: &str, _: &str, _: &[Permission]) -> bool {
        false
    }

    fn may_grant(&self, _: &str, _: &[Permission]) -> bool {
        false
    }
}

/// Why the guard refused a request. The API edge turns it into `401 access_unauthorized`
/// (`From<AuthzError> for ApiError`) without echoing any of it to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthzError {
    /// The peer may not perform the action on the path (this includes a malformed peer ID).
    #[error("the peer may not perform {}", action.name())]
    Denied {
        /// The refused action.
        action: Action,
    },
}

/// The guard: `Ok(())` if `peer` may perform `action` on `path` (the request's secret path;
/// ignored for routes with a fixed resource).
///
/// # Errors
/// [`AuthzError::Denied`] otherwise.
pub fn require(
    roots: &TrustRoots,
    policies: &dyn PolicyCheck,
    peer: Option<&PeerId>,
    action: Action,
    path: &str,
) -> Result<(), AuthzError> {
    if allowed(roots, policies, peer, action, path) {
        Ok(())
    } else {
        Err(AuthzError::Denied { action })
    }
}

/// The decision behind [`require`]. A connection without a SPIFFE ID is denied everything.
pub fn allowed(
    roots: &TrustRoots,
    policies: &dyn PolicyCheck,
    peer: Option<&PeerId>,
    action: Action,
    path: &str,
) -> bool {
    match peer {
        Some(peer) => allowed_id(roots, policies, &peer.to_string(), action, Some(path)),
        None => false,
    }
}

/// Whether `peer` could be allowed `action` on *some* request path: the check the API edge
/// runs before it reads a request body, so a caller with no chance of being authorized never
/// gets to make Nexus buffer a body. `false` implies [`allowed`] is `false` for every path;
/// the handler still runs [`require`] on the real path.
pub fn may_be_allowed(
    roots: &TrustRoots,
    policies: &dyn PolicyCheck,
    peer: Option<&PeerId>,
    action: Action,
) -> bool {
    match peer {
        Some(peer) => allowed_id(roots, policies, &peer.to_string(), action, None),
        None => false,
    }
}

/// The decision on the ID's text: the trust-root predicates and policy regexes work on it.
/// `path: None` asks whether any request path could be allowed.
fn allowed_id(
    roots: &TrustRoots,
    policies: &dyn PolicyCheck,
    peer: &str,
    action: Action,
    path: Option<&str>,
) -> bool {
    if spike_proto::validate::peer_spiffe_id(peer).is_err() {
        return false;
    }
    match action {
        Action::OperatorRecover => roots.is_pilot_recover(peer),
        Action::OperatorRestore => roots.is_pilot_restore(peer),
        Action::BootstrapVerify => roots.is_bootstrap(peer),
        _ => {
            if roots.is_pilot_superuser(peer) {
                return true;
            }
            if roots.is_lite_workload(peer) {
                return action.is_cipher();
            }
            match path {
                Some(path) => match action.resource_path(path) {
                    Some(resource) => policies.check_access(peer, resource, action.wants()),
                    None => false,
                },
                // The request path is in the body, not read yet: any policy of the peer that
                // grants the permissions may cover it.
                None => match action.resource_path("") {
                    Some("") => policies.may_grant(peer, action.wants()),
                    Some(fixed) => policies.check_access(peer, fixed, action.wants()),
                    None => false,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use spike_proto::spiffe_id::TrustRoot;

    use super::*;

    /// A policy table: (SPIFFE ID, path, granted permissions), exact matches.
    struct Table(Vec<(&'static str, &'static str, Vec<Permission>)>);

    impl PolicyCheck for Table {
        fn check_access(&self, peer: &str, path: &str, wants: &[Permission]) -> bool {
            self.0.iter().any(|(id, p, perms)| {
                *id == peer
                    && *p == path
                    && (perms.contains(&Permission::Super)
                        || wants.iter().all(|w| perms.contains(w)))
            })
        }

        fn may_grant(&self, peer: &str, wants: &[Permission]) -> bool {
            self.0.iter().any(|(id, _, perms)| {
                *id == peer
                    && (perms.contains(&Permission::Super)
                        || wants.iter().all(|w| perms.contains(w)))
            })
        }
    }

    const SUPER: &str = "spiffe://example.org/spike/pilot/role/superuser";
    const RECOVER: &str = "spiffe://example.org/spike/pilot/role/recover";
    const RESTORE: &str = "spiffe://example.org/spike/pilot/role/restore";
    const BOOTSTRAP: &str = "spiffe://example.org/spike/bootstrap";
    const KEEPER: &str = "spiffe://example.org/spike/keeper";
    const NEXUS: &str = "spiffe://example.org/spike/nexus";
    const LITE: &str = "spiffe://example.org/spike/workload/role/lite";
    const PLAIN: &str = "spiffe://example.org/app/web";
    const GRANTED: &str = "spiffe://example.org/app/granted";

    const ALL_ACTIONS: [Action; 15] = [
        Action::SecretPut,
        Action::SecretGet,
        Action::SecretDelete,
        Action::SecretUndelete,
        Action::SecretList,
        Action::SecretMetadata,
        Action::PolicyPut,
        Action::PolicyGet,
        Action::PolicyDelete,
        Action::PolicyList,
        Action::CipherEncrypt,
        Action::CipherDecrypt,
        Action::OperatorRecover,
        Action::OperatorRestore,
        Action::BootstrapVerify,
    ];

    fn roots() -> TrustRoots {
        TrustRoots::uniform(TrustRoot::new("example.org").unwrap())
    }

    /// `GRANTED` holds super on `app/db` and the three system paths; every other caller
    /// also holds matching policies, to prove roles are not lifted by policies where the
    /// table says so.
    fn policies() -> Table {
        let mut rows = vec![];
        for id in [GRANTED, RECOVER, RESTORE, BOOTSTRAP, KEEPER, NEXUS, LITE] {
            for path in [
                "app/db",
                SYSTEM_ACL_PATH,
                SYSTEM_SECRET_PATH,
                SYSTEM_CIPHER_EXEC_PATH,
            ] {
                rows.push((id, path, vec![Permission::Super]));
            }
        }
        Table(rows)
    }

    fn expected(caller: &str, action: Action, with_policies: bool) -> bool {
        let role_only = matches!(
            action,
            Action::OperatorRecover | Action::OperatorRestore | Action::BootstrapVerify
        );
        match caller {
            SUPER => !role_only,
            RECOVER => action == Action::OperatorRecover || (!role_only && with_policies),
            RESTORE => action == Action::OperatorRestore || (!role_only && with_policies),
            BOOTSTRAP => action == Action::BootstrapVerify || (!role_only && with_policies),
            LITE => action.is_cipher(),
            KEEPER | NEXUS | GRANTED => !role_only && with_policies,
            _ => false,
        }
    }

    #[test]
    fn full_table_route_by_caller() {
        let roots = roots();
        let with = policies();
        for caller in [
            SUPER, RECOVER, RESTORE, BOOTSTRAP, KEEPER, NEXUS, LITE, PLAIN, GRANTED,
        ] {
            for action in ALL_ACTIONS {
                for (with_policies, table) in
                    [(true, &with as &dyn PolicyCheck), (false, &NoPolicies)]
                {
                    let got = allowed_id(&roots, table, caller, action, Some("app/db"));
                    assert_eq!(
                        got,
                        expected(caller, action, with_policies),
                        "{caller} {action:?} policies={with_policies}"
                    );
                }
            }
        }
    }

    /// The pre-body check never refuses what the full check would allow on some path, and it
    /// refuses callers with no role and no policy.
    #[test]
    fn the_pre_body_check_is_a_necessary_condition() {
        let roots = roots();
        let with = policies();
        let paths = [
            "app/db",
            "app/other",
            "",
            SYSTEM_ACL_PATH,
            SYSTEM_SECRET_PATH,
        ];
        for caller in [
            SUPER, RECOVER, RESTORE, BOOTSTRAP, KEEPER, NEXUS, LITE, PLAIN, GRANTED,
        ] {
            for action in ALL_ACTIONS {
                for table in [&with as &dyn PolicyCheck, &NoPolicies] {
                    let may = allowed_id(&roots, table, caller, action, None);
                    for path in paths {
                        if allowed_id(&roots, table, caller, action, Some(path)) {
                            assert!(may, "{caller} {action:?} {path}");
                        }
                    }
                }
            }
            for action in ALL_ACTIONS {
                if caller == PLAIN {
                    assert!(
                        !allowed_id(&roots, &with, caller, action, None),
                        "{action:?}: a caller without policies is refused before the body"
                    );
                }
            }
        }
        assert!(!may_be_allowed(&roots, &with, None, Action::SecretGet));
    }

    #[test]
    fn policy_must_cover_the_resource_path_and_permission() {
        let roots = roots();
        let table = Table(vec![
            (PLAIN, "app/db", vec![Permission::Read]),
            (PLAIN, SYSTEM_CIPHER_EXEC_PATH, vec![Permission::Execute]),
        ]);
        assert!(allowed_id(
            &roots,
            &table,
            PLAIN,
            Action::SecretGet,
            Some("app/db")
        ));
        assert!(allowed_id(
            &roots,
            &table,
            PLAIN,
            Action::SecretMetadata,
            Some("app/db")
        ));
        assert!(!allowed_id(
            &roots,
            &table,
            PLAIN,
            Action::SecretPut,
            Some("app/db")
        ));
        assert!(!allowed_id(
            &roots,
            &table,
            PLAIN,
            Action::SecretGet,
            Some("app/other")
        ));
        // list checks spike/system/secret, not the request path
        assert!(!allowed_id(
            &roots,
            &table,
            PLAIN,
            Action::SecretList,
            Some("app/db")
        ));
        assert!(allowed_id(
            &roots,
            &table,
            PLAIN,
            Action::CipherEncrypt,
            Some("")
        ));
        assert!(!allowed_id(
            &roots,
            &table,
            PLAIN,
            Action::PolicyGet,
            Some("")
        ));
    }

    #[test]
    fn malformed_peer_ids_are_denied() {
        let roots = roots();
        for bad in [
            "spiffe://exa_mple.org/spike/pilot/role/superuser",
            "spiffe://example.org/spike/pilot/role/superuser/~x",
            "",
        ] {
            assert!(!allowed_id(
                &roots,
                &NoPolicies,
                bad,
                Action::SecretGet,
                Some("a")
            ));
        }
        // No SPIFFE ID on the connection at all: denied.
        assert_eq!(
            require(&roots, &NoPolicies, None, Action::SecretGet, "a"),
            Err(AuthzError::Denied {
                action: Action::SecretGet
            })
        );
        let superuser: spike_identity::SpiffeId = "spiffe://example.org/spike/pilot/role/superuser"
            .parse()
            .unwrap();
        let superuser = PeerId::new(superuser);
        assert_eq!(
            require(&roots, &NoPolicies, Some(&superuser), Action::PolicyPut, ""),
            Ok(())
        );
        // A sub-path of a role is that role (prefix rule).
        assert!(allowed_id(
            &roots,
            &NoPolicies,
            "spiffe://example.org/spike/pilot/role/superuser/alice",
            Action::PolicyPut,
            Some("")
        ));
    }
}
