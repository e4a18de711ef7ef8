//! AES-256-GCM in SPIKE's formats (docs/protocol.md#cipher, docs/compatibility.md#storage of the wire spec).
//!
//! - 12-byte random nonce per message, 16-byte tag appended to the
//!   ciphertext, no associated data;
//! - the cipher-API stream envelope `0x01 || nonce(12) || ciphertext||tag`;
//! - the SQLite metadata scheme, where each field's nonce is a stored base
//!   nonce XOR a fixed 12-byte ASCII salt.

use core::fmt;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key};
use zeroize::Zeroizing;

use crate::error::{AeadError, StreamError};
use crate::secret::{KEY_SIZE, RootKey};

/// AES-GCM nonce size in bytes.
pub const NONCE_SIZE: usize = 12;

/// AES-GCM tag size in bytes (appended to every ciphertext).
pub const TAG_SIZE: usize = 16;

/// The only stream-format version byte SPIKE defines.
pub const STREAM_VERSION: u8 = 0x01;

/// A 12-byte AES-GCM nonce. Nonces are public.
pub type Nonce = [u8; NONCE_SIZE];

/// Salt for the `encrypted_current_version` metadata column (docs/compatibility.md#storage).
pub const SALT_CURRENT_VERSION: &[u8; NONCE_SIZE] = b"current_ver_";
/// Salt for the `encrypted_oldest_version` metadata column (docs/compatibility.md#storage).
pub const SALT_OLDEST_VERSION: &[u8; NONCE_SIZE] = b"oldest_ver__";
/// Salt for the `encrypted_created_time` metadata column (docs/compatibility.md#storage).
pub const SALT_CREATED_TIME: &[u8; NONCE_SIZE] = b"created_tim_";
/// Salt for the `encrypted_updated_time` metadata column (docs/compatibility.md#storage).
pub const SALT_UPDATED_TIME: &[u8; NONCE_SIZE] = b"updated_tim_";
/// Salt for the `encrypted_max_versions` metadata column (docs/compatibility.md#storage).
pub const SALT_MAX_VERSIONS: &[u8; NONCE_SIZE] = b"max_versions";

/// A fresh nonce from the OS random number generator.
pub fn random_nonce() -> Result<Nonce, AeadError> {
    let mut nonce = [0u8; NONCE_SIZE];
    getrandom::fill(&mut nonce).map_err(AeadError::Rng)?;
    Ok(nonce)
}

/// The per-field nonce of the metadata scheme: `base XOR salt`.
pub fn xor_nonce(base: &Nonce, salt: &[u8; NONCE_SIZE]) -> Nonce {
    let mut out = [0u8; NONCE_SIZE];
    for ((o, b), s) in out.iter_mut().zip(base).zip(salt) {
        *o = b ^ s;
    }
    out
}

/// Wraps a nonce and ciphertext in the stream envelope `0x01 || nonce || ct`.
pub fn encode_stream(nonce: &Nonce, ciphertext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + NONCE_SIZE + ciphertext.len());
    out.push(STREAM_VERSION);
    out.extend_from_slice(nonce);
    out.extend_from_slice(ciphertext);
    out
}

/// Splits a stream envelope into its nonce and ciphertext (with tag).
///
/// Errors are checked in Nexus' order: missing version byte, unsupported
/// version, fewer than 12 nonce bytes. An empty ciphertext is returned as is
/// (opening it then fails authentication).
pub fn decode_stream(data: &[u8]) -> Result<(Nonce, &[u8]), StreamError> {
    let (&version, rest) = data.split_first().ok_or(StreamError::MissingVersion)?;
    if version != STREAM_VERSION {
        return Err(StreamError::UnsupportedVersion(version));
    }
    let Some((nonce, ciphertext)) = rest.split_first_chunk::<NONCE_SIZE>() else {
        return Err(StreamError::ShortNonce { len: rest.len() });
    };
    Ok((*nonce, ciphertext))
}

/// An AES-256-GCM cipher keyed by the root key (or a random per-process key).
///
/// Holds expanded key material that is zeroized on drop; `Debug` is redacted.
pub struct Cipher {
    aead: Aes256Gcm,
}

impl Cipher {
    /// A cipher keyed directly by the root key (SPIKE uses no KDF).
    pub fn new(key: &RootKey) -> Self {
        Self::from_key_bytes(key.expose_secret())
    }

    /// A cipher with a fresh random key, as Nexus uses in `memory` mode.
    pub fn random() -> Result<Self, AeadError> {
        let mut bytes = Zeroizing::new([0u8; KEY_SIZE]);
        getrandom::fill(bytes.as_mut_slice()).map_err(AeadError::Rng)?;
        Ok(Self::from_key_bytes(&bytes))
    }

    fn from_key_bytes(bytes: &[u8; KEY_SIZE]) -> Self {
        let key = Zeroizing::new(Key::<Aes256Gcm>::from(*bytes));
        Self {
            aead: Aes256Gcm::new(&key),
        }
    }

    /// Encrypts with a fresh random nonce; returns `(nonce, ciphertext||tag)`.
    pub fn seal(&self, plaintext: &[u8]) -> Result<(Nonce, Vec<u8>), AeadError> {
        let nonce = random_nonce()?;
        let ciphertext = self.seal_with_nonce(&nonce, plaintext)?;
        Ok((nonce, ciphertext))
    }

    /// Encrypts with a caller-chosen nonce; returns `ciphertext||tag`.
    ///
    /// A nonce must never be reused under one key for different plaintexts.
    /// This exists for test vectors and the metadata `base XOR salt` scheme.
    pub fn seal_with_nonce(&self, nonce: &Nonce, plaintext: &[u8]) -> Result<Vec<u8>, AeadError> {
        let mut buffer = Vec::with_capacity(plaintext.len() + TAG_SIZE);
        buffer.extend_from_slice(plaintext);
        match self
            .aead
            .encrypt_in_place(&(*nonce).into(), &[], &mut buffer)
        {
            Ok(()) => Ok(buffer),
            Err(_) => {
                // Wipe the plaintext copy before reporting the failure.
                drop(Zeroizing::new(buffer));
                Err(AeadError::Encrypt)
            }
        }
    }

    /// Decrypts `ciphertext||tag`; `nonce` must be 12 bytes.
    pub fn open(&self, nonce: &[u8], ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, AeadError> {
        let nonce: &Nonce = nonce
            .try_into()
            .map_err(|_| AeadError::InvalidNonceLength { len: nonce.len() })?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        self.aead
            .decrypt_in_place(&(*nonce).into(), &[], &mut *buffer)
            .map_err(|_| AeadError::Decrypt)?;
        Ok(buffer)
    }

    /// Encrypts into the stream envelope `0x01 || nonce || ciphertext||tag`.
    pub fn seal_stream(&self, plaintext: &[u8]) -> Result<Vec<u8>, AeadError> {
        let (nonce, ciphertext) = self.seal(plaintext)?;
        Ok(encode_stream(&nonce, &ciphertext))
    }

    /// Decrypts a stream envelope.
    pub fn open_stream(&self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, AeadError> {
        let (nonce, ciphertext) = decode_stream(data)?;
        self.open(&nonce, ciphertext)
    }
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> Cipher {
        Cipher::new(&RootKey::from_bytes(&[0x11; 32]).unwrap())
    }

    #[test]
    fn seal_open_round_trip_and_sizes() {
        let c = cipher();
        let (nonce, ct) = c.seal(b"hello").unwrap();
        assert_eq!(ct.len(), 5 + TAG_SIZE);
        assert_eq!(c.open(&nonce, &ct).unwrap().as_slice(), b"hello");
        let (nonce2, _) = c.seal(b"hello").unwrap();
        assert_ne!(nonce, nonce2, "nonces are random");
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let c = cipher();
        let (nonce, ct) = c.seal(b"").unwrap();
        assert_eq!(ct.len(), TAG_SIZE);
        assert!(c.open(&nonce, &ct).unwrap().is_empty());
    }

    #[test]
    fn tamper_wrong_key_and_bad_nonce_fail() {
        let c = cipher();
        let (nonce, mut ct) = c.seal(b"secret").unwrap();
        let other = Cipher::new(&RootKey::from_bytes(&[0x22; 32]).unwrap());
        assert!(matches!(other.open(&nonce, &ct), Err(AeadError::Decrypt)));
        assert!(matches!(
            c.open(&nonce[..11], &ct),
            Err(AeadError::InvalidNonceLength { len: 11 })
        ));
        ct[0] ^= 1;
        assert!(matches!(c.open(&nonce, &ct), Err(AeadError::Decrypt)));
        assert!(matches!(c.open(&nonce, &[]), Err(AeadError::Decrypt)));
    }

    #[test]
    fn seal_with_nonce_is_deterministic() {
        let c = cipher();
        let nonce = [7u8; 12];
        assert_eq!(
            c.seal_with_nonce(&nonce, b"x").unwrap(),
            c.seal_with_nonce(&nonce, b"x").unwrap()
        );
    }

    #[test]
    fn random_ciphers_differ() {
        let a = Cipher::random().unwrap();
        let b = Cipher::random().unwrap();
        let (nonce, ct) = a.seal(b"data").unwrap();
        assert!(b.open(&nonce, &ct).is_err());
        assert_eq!(format!("{a:?}"), "Cipher(<redacted>)");
    }

    #[test]
    fn stream_format() {
        let c = cipher();
        let stream = c.seal_stream(b"stream me").unwrap();
        assert_eq!(stream[0], STREAM_VERSION);
        assert_eq!(stream.len(), 1 + NONCE_SIZE + 9 + TAG_SIZE);
        assert_eq!(c.open_stream(&stream).unwrap().as_slice(), b"stream me");

        assert_eq!(decode_stream(&[]), Err(StreamError::MissingVersion));
        assert_eq!(
            decode_stream(&[2, 0, 0]),
            Err(StreamError::UnsupportedVersion(2))
        );
        assert_eq!(
            decode_stream(&[1; 12]),
            Err(StreamError::ShortNonce { len: 11 })
        );
        let (nonce, ct) = decode_stream(&[1; 13]).unwrap();
        assert_eq!(nonce, [1; 12]);
        assert!(ct.is_empty());
        assert!(matches!(
            c.open_stream(&[9]),
            Err(AeadError::Stream(StreamError::UnsupportedVersion(9)))
        ));
    }

    #[test]
    fn metadata_nonce_xor() {
        let base = [0u8; 12];
        assert_eq!(&xor_nonce(&base, SALT_MAX_VERSIONS), SALT_MAX_VERSIONS);
        let base = [0xff; 12];
        let n = xor_nonce(&base, SALT_CURRENT_VERSION);
        assert_eq!(xor_nonce(&n, SALT_CURRENT_VERSION), base);
        for salt in [
            SALT_CURRENT_VERSION,
            SALT_OLDEST_VERSION,
            SALT_CREATED_TIME,
            SALT_UPDATED_TIME,
            SALT_MAX_VERSIONS,
        ] {
            assert_eq!(salt.len(), 12);
        }
    }
}
