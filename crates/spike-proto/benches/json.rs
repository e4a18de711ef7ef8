//! JSON encoding and decoding of a hot response type: `SecretGetResponse` with 10 keys.
#![expect(clippy::unwrap_used, reason = "benchmark setup on fixed, valid inputs")]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use spike_proto::secrets::SecretGetResponse;

fn response() -> SecretGetResponse {
    let data: BTreeMap<String, String> = (0..10)
        .map(|i| (format!("key-{i}"), format!("value-{i}-{}", "x".repeat(48))))
        .collect();
    SecretGetResponse::ok(data)
}

fn json(c: &mut Criterion) {
    let resp = response();
    let encoded = serde_json::to_vec(&resp).unwrap();
    let mut group = c.benchmark_group("json/SecretGetResponse/10-keys");
    group.bench_function("encode", |b| {
        b.iter(|| serde_json::to_vec(black_box(&resp)).unwrap());
    });
    group.bench_function("decode", |b| {
        b.iter(|| serde_json::from_slice::<SecretGetResponse>(black_box(&encoded)).unwrap());
    });
    group.finish();
}

criterion_group!(benches, json);
criterion_main!(benches);
