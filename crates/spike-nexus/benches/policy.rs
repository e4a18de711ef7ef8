//! Hot path of every policy-gated request: policy matching (docs/protocol.md#policies), for one policy and for
//! `Store::check_access` over 100 policies.
#![expect(clippy::unwrap_used, reason = "benchmark setup on fixed, valid inputs")]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use spike_nexus::model::{Permission, Policy};
use spike_nexus::store::{MemoryBackend, Store};
use time::OffsetDateTime;

const PEER: &str = "spiffe://example.org/app/team-42/web";

fn policy(i: usize) -> Policy {
    let now = OffsetDateTime::now_utc();
    Policy::new(
        format!("policy-{i}"),
        format!("^spiffe://example\\.org/app/team-{i}/.*$"),
        format!("^tenants/team-{i}/.*$"),
        vec![Permission::Read, Permission::List],
        now,
        now,
    )
    .unwrap()
}

fn grants(c: &mut Criterion) {
    let p = policy(42);
    let mut group = c.benchmark_group("policy/grants");
    group.bench_function("match", |b| {
        b.iter(|| {
            p.grants(
                black_box(PEER),
                black_box("tenants/team-42/db/creds"),
                &[Permission::Read],
            )
        });
    });
    group.bench_function("id-mismatch", |b| {
        b.iter(|| {
            p.grants(
                black_box("spiffe://example.org/app/team-7/web"),
                black_box("tenants/team-42/db/creds"),
                &[Permission::Read],
            )
        });
    });
    group.finish();
}

fn check_access(c: &mut Criterion) {
    let store = Store::new(Arc::new(MemoryBackend::new()), 10).unwrap();
    for i in 0..100 {
        let p = policy(i);
        store
            .put_policy(
                &p.name,
                &p.spiffeid_pattern,
                &p.path_pattern,
                p.permissions.clone(),
            )
            .unwrap();
    }
    let mut group = c.benchmark_group("store/check_access/100-policies");
    // Policies are kept by name, so "policy-42" sits in the middle of the scan.
    group.bench_function("allowed", |b| {
        b.iter(|| {
            assert!(store.check_access(
                black_box(PEER),
                black_box("tenants/team-42/db/creds"),
                &[Permission::Read],
            ));
        });
    });
    group.bench_function("denied-full-scan", |b| {
        b.iter(|| {
            assert!(!store.check_access(
                black_box("spiffe://example.org/app/other/web"),
                black_box("tenants/team-42/db/creds"),
                &[Permission::Read],
            ));
        });
    });
    group.finish();
}

criterion_group!(benches, grants, check_access);
criterion_main!(benches);
