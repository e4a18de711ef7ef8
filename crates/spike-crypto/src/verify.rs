//! Helpers for the Bootstrap ↔ Nexus key proof (docs/protocol.md#root-key-shards-and-recovery-files, docs/protocol.md#bootstrap-and-keepers).
//!
//! Bootstrap encrypts `hex(32 random bytes)` under the root key and sends it
//! to Nexus; Nexus decrypts it and answers `hex(SHA-256(plaintext))`;
//! Bootstrap compares that with its own hash of the text.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::AeadError;

/// Number of random bytes behind the verification text (hex doubles it).
pub const RANDOM_TEXT_BYTES: usize = 32;

/// A fresh verification text: 64 lowercase hex characters of random data.
pub fn random_text() -> Result<String, AeadError> {
    let mut bytes = [0u8; RANDOM_TEXT_BYTES];
    getrandom::fill(&mut bytes).map_err(AeadError::Rng)?;
    Ok(hex::encode(bytes))
}

/// Lowercase hex SHA-256 of `data`, the `hash` field of the verify response.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Whether `hash_hex` is the SHA-256 of `text` (case-insensitive hex).
///
/// Compares in constant time over the digest bytes; malformed hex is `false`.
pub fn hash_matches(text: &[u8], hash_hex: &str) -> bool {
    let mut given = [0u8; 32];
    if hex::decode_to_slice(hash_hex, &mut given).is_err() {
        return false;
    }
    let expected = Sha256::digest(text);
    expected.as_slice().ct_eq(&given).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn random_text_shape() {
        let a = random_text().unwrap();
        let b = random_text().unwrap();
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_ne!(a, b);
    }

    #[test]
    fn hash_matching() {
        let text = random_text().unwrap();
        let hash = sha256_hex(text.as_bytes());
        assert!(hash_matches(text.as_bytes(), &hash));
        assert!(hash_matches(text.as_bytes(), &hash.to_uppercase()));
        assert!(!hash_matches(b"other", &hash));
        assert!(!hash_matches(text.as_bytes(), "zz"));
        assert!(!hash_matches(text.as_bytes(), &hash[..62]));
    }
}
