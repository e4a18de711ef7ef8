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
//!
//! A writer may build on a staged write: a secret update loads the secret as
//! the write connection sees it ([`GroupCommit::load`]), modifies and seals
//! it without holding the connection, and stages the result
//! ([`GroupCommit::stage_after`]). When the load could see staged writes
//! and a batch failed between the load and the staging, the staging is
//! refused: the loaded data may hold a write that was rolled back and
//! reported as failed, and nothing may be built on it. A transaction left
//! open by a failed batch is rolled back before anything is read or staged
//! on the connection.

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
    /// The WAL file, watched by the checkpoint policy (`None`: no policy).
    wal_path: Option<std::path::PathBuf>,
    /// WAL size above which a commit runs a truncating checkpoint.
    pub(super) wal_limit: u64,
    #[cfg(test)]
    fault: Mutex<Option<FaultHook>>,
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
    /// How many batches have failed so far.
    pub(super) failed_batches: u64,
}

/// What a [`GroupCommit::load`] saw: `Some(failed batches)` when staged,
/// uncommitted writes were visible to it.
#[derive(Debug, Clone, Copy)]
pub(super) struct LoadMark(Option<u64>);

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
            self.failed_batches += 1;
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
    pub(super) fn new(
        conn: Connection,
        wal_path: Option<std::path::PathBuf>,
        wal_limit: u64,
    ) -> Self {
        Self {
            conn: Mutex::new(conn),
            state: Mutex::default(),
            resolved: Condvar::new(),
            wal_path,
            wal_limit,
            #[cfg(test)]
            fault: Mutex::new(None),
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
        self.stage_after(LoadMark(None), write)
    }

    /// Runs `read` on the write connection, which sees staged writes, and
    /// returns its result with the mark to pass to [`GroupCommit::stage_after`]
    /// when something is staged on the strength of it.
    pub(super) fn load<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<(T, LoadMark), StoreError> {
        let conn = self.conn.lock();
        self.discard_leftover(&conn)?;
        let value = read(&conn)?;
        let state = self.state.lock();
        let mark = (state.staged > state.resolved).then_some(state.failed_batches);
        Ok((value, LoadMark(mark)))
    }

    /// Rolls back a transaction that is open but holds no pending write: a
    /// leftover of a failed batch whose ROLLBACK failed too. It may hold the
    /// failed writes, so nothing may be read or staged on top of it.
    fn discard_leftover(&self, conn: &Connection) -> Result<(), StoreError> {
        if !conn.is_autocommit() {
            let state = self.state.lock();
            if state.staged == state.resolved {
                drop(state);
                conn.execute_batch("ROLLBACK")?;
            }
        }
        Ok(())
    }

    /// [`GroupCommit::stage`] for a write built on what a
    /// [`GroupCommit::load`] returned with `mark`: refused when that load
    /// saw staged writes and a batch has failed since (the loaded data may
    /// hold a write that was rolled back).
    pub(super) fn stage_after<T>(
        &self,
        mark: LoadMark,
        write: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<(T, CommitTicket), StoreError> {
        let conn = self.conn.lock();
        if let LoadMark(Some(failed)) = mark
            && self.state.lock().failed_batches != failed
        {
            return Err(StoreError::Database(
                "a concurrent write this one was built on failed; nothing was written".into(),
            ));
        }
        self.discard_leftover(&conn)?;
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
        #[cfg(test)]
        let injected = self.fault(FaultPoint::BeforeCommit);
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
            #[cfg(test)]
            if let Some(e) = injected {
                // In place of a COMMIT that failed (e.g. a WAL write or fsync
                // error), which SQLite may or may not have rolled back.
                Err(BatchError::of(&e))
            } else {
                conn.execute_batch("COMMIT")
                    .map_err(|e| BatchError::of(&StoreError::from(e)))
            }
            #[cfg(not(test))]
            conn.execute_batch("COMMIT")
                .map_err(|e| BatchError::of(&StoreError::from(e)))
        };
        let committed = result.is_ok();
        {
            let mut state = self.state.lock();
            match result {
                Ok(()) => state.resolved = staged,
                Err(error) => {
                    if !conn.is_autocommit() {
                        // When this ROLLBACK fails too, the transaction stays
                        // open with nothing pending, and the next `stage`
                        // rolls it back before staging anything.
                        let _ = conn.execute_batch("ROLLBACK");
                    }
                    state.fail_open(error);
                }
            }
        }
        if committed {
            self.bound_wal(&conn);
        }
        #[cfg(test)]
        drop(self.fault(FaultPoint::AfterCommit));
    }

    /// The explicit checkpoint policy that keeps the WAL bounded. SQLite's
    /// automatic checkpoint (`wal_autocheckpoint`, PASSIVE) copies frames
    /// back after commits, and `journal_size_limit` truncates the WAL file
    /// when it restarts; but a PASSIVE checkpoint skips frames a reader
    /// still uses, and the WAL only restarts when no reader is in it, so
    /// readers that always overlap could let it grow. Once the WAL file is
    /// larger than `wal_limit`, this runs `wal_checkpoint(TRUNCATE)`, which
    /// waits (busy timeout) for the readers in the WAL to finish (our reads
    /// are single statements) and truncates the file to zero. Best effort: a
    /// failed checkpoint is retried after the next commit.
    fn bound_wal(&self, conn: &Connection) {
        let Some(wal) = self.wal_path.as_deref() else {
            return;
        };
        let size = std::fs::metadata(wal).map_or(0, |m| m.len());
        if size <= self.wal_limit {
            return;
        }
        match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(0) => {}
            Ok(_) => tracing::warn!(
                wal_bytes = size,
                "WAL checkpoint was blocked by readers; retrying after the next commit"
            ),
            Err(e) => {
                tracing::warn!(wal_bytes = size, error = %e, "WAL checkpoint failed; retrying after the next commit")
            }
        }
    }

    #[cfg(test)]
    fn fault(&self, point: FaultPoint) -> Option<StoreError> {
        let hook = self.fault.lock().clone();
        hook.and_then(|h| h(point))
    }
}

/// Where the test-only fault hook ([`GroupCommit::fault`]) is called.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FaultPoint {
    /// In the commit path before the write connection is locked; an error
    /// returned here fails the batch's COMMIT.
    BeforeCommit,
    /// After a batch was resolved (committed or failed).
    AfterCommit,
    /// In a secret update, after the current secret was loaded (the write
    /// connection is not held).
    Loaded,
}

/// The test-only fault hook.
#[cfg(test)]
pub(super) type FaultHook = std::sync::Arc<dyn Fn(FaultPoint) -> Option<StoreError> + Send + Sync>;

#[cfg(test)]
impl GroupCommit {
    /// Installs (or with `None` removes) the fault hook.
    pub(super) fn set_fault(&self, hook: Option<FaultHook>) {
        *self.fault.lock() = hook;
    }

    /// Calls the fault hook at `point` (tests only).
    pub(super) fn fault_at(&self, point: FaultPoint) -> Option<StoreError> {
        self.fault(point)
    }
}
