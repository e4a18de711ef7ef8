//! Hot paths of spike-crypto: AES-256-GCM seal/open (64 B and 4 KiB) and Shamir combine
//! (3-of-5), as used by every secret write/read and by each unseal.
#![expect(clippy::unwrap_used, reason = "benchmark setup on fixed, valid inputs")]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spike_crypto::{Cipher, RootKey, shamir};

fn aead(c: &mut Criterion) {
    let cipher = Cipher::new(&RootKey::generate().unwrap());
    let mut group = c.benchmark_group("cipher");
    for size in [64usize, 4096] {
        let plaintext = vec![0x5a_u8; size];
        let (nonce, ciphertext) = cipher.seal(&plaintext).unwrap();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("seal/{size}B"), |b| {
            b.iter(|| cipher.seal(black_box(&plaintext)).unwrap());
        });
        group.bench_function(format!("open/{size}B"), |b| {
            b.iter(|| {
                cipher
                    .open(black_box(&nonce), black_box(&ciphertext))
                    .unwrap()
            });
        });
    }
    group.finish();
}

fn combine(c: &mut Criterion) {
    let key = RootKey::generate().unwrap();
    let shards = shamir::split(&key, 5, 3).unwrap();
    let three = &shards[1..4];
    c.bench_function("shamir/combine/3-of-5", |b| {
        b.iter(|| shamir::combine(black_box(three), 3).unwrap());
    });
    c.bench_function("shamir/split/3-of-5", |b| {
        b.iter(|| shamir::split(black_box(&key), 5, 3).unwrap());
    });
}

criterion_group!(benches, aead, combine);
criterion_main!(benches);
