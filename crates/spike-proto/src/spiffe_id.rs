//! SPIKE's SPIFFE-ID scheme and trust-root matching (docs/protocol.md#identities-and-authorization).
//!
//! Every SPIKE component has a fixed path under a *trust root*, e.g. Nexus is
//! `spiffe://<root>/spike/nexus`. A trust root is a trust domain optionally followed by a
//! path (`example.org/tenant/a`), joined like Go's `path.Join`. An ID has a role if it equals
//! the role's base ID for one of the role's roots, or starts with that base ID plus `/`
//! (`spiffe://spike.ist/spike/nexus/instance-0` is a Nexus; `.../spike/nexus2` is not).

use std::fmt;

use crate::ProtoError;

/// The trust root used when a variable is unset or empty.
pub const DEFAULT_TRUST_ROOT: &str = "spike.ist";
/// Trust roots whose IDs count as Nexus.
pub const ENV_TRUST_ROOT_NEXUS: &str = "SPIKE_TRUST_ROOT_NEXUS";
/// Trust roots whose IDs count as Keeper.
pub const ENV_TRUST_ROOT_KEEPER: &str = "SPIKE_TRUST_ROOT_KEEPER";
/// Trust roots whose IDs count as Bootstrap.
pub const ENV_TRUST_ROOT_BOOTSTRAP: &str = "SPIKE_TRUST_ROOT_BOOTSTRAP";
/// Trust roots for the three Pilot roles (superuser, recover, restore).
pub const ENV_TRUST_ROOT_PILOT: &str = "SPIKE_TRUST_ROOT_PILOT";
/// Trust roots whose IDs count as lite workloads.
pub const ENV_TRUST_ROOT_LITE_WORKLOAD: &str = "SPIKE_TRUST_ROOT_LITE_WORKLOAD";
/// Only logged by Go Nexus at startup; not used for any check.
pub const ENV_TRUST_ROOT: &str = "SPIKE_TRUST_ROOT";

/// A SPIKE role with a fixed SPIFFE-ID path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `spike/nexus`
    Nexus,
    /// `spike/keeper`
    Keeper,
    /// `spike/bootstrap`
    Bootstrap,
    /// `spike/pilot/role/superuser` (the "pilot operator").
    PilotSuperuser,
    /// `spike/pilot/role/recover`
    PilotRecover,
    /// `spike/pilot/role/restore`
    PilotRestore,
    /// `spike/workload/role/lite`
    LiteWorkload,
}

impl Role {
    /// Every role, in the order [`TrustRoots::role_of`] tries them.
    pub const ALL: [Role; 7] = [
        Role::Nexus,
        Role::Keeper,
        Role::Bootstrap,
        Role::PilotSuperuser,
        Role::PilotRecover,
        Role::PilotRestore,
        Role::LiteWorkload,
    ];

    /// The path appended to the trust root.
    pub const fn path(self) -> &'static str {
        match self {
            Role::Nexus => "spike/nexus",
            Role::Keeper => "spike/keeper",
            Role::Bootstrap => "spike/bootstrap",
            Role::PilotSuperuser => "spike/pilot/role/superuser",
            Role::PilotRecover => "spike/pilot/role/recover",
            Role::PilotRestore => "spike/pilot/role/restore",
            Role::LiteWorkload => "spike/workload/role/lite",
        }
    }

    /// The environment variable listing this role's trust roots.
    pub const fn env_var(self) -> &'static str {
        match self {
            Role::Nexus => ENV_TRUST_ROOT_NEXUS,
            Role::Keeper => ENV_TRUST_ROOT_KEEPER,
            Role::Bootstrap => ENV_TRUST_ROOT_BOOTSTRAP,
            Role::PilotSuperuser | Role::PilotRecover | Role::PilotRestore => ENV_TRUST_ROOT_PILOT,
            Role::LiteWorkload => ENV_TRUST_ROOT_LITE_WORKLOAD,
        }
    }

    /// The role's base SPIFFE ID under `root`, e.g. `spiffe://spike.ist/spike/nexus`.
    pub fn id(self, root: &TrustRoot) -> String {
        format!("spiffe://{}", go_path_join(&root.0, self.path()))
    }
}

/// One trust root: non-empty, no comma (Go's builders exit the process otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrustRoot(String);

impl TrustRoot {
    /// Validates a single trust root (after trimming surrounding whitespace).
    pub fn new(root: &str) -> Result<Self, ProtoError> {
        let root = root.trim();
        if root.is_empty() || root.contains(',') {
            return Err(ProtoError::InvalidTrustRoot);
        }
        Ok(Self(root.to_owned()))
    }

    /// The root as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TrustRoot {
    fn default() -> Self {
        Self(DEFAULT_TRUST_ROOT.to_owned())
    }
}

impl fmt::Display for TrustRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `spiffe://<root>/spike/nexus`
pub fn nexus_id(root: &TrustRoot) -> String {
    Role::Nexus.id(root)
}

/// `spiffe://<root>/spike/keeper`
pub fn keeper_id(root: &TrustRoot) -> String {
    Role::Keeper.id(root)
}

/// `spiffe://<root>/spike/bootstrap`
pub fn bootstrap_id(root: &TrustRoot) -> String {
    Role::Bootstrap.id(root)
}

/// `spiffe://<root>/spike/pilot/role/superuser`
pub fn pilot_superuser_id(root: &TrustRoot) -> String {
    Role::PilotSuperuser.id(root)
}

/// `spiffe://<root>/spike/pilot/role/recover`
pub fn pilot_recover_id(root: &TrustRoot) -> String {
    Role::PilotRecover.id(root)
}

/// `spiffe://<root>/spike/pilot/role/restore`
pub fn pilot_restore_id(root: &TrustRoot) -> String {
    Role::PilotRestore.id(root)
}

/// `spiffe://<root>/spike/workload/role/lite`
pub fn lite_workload_id(root: &TrustRoot) -> String {
    Role::LiteWorkload.id(root)
}

/// The trust roots for each role, as read from the `SPIKE_TRUST_ROOT_*` variables.
///
/// The default has `spike.ist` for every role. Each list is non-empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustRoots {
    nexus: Vec<TrustRoot>,
    keeper: Vec<TrustRoot>,
    bootstrap: Vec<TrustRoot>,
    pilot: Vec<TrustRoot>,
    lite_workload: Vec<TrustRoot>,
}

impl Default for TrustRoots {
    fn default() -> Self {
        Self::uniform(TrustRoot::default())
    }
}

impl TrustRoots {
    /// The same single root for every role.
    pub fn uniform(root: TrustRoot) -> Self {
        Self {
            nexus: vec![root.clone()],
            keeper: vec![root.clone()],
            bootstrap: vec![root.clone()],
            pilot: vec![root.clone()],
            lite_workload: vec![root],
        }
    }

    /// Reads the five `SPIKE_TRUST_ROOT_*` variables through `lookup` (e.g. `std::env::var`
    /// or a test map). Each value is a comma list, elements trimmed; unset or `""` means
    /// `spike.ist`. An empty element (`"a,"`, `" "`) is an error naming the variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ProtoError> {
        let read = |var: &'static str| parse_root_list(var, lookup(var).as_deref());
        Ok(Self {
            nexus: read(ENV_TRUST_ROOT_NEXUS)?,
            keeper: read(ENV_TRUST_ROOT_KEEPER)?,
            bootstrap: read(ENV_TRUST_ROOT_BOOTSTRAP)?,
            pilot: read(ENV_TRUST_ROOT_PILOT)?,
            lite_workload: read(ENV_TRUST_ROOT_LITE_WORKLOAD)?,
        })
    }

    /// Replaces the roots for `role`'s variable (all three Pilot roles share one list).
    /// An empty list is ignored, keeping the lists non-empty.
    pub fn with_roots(mut self, role: Role, roots: Vec<TrustRoot>) -> Self {
        if !roots.is_empty() {
            *self.roots_mut(role) = roots;
        }
        self
    }

    /// The roots consulted for `role`.
    pub fn roots(&self, role: Role) -> &[TrustRoot] {
        match role {
            Role::Nexus => &self.nexus,
            Role::Keeper => &self.keeper,
            Role::Bootstrap => &self.bootstrap,
            Role::PilotSuperuser | Role::PilotRecover | Role::PilotRestore => &self.pilot,
            Role::LiteWorkload => &self.lite_workload,
        }
    }

    /// The distinct trust domains named by the roots of `roles` (the part of each root before
    /// the first `/`), in order of appearance: the domains whose SVIDs a component must accept.
    pub fn trust_domain_names(&self, roles: &[Role]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for &role in roles {
            for root in self.roots(role) {
                let td = root.as_str().split('/').next().unwrap_or_default();
                if !td.is_empty() && !out.iter().any(|t| t == td) {
                    out.push(td.to_owned());
                }
            }
        }
        out
    }

    fn roots_mut(&mut self, role: Role) -> &mut Vec<TrustRoot> {
        match role {
            Role::Nexus => &mut self.nexus,
            Role::Keeper => &mut self.keeper,
            Role::Bootstrap => &mut self.bootstrap,
            Role::PilotSuperuser | Role::PilotRecover | Role::PilotRestore => &mut self.pilot,
            Role::LiteWorkload => &mut self.lite_workload,
        }
    }

    /// The base ID of `role` under its first root (what a component of that role should be
    /// issued).
    pub fn id_of(&self, role: Role) -> String {
        match self.roots(role).first() {
            Some(root) => role.id(root),
            None => role.id(&TrustRoot::default()),
        }
    }

    /// True if `id` has `role` under any of the role's roots (exact base ID or below it).
    pub fn has_role(&self, id: &str, role: Role) -> bool {
        self.roots(role).iter().any(|root| {
            let base = role.id(root);
            id.strip_prefix(base.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// Go `IsNexus`.
    pub fn is_nexus(&self, id: &str) -> bool {
        self.has_role(id, Role::Nexus)
    }

    /// Go `IsKeeper`.
    pub fn is_keeper(&self, id: &str) -> bool {
        self.has_role(id, Role::Keeper)
    }

    /// Go `IsBootstrap`.
    pub fn is_bootstrap(&self, id: &str) -> bool {
        self.has_role(id, Role::Bootstrap)
    }

    /// Go `IsPilotOperator`: the superuser role.
    pub fn is_pilot_superuser(&self, id: &str) -> bool {
        self.has_role(id, Role::PilotSuperuser)
    }

    /// Go `IsPilotRecover`.
    pub fn is_pilot_recover(&self, id: &str) -> bool {
        self.has_role(id, Role::PilotRecover)
    }

    /// Go `IsPilotRestore`.
    pub fn is_pilot_restore(&self, id: &str) -> bool {
        self.has_role(id, Role::PilotRestore)
    }

    /// Go `IsLiteWorkload`.
    pub fn is_lite_workload(&self, id: &str) -> bool {
        self.has_role(id, Role::LiteWorkload)
    }

    /// The first role (in [`Role::ALL`] order) that `id` has, or `None` for an ordinary
    /// workload.
    pub fn role_of(&self, id: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|&role| self.has_role(id, role))
    }
}

/// The role of `id` under `roots`; see [`TrustRoots::role_of`].
pub fn role_of(id: &str, roots: &TrustRoots) -> Option<Role> {
    roots.role_of(id)
}

fn parse_root_list(var: &'static str, value: Option<&str>) -> Result<Vec<TrustRoot>, ProtoError> {
    match value {
        None | Some("") => Ok(vec![TrustRoot::default()]),
        Some(list) => list
            .split(',')
            .map(|r| TrustRoot::new(r).map_err(|_| ProtoError::EmptyTrustRoot { var }))
            .collect(),
    }
}

/// Go's `path.Join(root, suffix)`: joins with `/` and cleans (`//`, `.`, `..`).
fn go_path_join(root: &str, suffix: &str) -> String {
    let joined = if root.is_empty() {
        suffix.to_owned()
    } else {
        format!("{root}/{suffix}")
    };
    let rooted = joined.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in joined.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_owned(),
        (false, false) => body,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn trust_domain_names_are_distinct_and_per_role() {
        let roots = TrustRoots::from_lookup(|var| match var {
            "SPIKE_TRUST_ROOT_NEXUS" => Some("a.example, b.example/tenant".to_owned()),
            "SPIKE_TRUST_ROOT_KEEPER" => Some("a.example".to_owned()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            roots.trust_domain_names(&[Role::Nexus, Role::Keeper]),
            vec!["a.example".to_owned(), "b.example".to_owned()]
        );
        assert_eq!(
            roots.trust_domain_names(&[Role::Bootstrap]),
            vec!["spike.ist".to_owned()]
        );
    }

    use super::*;

    #[test]
    fn path_join_like_go() {
        assert_eq!(
            go_path_join("spike.ist", "spike/nexus"),
            "spike.ist/spike/nexus"
        );
        assert_eq!(
            go_path_join("example.org/", "spike/nexus"),
            "example.org/spike/nexus"
        );
        assert_eq!(go_path_join("a//b/./c", "spike/nexus"), "a/b/c/spike/nexus");
        assert_eq!(go_path_join("a/b/..", "spike/nexus"), "a/spike/nexus");
        assert_eq!(go_path_join("/x", "spike/nexus"), "/x/spike/nexus");
        assert_eq!(go_path_join("..", "spike/nexus"), "../spike/nexus");
    }

    #[test]
    fn trust_root_validation() {
        assert!(TrustRoot::new("").is_err());
        assert!(TrustRoot::new("  ").is_err());
        assert!(TrustRoot::new("a,b").is_err());
        assert_eq!(
            TrustRoot::new(" example.org ").unwrap().as_str(),
            "example.org"
        );
    }
}
