//! The schema of the SQLite backend: connection setup (VFS, pragmas), DDL and
//! the version check.

use std::io;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::store::StoreError;

/// The schema version this code writes and reads.
const SCHEMA_VERSION: i64 = 1;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// WAL pages after which a commit runs SQLite's automatic (PASSIVE)
/// checkpoint; SQLite's default, set explicitly.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 1000;
/// Size the WAL file is truncated to when it restarts after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;
/// WAL size above which a commit runs a truncating checkpoint
/// (the writer's `Bound`): the hard bound, well above what the automatic
/// checkpoint normally leaves (about 1000 pages of 4 KiB).
pub(super) const WAL_LIMIT: u64 = 64 * 1024 * 1024;
/// SQLite page cache of the write connection, in KiB (SQLite's default is
/// 2,000 KiB per connection). A write touches the root, a few interior pages
/// and one leaf of the secrets B-tree; the interior pages of a 100k-secret
/// database (58 MiB) fit many times over.
pub(super) const WRITER_CACHE_KIB: i64 = 1024;
/// SQLite page cache of each read connection, in KiB. A get reads one row
/// by primary key: the root and interior pages stay cached, and a leaf that
/// is not is one `pread` from the kernel's page cache (which RSS does not
/// count) rather than a page held in every connection's private cache.
pub(super) const READER_CACHE_KIB: i64 = 512;

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

/// Creates (mode 0600) or opens the database at `path` as the write
/// connection: WAL, `synchronous=FULL`, `secure_delete=ON`, a busy timeout,
/// the schema created or checked.
///
/// # Errors
///
/// [`StoreError::UnsupportedSchema`] for a database of another program or
/// version; [`StoreError::Database`] otherwise.
pub(super) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
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
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
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
        "secrets",
        &["id", "nonce", "ciphertext", "path_nonce", "path_ciphertext"],
    )?;
    check_columns(&conn, "policies", &["id", "nonce", "ciphertext"])?;
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

    Ok(conn)
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
pub(super) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = open_exclusive(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "query_only", "ON")?;
    conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
    Ok(conn)
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

/// Refuses databases written by SPIKE (Go), whose schema differs (docs/compatibility.md#storage).
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

pub(super) fn is_empty(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT NOT EXISTS (SELECT 1 FROM secrets) AND NOT EXISTS (SELECT 1 FROM policies)",
        [],
        |r| r.get(0),
    )?)
}
