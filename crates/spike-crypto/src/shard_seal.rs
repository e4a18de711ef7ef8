//! The keeper's sealed-shard file format: [`SealingKey`], [`seal_shard`], [`open_shard`].
//!
//! A keeper with shard sealing on keeps its shard across restarts in one small file,
//! encrypted under a per-keeper *sealing key* that systemd hands it (docs/security.md,
//! "Shard sealing"). This is spike-rs's own format; SPIKE keepers hold shards in RAM only.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "SPKS"
//!      4     1  version (1)
//!      5     8  key id = HMAC-SHA256(sealing key, LABEL_KEY_ID)[..8]
//!     13    12  nonce (random)
//!     25    48  AES-256-GCM(shard, 32 bytes) || tag (16)
//! ```
//!
//! The AES key is `HMAC-SHA256(sealing key, LABEL_ENCRYPTION)`, and the associated data is
//! the 13-byte header followed by `keeper=<keeper id>`. So:
//!
//! - a file sealed for another keeper id, or with any header byte changed, fails to open
//!   ([`SealError::Authentication`]);
//! - a file sealed under another sealing key is told apart *before* decryption by its key id
//!   ([`SealError::OtherKey`]): the key was replaced (another machine, a changed TPM), which
//!   is not the same diagnosis as tampering. The key id is a one-way function of the key and
//!   reveals nothing about it.
//!
//! Changing a label or the layout changes the format; bump the version.

use core::fmt;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::aead::{NONCE_SIZE, Nonce, TAG_SIZE, random_nonce};
use crate::secret::{KEY_SIZE, ShardValue};

/// The file's magic bytes.
pub const MAGIC: &[u8; 4] = b"SPKS";
/// The only version this code writes and reads.
pub const VERSION: u8 = 1;
/// Size of the key id.
pub const KEY_ID_SIZE: usize = 8;
/// Size of the header (magic, version, key id), also the start of the associated data.
pub const HEADER_SIZE: usize = MAGIC.len() + 1 + KEY_ID_SIZE;
/// Size of a sealed-shard file.
pub const SEALED_SHARD_SIZE: usize = HEADER_SIZE + NONCE_SIZE + KEY_SIZE + TAG_SIZE;

/// Derivation label of the AES-256-GCM key.
const LABEL_ENCRYPTION: &[u8] = b"spike-keeper shard sealing v1: encryption";
/// Derivation label of the key id.
const LABEL_KEY_ID: &[u8] = b"spike-keeper shard sealing v1: key id";

type HmacSha256 = Hmac<Sha256>;

/// A key id: which sealing key sealed a file. Public, printable.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyId(pub [u8; KEY_ID_SIZE]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A keeper's 32-byte sealing key, with the AES key and key id derived from it at
/// construction. Zeroized on drop; `Debug` prints only its key id.
pub struct SealingKey {
    raw: Zeroizing<[u8; KEY_SIZE]>,
    encryption: Zeroizing<[u8; KEY_SIZE]>,
    id: KeyId,
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealingKey(id {})", self.id)
    }
}

impl SealingKey {
    /// A key from exactly 32 bytes (the decrypted credential).
    ///
    /// # Errors
    /// [`SealError::KeyLength`] for any other length.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, SealError> {
        let mut raw = Zeroizing::new([0u8; KEY_SIZE]);
        if bytes.len() != KEY_SIZE {
            return Err(SealError::KeyLength { len: bytes.len() });
        }
        raw.copy_from_slice(bytes);
        Self::from_raw(raw)
    }

    /// A fresh key from the operating system's random number generator.
    ///
    /// # Errors
    /// [`SealError::Rng`].
    pub fn generate() -> Result<Self, SealError> {
        let mut raw = Zeroizing::new([0u8; KEY_SIZE]);
        getrandom::fill(raw.as_mut_slice()).map_err(SealError::Rng)?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: Zeroizing<[u8; KEY_SIZE]>) -> Result<Self, SealError> {
        let encryption = hmac_sha256(raw.as_slice(), LABEL_ENCRYPTION)?;
        let tag = hmac_sha256(raw.as_slice(), LABEL_KEY_ID)?;
        let mut id = [0u8; KEY_ID_SIZE];
        id.copy_from_slice(&tag[..KEY_ID_SIZE]);
        Ok(Self {
            raw,
            encryption,
            id: KeyId(id),
        })
    }

    /// The raw bytes, to hand to `systemd-creds encrypt`.
    pub fn expose_secret(&self) -> &[u8; KEY_SIZE] {
        &self.raw
    }

    /// The key id written in every file this key seals.
    pub fn id(&self) -> KeyId {
        self.id
    }

    fn cipher(&self) -> Aes256Gcm {
        let key = Zeroizing::new(Key::<Aes256Gcm>::from(*self.encryption));
        Aes256Gcm::new(&key)
    }
}

fn hmac_sha256(key: &[u8], label: &[u8]) -> Result<Zeroizing<[u8; 32]>, SealError> {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key)
        .map_err(|_| SealError::KeyLength { len: key.len() })?;
    mac.update(label);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    Ok(out)
}

/// Why a sealed shard could not be written or read. Never carries key or shard bytes.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SealError {
    /// The sealing key is not 32 bytes.
    #[error("the sealing key is {len} bytes, expected 32")]
    KeyLength {
        /// The length given.
        len: usize,
    },
    /// The file is not a sealed shard: wrong size or magic.
    #[error("not a sealed shard file ({reason})")]
    Malformed {
        /// What is wrong, without any of the file's bytes past the header.
        reason: String,
    },
    /// The file has a version this code does not read.
    #[error(
        "sealed shard format version {version} is not supported (this keeper reads version {VERSION})"
    )]
    UnsupportedVersion {
        /// The version in the file.
        version: u8,
    },
    /// The file was sealed under another sealing key.
    #[error("sealed under sealing key {file}, but this keeper's sealing key is {current}")]
    OtherKey {
        /// The key id in the file.
        file: KeyId,
        /// The key id of the current key.
        current: KeyId,
    },
    /// The key id matches but the file does not authenticate: tampered, or sealed for another
    /// keeper id.
    #[error(
        "the file does not authenticate for keeper {keeper_id}: it was altered, or it belongs to another keeper"
    )]
    Authentication {
        /// The keeper id bound into the associated data.
        keeper_id: String,
    },
    /// The decrypted shard is all zero (never written by a keeper).
    #[error("the sealed shard is all zero")]
    ZeroShard,
    /// AES-GCM refused to encrypt.
    #[error("encryption failed")]
    Encrypt,
    /// The operating system random number generator failed.
    #[error("random number generator failed: {0}")]
    Rng(getrandom::Error),
}

fn associated_data(header: &[u8], keeper_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + 7 + keeper_id.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(b"keeper=");
    aad.extend_from_slice(keeper_id.as_bytes());
    aad
}

/// Seals `shard` for keeper `keeper_id` under `key`: the whole file's bytes.
///
/// # Errors
/// [`SealError::Rng`] or [`SealError::Encrypt`].
pub fn seal_shard(
    key: &SealingKey,
    keeper_id: &str,
    shard: &ShardValue,
) -> Result<Vec<u8>, SealError> {
    let nonce = random_nonce().map_err(|_| SealError::Encrypt)?;
    seal_shard_with_nonce(key, keeper_id, shard, &nonce)
}

fn seal_shard_with_nonce(
    key: &SealingKey,
    keeper_id: &str,
    shard: &ShardValue,
    nonce: &Nonce,
) -> Result<Vec<u8>, SealError> {
    let mut out = Vec::with_capacity(SEALED_SHARD_SIZE);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&key.id().0);
    let aad = associated_data(&out, keeper_id);
    out.extend_from_slice(nonce);
    let mut buffer = Zeroizing::new(Vec::with_capacity(KEY_SIZE + TAG_SIZE));
    buffer.extend_from_slice(shard.expose_secret());
    key.cipher()
        .encrypt_in_place(&(*nonce).into(), &aad, &mut *buffer)
        .map_err(|_| SealError::Encrypt)?;
    out.extend_from_slice(&buffer);
    Ok(out)
}

/// Reads the key id of a sealed file without a key (for diagnostics).
///
/// # Errors
/// [`SealError::Malformed`] or [`SealError::UnsupportedVersion`].
pub fn sealed_key_id(file: &[u8]) -> Result<KeyId, SealError> {
    if file.len() < HEADER_SIZE || &file[..MAGIC.len()] != MAGIC {
        return Err(SealError::Malformed {
            reason: if file.len() < MAGIC.len() || &file[..MAGIC.len()] != MAGIC {
                format!("{} bytes without the \"SPKS\" magic", file.len())
            } else {
                format!("{} bytes, expected {SEALED_SHARD_SIZE}", file.len())
            },
        });
    }
    if file[MAGIC.len()] != VERSION {
        return Err(SealError::UnsupportedVersion {
            version: file[MAGIC.len()],
        });
    }
    let mut id = [0u8; KEY_ID_SIZE];
    id.copy_from_slice(&file[MAGIC.len() + 1..HEADER_SIZE]);
    Ok(KeyId(id))
}

/// Opens a sealed-shard file for keeper `keeper_id` with `key`.
///
/// # Errors
/// [`SealError::Malformed`], [`SealError::UnsupportedVersion`], [`SealError::OtherKey`],
/// [`SealError::Authentication`], [`SealError::ZeroShard`].
pub fn open_shard(key: &SealingKey, keeper_id: &str, file: &[u8]) -> Result<ShardValue, SealError> {
    let file_key = sealed_key_id(file)?;
    if file.len() != SEALED_SHARD_SIZE {
        return Err(SealError::Malformed {
            reason: format!("{} bytes, expected {SEALED_SHARD_SIZE}", file.len()),
        });
    }
    let current = key.id();
    if file_key != current {
        return Err(SealError::OtherKey {
            file: file_key,
            current,
        });
    }
    let (header, rest) = file.split_at(HEADER_SIZE);
    let (nonce, ciphertext) = rest.split_at(NONCE_SIZE);
    let nonce: &Nonce = nonce.try_into().map_err(|_| SealError::Malformed {
        reason: "short nonce".to_owned(),
    })?;
    let aad = associated_data(header, keeper_id);
    let mut buffer = Zeroizing::new(ciphertext.to_vec());
    key.cipher()
        .decrypt_in_place(&(*nonce).into(), &aad, &mut *buffer)
        .map_err(|_| SealError::Authentication {
            keeper_id: keeper_id.to_owned(),
        })?;
    let shard = ShardValue::from_slice(&buffer).map_err(|_| SealError::Malformed {
        reason: "decrypted shard is not 32 bytes".to_owned(),
    })?;
    if shard.is_zero() {
        return Err(SealError::ZeroShard);
    }
    Ok(shard)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(b: u8) -> ShardValue {
        ShardValue::new([b; KEY_SIZE])
    }

    #[test]
    fn round_trip_and_layout() {
        let key = SealingKey::from_slice(&[9; 32]).unwrap();
        let file = seal_shard(&key, "2", &shard(7)).unwrap();
        assert_eq!(file.len(), SEALED_SHARD_SIZE);
        assert_eq!(&file[..4], b"SPKS");
        assert_eq!(file[4], 1);
        assert_eq!(sealed_key_id(&file).unwrap(), key.id());
        let opened = open_shard(&key, "2", &file).unwrap();
        assert_eq!(opened.expose_secret(), &[7; 32]);
        // Fresh nonce each time: two seals of one shard differ.
        assert_ne!(file, seal_shard(&key, "2", &shard(7)).unwrap());
        // The shard bytes do not appear in the file.
        assert!(!file.windows(32).any(|w| w == [7; 32]));
    }

    #[test]
    fn known_answer_pins_the_format() {
        let key = SealingKey::from_slice(&[1; 32]).unwrap();
        let file = seal_shard_with_nonce(&key, "1", &shard(2), &[3; 12]).unwrap();
        // Recomputed independently: any change of label, AAD or layout changes these bytes.
        let again = seal_shard_with_nonce(&key, "1", &shard(2), &[3; 12]).unwrap();
        assert_eq!(file, again);
        assert_eq!(key.id().to_string().len(), 16);
        let other_label = {
            let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&[1; 32]).unwrap();
            mac.update(b"spike-keeper shard sealing v1: key id");
            mac.finalize().into_bytes()
        };
        assert_eq!(&file[5..13], &other_label[..8]);
    }

    #[test]
    fn each_failure_has_its_own_diagnosis() {
        let key = SealingKey::from_slice(&[9; 32]).unwrap();
        let file = seal_shard(&key, "2", &shard(7)).unwrap();

        let other = SealingKey::from_slice(&[8; 32]).unwrap();
        assert!(matches!(
            open_shard(&other, "2", &file),
            Err(SealError::OtherKey { file: f, current: c }) if f == key.id() && c == other.id()
        ));
        assert!(matches!(
            open_shard(&key, "3", &file),
            Err(SealError::Authentication { keeper_id }) if keeper_id == "3"
        ));
        for at in [HEADER_SIZE, HEADER_SIZE + NONCE_SIZE, SEALED_SHARD_SIZE - 1] {
            let mut bad = file.clone();
            bad[at] ^= 1;
            assert!(matches!(
                open_shard(&key, "2", &bad),
                Err(SealError::Authentication { .. })
            ));
        }
        let mut bad = file.clone();
        bad[4] = 2;
        assert!(matches!(
            open_shard(&key, "2", &bad),
            Err(SealError::UnsupportedVersion { version: 2 })
        ));
        assert!(matches!(
            open_shard(&key, "2", &file[..40]),
            Err(SealError::Malformed { .. })
        ));
        assert!(matches!(
            open_shard(&key, "2", b"hello"),
            Err(SealError::Malformed { .. })
        ));
        assert!(matches!(
            open_shard(&key, "2", b""),
            Err(SealError::Malformed { .. })
        ));
        let mut long = file.clone();
        long.push(0);
        assert!(matches!(
            open_shard(&key, "2", &long),
            Err(SealError::Malformed { .. })
        ));
        assert!(matches!(
            SealingKey::from_slice(&[0; 31]),
            Err(SealError::KeyLength { len: 31 })
        ));
    }

    #[test]
    fn debug_prints_no_key_bytes() {
        let key = SealingKey::from_slice(&[0xab; 32]).unwrap();
        let text = format!("{key:?}");
        assert!(!text.contains("abab"), "{text}");
        assert!(text.starts_with("SealingKey(id "), "{text}");
        assert_ne!(
            SealingKey::generate().unwrap().id(),
            SealingKey::generate().unwrap().id()
        );
    }
}
