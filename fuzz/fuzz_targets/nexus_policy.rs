//! Policy compilation and evaluation with arbitrary patterns: `Policy::new` (the upsert
//! path with the reserved-path rule), `Policy::from_stored`, `Policy::grants` and the
//! pattern helpers behind the reserved-path rule.

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use spike_nexus::model::policy::{self as pol, Permission, Policy};
use time::OffsetDateTime;

#[derive(Debug, Arbitrary)]
struct Input {
    name: String,
    spiffeid_pattern: String,
    path_pattern: String,
    permissions: Vec<u8>,
    peer: String,
    path: String,
    wants: Vec<u8>,
}

fn perms(bytes: &[u8]) -> Vec<Permission> {
    bytes
        .iter()
        .take(8)
        .map(|b| Permission::ALL[usize::from(*b) % Permission::ALL.len()])
        .collect()
}

fuzz_target!(|input: Input| {
    let now = OffsetDateTime::UNIX_EPOCH;
    let permissions = perms(&input.permissions);
    let wants = perms(&input.wants);
    let _ = spike_proto::validate::spiffe_id_pattern(&input.spiffeid_pattern);
    let _ = spike_proto::validate::path_pattern(&input.path_pattern);
    let _ = pol::pattern_is_precise_identity(&input.spiffeid_pattern);
    let _ = pol::pattern_describes_path(&input.path_pattern, &input.path);
    for reserved in pol::RESERVED_PATHS {
        let _ = pol::policy_may_reach_reserved_path(
            &input.spiffeid_pattern,
            &input.path_pattern,
            reserved,
        );
    }
    let stored = Policy::from_stored(
        input.name.clone(),
        input.spiffeid_pattern.clone(),
        input.path_pattern.clone(),
        permissions.clone(),
        now,
        now,
    );
    let created = Policy::new(
        input.name,
        input.spiffeid_pattern,
        input.path_pattern,
        permissions,
        now,
        now,
    );
    if let Ok(policy) = &created {
        assert!(
            stored.is_ok(),
            "an upsertable policy must also load from storage"
        );
        let _ = policy.grants(&input.peer, &input.path, &wants);
        for reserved in pol::RESERVED_PATHS {
            let _ = policy.grants(&input.peer, reserved, &wants);
        }
    }
    if let Ok(policy) = &stored {
        let _ = policy.grants(&input.peer, &input.path, &wants);
    }
});
