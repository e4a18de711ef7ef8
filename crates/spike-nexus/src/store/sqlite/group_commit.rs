//! Group commit: every write goes through one write connection, and one
//! `COMMIT` (one fsync) makes every write staged meanwhile durable.
//!
//! A writer stages its row change in the transaction that is open on the
//! connection (`BEGIN IMMEDIATE` when none is), gets a sequence number, and
//! then waits until a `COMMIT` covering that number has succeeded. The first
//! waiter that finds no commit in flight leads: it runs `COMMIT` for
//! everything staged so far. When the `COMMIT` fails, the transaction is
//! rolled back and every writer of the batch gets the error, so an
//! acknowledged write is always a committed, synced one.

use parking_lot::{Condvar, Mutex, MutexGuard};
use rusqlite::Connection;

use crate::store::{CommitTicket, StoreError};

/// The write connection and its group-commit state; lock order: `conn`,
/// then `state`.
pub(super) struct GroupCommit {
    /// The write connection (also used by loads under the store's writer lock).
    pub(super) conn: Mutex<Connection>,
    /// Group-commit bookkeeping.
    pub(super) state: Mutex<GroupState>,
    resolved: Condvar,
}

#[derive(Default)]
pub(super) struct GroupState {
    /// Sequence number of the last staged write (0: none yet).
    pub(super) staged: u64,
    /// Every write up to this number is resolved (committed or failed); the
    /// open transaction holds exactly the writes in `(resolved, staged]`.
    pub(super) resolved: u64,
    /// A leader is committing.
    pub(super) committing: bool,
    /// Failed batches whose writers have not all collected their error.
    pub(super) failures: Vec<Failure>,
}

pub(super) struct Failure {
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

impl GroupCommit {
    /// Group commit on the write connection `conn`.
    pub(super) fn new(conn: Connection) -> Self {
        Self {
            conn: Mutex::new(conn),
            state: Mutex::default(),
            resolved: Condvar::new(),
        }
    }

    /// The sequence number of the last staged write.
    pub(super) fn staged(&self) -> u64 {
        self.state.lock().staged
    }

    /// Runs `write` inside the open write transaction (beginning one when
    /// none is open) and returns its result with the write's ticket. The
    /// write is durable only after [`GroupCommit::wait_resolved`].
    pub(super) fn stage<T>(
        &self,
        write: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<(T, CommitTicket), StoreError> {
        let conn = self.conn.lock();
        if conn.is_autocommit() {
            conn.execute_batch("BEGIN IMMEDIATE")?;
        }
        match write(&conn) {
            Ok(value) => {
                let mut state = self.state.lock();
                state.staged += 1;
                Ok((value, CommitTicket(state.staged)))
            }
            Err(e) => {
                let mut state = self.state.lock();
                if conn.is_autocommit() {
                    // SQLite rolled the whole transaction back (I/O error,
                    // disk full...): the writes staged in it are lost.
                    state.fail_open(BatchError::of(&e));
                    drop(state);
                    self.resolved.notify_all();
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
    pub(super) fn wait_resolved(&self, seq: u64, collect: bool) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        loop {
            if state.resolved >= seq {
                return if collect { state.collect(seq) } else { Ok(()) };
            }
            if state.committing {
                self.resolved.wait(&mut state);
                continue;
            }
            state.committing = true;
            MutexGuard::unlocked(&mut state, || self.commit_batch());
            state.committing = false;
            self.resolved.notify_all();
        }
    }

    /// Commits everything staged so far (one fsync), or rolls it back and
    /// records the failure for the batch's writers.
    fn commit_batch(&self) {
        let conn = self.conn.lock();
        let staged = {
            let state = self.state.lock();
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
        let mut state = self.state.lock();
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
