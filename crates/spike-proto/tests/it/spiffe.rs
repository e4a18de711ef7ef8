//! SPIFFE-ID builders, trust-root parsing and role matching (docs/protocol.md#identities-and-authorization).

use std::collections::HashMap;

use spike_proto::spiffe_id::{self, Role};
use spike_proto::{ProtoError, TrustRoot, TrustRoots};

fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn root(s: &str) -> TrustRoot {
    TrustRoot::new(s).unwrap()
}

#[test]
fn builders() {
    let r = root("spike.ist");
    assert_eq!(spiffe_id::nexus_id(&r), "spiffe://spike.ist/spike/nexus");
    assert_eq!(spiffe_id::keeper_id(&r), "spiffe://spike.ist/spike/keeper");
    assert_eq!(
        spiffe_id::bootstrap_id(&r),
        "spiffe://spike.ist/spike/bootstrap"
    );
    assert_eq!(
        spiffe_id::pilot_superuser_id(&r),
        "spiffe://spike.ist/spike/pilot/role/superuser"
    );
    assert_eq!(
        spiffe_id::pilot_recover_id(&r),
        "spiffe://spike.ist/spike/pilot/role/recover"
    );
    assert_eq!(
        spiffe_id::pilot_restore_id(&r),
        "spiffe://spike.ist/spike/pilot/role/restore"
    );
    assert_eq!(
        spiffe_id::lite_workload_id(&r),
        "spiffe://spike.ist/spike/workload/role/lite"
    );
    assert_eq!(
        spiffe_id::nexus_id(&root("example.org/tenant/a")),
        "spiffe://example.org/tenant/a/spike/nexus"
    );
    assert_eq!(
        spiffe_id::keeper_id(&root("example.org/")),
        "spiffe://example.org/spike/keeper"
    );
}

#[test]
fn from_lookup_defaults_and_lists() {
    let roots = TrustRoots::from_lookup(|_| None).unwrap();
    assert_eq!(roots, TrustRoots::default());
    for role in Role::ALL {
        assert_eq!(roots.roots(role), &[root("spike.ist")]);
    }
    let roots = TrustRoots::from_lookup(lookup(&[
        ("SPIKE_TRUST_ROOT_NEXUS", " a.org , b.org"),
        ("SPIKE_TRUST_ROOT_KEEPER", ""),
        ("SPIKE_TRUST_ROOT_PILOT", "ops.example"),
    ]))
    .unwrap();
    assert_eq!(roots.roots(Role::Nexus), &[root("a.org"), root("b.org")]);
    assert_eq!(roots.roots(Role::Keeper), &[root("spike.ist")]);
    assert_eq!(roots.roots(Role::PilotRestore), &[root("ops.example")]);
    assert_eq!(roots.id_of(Role::Nexus), "spiffe://a.org/spike/nexus");
}

#[test]
fn from_lookup_rejects_empty_elements() {
    for (var, value) in [
        ("SPIKE_TRUST_ROOT_NEXUS", "a.org,"),
        ("SPIKE_TRUST_ROOT_KEEPER", ",a.org"),
        ("SPIKE_TRUST_ROOT_BOOTSTRAP", "a.org,,b.org"),
        ("SPIKE_TRUST_ROOT_PILOT", " "),
        ("SPIKE_TRUST_ROOT_LITE_WORKLOAD", "a.org, ,b.org"),
    ] {
        match TrustRoots::from_lookup(lookup(&[(var, value)])) {
            Err(ProtoError::EmptyTrustRoot { var: got }) => {
                assert_eq!(got, var);
                let msg = ProtoError::EmptyTrustRoot { var: got }.to_string();
                assert!(msg.contains(var), "{msg}");
            }
            other => panic!("{var}={value:?}: expected EmptyTrustRoot, got {other:?}"),
        }
    }
}

#[test]
fn nexus_matching_table() {
    let roots = TrustRoots::default();
    let cases: &[(&str, bool)] = &[
        ("spiffe://spike.ist/spike/nexus", true),
        ("spiffe://spike.ist/spike/nexus/instance-0", true),
        ("spiffe://spike.ist/spike/nexus/", true),
        ("spiffe://other.org/spike/nexus", false),
        ("spiffe://spike.ist/spike/nexus2", false),
        ("spiffe://spike.ist/spike/nexusX", false),
        ("spiffe://spike.ist/spike/nexu", false),
        ("spiffe://spike.ist/spike", false),
        ("spiffe://spike.ist.evil/spike/nexus", false),
        ("SPIFFE://spike.ist/spike/nexus", false),
        ("", false),
    ];
    for (id, want) in cases {
        assert_eq!(roots.is_nexus(id), *want, "{id:?}");
    }
}

#[test]
fn every_role_predicate() {
    let roots = TrustRoots::default();
    type Pred = fn(&TrustRoots, &str) -> bool;
    let preds: [(Role, Pred); 7] = [
        (Role::Nexus, TrustRoots::is_nexus),
        (Role::Keeper, TrustRoots::is_keeper),
        (Role::Bootstrap, TrustRoots::is_bootstrap),
        (Role::PilotSuperuser, TrustRoots::is_pilot_superuser),
        (Role::PilotRecover, TrustRoots::is_pilot_recover),
        (Role::PilotRestore, TrustRoots::is_pilot_restore),
        (Role::LiteWorkload, TrustRoots::is_lite_workload),
    ];
    for (role, pred) in preds {
        let id = roots.id_of(role);
        assert!(pred(&roots, &id), "{id}");
        assert!(pred(&roots, &format!("{id}/x")), "{id}/x");
        assert!(!pred(&roots, &format!("{id}2")), "{id}2");
        assert!(!pred(&roots, &format!("{id}X")), "{id}X");
        assert!(!pred(&roots, &id.replace("spike.ist", "example.org")));
        assert!(!pred(&roots, ""));
        assert_eq!(roots.role_of(&id), Some(role));
        assert_eq!(spiffe_id::role_of(&format!("{id}/x"), &roots), Some(role));
        // Exactly one predicate holds for each base ID.
        let holders = preds.iter().filter(|(_, p)| p(&roots, &id)).count();
        assert_eq!(holders, 1, "{id}");
    }
    assert_eq!(roots.role_of("spiffe://spike.ist/app/web"), None);
    assert_eq!(roots.role_of(""), None);
    // The superuser is not the recover or restore role.
    assert!(!roots.is_pilot_recover("spiffe://spike.ist/spike/pilot/role/superuser"));
}

#[test]
fn multiple_roots() {
    let roots = TrustRoots::from_lookup(lookup(&[
        ("SPIKE_TRUST_ROOT_NEXUS", "a.org,b.org/tenant"),
        ("SPIKE_TRUST_ROOT_PILOT", "ops.a.org,ops.b.org"),
    ]))
    .unwrap();
    assert!(roots.is_nexus("spiffe://a.org/spike/nexus"));
    assert!(roots.is_nexus("spiffe://b.org/tenant/spike/nexus/1"));
    assert!(!roots.is_nexus("spiffe://b.org/spike/nexus"));
    assert!(!roots.is_nexus("spiffe://spike.ist/spike/nexus"));
    assert!(roots.is_pilot_superuser("spiffe://ops.b.org/spike/pilot/role/superuser"));
    assert!(roots.is_pilot_restore("spiffe://ops.a.org/spike/pilot/role/restore"));
    // Other roles keep the default.
    assert!(roots.is_keeper("spiffe://spike.ist/spike/keeper"));
    assert!(!roots.is_keeper("spiffe://a.org/spike/keeper"));

    let roots = TrustRoots::default().with_roots(Role::Keeper, vec![root("k1"), root("k2")]);
    assert!(roots.is_keeper("spiffe://k2/spike/keeper"));
    assert!(roots.is_nexus("spiffe://spike.ist/spike/nexus"));
}

#[test]
fn env_var_names() {
    assert_eq!(Role::Nexus.env_var(), "SPIKE_TRUST_ROOT_NEXUS");
    assert_eq!(Role::Keeper.env_var(), "SPIKE_TRUST_ROOT_KEEPER");
    assert_eq!(Role::Bootstrap.env_var(), "SPIKE_TRUST_ROOT_BOOTSTRAP");
    assert_eq!(Role::PilotRecover.env_var(), "SPIKE_TRUST_ROOT_PILOT");
    assert_eq!(
        Role::LiteWorkload.env_var(),
        "SPIKE_TRUST_ROOT_LITE_WORKLOAD"
    );
}
