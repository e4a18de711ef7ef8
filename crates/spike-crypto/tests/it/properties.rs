//! Shamir properties for (threshold, shares) up to (5, 10).

use proptest::prelude::*;
use proptest::sample::subsequence;
use spike_crypto::{RootKey, ShamirError, Shard, shamir};

fn valid_key() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>().prop_filter("valid P-256 scalar", |b| RootKey::from_bytes(b).is_ok())
}

/// (key, shares, threshold, ids of a subset of the given size, shuffled).
fn case(smaller: bool) -> impl Strategy<Value = ([u8; 32], u16, u16, Vec<u16>)> {
    (1u16..=5)
        .prop_flat_map(|t| (Just(t), t..=10u16))
        .prop_filter("a smaller subset needs t >= 2", move |(t, _)| {
            !smaller || *t >= 2
        })
        .prop_flat_map(move |(t, n)| {
            let size = if smaller {
                1..usize::from(t)
            } else {
                usize::from(t)..usize::from(n) + 1
            };
            let ids = subsequence((1..=n).collect::<Vec<u16>>(), size).prop_shuffle();
            (valid_key(), Just(n), Just(t), ids)
        })
}

fn pick(shards: &[Shard], ids: &[u16]) -> Vec<Shard> {
    ids.iter()
        .map(|&id| shards[usize::from(id) - 1].duplicate_secret())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn threshold_subsets_reconstruct((bytes, n, t, ids) in case(false)) {
        let key = RootKey::from_bytes(&bytes).unwrap();
        let shards = shamir::split(&key, n, t).unwrap();
        let got = shamir::combine(&pick(&shards, &ids), t).unwrap();
        prop_assert!(got == key);
    }

    #[test]
    fn smaller_subsets_do_not((bytes, n, t, ids) in case(true)) {
        let key = RootKey::from_bytes(&bytes).unwrap();
        let shards = shamir::split(&key, n, t).unwrap();
        let subset = pick(&shards, &ids);
        let k = u16::try_from(ids.len()).unwrap();
        prop_assert_eq!(
            shamir::combine(&subset, t),
            Err(ShamirError::NotEnoughShards { got: ids.len(), threshold: t })
        );
        // Claiming a lower threshold "succeeds" but gives a different key.
        match shamir::combine(&subset, k) {
            Ok(other) => prop_assert!(other != key),
            Err(e) => prop_assert_eq!(e, ShamirError::ZeroResult),
        }
    }
}
