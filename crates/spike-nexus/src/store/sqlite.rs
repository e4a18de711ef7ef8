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
//!
//! # Group commit
//!
//! Writes go through one write connection. A writer stages its row change
//! in the transaction that is open on it (`BEGIN IMMEDIATE` when none is),
//! gets a sequence number, and then waits until a `COMMIT` covering that
//! number has succeeded. The first waiter that finds no commit in flight
//! leads: it runs `COMMIT` for everything staged so far (one fsync for the
//! whole batch). When the `COMMIT` fails, the transaction is rolled back and
//! every writer of the batch gets the error, so an acknowledged write is
//! always a committed, synced one. Reads other than the writer's own
//! load-modify-store loads use separate read-only connections, which in WAL
//! mode see committed data only.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::Path;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use spike_crypto::aead::{Nonce, TAG_SIZE};
use spike_crypto::at_rest::{KEYCHECK_TABLE, plaintext_buffer};
use spike_crypto::{RecordCipher, RootKey};
use time::OffsetDateTime;
use zeroize::{Zeroize, Zeroizing};

use super::{Backend, BackendKind, CommitTicket, StoreError};
use crate::model::{
    Permission, Policy, Secret, SecretData, SecretMetadata, SecretVersion, Version,
};

/// The schema version this code writes and reads.
const SCHEMA_VERSION: i64 = 1;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds on the number of read-only connections (one per CPU within these),
/// used by loads outside the writer's critical section.
const MIN_READERS: usize = 4;
const MAX_READERS: usize = 16;

const T_SECRETS: &str = "secrets";
const T_SECRET_PATHS: &str = "secrets.path";
const T_POLICIES: &str = "policies";

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

/// The encrypted SQLite backend: one write connection with group commit,
/// and a few read-only connections that see committed data only.
pub struct SqliteBackend {
    /// The write connection (also used by loads under the store's writer lock).
    conn: Mutex<Connection>,
    /// Read-only connections.
    readers: Vec<Mutex<Connection>>,
    /// Group-commit bookkeeping.
    group: Group,
    keys: Keys,
}

/// Group-commit state; lock order: `conn`, then `group.state`.
#[derive(Default)]
struct Group {
    state: Mutex<GroupState>,
    resolved: Condvar,
}

#[derive(Default)]
struct GroupState {
    /// Sequence number of the last staged write (0: none yet).
    staged: u64,
    /// Every write up to this number is resolved (committed or failed); the
    /// open transaction holds exactly the writes in `(resolved, staged]`.
    resolved: u64,
    /// A leader is committing.
    committing: bool,
    /// Failed batches whose writers have not all collected their error.
    failures: Vec<Failure>,
}

struct Failure {
    first: u64,
    last: u64,
    /// Writers of the batch that have not collected the error yet.
    remaining: u64,
    error: BatchError,
}

/// Why a batch failed, handed to each of its writers.
#[derive(Debug, Clone)]
enum BatchError {
    /// [`StoreError::StorageFull`].
    Full(String),
    /// [`StoreError::Database`].
    Other(String),
}

impl BatchError {
    fn of(e: &StoreError) -> Self {
        match e {
            StoreError::StorageFull(m) => Self::Full(m.clone()),
            StoreError::Database(m) => Self::Other(m.clone()),
            other => Self::Other(other.to_string()),
        }
    }

    fn to_error(&self) -> StoreError {
        match self {
            Self::Full(m) => StoreError::StorageFull(m.clone()),
            Self::Other(m) => StoreError::Database(m.clone()),
        }
    }
}

impl GroupState {
    /// Marks the open transaction's writes as failed with `error`.
    fn fail_open(&mut self, error: BatchError) {
        if self.staged > self.resolved {
            self.failures.push(Failure {
                first: self.resolved + 1,
                last: self.staged,
                remaining: self.staged - self.resolved,
                error,
            });
            self.resolved = self.staged;
        }
    }

    /// The outcome of the resolved write `seq`, collected once by its writer.
    fn collect(&mut self, seq: u64) -> Result<(), StoreError> {
        let Some(i) = self
            .failures
            .iter()
            .position(|f| (f.first..=f.last).contains(&seq))
        else {
            return Ok(());
        };
        let failure = &mut self.failures[i];
        failure.remaining -= 1;
        let error = failure.error.to_error();
        if failure.remaining == 0 {
            self.failures.swap_remove(i);
        }
        Err(error)
    }
}

impl fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SqliteBackend(<keys redacted>)")
    }
}

/// The at-rest record keys, with errors mapped to [`StoreError`].
struct Keys(RecordCipher);

impl Keys {
    fn derive(root: &RootKey) -> Result<Self, StoreError> {
        RecordCipher::derive(root)
            .map(Self)
            .map_err(|_| StoreError::Crypto)
    }

    fn row_id(&self, prefix: &str, name: &str) -> Vec<u8> {
        self.0.row_id(prefix, name).to_vec()
    }

    fn seal(
        &self,
        table: &str,
        id: &[u8],
        plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<(Nonce, Vec<u8>), StoreError> {
        self.0
            .seal(table, id, plaintext)
            .map_err(|_| StoreError::Crypto)
    }

    fn open(
        &self,
        table: &str,
        id: &[u8],
        nonce: &[u8],
        ciphertext: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        self.0
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
        let conn = open_exclusive(path)?;
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

        let n_readers = std::thread::available_parallelism()
            .map_or(MIN_READERS, usize::from)
            .clamp(MIN_READERS, MAX_READERS);
        let readers = (0..n_readers)
            .map(|_| open_reader(path).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let backend = SqliteBackend {
            conn: Mutex::new(conn),
            readers,
            group: Group::default(),
            keys: Keys::derive(key)?,
        };
        backend.check_key()?;
        Ok(backend)
    }

    fn check_key(&self) -> Result<(), StoreError> {
        let conn = self.conn.lock();
        let row: Option<(Vec<u8>, Vec<u8>)> = conn
            .query_row(
                "SELECT nonce, ciphertext FROM keycheck WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            Some((nonce, ciphertext)) => {
                if self.keys.0.check_key(&nonce, ciphertext) {
                    Ok(())
                } else {
                    Err(StoreError::WrongRootKey)
                }
            }
            None => {
                if !is_empty(&conn)? {
                    return Err(StoreError::Integrity {
                        path: KEYCHECK_TABLE.to_owned(),
                    });
                }
                let (nonce, ciphertext) = self
                    .keys
                    .0
                    .seal_key_check()
                    .map_err(|_| StoreError::Crypto)?;
                conn.execute(
                    "INSERT INTO keycheck (id, nonce, ciphertext) VALUES (1, ?1, ?2)",
                    params![nonce.as_slice(), ciphertext],
                )?;
                Ok(())
            }
        }
    }

    /// Checkpoints the WAL into the database file and truncates the WAL
    /// (e.g. at shutdown, so old frames do not linger on disk). Writes
    /// staged before the call are committed first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`].
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let staged = self.group.state.lock().staged;
        self.wait_resolved(staged, false)?;
        let conn = self.conn.lock();
        if !conn.is_autocommit() {
            return Err(StoreError::Database(
                "writes are in flight; cannot checkpoint".into(),
            ));
        }
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            return Err(StoreError::Database("WAL checkpoint was blocked".into()));
        }
        Ok(())
    }
}

/// A row as stored: `(id, nonce, ciphertext)`.
type EncryptedRow = (Vec<u8>, Vec<u8>, Vec<u8>);

impl SqliteBackend {
    /// A free read-only connection (or, when all are busy, one to wait for).
    fn reader(&self) -> MutexGuard<'_, Connection> {
        for reader in &self.readers {
            if let Some(guard) = reader.try_lock() {
                return guard;
            }
        }
        let i = thread_index() % self.readers.len();
        self.readers[i].lock()
    }

    /// Every `(id, nonce, ciphertext)` row of `sql`, read on a read connection.
    fn encrypted_rows(&self, sql: &str) -> Result<Vec<EncryptedRow>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Runs `write` inside the open write transaction (beginning one when
    /// none is open) and returns its result with the write's ticket. The
    /// write is durable only after [`SqliteBackend::wait_resolved`].
    fn stage<T>(
        &self,
        write: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<(T, CommitTicket), StoreError> {
        let conn = self.conn.lock();
        if conn.is_autocommit() {
            conn.execute_batch("BEGIN IMMEDIATE")?;
        }
        match write(&conn) {
            Ok(value) => {
                let mut state = self.group.state.lock();
                state.staged += 1;
                Ok((value, CommitTicket(state.staged)))
            }
            Err(e) => {
                let mut state = self.group.state.lock();
                if conn.is_autocommit() {
                    // SQLite rolled the whole transaction back (I/O error,
                    // disk full...): the writes staged in it are lost.
                    state.fail_open(BatchError::of(&e));
                    drop(state);
                    self.group.resolved.notify_all();
                } else if state.staged == state.resolved {
                    // Nothing else is staged: do not keep the transaction
                    // (and SQLite's write lock) open. Best effort.
                    let _ = conn.execute_batch("ROLLBACK");
                }
                Err(e)
            }
        }
    }

    /// Waits until write `seq` is resolved, leading a commit when none is
    /// in flight. With `collect`, returns that write's outcome (each staged
    /// write's outcome must be collected exactly once).
    fn wait_resolved(&self, seq: u64, collect: bool) -> Result<(), StoreError> {
        let mut state = self.group.state.lock();
        loop {
            if state.resolved >= seq {
                return if collect { state.collect(seq) } else { Ok(()) };
            }
            if state.committing {
                self.group.resolved.wait(&mut state);
                continue;
            }
            state.committing = true;
            MutexGuard::unlocked(&mut state, || self.commit_batch());
            state.committing = false;
            self.group.resolved.notify_all();
        }
    }

    /// Commits everything staged so far (one fsync), or rolls it back and
    /// records the failure for the batch's writers.
    fn commit_batch(&self) {
        let conn = self.conn.lock();
        let staged = {
            let state = self.group.state.lock();
            if state.staged == state.resolved {
                return;
            }
            state.staged
        };
        let result = if conn.is_autocommit() {
            Err(BatchError::Other(
                "the write transaction was rolled back".to_owned(),
            ))
        } else {
            conn.execute_batch("COMMIT")
                .map_err(|e| BatchError::of(&StoreError::from(e)))
        };
        let mut state = self.group.state.lock();
        match result {
            Ok(()) => state.resolved = staged,
            Err(error) => {
                if !conn.is_autocommit() {
                    // Best effort; a failed rollback leaves the transaction
                    // to be rolled back when the connection closes.
                    let _ = conn.execute_batch("ROLLBACK");
                }
                state.fail_open(error);
            }
        }
    }
}

/// A small per-thread number, to spread waits over the read connections.
fn thread_index() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|i| *i)
}

/// The VFS every connection of the store is opened with; see [`open_exclusive`].
const VFS: &str = "unix-excl";

/// Opens a connection to `path` on SQLite's `unix-excl` VFS.
///
/// Why (the appliance died with SIGBUS on `systemctl restart` with a full ext4 of 1 KiB
/// blocks): with the default `unix` VFS, SQLite keeps the WAL index in a `-shm` file that
/// it memory-maps (`unixShmMap`). It grows that file by writing one byte at the end of
/// each new 4 KiB OS page ("to reduce the chances of SIGBUS"), which on a 1 KiB-block
/// filesystem allocates only the page's last block and leaves holes; when the filesystem
/// is full, touching a hole through the mapping cannot allocate a block and the kernel
/// raises SIGBUS, which no error code can report.
///
/// Fix: on `unix-excl`, the first lock any read-write connection takes is an exclusive
/// POSIX lock on the database file, held by the process until its last connection to the
/// file closes (`unixFileLock` sets `bProcessLock` on the file's shared inode record).
/// `unixOpenSharedMemory` opens no `-shm` file when `bProcessLock` is set and
/// `unixShmMap` serves the WAL index from heap memory shared by every connection of this
/// process to the file (one `unixShmNode` per inode). The WAL index is only opened after
/// a lock was taken (a read transaction takes SHARED first), so this holds for the writer
/// and for the read connections alike (they are read-write connections with
/// `query_only=ON`: a connection opened `SQLITE_OPEN_READONLY` would skip the exclusive
/// lock). Nothing sets `mmap_size` and the bundled build keeps
/// `SQLITE_DEFAULT_MMAP_SIZE=0`, so the database file itself is never memory-mapped
/// either: every disk write is a `write(2)` whose ENOSPC SQLite reports as
/// `SQLITE_FULL` ([`StoreError::StorageFull`]).
///
/// Consequence: while Nexus runs, no other process can read or write the database (it
/// gets "database is locked"); a second Nexus on the same file fails at unseal.
fn open_exclusive(path: &Path) -> Result<Connection, StoreError> {
    Ok(Connection::open_with_flags_and_vfs(
        path,
        OpenFlags::default(),
        VFS,
    )?)
}

/// A read-only connection to the (already set up) database at `path`.
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = open_exclusive(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
}

/// Loads and opens the secret row at `path` through `conn`.
fn load_secret_with(
    keys: &Keys,
    conn: &Connection,
    path: &str,
) -> Result<Option<Secret>, StoreError> {
    let id = keys.row_id("secret:", path);
    let row: Option<(Vec<u8>, Vec<u8>)> = conn
        .query_row(
            "SELECT nonce, ciphertext FROM secrets WHERE id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((nonce, ciphertext)) = row else {
        return Ok(None);
    };
    let plaintext = keys.open(T_SECRETS, &id, &nonce, ciphertext)?;
    decode_secret(path, &plaintext).map(Some)
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
        // The SELECT runs under the reader lock; decryption after it.
        load_secret_with(&self.keys, &self.reader(), path)
    }

    fn load_secret_for_write(&self, path: &str) -> Result<Option<Secret>, StoreError> {
        load_secret_with(&self.keys, &self.conn.lock(), path)
    }

    fn store_secret(
        &self,
        path: &str,
        secret: &Secret,
        pruned: &[Version],
    ) -> Result<(), StoreError> {
        let ticket = self.stage_secret(path, secret, pruned)?;
        self.wait_durable(ticket)
    }

    fn stage_secret(
        &self,
        path: &str,
        secret: &Secret,
        _pruned: &[Version],
    ) -> Result<CommitTicket, StoreError> {
        // The row is rewritten whole, so pruned versions are gone with it.
        let id = self.keys.row_id("secret:", path);
        let (nonce, ciphertext) = self
            .keys
            .seal(T_SECRETS, &id, encode_secret(path, secret)?)?;
        let (path_nonce, path_ciphertext) =
            self.keys
                .seal(T_SECRET_PATHS, &id, plaintext_buffer(path.as_bytes()))?;
        let ((), ticket) = self.stage(|conn| {
            conn.execute(
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
        })?;
        Ok(ticket)
    }

    fn wait_durable(&self, ticket: CommitTicket) -> Result<(), StoreError> {
        self.wait_resolved(ticket.0, true)
    }

    fn list_secret_paths(&self) -> Result<Vec<String>, StoreError> {
        let rows = self.encrypted_rows("SELECT id, path_nonce, path_ciphertext FROM secrets")?;
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
        let rows = self.encrypted_rows("SELECT id, nonce, ciphertext FROM policies")?;
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
        let ((), ticket) = self.stage(|conn| {
            conn.execute(
                "INSERT INTO policies (id, nonce, ciphertext) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET nonce = excluded.nonce,
                   ciphertext = excluded.ciphertext",
                params![id, nonce.as_slice(), ciphertext],
            )?;
            Ok(())
        })?;
        self.wait_durable(ticket)
    }

    fn delete_policy(&self, name: &str) -> Result<bool, StoreError> {
        let id = self.keys.row_id("policy:", name);
        let (n, ticket) =
            self.stage(|conn| Ok(conn.execute("DELETE FROM policies WHERE id = ?1", [&id])?))?;
        self.wait_durable(ticket)?;
        Ok(n > 0)
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        is_empty(&self.reader())
    }
}

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
    fn staged_writes_are_invisible_to_readers_until_committed() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("t.db"), &key(1)).unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        let t1 = b
            .stage_secret("a", &Secret::new_first(data("1"), 3, now), &[])
            .unwrap();
        let t2 = b
            .stage_secret("b", &Secret::new_first(data("2"), 3, now), &[])
            .unwrap();
        assert!(b.load_secret("a").unwrap().is_none());
        assert!(b.list_secret_paths().unwrap().is_empty());
        assert!(b.is_empty().unwrap());
        assert!(b.load_secret_for_write("a").unwrap().is_some());
        // One commit covers both staged writes.
        b.wait_durable(t2).unwrap();
        assert_eq!(b.list_secret_paths().unwrap(), ["a", "b"]);
        b.wait_durable(t1).unwrap();
        assert!(b.conn.lock().is_autocommit());
        let state = b.group.state.lock();
        assert_eq!((state.staged, state.resolved), (2, 2));
        assert!(state.failures.is_empty());
    }

    #[test]
    fn failed_commit_fails_every_writer_of_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("t.db"), &key(1)).unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        // A deferred foreign-key violation makes COMMIT itself fail.
        b.conn
            .lock()
            .execute_batch(
                "PRAGMA foreign_keys = ON;
                 CREATE TABLE parent (id INTEGER PRIMARY KEY);
                 CREATE TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);",
            )
            .unwrap();
        let t1 = b
            .stage_secret("a", &Secret::new_first(data("1"), 3, now), &[])
            .unwrap();
        let t2 = b
            .stage_secret("b", &Secret::new_first(data("2"), 3, now), &[])
            .unwrap();
        let (_, t3) = b
            .stage(|conn| Ok(conn.execute("INSERT INTO child (p) VALUES (42)", [])?))
            .unwrap();
        assert!(matches!(b.wait_durable(t1), Err(StoreError::Database(_))));
        assert!(matches!(b.wait_durable(t3), Err(StoreError::Database(_))));
        assert!(matches!(b.wait_durable(t2), Err(StoreError::Database(_))));
        assert!(b.group.state.lock().failures.is_empty());
        assert!(b.conn.lock().is_autocommit());
        assert!(b.load_secret_for_write("a").unwrap().is_none());
        // The next write commits normally.
        b.store_secret("c", &Secret::new_first(data("3"), 3, now), &[])
            .unwrap();
        assert_eq!(b.list_secret_paths().unwrap(), ["c"]);
    }

    #[test]
    fn concurrent_writers_share_commits_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let b =
            std::sync::Arc::new(SqliteBackend::open(&dir.path().join("t.db"), &key(1)).unwrap());
        let now = OffsetDateTime::UNIX_EPOCH;
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let path = format!("t{t}/s{i}");
                        b.store_secret(&path, &Secret::new_first(data(&path), 3, now), &[])
                            .unwrap();
                        // Acknowledged means committed: visible to readers.
                        assert!(b.load_secret(&path).unwrap().is_some());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.list_secret_paths().unwrap().len(), 200);
        b.checkpoint().unwrap();
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

    #[test]
    fn wal_index_is_in_heap_memory_not_an_mmapped_shm_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spike.db");
        let b = SqliteBackend::open(&path, &key(1)).unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        for i in 0..20 {
            b.store_secret(&format!("s{i}"), &Secret::new_first(data("v"), 3, now), &[])
                .unwrap();
        }
        // Every read connection is in use at once, so each maps the WAL index.
        let guards: Vec<_> = b.readers.iter().map(|r| r.lock()).collect();
        for conn in &guards {
            let n: i64 = conn
                .query_row("SELECT COUNT(*) FROM secrets", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 20);
        }
        drop(guards);
        let mode: String = b
            .conn
            .lock()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert!(dir.path().join("spike.db-wal").exists());
        assert!(!dir.path().join("spike.db-shm").exists());

        // A second backend in this process shares the process's lock and WAL index: it
        // opens and sees the first one's commits (another process cannot open the file at
        // all: tests/it/store.rs).
        let b2 = SqliteBackend::open(&path, &key(1)).unwrap();
        assert_eq!(b2.list_secret_paths().unwrap().len(), 20);
        b2.store_secret("from-b2", &Secret::new_first(data("2"), 3, now), &[])
            .unwrap();
        assert!(b.load_secret("from-b2").unwrap().is_some());
        drop((b, b2));
        assert!(!dir.path().join("spike.db-shm").exists());
    }

    #[test]
    fn sqlite_full_is_storage_full_and_other_errors_are_not() {
        use rusqlite::ffi;
        let full = rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_FULL), None);
        assert!(matches!(StoreError::from(full), StoreError::StorageFull(_)));
        let io = rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_IOERR_FSYNC), None);
        assert!(matches!(StoreError::from(io), StoreError::Database(_)));
        let busy = rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_BUSY), None);
        assert!(matches!(StoreError::from(busy), StoreError::Database(_)));
    }

    #[test]
    fn a_full_database_fails_writes_as_storage_full_and_reads_keep_working() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("t.db"), &key(1)).unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        b.store_secret("kept", &Secret::new_first(data("v"), 3, now), &[])
            .unwrap();
        // Real SQLite answers SQLITE_FULL once the database would grow past
        // max_page_count, as it does for ENOSPC.
        let pages: i64 = b
            .conn
            .lock()
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        b.conn
            .lock()
            .pragma_update(None, "max_page_count", pages)
            .unwrap();
        let big = || data(&"x".repeat(64 * 1024));
        let err = b
            .store_secret("big", &Secret::new_first(big(), 3, now), &[])
            .unwrap_err();
        assert!(matches!(&err, StoreError::StorageFull(_)), "{err:?}");
        assert_eq!(err.to_string(), "storage full: database or disk is full");
        // Group commit: every writer staged in the failed transaction gets the same class.
        assert!(b.conn.lock().is_autocommit());
        assert!(b.group.state.lock().failures.is_empty());
        // Reads keep working, on the readers and on the writer connection.
        assert!(b.load_secret("kept").unwrap().is_some());
        assert!(b.load_secret_for_write("kept").unwrap().is_some());
        assert_eq!(b.list_secret_paths().unwrap(), ["kept"]);
        assert!(b.load_secret("big").unwrap().is_none());
        // Space comes back: the next write lands.
        b.conn
            .lock()
            .pragma_update(None, "max_page_count", 1_000_000)
            .unwrap();
        b.store_secret("big", &Secret::new_first(big(), 3, now), &[])
            .unwrap();
        assert_eq!(b.list_secret_paths().unwrap(), ["big", "kept"]);
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
