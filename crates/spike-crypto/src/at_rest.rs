//! At-rest record encryption of the Nexus store: [`RecordCipher`].
//!
//! This is spike-rs's own format (not SPIKE's, docs/compatibility.md#storage), shared by every
//! persistent backend. From the root key it derives, with HMAC-SHA256 and
//! fixed labels:
//!
//! - `index_key = HMAC-SHA256(root key, "spike-rs/v1/index")`, keying the row
//!   ids `HMAC-SHA256(index_key, prefix || name)`: deterministic per key, so
//!   a backend finds a record by name without storing the name in clear;
//! - `data_key = HMAC-SHA256(root key, "spike-rs/v1/data")`, the AES-256-GCM
//!   key of the records (separate from the root key the cipher routes use,
//!   so a record can never be opened through the cipher API).
//!
//! Every record is sealed with a fresh random 12-byte nonce and the
//! associated data `table || 0x00 || id`, so a record moved to another row or
//! table fails to open. The key-check record (`"spike-rs key check v1"` in
//! table `keycheck`, id `1` as 8 big-endian bytes) tells a wrong root key
//! from a corrupted store.
//!
//! Changing any label, the AAD layout or the key-check plaintext changes the
//! on-disk format: existing stores would no longer open.

use core::fmt;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::aead::{Nonce, TAG_SIZE, random_nonce};
use crate::error::AeadError;
use crate::secret::RootKey;

/// Size in bytes of a row id (an HMAC-SHA256 tag).
pub const ROW_ID_SIZE: usize = 32;

/// A row id: `HMAC-SHA256(index_key, prefix || name)`. Public: it reveals
/// nothing about the name without the root key.
pub type RowId = [u8; ROW_ID_SIZE];

/// Derivation label of the row-id key.
const LABEL_INDEX: &[u8] = b"spike-rs/v1/index";
/// Derivation label of the record-encryption key.
const LABEL_DATA: &[u8] = b"spike-rs/v1/data";

/// The known plaintext of the key-check record.
pub const KEYCHECK_PLAINTEXT: &[u8] = b"spike-rs key check v1";
/// The table name bound into the key-check record's associated data.
pub const KEYCHECK_TABLE: &str = "keycheck";
/// The row id bound into the key-check record's associated data.
pub const KEYCHECK_ID: [u8; 8] = 1_i64.to_be_bytes();

type HmacSha256 = Hmac<Sha256>;

/// The keys of the at-rest record format, derived from the root key.
///
/// Both keys zeroize on drop. There is no `Clone`, `Serialize` or `Display`,
/// and `Debug` prints `RecordCipher(<redacted>)`.
pub struct RecordCipher {
    data: Aes256Gcm,
    index: HmacSha256,
}

impl RecordCipher {
    /// Derives the record keys from `root`.
    ///
    /// # Errors
    ///
    /// [`AeadError::InvalidKeyLength`] if HMAC refuses a 32-byte key (it
    /// accepts every length, so this does not happen).
    pub fn derive(root: &RootKey) -> Result<Self, AeadError> {
        let data_key = Zeroizing::new(hmac_sha256(root.expose_secret(), LABEL_DATA)?);
        let index_key = Zeroizing::new(hmac_sha256(root.expose_secret(), LABEL_INDEX)?);
        let data = Aes256Gcm::new(&Zeroizing::new(Key::<Aes256Gcm>::from(*data_key)));
        let index = HmacSha256::new_from_slice(index_key.as_slice()).map_err(|_| {
            AeadError::InvalidKeyLength {
                len: index_key.len(),
            }
        })?;
        Ok(Self { data, index })
    }

    /// The row id of `name` under `prefix` (e.g. `"secret:"`, `"policy:"`):
    /// `HMAC-SHA256(index_key, prefix || name)`.
    pub fn row_id(&self, prefix: &str, name: &str) -> RowId {
        let mut mac = self.index.clone();
        mac.update(prefix.as_bytes());
        mac.update(name.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Seals `plaintext` for row `id` of `table` with a fresh random nonce;
    /// returns `(nonce, ciphertext||tag)`.
    ///
    /// `plaintext` is consumed: it becomes the ciphertext in place. Give it
    /// room for the tag (see [`plaintext_buffer`]); otherwise growing it
    /// leaves an unzeroized copy of the plaintext behind.
    ///
    /// # Errors
    ///
    /// [`AeadError::Rng`] or [`AeadError::Encrypt`].
    pub fn seal(
        &self,
        table: &str,
        id: &[u8],
        plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<(Nonce, Vec<u8>), AeadError> {
        let nonce = random_nonce()?;
        let ciphertext = self.seal_with_nonce(&nonce, table, id, plaintext)?;
        Ok((nonce, ciphertext))
    }

    /// [`RecordCipher::seal`] with a caller-chosen nonce.
    ///
    /// A nonce must never be reused under one key for different plaintexts;
    /// this exists for [`RecordCipher::seal`] and the known-answer tests of the format, and is
    /// not exported.
    ///
    /// # Errors
    ///
    /// [`AeadError::Encrypt`].
    fn seal_with_nonce(
        &self,
        nonce: &Nonce,
        table: &str,
        id: &[u8],
        mut plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<Vec<u8>, AeadError> {
        plaintext.reserve_exact(TAG_SIZE);
        self.data
            .encrypt_in_place(&(*nonce).into(), &aad(table, id), &mut *plaintext)
            .map_err(|_| AeadError::Encrypt)?;
        Ok(std::mem::take(&mut *plaintext))
    }

    /// Opens the record of row `id` of `table`.
    ///
    /// # Errors
    ///
    /// [`AeadError::InvalidNonceLength`]; [`AeadError::Decrypt`] for a wrong
    /// key, a tampered record or one moved from another row or table.
    pub fn open(
        &self,
        table: &str,
        id: &[u8],
        nonce: &[u8],
        ciphertext: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, AeadError> {
        let nonce: Nonce = nonce
            .try_into()
            .map_err(|_| AeadError::InvalidNonceLength { len: nonce.len() })?;
        let mut buffer = Zeroizing::new(ciphertext);
        self.data
            .decrypt_in_place(&nonce.into(), &aad(table, id), &mut *buffer)
            .map_err(|_| AeadError::Decrypt)?;
        Ok(buffer)
    }

    /// Seals a new key-check record (table [`KEYCHECK_TABLE`], id
    /// [`KEYCHECK_ID`]); returns `(nonce, ciphertext||tag)`.
    ///
    /// # Errors
    ///
    /// As [`RecordCipher::seal`].
    pub fn seal_key_check(&self) -> Result<(Nonce, Vec<u8>), AeadError> {
        self.seal(
            KEYCHECK_TABLE,
            &KEYCHECK_ID,
            plaintext_buffer(KEYCHECK_PLAINTEXT),
        )
    }

    /// True when the stored key-check record opens with these keys to the
    /// known plaintext, i.e. the root key is the one the store was created
    /// with.
    pub fn check_key(&self, nonce: &[u8], ciphertext: Vec<u8>) -> bool {
        self.open(KEYCHECK_TABLE, &KEYCHECK_ID, nonce, ciphertext)
            .is_ok_and(|plaintext| plaintext.as_slice() == KEYCHECK_PLAINTEXT)
    }
}

impl fmt::Debug for RecordCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecordCipher(<redacted>)")
    }
}

/// A zeroizing copy of `bytes` with room for the GCM tag, so sealing it
/// never reallocates.
pub fn plaintext_buffer(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut buffer = Zeroizing::new(Vec::with_capacity(bytes.len() + TAG_SIZE));
    buffer.extend_from_slice(bytes);
    buffer
}

fn hmac_sha256(key: &[u8], label: &[u8]) -> Result<[u8; 32], AeadError> {
    let mut mac = HmacSha256::new_from_slice(key)
        .map_err(|_| AeadError::InvalidKeyLength { len: key.len() })?;
    mac.update(label);
    Ok(mac.finalize().into_bytes().into())
}

/// The associated data of a record: `table || 0x00 || id`.
fn aad(table: &str, id: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(table.len() + 1 + id.len());
    aad.extend_from_slice(table.as_bytes());
    aad.push(0);
    aad.extend_from_slice(id);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(b: u8) -> RecordCipher {
        RecordCipher::derive(&RootKey::from_bytes(&[b; 32]).unwrap()).unwrap()
    }

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn round_trip() {
        let c = cipher(1);
        let id = c.row_id("secret:", "a/b");
        let (nonce, ct) = c.seal("secrets", &id, plaintext_buffer(b"hello")).unwrap();
        assert_eq!(ct.len(), 5 + TAG_SIZE);
        let pt = c.open("secrets", &id, &nonce, ct).unwrap();
        assert_eq!(pt.as_slice(), b"hello");
        let (nonce2, _) = c.seal("secrets", &id, plaintext_buffer(b"hello")).unwrap();
        assert_ne!(nonce, nonce2, "nonces are random");
    }

    #[test]
    fn aad_binds_table_and_id() {
        let c = cipher(1);
        let (x, y) = (c.row_id("secret:", "x"), c.row_id("secret:", "y"));
        let (nonce, ct) = c.seal("secrets", &x, plaintext_buffer(b"v")).unwrap();
        assert!(c.open("secrets", &x, &nonce, ct.clone()).is_ok());
        assert!(matches!(
            c.open("secrets", &y, &nonce, ct.clone()),
            Err(AeadError::Decrypt)
        ));
        assert!(matches!(
            c.open("policies", &x, &nonce, ct.clone()),
            Err(AeadError::Decrypt)
        ));
        // The separator keeps `table || id` unambiguous.
        assert!(matches!(
            c.open("secrets.path", &x, &nonce, ct),
            Err(AeadError::Decrypt)
        ));
    }

    #[test]
    fn tampering_and_wrong_keys_are_detected() {
        let c = cipher(1);
        let id = c.row_id("policy:", "p");
        let (nonce, ct) = c.seal("policies", &id, plaintext_buffer(b"rec")).unwrap();
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 0x80;
            assert!(matches!(
                c.open("policies", &id, &nonce, bad),
                Err(AeadError::Decrypt)
            ));
        }
        let mut bad_nonce = nonce;
        bad_nonce[0] ^= 1;
        assert!(c.open("policies", &id, &bad_nonce, ct.clone()).is_err());
        assert!(matches!(
            c.open("policies", &id, &nonce[..11], ct.clone()),
            Err(AeadError::InvalidNonceLength { len: 11 })
        ));
        assert!(matches!(
            cipher(2).open("policies", &id, &nonce, ct),
            Err(AeadError::Decrypt)
        ));
    }

    #[test]
    fn row_ids_are_deterministic_per_key() {
        let (a, a2, b) = (cipher(1), cipher(1), cipher(2));
        assert_eq!(a.row_id("secret:", "x"), a2.row_id("secret:", "x"));
        assert_ne!(a.row_id("secret:", "x"), b.row_id("secret:", "x"));
        assert_ne!(a.row_id("secret:", "x"), a.row_id("secret:", "y"));
        assert_ne!(a.row_id("secret:", "x"), a.row_id("policy:", "x"));
    }

    #[test]
    fn key_check() {
        let (a, b) = (cipher(1), cipher(2));
        let (nonce, ct) = a.seal_key_check().unwrap();
        assert!(a.check_key(&nonce, ct.clone()));
        assert!(!b.check_key(&nonce, ct));
        let (nonce, ct) = a
            .seal(KEYCHECK_TABLE, &KEYCHECK_ID, plaintext_buffer(b"other"))
            .unwrap();
        assert!(!a.check_key(&nonce, ct));
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", cipher(1)), "RecordCipher(<redacted>)");
    }

    /// Known answers from a store written by spike-nexus before this type
    /// existed (root key `[0x42; 32]`; the same rows are the golden database
    /// of spike-nexus `tests/it/store.rs`).
    #[test]
    fn known_answers_of_the_on_disk_format() {
        let c = cipher(0x42);
        assert_eq!(
            c.row_id("secret:", "app/db").to_vec(),
            unhex("8732b69d901bb0724af5b4f5cd10b6fc2493935e3e32b10d4f0ae2c36d44a7db")
        );
        assert_eq!(
            c.row_id("policy:", "golden").to_vec(),
            unhex("46e97152cae2320d3a22f48c3db448cc6b9399c8d5988377c90937c0bddc788f")
        );
        let nonce: Nonce = unhex("8454dc7791268e4f309a8334").try_into().unwrap();
        let keycheck =
            unhex("3c534c61c38b99631137930e7f720e369fe82e6bd34fbf787d59982875204c706de9bbc809");
        assert_eq!(
            c.seal_with_nonce(
                &nonce,
                KEYCHECK_TABLE,
                &KEYCHECK_ID,
                plaintext_buffer(KEYCHECK_PLAINTEXT)
            )
            .unwrap(),
            keycheck
        );
        assert!(c.check_key(&nonce, keycheck));
        let id = c.row_id("secret:", "app/db");
        let path = c
            .open(
                "secrets.path",
                &id,
                &unhex("7c793980598a44c4059887f8"),
                unhex("e7473582d37bfa3da4311bcd401173d9f6a8d2f5c002"),
            )
            .unwrap();
        assert_eq!(path.as_slice(), b"app/db");
    }
}
