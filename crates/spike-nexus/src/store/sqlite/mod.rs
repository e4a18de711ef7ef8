//! The encrypted SQLite backend of `sqlite` mode.
//!
//! This is our own schema, not SPIKE's (docs/compatibility.md#storage): every record is one row whose
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
//! The record format (row ids, sealing, key check) is the shared
//! [`records`](crate::store::records) layer; this backend stores its rows:
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
//! # Layout
//!
//! - `schema`: connection setup (the `unix-excl` VFS, pragmas), DDL, the
//!   version check and refusal of foreign databases.
//! - `writer`: the writer thread, which owns the write connection and
//!   commits what is queued in batches.
//! - `readers`: the pool of read-only connections.
//! - this module: [`SqliteBackend`], which puts them together with the
//!   [`RecordCodec`].
//!
//! # Group commit
//!
//! Every write goes to one writer thread, which owns the write connection.
//! It drains what is queued into one transaction and one `COMMIT` (one
//! fsync for the whole batch), and answers each write on its own channel
//! once the commit has succeeded. A write loads what it builds on inside
//! that transaction, so it sees the writes staged before it, and a batch
//! commits or fails as a whole: an acknowledged write is always a committed,
//! synced one, and a write reported as failed never persists, nor does any
//! write built on it (the rules are in the `writer` module). Reads use
//! separate read-only connections, which in WAL mode see committed data
//! only.
//!
//! # WAL bound
//!
//! `wal_autocheckpoint=1000` pages (SQLite's PASSIVE checkpoint after a
//! commit), `journal_size_limit=16 MiB` (the WAL file is truncated to that
//! when it restarts), and an explicit policy: after a commit that leaves the
//! WAL file above 64 MiB (readers that always overlap can keep a PASSIVE
//! checkpoint from finishing), the writer runs `wal_checkpoint(TRUNCATE)`.

use std::fmt;
use std::path::Path;

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use spike_crypto::RootKey;

use super::records::{RecordCodec, Sealed, SealedSecret};
use super::{Backend, BackendKind, PendingWrite, SecretUpdate, StoreError};
use crate::model::{Policy, Secret, Version};

mod readers;
mod schema;
mod writer;

use readers::Readers;
use writer::{Bound, Write, Writer};

/// The encrypted SQLite backend: one writer thread with group commit, and a
/// few read-only connections that see committed data only.
pub struct SqliteBackend {
    /// Read-only connections.
    readers: Readers,
    records: Arc<RecordCodec>,
    /// The writer thread (dropped last: it finishes the queued writes).
    writer: Writer,
}

impl fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SqliteBackend(<keys redacted>)")
    }
}

impl SqliteBackend {
    /// Opens or creates the database at `path` (created with mode 0600), sets
    /// WAL, `synchronous=FULL`, `secure_delete=ON` and a busy timeout, creates
    /// the schema, then checks `key` against the key-check record (writing it
    /// when the database is new), and starts the writer thread.
    ///
    /// # Errors
    ///
    /// [`StoreError::WrongRootKey`] when the key-check record does not open
    /// with `key`; [`StoreError::UnsupportedSchema`] for a database of another
    /// program or version; [`StoreError::Integrity`] when records exist but the
    /// key-check record is missing; [`StoreError::Database`] otherwise.
    pub fn open(path: &Path, key: &RootKey) -> Result<SqliteBackend, StoreError> {
        Self::open_bounded(path, key, schema::WAL_LIMIT)
    }

    fn open_bounded(path: &Path, key: &RootKey, wal_limit: u64) -> Result<Self, StoreError> {
        let conn = schema::open_writer(path)?;
        let records = Arc::new(RecordCodec::new(key)?);
        check_key(&records, &conn)?;
        let readers = Readers::open(path)?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let bound = Bound {
            wal: Some(wal.into()),
            limit: wal_limit,
        };
        Ok(SqliteBackend {
            readers,
            writer: Writer::spawn(conn, Arc::clone(&records), bound)?,
            records,
        })
    }

    /// Checkpoints the WAL into the database file and truncates the WAL
    /// (e.g. at shutdown, so old frames do not linger on disk). Writes
    /// queued before the call are committed first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`].
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.writer.checkpoint().wait()
    }
}

/// Checks `key` against the key-check record, writing it when the database
/// is new.
fn check_key(records: &RecordCodec, conn: &Connection) -> Result<(), StoreError> {
    let row: Option<(Vec<u8>, Vec<u8>)> = conn
        .query_row(
            "SELECT nonce, ciphertext FROM keycheck WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match row {
        Some((nonce, ciphertext)) => records.check_key(&nonce, ciphertext),
        None => {
            if !schema::is_empty(conn)? {
                return Err(StoreError::Integrity {
                    path: "keycheck".to_owned(),
                });
            }
            let Sealed { nonce, ciphertext } = records.seal_key_check()?;
            conn.execute(
                "INSERT INTO keycheck (id, nonce, ciphertext) VALUES (1, ?1, ?2)",
                params![nonce.as_slice(), ciphertext],
            )?;
            Ok(())
        }
    }
}

/// Upserts a sealed secret row through `conn`.
fn upsert_sealed(conn: &Connection, sealed: &SealedSecret) -> Result<(), StoreError> {
    let SealedSecret { id, record, path } = sealed;
    conn.prepare_cached(
        "INSERT INTO secrets (id, nonce, ciphertext, path_nonce, path_ciphertext)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET nonce = excluded.nonce,
           ciphertext = excluded.ciphertext, path_nonce = excluded.path_nonce,
           path_ciphertext = excluded.path_ciphertext",
    )?
    .execute(params![
        id,
        record.nonce.as_slice(),
        record.ciphertext,
        path.nonce.as_slice(),
        path.ciphertext
    ])?;
    Ok(())
}

/// Loads and opens the secret row at `path` through `conn` (the statement
/// is prepared once per connection and cached).
fn load_secret_with(
    records: &RecordCodec,
    conn: &Connection,
    path: &str,
) -> Result<Option<Secret>, StoreError> {
    let id = records.secret_id(path);
    let row: Option<(Vec<u8>, Vec<u8>)> = conn
        .prepare_cached("SELECT nonce, ciphertext FROM secrets WHERE id = ?1")?
        .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((nonce, ciphertext)) = row else {
        return Ok(None);
    };
    records.open_secret(path, &id, &nonce, ciphertext).map(Some)
}

impl Backend for SqliteBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Sqlite
    }

    fn load_secret(&self, path: &str) -> Result<Option<Secret>, StoreError> {
        // The SELECT runs under the reader lock; decryption after it.
        load_secret_with(&self.records, &self.readers.get(), path)
    }

    fn store_secret(
        &self,
        path: &str,
        secret: &Secret,
        _pruned: &[Version],
    ) -> Result<(), StoreError> {
        super::store_by_update(self, path, secret)
    }

    fn update_secret(&self, path: &str, update: SecretUpdate<'static>) -> PendingWrite {
        self.writer.submit(Write::Secret {
            path: path.to_owned(),
            update,
        })
    }

    fn queues_writes(&self) -> bool {
        true
    }

    fn list_secret_paths(&self) -> Result<Vec<String>, StoreError> {
        let rows = self
            .readers
            .rows("SELECT id, path_nonce, path_ciphertext FROM secrets")?;
        let mut paths = Vec::with_capacity(rows.len());
        for (id, nonce, ciphertext) in rows {
            paths.push(self.records.open_secret_path(&id, &nonce, ciphertext)?);
        }
        paths.sort();
        Ok(paths)
    }

    fn load_policies(&self) -> Result<Vec<Policy>, StoreError> {
        let rows = self
            .readers
            .rows("SELECT id, nonce, ciphertext FROM policies")?;
        let mut policies = Vec::with_capacity(rows.len());
        for (id, nonce, ciphertext) in rows {
            policies.push(self.records.open_policy(&id, &nonce, ciphertext)?);
        }
        Ok(policies)
    }

    fn store_policy(&self, policy: &Policy) -> Result<(), StoreError> {
        let sealed = self.records.seal_policy(policy)?;
        self.writer.submit(Write::PutPolicy(sealed)).wait()
    }

    fn delete_policy(&self, name: &str) -> Result<bool, StoreError> {
        let id = self.records.policy_id(name);
        self.writer.submit_affected(Write::DeletePolicy(id)).wait()
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        schema::is_empty(&self.readers.get())
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, params};
    use time::OffsetDateTime;

    use super::*;
    use crate::model::SecretData;

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

    /// A secret write through the writer thread, not waited for.
    fn submit(b: &SqliteBackend, path: &str, secret: Secret) -> PendingWrite {
        b.update_secret(path, Box::new(move |_| Ok((secret, Vec::new()))))
    }

    #[test]
    fn queued_writes_are_invisible_to_readers_until_committed() {
        use std::sync::{Arc, mpsc};
        use writer::FaultPoint;

        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::open(&dir.path().join("t.db"), &key(1)).unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        let (at_commit, committing) = mpsc::channel::<()>();
        let (go, wait_go) = mpsc::channel::<()>();
        let (at_commit, wait_go) = (
            parking_lot::Mutex::new(at_commit),
            parking_lot::Mutex::new(wait_go),
        );
        b.writer.set_fault(Some(Arc::new(move |point| {
            if point == FaultPoint::BeforeCommit {
                let _ = at_commit.lock().send(());
                let _ = wait_go.lock().recv();
            }
            None
        })));
        let hold = b.writer.hold();
        let t1 = submit(&b, "a", Secret::new_first(data("1"), 3, now));
        let t2 = submit(&b, "b", Secret::new_first(data("2"), 3, now));
        drop(hold);
        // Both are staged in one transaction, which is about to commit.
        committing.recv().unwrap();
        assert!(b.load_secret("a").unwrap().is_none());
        assert!(b.list_secret_paths().unwrap().is_empty());
        assert!(b.is_empty().unwrap());
        go.send(()).unwrap();
        t2.wait().unwrap();
        t1.wait().unwrap();
        b.writer.set_fault(None);
        assert_eq!(b.list_secret_paths().unwrap(), ["a", "b"]);
        assert!(b.writer.on_conn(Connection::is_autocommit));
    }

    #[test]
    fn a_write_built_on_a_queued_one_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        let b =
            std::sync::Arc::new(SqliteBackend::open(&dir.path().join("t.db"), &key(1)).unwrap());
        let store = crate::store::Store::new(b.clone(), 10).unwrap();
        let hold = b.writer.hold();
        let writes: Vec<_> = (0..5)
            .map(|i| store.submit_put_secret("p", data(&i.to_string())))
            .collect();
        drop(hold);
        for w in writes {
            w.wait().unwrap();
        }
        let secret = store.secret_metadata("p", 0).unwrap();
        assert_eq!(secret.versions.len(), 5);
        assert_eq!(secret.versions[&5].data.get("k"), Some("4"));
    }

    #[test]
    fn failed_commit_fails_every_writer_of_the_batch() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use writer::FaultPoint;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let b = SqliteBackend::open(&path, &key(1)).unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        let commits = AtomicUsize::new(0);
        b.writer.set_fault(Some(Arc::new(move |point| {
            (point == FaultPoint::BeforeCommit && commits.fetch_add(1, Ordering::SeqCst) == 0)
                .then(|| StoreError::Database("disk I/O error (injected)".into()))
        })));
        let hold = b.writer.hold();
        let t1 = submit(&b, "a", Secret::new_first(data("1"), 3, now));
        let t2 = submit(&b, "b", Secret::new_first(data("2"), 3, now));
        drop(hold);
        assert!(matches!(t1.wait(), Err(StoreError::Database(_))));
        assert!(matches!(t2.wait(), Err(StoreError::Database(_))));
        assert!(b.writer.on_conn(Connection::is_autocommit));
        assert!(b.list_secret_paths().unwrap().is_empty());
        // The next write commits normally.
        b.store_secret("c", &Secret::new_first(data("3"), 3, now), &[])
            .unwrap();
        assert_eq!(b.list_secret_paths().unwrap(), ["c"]);
        drop(b);
        let reopened = SqliteBackend::open(&path, &key(1)).unwrap();
        assert_eq!(reopened.list_secret_paths().unwrap(), ["c"]);
    }

    #[test]
    fn a_write_that_panics_fails_its_batch_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let b = SqliteBackend::open(&path, &key(1)).unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        let hold = b.writer.hold();
        let first = submit(&b, "a", Secret::new_first(data("1"), 3, now));
        let panics = b.update_secret("b", Box::new(|_| panic!("a bug in an update step")));
        drop(hold);
        assert!(matches!(first.wait(), Err(StoreError::Database(_))));
        assert!(matches!(panics.wait(), Err(StoreError::Database(_))));
        b.store_secret("c", &Secret::new_first(data("3"), 3, now), &[])
            .unwrap();
        assert_eq!(b.list_secret_paths().unwrap(), ["c"]);
    }

    #[test]
    fn a_write_that_fails_alone_does_not_fail_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let b =
            std::sync::Arc::new(SqliteBackend::open(&dir.path().join("t.db"), &key(1)).unwrap());
        let store = crate::store::Store::new(b.clone(), 10).unwrap();
        let hold = b.writer.hold();
        let first = store.submit_put_secret("a", data("1"));
        // Deleting a secret that does not exist fails before it writes anything.
        let missing = store.submit_delete_secret("nope", &[]);
        let last = store.submit_put_secret("b", data("2"));
        drop(hold);
        first.wait().unwrap();
        assert!(matches!(missing.wait(), Err(StoreError::NotFound)));
        last.wait().unwrap();
        assert_eq!(b.list_secret_paths().unwrap(), ["a", "b"]);
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

    /// Issue 12 L1: writer B builds on writer A's staged version, and A's
    /// commit fails. Neither A's version nor anything built on it may be
    /// acknowledged or persist. With the writer thread, A and B are staged
    /// in one batch, which fails as a whole.
    #[test]
    fn a_failed_write_never_persists_nor_is_built_upon() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use writer::FaultPoint;

        use crate::store::Store;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let b = Arc::new(SqliteBackend::open(&path, &key(1)).unwrap());
        let store = Store::new(b.clone(), 10).unwrap();
        store.put_secret("p", data("v1")).unwrap();

        let commits = AtomicUsize::new(0);
        b.writer.set_fault(Some(Arc::new(move |point| {
            (point == FaultPoint::BeforeCommit && commits.fetch_add(1, Ordering::SeqCst) == 0)
                .then(|| StoreError::Database("disk I/O error (injected)".into()))
        })));
        let hold = b.writer.hold();
        let write_a = store.submit_put_secret("p", data("a"));
        let write_b = store.submit_put_secret("p", data("b"));
        drop(hold);
        let result_a = write_a.wait();
        let result_b = write_b.wait();
        b.writer.set_fault(None);

        assert!(
            matches!(result_a, Err(StoreError::Database(_))),
            "{result_a:?}"
        );
        assert!(
            matches!(result_b, Err(StoreError::Database(_))),
            "{result_b:?}"
        );
        let values = |s: &Secret| -> Vec<String> {
            s.versions
                .values()
                .filter_map(|v| v.data.get("k").map(str::to_owned))
                .collect()
        };
        let now = store.secret_metadata("p", 0).unwrap();
        assert_eq!(values(&now), ["v1"]);
        // The store goes on, and nothing of A or B is on disk.
        store.put_secret("p", data("c")).unwrap();
        drop((store, b));
        let reopened = SqliteBackend::open(&path, &key(1)).unwrap();
        let on_disk = reopened.load_secret("p").unwrap().unwrap();
        assert_eq!(values(&on_disk), ["v1", "c"]);
    }

    /// A transaction left open by a failed batch (its ROLLBACK failed too)
    /// is rolled back before anything is staged on it.
    #[test]
    fn a_leftover_transaction_of_a_failed_batch_is_not_built_upon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let b = SqliteBackend::open(&path, &key(1)).unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        // A failed batch whose rollback did not happen: its write is still in
        // the open transaction, and no write is pending.
        let records = Arc::clone(&b.records);
        b.writer.on_conn(move |conn| {
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            let sealed = records
                .seal_secret("failed", &Secret::new_first(data("x"), 3, now))
                .unwrap();
            upsert_sealed(conn, &sealed).unwrap();
        });
        b.store_secret("next", &Secret::new_first(data("y"), 3, now), &[])
            .unwrap();
        assert_eq!(b.list_secret_paths().unwrap(), ["next"]);
        drop(b);
        let reopened = SqliteBackend::open(&path, &key(1)).unwrap();
        assert_eq!(reopened.list_secret_paths().unwrap(), ["next"]);
    }

    /// The WAL stays bounded under sustained writes while readers keep
    /// reading (checkpoint policy: `writer::Bound`).
    #[test]
    fn wal_stays_bounded_under_sustained_writes_with_concurrent_readers() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        // A small bound so that the test writes little; SQLite's automatic
        // checkpoint alone lets the WAL reach about 4 MiB.
        let limit: u64 = 512 * 1024;
        let b = Arc::new(SqliteBackend::open_bounded(&path, &key(1), limit).unwrap());
        let wal = dir.path().join("t.db-wal");
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (b, stop) = (b.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut reads = 0_u64;
                    while !stop.load(Ordering::Relaxed) {
                        let _ = b.load_secret("s0").unwrap();
                        let _ = b.list_secret_paths().unwrap();
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        let now = OffsetDateTime::UNIX_EPOCH;
        let value = "v".repeat(6000);
        let mut max_wal = 0;
        for i in 0..400 {
            b.store_secret(
                &format!("s{}", i % 50),
                &Secret::new_first(data(&value), 3, now),
                &[],
            )
            .unwrap();
            max_wal = max_wal.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
        // One commit past the bound at most (each commit writes a few pages).
        assert!(max_wal <= limit + 64 * 1024, "WAL reached {max_wal} bytes");
        assert!(max_wal > 0);
        let limit_set: i64 = b.writer.on_conn(|conn| {
            conn.query_row("PRAGMA journal_size_limit", [], |r| r.get(0))
                .unwrap()
        });
        assert_eq!(limit_set, 16 * 1024 * 1024);
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
        let (idx, idy) = (b.records.secret_id("x"), b.records.secret_id("y"));
        b.writer.on_conn(move |conn| {
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
        });
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
        b.writer.on_conn(|conn| {
            conn.execute(
                "UPDATE secrets SET ciphertext = zeroblob(length(ciphertext))",
                [],
            )
            .unwrap()
        });
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
            b.writer
                .on_conn(|conn| conn.execute("DELETE FROM keycheck", []).unwrap());
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
        let (mode, sync, sd) = b.writer.on_conn(|conn| {
            let mode: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            let sync: i64 = conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap();
            let sd: i64 = conn
                .query_row("PRAGMA secure_delete", [], |r| r.get(0))
                .unwrap();
            (mode, sync, sd)
        });
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2);
        assert_eq!(sd, 1);
        let cache: i64 = b.writer.on_conn(|conn| {
            conn.query_row("PRAGMA cache_size", [], |r| r.get(0))
                .unwrap()
        });
        assert_eq!(cache, -schema::WRITER_CACHE_KIB);
        for reader in &b.readers.conns {
            let cache: i64 = reader
                .lock()
                .query_row("PRAGMA cache_size", [], |r| r.get(0))
                .unwrap();
            assert_eq!(cache, -schema::READER_CACHE_KIB);
        }
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
        let guards: Vec<_> = b.readers.conns.iter().map(|r| r.lock()).collect();
        for conn in &guards {
            let n: i64 = conn
                .query_row("SELECT COUNT(*) FROM secrets", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 20);
        }
        drop(guards);
        let mode: String = b.writer.on_conn(|conn| {
            conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap()
        });
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
        b.writer.on_conn(|conn| {
            let pages: i64 = conn
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .unwrap();
            conn.pragma_update(None, "max_page_count", pages).unwrap();
        });
        let big = || data(&"x".repeat(64 * 1024));
        let err = b
            .store_secret("big", &Secret::new_first(big(), 3, now), &[])
            .unwrap_err();
        assert!(matches!(&err, StoreError::StorageFull(_)), "{err:?}");
        assert_eq!(err.to_string(), "storage full: database or disk is full");
        // The failed batch was rolled back.
        assert!(b.writer.on_conn(Connection::is_autocommit));
        // Reads keep working, on the readers and on the writer connection.
        assert!(b.load_secret("kept").unwrap().is_some());
        let records = Arc::clone(&b.records);
        assert!(
            b.writer
                .on_conn(move |conn| load_secret_with(&records, conn, "kept").unwrap())
                .is_some()
        );
        assert_eq!(b.list_secret_paths().unwrap(), ["kept"]);
        assert!(b.load_secret("big").unwrap().is_none());
        // Space comes back: the next write lands.
        b.writer.on_conn(|conn| {
            conn.pragma_update(None, "max_page_count", 1_000_000)
                .unwrap()
        });
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
