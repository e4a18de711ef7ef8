//! The record layer every persistent backend shares: model types to sealed
//! rows and back.
//!
//! A backend stores plain rows (byte strings it never interprets) and gets
//! from [`RecordCodec`] everything else of the at-rest format, which
//! [`spike_crypto::RecordCipher`] defines:
//!
//! - row ids: `HMAC-SHA256(index_key, "secret:" + path)` and
//!   `HMAC-SHA256(index_key, "policy:" + name)`, with `index_key` derived
//!   from the root key: deterministic per root key, so a backend looks a
//!   record up by id and never stores a path or name in clear;
//! - payloads: AES-256-GCM under a key derived from the root key, a fresh
//!   12-byte nonce per write, and associated data `table || 0 || id`, where
//!   `table` is the record kind (`secrets`, `secrets.path`, `policies`,
//!   `keycheck`), not the backend's table name. A row copied to another id or
//!   kind fails to open ([`StoreError::Crypto`]);
//! - records: a JSON document per secret (path, metadata, every retained
//!   version) and per policy. A secret row also carries its path sealed
//!   separately, so listing decrypts no secret values. Opening checks that
//!   the record belongs to the row id it was read from
//!   ([`StoreError::Integrity`] otherwise);
//! - the key-check record, which tells a wrong root key
//!   ([`StoreError::WrongRootKey`]) from a corrupted store.
//!
//! Plaintext buffers are sized before serializing and sealed in place, so no
//! unzeroized copy of a record is left behind.

use std::collections::BTreeMap;
use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};
use spike_crypto::aead::{Nonce, TAG_SIZE};
use spike_crypto::at_rest::plaintext_buffer;
use spike_crypto::{RecordCipher, RootKey};
use time::OffsetDateTime;
use zeroize::{Zeroize, Zeroizing};

use super::StoreError;
use crate::model::{
    Permission, Policy, Secret, SecretData, SecretMetadata, SecretVersion, Version,
};

/// Record kind of a secret (associated data).
const T_SECRETS: &str = "secrets";
/// Record kind of a secret's path (associated data).
const T_SECRET_PATHS: &str = "secrets.path";
/// Record kind of a policy (associated data).
const T_POLICIES: &str = "policies";
/// Row-id prefix of secrets.
const P_SECRET: &str = "secret:";
/// Row-id prefix of policies.
const P_POLICY: &str = "policy:";

/// One sealed payload: a nonce and `ciphertext || tag`. Both are public.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The 12-byte AES-GCM nonce.
    pub nonce: Nonce,
    /// The ciphertext with the 16-byte tag appended.
    pub ciphertext: Vec<u8>,
}

/// A secret as a backend stores it: one row keyed by `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// The row id ([`RecordCodec::secret_id`]).
    pub id: Vec<u8>,
    /// The whole secret (path, metadata, every retained version).
    pub record: Sealed,
    /// The path alone, for listing.
    pub path: Sealed,
}

/// A policy as a backend stores it: one row keyed by `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedPolicy {
    /// The row id ([`RecordCodec::policy_id`]).
    pub id: Vec<u8>,
    /// The policy.
    pub record: Sealed,
}

/// Seals and opens the records of one store, with keys derived from its
/// root key (zeroized on drop; `Debug` is redacted).
pub struct RecordCodec {
    cipher: RecordCipher,
}

impl fmt::Debug for RecordCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecordCodec(<keys redacted>)")
    }
}

impl RecordCodec {
    /// Derives the record keys from `root`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Crypto`] if the derivation fails.
    pub fn new(root: &RootKey) -> Result<Self, StoreError> {
        let cipher = RecordCipher::derive(root).map_err(|_| StoreError::Crypto)?;
        Ok(Self { cipher })
    }

    /// The row id of the secret at `path`.
    pub fn secret_id(&self, path: &str) -> Vec<u8> {
        self.cipher.row_id(P_SECRET, path).to_vec()
    }

    /// The row id of the policy named `name`.
    pub fn policy_id(&self, name: &str) -> Vec<u8> {
        self.cipher.row_id(P_POLICY, name).to_vec()
    }

    /// Seals the whole secret at `path` (pruned versions are simply absent).
    ///
    /// # Errors
    ///
    /// [`StoreError::Crypto`].
    pub fn seal_secret(&self, path: &str, secret: &Secret) -> Result<SealedSecret, StoreError> {
        let id = self.secret_id(path);
        let record = self.seal(T_SECRETS, &id, encode_secret(path, secret)?)?;
        let path = self.seal(T_SECRET_PATHS, &id, plaintext_buffer(path.as_bytes()))?;
        Ok(SealedSecret { id, record, path })
    }

    /// Opens the record of the secret at `path`, read from row `id` (the one
    /// [`RecordCodec::secret_id`] gave for `path`).
    ///
    /// # Errors
    ///
    /// [`StoreError::Crypto`] when it does not open; [`StoreError::Integrity`]
    /// when it is not the secret at `path`.
    pub fn open_secret(
        &self,
        path: &str,
        id: &[u8],
        nonce: &[u8],
        ciphertext: Vec<u8>,
    ) -> Result<Secret, StoreError> {
        let plaintext = self.open(T_SECRETS, id, nonce, ciphertext)?;
        decode_secret(path, &plaintext)
    }

    /// Opens the path of the secret row `id`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Crypto`] when it does not open; [`StoreError::Integrity`]
    /// when the path does not belong to row `id`.
    pub fn open_secret_path(
        &self,
        id: &[u8],
        nonce: &[u8],
        ciphertext: Vec<u8>,
    ) -> Result<String, StoreError> {
        let plaintext = self.open(T_SECRET_PATHS, id, nonce, ciphertext)?;
        let path = String::from_utf8(plaintext.to_vec()).map_err(|_| StoreError::Crypto)?;
        if self.secret_id(&path) != id {
            return Err(StoreError::Integrity { path });
        }
        Ok(path)
    }

    /// Seals a policy.
    ///
    /// # Errors
    ///
    /// [`StoreError::Crypto`].
    pub fn seal_policy(&self, policy: &Policy) -> Result<SealedPolicy, StoreError> {
        let id = self.policy_id(&policy.name);
        let record = self.seal(T_POLICIES, &id, encode_policy(policy)?)?;
        Ok(SealedPolicy { id, record })
    }

    /// Opens the policy of row `id`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Crypto`] when it does not open; [`StoreError::Integrity`]
    /// when it does not decode or does not belong to row `id`.
    pub fn open_policy(
        &self,
        id: &[u8],
        nonce: &[u8],
        ciphertext: Vec<u8>,
    ) -> Result<Policy, StoreError> {
        let plaintext = self.open(T_POLICIES, id, nonce, ciphertext)?;
        let policy = decode_policy(&plaintext)?;
        if self.policy_id(&policy.name) != id {
            return Err(StoreError::Integrity { path: policy.name });
        }
        Ok(policy)
    }

    /// A new key-check record, for a store that has none yet.
    ///
    /// # Errors
    ///
    /// [`StoreError::Crypto`].
    pub fn seal_key_check(&self) -> Result<Sealed, StoreError> {
        let (nonce, ciphertext) = self
            .cipher
            .seal_key_check()
            .map_err(|_| StoreError::Crypto)?;
        Ok(Sealed { nonce, ciphertext })
    }

    /// Checks the root key against the stored key-check record.
    ///
    /// # Errors
    ///
    /// [`StoreError::WrongRootKey`] when it does not open to the known
    /// plaintext.
    pub fn check_key(&self, nonce: &[u8], ciphertext: Vec<u8>) -> Result<(), StoreError> {
        if self.cipher.check_key(nonce, ciphertext) {
            Ok(())
        } else {
            Err(StoreError::WrongRootKey)
        }
    }

    fn seal(
        &self,
        table: &str,
        id: &[u8],
        plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<Sealed, StoreError> {
        let (nonce, ciphertext) = self
            .cipher
            .seal(table, id, plaintext)
            .map_err(|_| StoreError::Crypto)?;
        Ok(Sealed { nonce, ciphertext })
    }

    fn open(
        &self,
        table: &str,
        id: &[u8],
        nonce: &[u8],
        ciphertext: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        self.cipher
            .open(table, id, nonce, ciphertext)
            .map_err(|_| StoreError::Crypto)
    }
}

/// Counts bytes, to size the plaintext buffer exactly before serializing.
struct Counter(usize);

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Serializes into a buffer that never reallocates (so no unzeroized copy of
/// the plaintext is left behind) and has room for the GCM tag.
fn to_json<T: Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).map_err(|_| StoreError::Crypto)?;
    let mut buffer = Zeroizing::new(Vec::with_capacity(counter.0 + TAG_SIZE));
    serde_json::to_writer(&mut *buffer, value).map_err(|_| StoreError::Crypto)?;
    Ok(buffer)
}

// Private encodings: the only place secret data is serialized.

#[derive(Serialize)]
struct SecretRecordRef<'a> {
    path: &'a str,
    metadata: MetadataRecord,
    versions: Vec<VersionRecordRef<'a>>,
}

#[derive(Serialize)]
struct VersionRecordRef<'a> {
    version: Version,
    #[serde(with = "time::serde::rfc3339")]
    created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    deleted: Option<OffsetDateTime>,
    data: &'a BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct SecretRecord {
    path: String,
    metadata: MetadataRecord,
    versions: Vec<VersionRecord>,
}

#[derive(Deserialize)]
struct VersionRecord {
    version: Version,
    #[serde(with = "time::serde::rfc3339")]
    created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    deleted: Option<OffsetDateTime>,
    data: BTreeMap<String, String>,
}

impl Drop for VersionRecord {
    fn drop(&mut self) {
        for (mut k, mut v) in std::mem::take(&mut self.data) {
            k.zeroize();
            v.zeroize();
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy)]
struct MetadataRecord {
    current_version: Version,
    oldest_version: Version,
    #[serde(with = "time::serde::rfc3339")]
    created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated: OffsetDateTime,
    max_versions: u64,
}

#[derive(Serialize, Deserialize)]
struct PolicyRecord {
    name: String,
    spiffeid_pattern: String,
    path_pattern: String,
    permissions: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

fn encode_secret(path: &str, secret: &Secret) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let m = &secret.metadata;
    to_json(&SecretRecordRef {
        path,
        metadata: MetadataRecord {
            current_version: m.current_version,
            oldest_version: m.oldest_version,
            created: m.created,
            updated: m.updated,
            max_versions: m.max_versions,
        },
        versions: secret
            .versions
            .values()
            .map(|v| VersionRecordRef {
                version: v.version,
                created: v.created,
                deleted: v.deleted,
                data: v.data.expose(),
            })
            .collect(),
    })
}

/// Decodes a secret row. serde_json may stage escaped strings in a scratch
/// buffer that is not zeroized; the decoded values are moved, not copied,
/// into [`SecretData`].
fn decode_secret(path: &str, plaintext: &[u8]) -> Result<Secret, StoreError> {
    let integrity = || StoreError::Integrity {
        path: path.to_owned(),
    };
    let record: SecretRecord = serde_json::from_slice(plaintext).map_err(|_| integrity())?;
    if record.path != path {
        return Err(integrity());
    }
    let m = record.metadata;
    let mut versions = BTreeMap::new();
    for mut v in record.versions {
        let data = SecretData::from_map(std::mem::take(&mut v.data));
        versions.insert(
            v.version,
            SecretVersion {
                version: v.version,
                data,
                created: v.created,
                deleted: v.deleted,
            },
        );
    }
    if m.current_version != 0 && !versions.contains_key(&m.current_version) {
        return Err(integrity());
    }
    Ok(Secret {
        versions,
        metadata: SecretMetadata {
            current_version: m.current_version,
            oldest_version: m.oldest_version,
            created: m.created,
            updated: m.updated,
            max_versions: m.max_versions,
        },
    })
}

fn encode_policy(policy: &Policy) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    to_json(&PolicyRecord {
        name: policy.name.clone(),
        spiffeid_pattern: policy.spiffeid_pattern.clone(),
        path_pattern: policy.path_pattern.clone(),
        permissions: policy
            .permissions
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        created_at: policy.created_at,
        updated_at: policy.updated_at,
    })
}

fn decode_policy(plaintext: &[u8]) -> Result<Policy, StoreError> {
    let integrity = || StoreError::Integrity {
        path: T_POLICIES.to_owned(),
    };
    let r: PolicyRecord = serde_json::from_slice(plaintext).map_err(|_| integrity())?;
    let permissions = r
        .permissions
        .iter()
        .map(|p| p.parse::<Permission>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| integrity())?;
    Ok(Policy::from_stored(
        r.name,
        r.spiffeid_pattern,
        r.path_pattern,
        permissions,
        r.created_at,
        r.updated_at,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(b: u8) -> RecordCodec {
        RecordCodec::new(&RootKey::from_bytes(&[b; 32]).unwrap()).unwrap()
    }

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap()
    }

    fn secret() -> Secret {
        let data = [("k".to_owned(), "v\"1".to_owned())].into_iter().collect();
        let mut s = Secret::new_first(data, 10, t0());
        s.soft_delete(&[1], t0() + time::Duration::seconds(1));
        s
    }

    fn policy(name: &str) -> Policy {
        Policy::from_stored(
            name.into(),
            ".*".into(),
            "^a/".into(),
            vec![Permission::Read],
            t0(),
            t0(),
        )
        .unwrap()
    }

    #[test]
    fn secret_round_trips_and_lists() {
        let c = codec(1);
        let sealed = c.seal_secret("a/b", &secret()).unwrap();
        assert_eq!(sealed.id, c.secret_id("a/b"));
        let Sealed { nonce, ciphertext } = sealed.record;
        let opened = c
            .open_secret("a/b", &sealed.id, &nonce, ciphertext)
            .unwrap();
        assert_eq!(opened, secret());
        let path = c
            .open_secret_path(&sealed.id, &sealed.path.nonce, sealed.path.ciphertext)
            .unwrap();
        assert_eq!(path, "a/b");
    }

    #[test]
    fn a_record_under_another_id_does_not_open() {
        let c = codec(1);
        let sealed = c.seal_secret("a", &secret()).unwrap();
        let other = c.secret_id("b");
        assert!(matches!(
            c.open_secret("b", &other, &sealed.record.nonce, sealed.record.ciphertext),
            Err(StoreError::Crypto)
        ));
        // The path record is no secret record and vice versa.
        assert!(matches!(
            c.open_secret("a", &sealed.id, &sealed.path.nonce, sealed.path.ciphertext),
            Err(StoreError::Crypto)
        ));
    }

    #[test]
    fn policy_round_trips_and_is_bound_to_its_name() {
        let c = codec(1);
        let sealed = c.seal_policy(&policy("p")).unwrap();
        assert_eq!(sealed.id, c.policy_id("p"));
        let opened = c
            .open_policy(
                &sealed.id,
                &sealed.record.nonce,
                sealed.record.ciphertext.clone(),
            )
            .unwrap();
        assert_eq!(opened, policy("p"));
        assert!(matches!(
            c.open_policy(
                &c.policy_id("q"),
                &sealed.record.nonce,
                sealed.record.ciphertext
            ),
            Err(StoreError::Crypto)
        ));
    }

    #[test]
    fn key_check_refuses_another_root_key() {
        let Sealed { nonce, ciphertext } = codec(1).seal_key_check().unwrap();
        assert!(codec(1).check_key(&nonce, ciphertext.clone()).is_ok());
        assert!(matches!(
            codec(2).check_key(&nonce, ciphertext),
            Err(StoreError::WrongRootKey)
        ));
        assert_eq!(format!("{:?}", codec(1)), "RecordCodec(<keys redacted>)");
    }

    /// The JSON documents are part of the on-disk format.
    #[test]
    fn record_json_is_stable() {
        let json = encode_secret("a/b", &secret()).unwrap();
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            concat!(
                r#"{"path":"a/b","metadata":{"current_version":0,"oldest_version":0,"#,
                r#""created":"2023-11-14T22:13:20.123456789Z","updated":"2023-11-14T22:13:21.123456789Z","#,
                r#""max_versions":10},"versions":[{"version":1,"#,
                r#""created":"2023-11-14T22:13:20.123456789Z","#,
                r#""deleted":"2023-11-14T22:13:21.123456789Z","data":{"k":"v\"1"}}]}"#
            )
        );
        let json = encode_policy(&policy("p")).unwrap();
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            concat!(
                r#"{"name":"p","spiffeid_pattern":".*","path_pattern":"^a/","#,
                r#""permissions":["read"],"created_at":"2023-11-14T22:13:20.123456789Z","#,
                r#""updated_at":"2023-11-14T22:13:20.123456789Z"}"#
            )
        );
    }
}
