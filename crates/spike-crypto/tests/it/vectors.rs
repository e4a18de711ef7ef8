//! The JSON schema shared with `tools/go-vectors` (both directions).

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Vectors {
    pub(crate) comment: String,
    pub(crate) shamir: Vec<ShamirVector>,
    pub(crate) aes_gcm: Vec<AesVector>,
    pub(crate) stream: Vec<StreamVector>,
    pub(crate) bootstrap_verify: Vec<BootstrapVector>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ShamirVector {
    pub(crate) root_key: String,
    pub(crate) shares: u16,
    pub(crate) threshold: u16,
    pub(crate) shards: Vec<ShardVector>,
    pub(crate) subsets: Vec<Subset>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ShardVector {
    pub(crate) id: u16,
    pub(crate) value: String,
    pub(crate) text: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Subset {
    pub(crate) ids: Vec<u16>,
    pub(crate) root_key: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AesVector {
    pub(crate) key: String,
    pub(crate) nonce: String,
    pub(crate) plaintext: String,
    pub(crate) ciphertext: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StreamVector {
    pub(crate) key: String,
    pub(crate) plaintext: String,
    pub(crate) data: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BootstrapVector {
    pub(crate) key: String,
    pub(crate) random_text: String,
    pub(crate) nonce: String,
    pub(crate) ciphertext: String,
    pub(crate) hash: String,
}

/// Every k-element subset of `1..=n`, in lexicographic order.
pub(crate) fn combinations(n: u16, k: u16) -> Vec<Vec<u16>> {
    fn rec(start: u16, n: u16, k: usize, cur: &mut Vec<u16>, out: &mut Vec<Vec<u16>>) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in start..=n {
            cur.push(i);
            rec(i + 1, n, k, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    rec(1, n, usize::from(k), &mut Vec::new(), &mut out);
    out
}

pub(crate) fn key_from_hex(h: &str) -> spike_crypto::RootKey {
    spike_crypto::RootKey::from_slice(&hex::decode(h).unwrap()).unwrap()
}
