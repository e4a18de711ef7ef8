//! Rust → Go: Rust-sealed ciphertexts and Rust shares are checked by the Go
//! SDK (`tools/go-vectors`, `go run . open FILE`). Skipped when `go` is not
//! on PATH or `SPIKE_SKIP_GO=1`.

use std::path::PathBuf;
use std::process::Command;

use spike_crypto::{Cipher, RootKey, aead, shamir, shard_text, verify};

use crate::vectors::{
    AesVector, BootstrapVector, ShamirVector, ShardVector, StreamVector, Subset, Vectors,
    combinations, key_from_hex,
};

fn go_available() -> bool {
    if std::env::var("SPIKE_SKIP_GO").is_ok_and(|v| v == "1") {
        eprintln!("note: SPIKE_SKIP_GO=1, skipping the Rust -> Go interop check");
        return false;
    }
    match Command::new("go").arg("version").output() {
        Ok(out) if out.status.success() => true,
        _ => {
            eprintln!("note: `go` not on PATH, skipping the Rust -> Go interop check");
            false
        }
    }
}

fn tool_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/go-vectors")
}

fn go_open(vectors: &Vectors) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rust-vectors.json");
    std::fs::write(&file, serde_json::to_vec_pretty(vectors).unwrap()).unwrap();
    Command::new("go")
        .args(["run", ".", "open"])
        .arg(&file)
        .current_dir(tool_dir())
        .output()
        .unwrap()
}

fn shamir_vector(key: &RootKey, shares: u16, threshold: u16) -> ShamirVector {
    let shards = shamir::split(key, shares, threshold).unwrap();
    let subsets = combinations(shares, threshold)
        .into_iter()
        .map(|ids| {
            let picked: Vec<_> = ids
                .iter()
                .map(|&id| shards[usize::from(id) - 1].duplicate_secret())
                .collect();
            let got = shamir::combine(&picked, threshold).unwrap();
            Subset {
                ids,
                root_key: hex::encode(got.expose_secret()),
            }
        })
        .collect();
    ShamirVector {
        root_key: hex::encode(key.expose_secret()),
        shares,
        threshold,
        shards: shards
            .iter()
            .map(|s| ShardVector {
                id: s.id(),
                value: hex::encode(s.expose_secret()),
                text: shard_text::format(s).to_string(),
            })
            .collect(),
        subsets,
    }
}

fn rust_vectors() -> Vectors {
    let mut keys: Vec<RootKey> = (0..3).map(|_| RootKey::generate().unwrap()).collect();
    keys.push(key_from_hex(
        "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632550",
    ));
    let mut v = Vectors {
        comment: "produced by the spike-crypto go_interop test".into(),
        ..Vectors::default()
    };
    for key in &keys {
        for (n, t) in [(3, 2), (5, 3), (1, 1), (6, 4)] {
            v.shamir.push(shamir_vector(key, n, t));
        }
    }
    let plaintexts: [&[u8]; 3] = [b"", b"rust to go", &[0xa5; 4096]];
    for (key, pt) in keys.iter().zip(plaintexts) {
        let cipher = Cipher::new(key);
        let (nonce, ct) = cipher.seal(pt).unwrap();
        v.aes_gcm.push(AesVector {
            key: hex::encode(key.expose_secret()),
            nonce: hex::encode(nonce),
            plaintext: hex::encode(pt),
            ciphertext: hex::encode(ct),
        });
        v.stream.push(StreamVector {
            key: hex::encode(key.expose_secret()),
            plaintext: hex::encode(pt),
            data: hex::encode(cipher.seal_stream(pt).unwrap()),
        });
    }
    // Metadata-style nonce (base XOR salt) is just another nonce to Go.
    let cipher = Cipher::new(&keys[0]);
    let nonce = aead::xor_nonce(&aead::random_nonce().unwrap(), aead::SALT_MAX_VERSIONS);
    v.aes_gcm.push(AesVector {
        key: hex::encode(keys[0].expose_secret()),
        nonce: hex::encode(nonce),
        plaintext: hex::encode(b"10"),
        ciphertext: hex::encode(cipher.seal_with_nonce(&nonce, b"10").unwrap()),
    });
    let text = verify::random_text().unwrap();
    let (nonce, ct) = cipher.seal(text.as_bytes()).unwrap();
    v.bootstrap_verify.push(BootstrapVector {
        key: hex::encode(keys[0].expose_secret()),
        hash: verify::sha256_hex(text.as_bytes()),
        random_text: text,
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(ct),
    });
    v
}

#[test]
fn rust_output_verifies_with_go_sdk() {
    if !go_available() {
        return;
    }
    let vectors = rust_vectors();
    let out = go_open(&vectors);
    assert!(
        out.status.success(),
        "go open failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The checker must be able to fail: a flipped ciphertext bit is rejected...
    let mut tampered = rust_vectors();
    let mut ct = hex::decode(&tampered.aes_gcm[1].ciphertext).unwrap();
    ct[0] ^= 0x01;
    tampered.aes_gcm[1].ciphertext = hex::encode(ct);
    assert!(!go_open(&tampered).status.success(), "tampered ciphertext");

    // ...and so is a shard that is not the SDK's share for the key.
    let mut wrong = rust_vectors();
    wrong.aes_gcm.clear();
    let other = shamir::split(&RootKey::generate().unwrap(), 3, 2).unwrap();
    wrong.shamir[0].shards[1].value = hex::encode(other[1].expose_secret());
    wrong.shamir[0].shards[1].text = shard_text::format(&other[1]).to_string();
    assert!(!go_open(&wrong).status.success(), "foreign shard");
}
