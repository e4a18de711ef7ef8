//! No-panic properties: arbitrary input to every parser of untrusted crypto input (the
//! recovery-shard text, the cipher stream envelope, Shamir shards) returns `Ok` or `Err`,
//! never panics. The coverage-guided versions live in `fuzz/` (cargo-fuzz).

use proptest::prelude::*;
use spike_crypto::aead::{self, NONCE_SIZE, STREAM_VERSION};
use spike_crypto::{Cipher, RootKey, Shard, ShardValue, shamir, shard_text};

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(384)
}

fn cipher() -> Cipher {
    Cipher::new(&RootKey::from_bytes(&[0x42; 32]).unwrap())
}

/// Strings shaped like `spike:<id>:<hex>` often enough to reach every check.
fn shard_line() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ \t]{0,2}[a-z]{0,6}:[+-]?[0-9]{0,7}:[0-9a-fA-Fg]{60,68}[ \t\n]{0,2}",
        "[a-z:0-9]{0,12}",
        "\\PC{0,8}:\\PC{0,8}:\\PC{0,70}",
    ]
}

/// Bytes that start with the stream version byte half of the time.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..96)).prop_map(|(v1, mut bytes)| {
        if v1 {
            bytes.insert(0, STREAM_VERSION);
        }
        bytes
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn shard_text_never_panics(line in shard_line()) {
        if let Ok(shard) = shard_text::parse(&line) {
            prop_assert!(shard.id() != 0);
            let again = shard_text::parse(&shard_text::format(&shard)).unwrap();
            prop_assert!(again == shard);
        }
    }

    #[test]
    fn stream_envelopes_never_panic_nor_authenticate(data in stream()) {
        if let Ok((nonce, ciphertext)) = aead::decode_stream(&data) {
            prop_assert_eq!(aead::encode_stream(&nonce, ciphertext), data.clone());
        }
        let cipher = cipher();
        prop_assert!(cipher.open_stream(&data).is_err());
        let (nonce, rest) = data.split_at(data.len().min(NONCE_SIZE));
        prop_assert!(cipher.open(nonce, rest).is_err());
    }

    #[test]
    fn combine_never_panics(
        threshold in prop_oneof![0u16..=12, any::<u16>()],
        shards in proptest::collection::vec(
            (
                prop_oneof![0u16..=12, 995u16..=1005, any::<u16>()],
                prop_oneof![any::<[u8; 32]>(), Just([0xff; 32]), Just([0; 32])],
            ),
            0..12,
        ),
    ) {
        let shards: Vec<Shard> = shards
            .into_iter()
            .map(|(id, value)| Shard::new(id, ShardValue::new(value)))
            .collect();
        let _ = shamir::combine(&shards, threshold);
        if let (Ok(key), Some(first)) = (shamir::combine(&shards, 1), shards.first()) {
            prop_assert_eq!(key.expose_secret(), first.expose_secret());
        }
    }
}
