//! The pool of read-only connections, used by loads outside the writer's
//! critical section. In WAL mode they see committed data only.

use std::path::Path;

use parking_lot::{Mutex, MutexGuard};
use rusqlite::Connection;

use super::schema::open_reader;
use crate::store::StoreError;

/// Bounds on the number of read-only connections (one per CPU within these).
/// Gets run on the async workers (one per CPU) and take the first free
/// connection, so those beyond one per worker are used (and fill their page
/// caches) only while secret listings, which scan on the blocking pool, hold
/// others: two listings at once still leave gets two connections.
const MIN_READERS: usize = 4;
const MAX_READERS: usize = 16;

/// A row as stored: `(id, nonce, ciphertext)`.
pub(super) type EncryptedRow = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Read-only connections to one database.
pub(super) struct Readers {
    pub(super) conns: Vec<Mutex<Connection>>,
}

impl Readers {
    /// Opens one read-only connection per CPU (within the bounds) to the
    /// already set-up database at `path`.
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        let n_readers = std::thread::available_parallelism()
            .map_or(MIN_READERS, usize::from)
            .clamp(MIN_READERS, MAX_READERS);
        let conns = (0..n_readers)
            .map(|_| open_reader(path).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { conns })
    }

    /// A free read-only connection (or, when all are busy, one to wait for).
    pub(super) fn get(&self) -> MutexGuard<'_, Connection> {
        for reader in &self.conns {
            if let Some(guard) = reader.try_lock() {
                return guard;
            }
        }
        let i = thread_index() % self.conns.len();
        self.conns[i].lock()
    }

    /// Every `(id, nonce, ciphertext)` row of `sql`, read on a read connection.
    pub(super) fn rows(&self, sql: &str) -> Result<Vec<EncryptedRow>, StoreError> {
        let conn = self.get();
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
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
