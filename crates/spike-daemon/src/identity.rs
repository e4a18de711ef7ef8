//! Connecting a daemon to the Workload API and checking that the SVID it got has the daemon's
//! role: the one place Nexus, Keeper and Bootstrap obtain their identity.

use spike_identity::{Identity, IdentityError, IdentityOptions};
use spike_proto::spiffe_id::{Role, TrustRoots};

use crate::common::{IdentitySettings, roots_list};

/// The daemon's own SVID does not have its role under the configured trust roots.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("own SPIFFE ID {id} is not a {role:?} ID under the trust roots {roots}")]
pub struct NotInRole {
    /// The own SPIFFE ID.
    pub id: String,
    /// The role the daemon needs.
    pub role: Role,
    /// The configured roots of that role, comma-joined.
    pub roots: String,
}

/// Checks that `identity`'s own ID has `role` under `roots`.
///
/// # Errors
///
/// [`NotInRole`] with the ID and the roots it was checked against.
pub fn check_own_role(
    identity: &Identity,
    roots: &TrustRoots,
    role: Role,
) -> Result<(), NotInRole> {
    let id = identity.own_id().to_string();
    if roots.has_role(&id, role) {
        Ok(())
    } else {
        Err(NotInRole {
            id,
            role,
            roots: roots_list(roots, role),
        })
    }
}

/// Obtains the SVID (bounded by `settings.timeout`), accepting peers from every trust domain
/// the roots of `peer_roles` name (not only our own).
///
/// # Errors
///
/// [`IdentityError`] when a trust domain is malformed or no SVID arrives in time.
pub async fn connect(
    settings: &IdentitySettings,
    roots: &TrustRoots,
    peer_roles: &[Role],
) -> Result<Identity, IdentityError> {
    let trust_domains = spike_identity::parse_trust_domains(roots.trust_domain_names(peer_roles))?;
    Identity::connect_with(IdentityOptions {
        endpoint: settings.endpoint.clone(),
        timeout: settings.timeout,
        expected_id: settings.spiffe_id.clone(),
        trust_domains: Some(trust_domains),
    })
    .await
}
