//! `shamir::combine` over arbitrary shards and thresholds (ids, values out of the field,
//! duplicates, too few shards).
//!
//! With threshold 1 the constant polynomial is the first shard, so a success must return
//! exactly its value.

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use spike_crypto::{Shard, ShardValue, shamir};

#[derive(Debug, Arbitrary)]
struct Input {
    threshold: u16,
    shards: Vec<(u16, [u8; 32])>,
}

fuzz_target!(|input: Input| {
    // Interpolation is quadratic in the threshold; keep iterations fast.
    let shards: Vec<Shard> = input
        .shards
        .iter()
        .take(64)
        .map(|(id, value)| Shard::new(*id, ShardValue::new(*value)))
        .collect();
    let _ = shamir::combine(&shards, input.threshold);
    // A threshold the shards can actually meet.
    let threshold = u16::try_from(shards.len()).unwrap_or(1).clamp(1, 8);
    let _ = shamir::combine(&shards, threshold);
    if let (Ok(key), Some(first)) = (shamir::combine(&shards, 1), shards.first()) {
        assert_eq!(key.expose_secret(), first.expose_secret());
    }
});
