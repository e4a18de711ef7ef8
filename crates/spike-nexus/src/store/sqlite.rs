//! The encrypted SQLite backend of `sqlite` mode.
//!
//! This is our own schema, not SPIKE's (§6.3): every record is one row whose
//! payload is the AES-256-GCM encryption of a JSON document, so secret paths,
//! policy names, values and times never appear in plaintext.
//!
//! ```sql
//! schema_version(id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER)
//! keycheck(id INTEGER PRIMARY KEY CHECK (id = 1), nonce BLOB, ciphertext BLOB)
//! secrets(id BLOB PRIMARY KEY, nonce BLOB, ciphertext BLOB, path_nonce BLOB, path_ciphertext BLOB)
//! policies(id BLOB PRIMARY KEY, nonce BLOB, ciphertext BLOB)
//! ```
//!
//! - Row ids are `HMAC-SHA256(index_key, "secret:" + path)` and
//!   `HMAC-SHA256(index_key, "policy:" + name)`, with
//!   `index_key = HMAC-SHA256(root key, "spike-rs/v1/index")`.
//! - Payloads are sealed with `data_key = HMAC-SHA256(root key,
//!   "spike-rs/v1/data")` (separate from the root key the cipher routes use),
//!   a fresh 12-byte nonce per write, and associated data `table || 0 || id`,
//!   so rows can be neither swapped nor opened through the cipher API.
//! - A secret row holds the whole secret (path, every retained version,
//!   metadata); pruned versions vanish with the rewrite, and
//!   `secure_delete=ON` overwrites freed pages. `path_ciphertext` holds just
//!   the path so listing does not decrypt secret values.
//! - `keycheck` holds a known plaintext; a root key that cannot open it is
//!   refused with [`StoreError::WrongRootKey`].
//! - The database runs in WAL mode with `synchronous=FULL`: a write is
//!   durable once it returns.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::Path;
use std::time::Duration;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use spike_crypto::RootKey;
use spike_crypto::aead::{NONCE_SIZE, Nonce, TAG_SIZE, random_nonce};
use time::OffsetDateTime;
use zeroize::{Zeroize, Zeroizing};

use super::{Backend, BackendKind, StoreError};
use crate::model::{
    Permission, Policy, Secret, SecretData, SecretMetadata, SecretVersion, Version,
};

/// The schema version this code writes and reads.
const SCHEMA_VERSION: i64 = 1;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const LABEL_INDEX: &[u8] = b"spike-rs/v1/index";
const LABEL_DATA: &[u8] = b"spike-rs/v1/data";
const KEYCHECK_PLAINTEXT: &[u8] = b"spike-rs key check v1";

const T_SECRETS: &str = "secrets";
const T_SECRET_PATHS: &str = "secrets.path";
const T_POLICIES: &str = "policies";
const T_KEYCHECK: &str = "keycheck";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_version (
  id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS keycheck (
  id INTEGER PRIMARY KEY CHECK (id = 1), nonce BLOB NOT NULL, ciphertext BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS secrets (
  id BLOB PRIMARY KEY, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL,
  path_nonce BLOB NOT NULL, path_ciphertext BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS policies (
  id BLOB PRIMARY KEY, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL) WITHOUT ROWID;
";

type HmacSha256 = Hmac<Sha256>;

/// The encrypted SQLite backend; one connection behind a mutex.
pub struct SqliteBackend {
    conn: Mutex<Connection>,
    keys: Keys,
}

impl fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SqliteBackend(<keys redacted>)")
    }
}

/// Keys derived from the root key; both zeroize on drop.
struct Keys {
    data: Aes256Gcm,
    index: HmacSha256,
}

impl Keys {
    fn derive(root: &RootKey) -> Result<Self, StoreError> {
        let data_key = Zeroizing::new(hmac_sha256(root.expose_secret(), &[LABEL_DATA])?);
        let index_key = Zeroizing::new(hmac_sha256(root.expose_secret(), &[LABEL_INDEX])?);
        let data = Aes256Gcm::new(&Zeroizing::new(Key::<Aes256Gcm>::from(*data_key)));
        let index =
            HmacSha256::new_from_slice(index_key.as_slice()).map_err(|_| StoreError::Crypto)?;
        Ok(Self { data, index })
    }

    fn row_id(&self, prefix: &str, name: &str) -> Vec<u8> {
        let mut mac = self.index.clone();
        mac.update(prefix.as_bytes());
        mac.update(name.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Seals `plaintext` (consumed: it becomes the ciphertext in place). The
    /// buffer should already have room for the tag; otherwise growing it
    /// leaves an unzeroized copy behind.
    fn seal(
        &self,
        table: &str,
        id: &[u8],
        mut plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<(Nonce, Vec<u8>), StoreError> {
        let nonce = random_nonce().map_err(|_| StoreError::Crypto)?;
        plaintext.reserve_exact(TAG_SIZE);
        self.data
            .encrypt_in_place(&nonce.into(), &aad(table, id), &mut *plaintext)
            .map_err(|_| StoreError::Crypto)?;
        Ok((nonce, std::mem::take(&mut *plaintext)))
    }

    fn open(
        &self,
        table: &str,
        id: &[u8],
        nonce: &[u8],
        ciphertext: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let nonce: Nonce = nonce.try_into().map_err(|_| StoreError::Crypto)?;
        let mut buffer = Zeroizing::new(ciphertext);
        self.data
            .decrypt_in_place(&nonce.into(), &aad(table, id), &mut *buffer)
            .map_err(|_| StoreError::Crypto)?;
        Ok(buffer)
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], StoreError> {
    let mut mac = HmacSha256::new_from_slice(key).map_err(|_| StoreError::Crypto)?;
    for part in parts {
        mac.update(part);
    }
    Ok(mac.finalize().into_bytes().into())
}

fn aad(table: &str, id: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(table.len() + 1 + id.len());
    aad.extend_from_slice(table.as_bytes());
    aad.push(0);
    aad.extend_from_slice(id);
    aad
}

/// A copy of `bytes` with room for the GCM tag, so sealing never reallocates.
fn plaintext_buffer(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut buffer = Zeroizing::new(Vec::with_capacity(bytes.len() + TAG_SIZE));
    buffer.extend_from_slice(bytes);
    buffer
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

impl SqliteBackend {
    /// Opens or creates the database at `path` (created with mode 0600), sets
    /// WAL, `synchronous=FULL`, `secure_delete=ON` and a busy timeout, creates
    /// the schema, then checks `key` against the key-check record (writing it
    /// when the database is new).
    ///
    /// # Errors
    ///
    /// [`StoreError::WrongRootKey`] when the key-check record does not open
    /// with `key`; [`StoreError::UnsupportedSchema`] for a database of another
    /// program or version; [`StoreError::Integrity`] when records exist but the
    /// key-check record is missing; [`StoreError::Database`] otherwise.
    pub fn open(path: &Path, key: &RootKey) -> Result<SqliteBackend, StoreError> {
        create_private_file(path)?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(format!(
                "could not enable WAL journal mode (got {mode})"
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        let secure_delete: i64 =
            conn.pragma_update_and_check(None, "secure_delete", "ON", |row| row.get(0))?;
        if secure_delete != 1 {
            return Err(StoreError::Database(
                "could not enable secure_delete".into(),
            ));
        }

        check_foreign_tables(&conn)?;
        conn.execute_batch(SCHEMA)?;
        check_columns(
            &conn,
            T_SECRETS,
            &["id", "nonce", "ciphertext", "path_nonce", "path_ciphertext"],
        )?;
        check_columns(&conn, T_POLICIES, &["id", "nonce", "ciphertext"])?;
        let version: Option<i64> = conn
            .query_row("SELECT version FROM schema_version WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        match version {
            None => {
                conn.execute(
                    "INSERT INTO schema_version (id, version) VALUES (1, ?1)",
                    params![SCHEMA_VERSION],
                )?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(StoreError::UnsupportedSchema(format!(
                    "schema version {other}, expected {SCHEMA_VERSION}"
                )));
            }
        }

        let backend = SqliteBackend {
            conn: Mutex::new(conn),
            keys: Keys::derive(key)?,
        };
        backend.check_key()?;
        Ok(backend)
    }

    fn check_key(&self) -> Result<(), StoreError> {
        let conn = self.conn.lock();
        let id = 1_i64.to_be_bytes();
        let row: Option<(Vec<u8>, Vec<u8>)> = conn
            .query_row(
                "SELECT nonce, ciphertext FROM keycheck WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            Some((nonce, ciphertext)) => {
                let plaintext = self
                    .keys
                    .open(T_KEYCHECK, &id, &nonce, ciphertext)
                    .map_err(|_| StoreError::WrongRootKey)?;
                if plaintext.as_slice() != KEYCHECK_PLAINTEXT {
                    return Err(StoreError::WrongRootKey);
                }
                Ok(())
            }
            None => {
                if !is_empty(&conn)? {
                    return Err(StoreError::Integrity {
                        path: T_KEYCHECK.to_owned(),
                    });
                }
                let (nonce, ciphertext) =
                    self.keys
                        .seal(T_KEYCHECK, &id, plaintext_buffer(KEYCHECK_PLAINTEXT))?;
                conn.execute(
                    "INSERT INTO keycheck (id, nonce, ciphertext) VALUES (1, ?1, ?2)",
                    params![nonce.as_slice(), ciphertext],
                )?;
                Ok(())
            }
        }
    }

    /// Checkpoints the WAL into the database file and truncates the WAL
    /// (e.g. at shutdown, so old frames do not linger on disk).
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`].
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let conn = self.conn.lock();
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            return Err(StoreError::Database("WAL checkpoint was blocked".into()));
        }
        Ok(())
    }
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Database(format!(
            "cannot create the database file: {e}"
        ))),
    }
}

#[cfg(not(unix))]
fn create_private_file(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// Refuses databases written by SPIKE (Go), whose schema differs (§6.3).
fn check_foreign_tables(conn: &Connection) -> Result<(), StoreError> {
    let foreign: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'secret_metadata'",
        [],
        |r| r.get(0),
    )?;
    if foreign != 0 {
        return Err(StoreError::UnsupportedSchema(
            "this is a SPIKE (Go) database; its schema is not supported".into(),
        ));
    }
    Ok(())
}

fn check_columns(conn: &Connection, table: &str, expected: &[&str]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
    let columns = stmt
        .query_map([table], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    if columns != expected {
        return Err(StoreError::UnsupportedSchema(format!(
            "table {table} has columns {columns:?}, expected {expected:?}"
        )));
    }
    Ok(())
}

fn is_empty(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT NOT EXISTS (SELECT 1 FROM secrets) AND NOT EXISTS (SELECT 1 FROM policies)",
        [],
        |r| r.get(0),
    )?)
}

impl Backend for SqliteBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Sqlite
    }

    fn load_secret(&self, path: &str) -> Result<Option<Secret>, StoreError> {
        let id = self.keys.row_id("secret:", path);
        let row: Option<(Vec<u8>, Vec<u8>)> = self
            .conn
            .lock()
            .query_row(
                "SELECT nonce, ciphertext FROM secrets WHERE id = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((nonce, ciphertext)) = row else {
            return Ok(None);
        };
        let plaintext = self.keys.open(T_SECRETS, &id, &nonce, ciphertext)?;
        decode_secret(path, &plaintext).map(Some)
    }

    fn store_secret(
        &self,
        path: &str,
        secret: &Secret,
        _pruned: &[Version],
    ) -> Result<(), StoreError> {
        // The row is rewritten whole, so pruned versions are gone with it.
        let id = self.keys.row_id("secret:", path);
        let (nonce, ciphertext) = self
            .keys
            .seal(T_SECRETS, &id, encode_secret(path, secret)?)?;
        let (path_nonce, path_ciphertext) =
            self.keys
                .seal(T_SECRET_PATHS, &id, plaintext_buffer(path.as_bytes()))?;
        self.conn.lock().execute(
            "INSERT INTO secrets (id, nonce, ciphertext, path_nonce, path_ciphertext)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET nonce = excluded.nonce,
               ciphertext = excluded.ciphertext, path_nonce = excluded.path_nonce,
               path_ciphertext = excluded.path_ciphertext",
            params![
                id,
                nonce.as_slice(),
                ciphertext,
                path_nonce.as_slice(),
                path_ciphertext
            ],
        )?;
        Ok(())
    }

    fn list_secret_paths(&self) -> Result<Vec<String>, StoreError> {
        let rows = {
            let conn = self.conn.lock();
            let mut stmt = conn.prepare("SELECT id, path_nonce, path_ciphertext FROM secrets")?;
            stmt.query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?
        };
        let mut paths = Vec::with_capacity(rows.len());
        for (id, nonce, ciphertext) in rows {
            let plaintext = self.keys.open(T_SECRET_PATHS, &id, &nonce, ciphertext)?;
            let path = String::from_utf8(plaintext.to_vec()).map_err(|_| StoreError::Crypto)?;
            if self.keys.row_id("secret:", &path) != id {
                return Err(StoreError::Integrity { path });
            }
            paths.push(path);
        }
        paths.sort();
        Ok(paths)
    }

    fn load_policies(&self) -> Result<Vec<Policy>, StoreError> {
        let rows = {
            let conn = self.conn.lock();
            let mut stmt = conn.prepare("SELECT id, nonce, ciphertext FROM policies")?;
            stmt.query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?
        };
        let mut policies = Vec::with_capacity(rows.len());
        for (id, nonce, ciphertext) in rows {
            let plaintext = self.keys.open(T_POLICIES, &id, &nonce, ciphertext)?;
            let policy = decode_policy(&plaintext)?;
            if self.keys.row_id("policy:", &policy.name) != id {
                return Err(StoreError::Integrity { path: policy.name });
            }
            policies.push(policy);
        }
        Ok(policies)
    }

    fn store_policy(&self, policy: &Policy) -> Result<(), StoreError> {
        let id = self.keys.row_id("policy:", &policy.name);
        let (nonce, ciphertext) = self.keys.seal(T_POLICIES, &id, encode_policy(policy)?)?;
        self.conn.lock().execute(
            "INSERT INTO policies (id, nonce, ciphertext) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext",
            params![id, nonce.as_slice(), ciphertext],
        )?;
        Ok(())
    }

    fn delete_policy(&self, name: &str) -> Result<bool, StoreError> {
        let id = self.keys.row_id("policy:", name);
        let n = self
            .conn
            .lock()
            .execute("DELETE FROM policies WHERE id = ?1", [&id])?;
        Ok(n > 0)
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        is_empty(&self.conn.lock())
    }
}

const _: () = assert!(NONCE_SIZE == 12);

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> RootKey {
        RootKey::from_bytes(&[b; 32]).unwrap()
    }

    fn data(v: &str) -> SecretData {
        [("k".to_owned(), v.to_owned())].into_iter().collect()
    }

    #[test]
    fn secret_round_trips_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("t.db"), &key(1)).unwrap();
        let t0 = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        let mut s = Secret::new_first(data("one"), 10, t0);
        s.put(SecretData::new(), t0 + time::Duration::nanoseconds(1));
        s.soft_delete(&[1], t0 + time::Duration::seconds(2));
        b.store_secret("a/b", &s, &[]).unwrap();
        let loaded = b.load_secret("a/b").unwrap().unwrap();
        assert_eq!(loaded, s);
        assert!(b.load_secret("a/c").unwrap().is_none());
    }

    #[test]
    fn swapped_rows_do_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("t.db"), &key(1)).unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        b.store_secret("x", &Secret::new_first(data("x"), 3, now), &[])
            .unwrap();
        b.store_secret("y", &Secret::new_first(data("y"), 3, now), &[])
            .unwrap();
        let (idx, idy) = (b.keys.row_id("secret:", "x"), b.keys.row_id("secret:", "y"));
        {
            let conn = b.conn.lock();
            let (n, c): (Vec<u8>, Vec<u8>) = conn
                .query_row(
                    "SELECT nonce, ciphertext FROM secrets WHERE id = ?1",
                    [&idy],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            conn.execute(
                "UPDATE secrets SET nonce = ?1, ciphertext = ?2 WHERE id = ?3",
                params![n, c, idx],
            )
            .unwrap();
        }
        assert!(matches!(b.load_secret("x"), Err(StoreError::Crypto)));
        assert_eq!(
            b.load_secret("y").unwrap().unwrap().versions[&1]
                .data
                .get("k"),
            Some("y")
        );
    }

    #[test]
    fn tampered_ciphertext_is_a_crypto_error() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("t.db"), &key(1)).unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        b.store_secret("x", &Secret::new_first(data("x"), 3, now), &[])
            .unwrap();
        b.conn
            .lock()
            .execute(
                "UPDATE secrets SET ciphertext = zeroblob(length(ciphertext))",
                [],
            )
            .unwrap();
        assert!(matches!(b.load_secret("x"), Err(StoreError::Crypto)));
        assert!(matches!(b.list_secret_paths(), Ok(p) if p == ["x"]));
    }

    #[test]
    fn missing_keycheck_with_data_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let b = SqliteBackend::open(&path, &key(1)).unwrap();
            let now = OffsetDateTime::UNIX_EPOCH;
            b.store_secret("x", &Secret::new_first(data("x"), 3, now), &[])
                .unwrap();
            b.conn.lock().execute("DELETE FROM keycheck", []).unwrap();
        }
        assert!(matches!(
            SqliteBackend::open(&path, &key(2)),
            Err(StoreError::Integrity { .. })
        ));
    }

    #[test]
    fn go_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spike.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE secret_metadata (path TEXT PRIMARY KEY);")
            .unwrap();
        assert!(matches!(
            SqliteBackend::open(&path, &key(1)),
            Err(StoreError::UnsupportedSchema(_))
        ));
    }

    #[test]
    fn pragmas_are_set() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("t.db"), &key(1)).unwrap();
        let conn = b.conn.lock();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        let sd: i64 = conn
            .query_row("PRAGMA secure_delete", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2);
        assert_eq!(sd, 1);
    }

    #[cfg(unix)]
    #[test]
    fn database_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let _b = SqliteBackend::open(&path, &key(1)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    }
}
