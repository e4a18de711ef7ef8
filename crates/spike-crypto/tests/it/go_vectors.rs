//! Go → Rust: vectors produced by spike-sdk-go/circl must be reproduced.

use spike_crypto::secret::{Shard, ShardValue};
use spike_crypto::{Cipher, aead, shamir, shard_text, verify};

use crate::vectors::{Vectors, combinations, key_from_hex};

fn load() -> Vectors {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/go-vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn file_covers_required_cases() {
    let v = load();
    let params: Vec<(u16, u16)> = v.shamir.iter().map(|s| (s.shares, s.threshold)).collect();
    assert!(params.contains(&(3, 2)));
    assert!(params.contains(&(5, 3)));
    assert!(
        v.shamir
            .iter()
            .any(|s| s.root_key.starts_with("ffffffff00000000")),
        "a key near n is covered"
    );
    for sv in &v.shamir {
        let mut ids: Vec<Vec<u16>> = sv.subsets.iter().map(|s| s.ids.clone()).collect();
        ids.sort();
        assert_eq!(
            ids,
            combinations(sv.shares, sv.threshold),
            "every subset present"
        );
    }
    assert!(!v.aes_gcm.is_empty() && !v.stream.is_empty() && !v.bootstrap_verify.is_empty());
}

#[test]
fn split_matches_go_shares() {
    for sv in load().shamir {
        let key = key_from_hex(&sv.root_key);
        let shards = shamir::split(&key, sv.shares, sv.threshold).unwrap();
        assert_eq!(shards.len(), sv.shards.len());
        for (ours, theirs) in shards.iter().zip(&sv.shards) {
            assert_eq!(ours.id(), theirs.id);
            assert_eq!(
                hex::encode(ours.expose_secret()),
                theirs.value,
                "key {} ({},{}) shard {}",
                sv.root_key,
                sv.shares,
                sv.threshold,
                theirs.id
            );
            assert_eq!(shard_text::format(ours).as_str(), theirs.text);
            let one = shamir::share_for(&key, theirs.id, sv.shares, sv.threshold).unwrap();
            assert_eq!(&one, ours);
        }
    }
}

#[test]
fn combine_matches_go_for_every_subset() {
    for sv in load().shamir {
        let key = key_from_hex(&sv.root_key);
        for subset in &sv.subsets {
            let shards: Vec<Shard> = subset
                .ids
                .iter()
                .map(|id| {
                    let text = &sv.shards[usize::from(*id) - 1].text;
                    shard_text::parse(text).unwrap()
                })
                .collect();
            let got = shamir::combine(&shards, sv.threshold).unwrap();
            assert_eq!(hex::encode(got.expose_secret()), subset.root_key);
            assert_eq!(got, key);
            // Order of the shards must not matter.
            let reversed: Vec<Shard> = shards.iter().rev().map(Shard::duplicate_secret).collect();
            assert_eq!(shamir::combine(&reversed, sv.threshold).unwrap(), key);
        }
    }
}

#[test]
fn go_ciphertexts_open_in_rust() {
    let v = load();
    for av in &v.aes_gcm {
        let cipher = Cipher::new(&key_from_hex(&av.key));
        let nonce = hex::decode(&av.nonce).unwrap();
        let ct = hex::decode(&av.ciphertext).unwrap();
        let pt = cipher.open(&nonce, &ct).unwrap();
        assert_eq!(hex::encode(pt.as_slice()), av.plaintext);
        // Re-sealing with Go's nonce gives Go's bytes.
        let nonce: aead::Nonce = nonce.try_into().unwrap();
        assert_eq!(cipher.seal_with_nonce(&nonce, &pt).unwrap(), ct);
    }
    for sv in &v.stream {
        let cipher = Cipher::new(&key_from_hex(&sv.key));
        let pt = cipher.open_stream(&hex::decode(&sv.data).unwrap()).unwrap();
        assert_eq!(hex::encode(pt.as_slice()), sv.plaintext);
    }
}

#[test]
fn go_bootstrap_probe_verifies_in_rust() {
    for bv in load().bootstrap_verify {
        let cipher = Cipher::new(&key_from_hex(&bv.key));
        let pt = cipher
            .open(
                &hex::decode(&bv.nonce).unwrap(),
                &hex::decode(&bv.ciphertext).unwrap(),
            )
            .unwrap();
        assert_eq!(pt.as_slice(), bv.random_text.as_bytes());
        assert_eq!(verify::sha256_hex(&pt), bv.hash);
        assert!(verify::hash_matches(bv.random_text.as_bytes(), &bv.hash));
    }
}

#[test]
fn tampered_go_shard_gives_other_key() {
    let v = load();
    let sv = &v.shamir[0];
    let key = key_from_hex(&sv.root_key);
    let mut first = hex::decode(&sv.shards[0].value).unwrap();
    first[31] ^= 1;
    let shards = [
        Shard::new(1, ShardValue::from_slice(&first).unwrap()),
        shard_text::parse(&sv.shards[1].text).unwrap(),
    ];
    assert_ne!(shamir::combine(&shards, sv.threshold).unwrap(), key);
}
