//! The writer thread: the one write connection, owned by one thread fed by
//! a channel, with group commit.
//!
//! Every write is a [`Job`] sent with its own reply channel. The thread takes
//! the first job waiting, drains whatever else is queued (at most
//! [`MAX_BATCH`] jobs), stages them one after the other in one transaction
//! (`BEGIN IMMEDIATE`), commits it (one fsync: WAL, `synchronous=FULL`), and
//! only then answers each job on its own channel. No job waits on a lock or
//! a condition variable shared with the others, and no blocking-pool thread
//! waits for a commit: an async caller awaits its reply.
//!
//! A job loads what it builds on (the current secret) on the write
//! connection, inside the open transaction, so it sees the writes staged
//! before it in the same batch. A batch commits or fails as a whole:
//!
//! - a job whose own step fails before it writes (the secret does not
//!   exist, the request breaks a model rule, a stored record does not open)
//!   fails alone: nothing of it was written;
//! - a database error while a job is staged (I/O, disk full, ...) rolls the
//!   transaction back and fails every job staged in it; the jobs still
//!   queued behind it start a new transaction, on data without the
//!   rolled-back writes;
//! - a failed `COMMIT` rolls the batch back and fails every job of it;
//! - a transaction left open by a failed `ROLLBACK` is rolled back before
//!   the next batch begins, and when that fails too the batch fails.
//!
//! So an acknowledged write is a committed, synced one, a write reported as
//! failed never persists, and no acknowledged write was built on one that
//! failed (docs/security.md#store).
//!
//! After a commit that leaves the WAL file above its bound, the thread runs
//! `wal_checkpoint(TRUNCATE)` ([`Bound::apply`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use futures::channel::oneshot;
use rusqlite::{Connection, params};

use super::{load_secret_with, upsert_sealed};
use crate::store::records::{RecordCodec, SealedPolicy};
use crate::store::{PendingWrite, SecretUpdate, StoreError};

/// The most jobs staged in one transaction.
pub(super) const MAX_BATCH: usize = 256;

/// The reply channel of one job.
type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A write, as the writer thread stages it.
pub(super) enum Write {
    /// Load the secret at `path`, apply `update`, seal and upsert the result.
    Secret {
        /// The secret path.
        path: String,
        /// The modification step.
        update: SecretUpdate<'static>,
    },
    /// Upsert a sealed policy row.
    PutPolicy(SealedPolicy),
    /// Delete the policy row with this id; answers whether it existed.
    DeletePolicy(Vec<u8>),
}

/// Who waits for a write, and for which answer.
enum Waiter {
    /// Answered `()`.
    Unit(Reply<()>),
    /// Answered whether a row was affected.
    Affected(Reply<bool>),
}

impl Waiter {
    fn succeed(self, affected: bool) {
        // A caller that went away (a client that disconnected) is not an error.
        match self {
            Waiter::Unit(reply) => drop(reply.send(Ok(()))),
            Waiter::Affected(reply) => drop(reply.send(Ok(affected))),
        }
    }

    fn fail(self, error: StoreError) {
        match self {
            Waiter::Unit(reply) => drop(reply.send(Err(error))),
            Waiter::Affected(reply) => drop(reply.send(Err(error))),
        }
    }
}

/// What the writer thread is asked to do.
enum Job {
    /// A write and its waiter.
    Write(Write, Waiter),
    /// Commit what is staged, then `wal_checkpoint(TRUNCATE)`.
    Checkpoint(Reply<()>),
    /// Commit what is staged, then run this on the connection (tests).
    #[cfg(test)]
    Raw(Box<dyn FnOnce(&Connection) + Send>),
}

/// The explicit checkpoint policy that keeps the WAL bounded. SQLite's
/// automatic checkpoint (`wal_autocheckpoint`, PASSIVE) copies frames back
/// after commits, and `journal_size_limit` truncates the WAL file when it
/// restarts; but a PASSIVE checkpoint skips frames a reader still uses, and
/// the WAL only restarts when no reader is in it, so readers that always
/// overlap could let it grow. Once the WAL file is larger than `limit`, the
/// writer runs `wal_checkpoint(TRUNCATE)`, which waits (busy timeout) for
/// the readers in the WAL to finish (our reads are single statements) and
/// truncates the file to zero. Best effort: a failed checkpoint is retried
/// after the next commit.
pub(super) struct Bound {
    /// The WAL file (`None`: no policy).
    pub(super) wal: Option<PathBuf>,
    /// WAL size above which a commit runs a truncating checkpoint.
    pub(super) limit: u64,
}

impl Bound {
    fn apply(&self, conn: &Connection) {
        let Some(wal) = self.wal.as_deref() else {
            return;
        };
        let size = std::fs::metadata(wal).map_or(0, |m| m.len());
        if size <= self.limit {
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
}

/// The handle to the writer thread. Dropping it lets the thread finish the
/// jobs already queued, then joins it (the write connection is closed when
/// this returns).
pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    #[cfg(test)]
    fault: Arc<parking_lot::Mutex<Option<FaultHook>>>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(super) fn spawn(
        conn: Connection,
        records: Arc<RecordCodec>,
        bound: Bound,
    ) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel();
        #[cfg(test)]
        let fault: Arc<parking_lot::Mutex<Option<FaultHook>>> = Arc::default();
        let thread = Thread {
            conn,
            records,
            bound,
            #[cfg(test)]
            fault: Arc::clone(&fault),
        };
        let thread = std::thread::Builder::new()
            .name("spike-db-writer".to_owned())
            .spawn(move || thread.run(&queue))
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
            #[cfg(test)]
            fault,
        })
    }

    /// Queues `write`; the returned write resolves once it is durable, or
    /// with the error that stopped it.
    pub(super) fn submit(&self, write: Write) -> PendingWrite<()> {
        let (reply, outcome) = oneshot::channel();
        self.send(Job::Write(write, Waiter::Unit(reply)));
        PendingWrite::queued(outcome)
    }

    /// Queues `write` and resolves to whether it affected a row.
    pub(super) fn submit_affected(&self, write: Write) -> PendingWrite<bool> {
        let (reply, outcome) = oneshot::channel();
        self.send(Job::Write(write, Waiter::Affected(reply)));
        PendingWrite::queued(outcome)
    }

    /// Commits what is queued, then checkpoints and truncates the WAL.
    pub(super) fn checkpoint(&self) -> PendingWrite<()> {
        let (reply, outcome) = oneshot::channel();
        self.send(Job::Checkpoint(reply));
        PendingWrite::queued(outcome)
    }

    /// Sends `job`; when the thread is gone the job (and its reply channel)
    /// is dropped, which its waiter sees as "the writer stopped".
    fn send(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(job);
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the database writer thread panicked");
        }
    }
}

/// The writer thread's state.
struct Thread {
    conn: Connection,
    records: Arc<RecordCodec>,
    bound: Bound,
    #[cfg(test)]
    fault: Arc<parking_lot::Mutex<Option<FaultHook>>>,
}

impl Thread {
    fn run(self, queue: &mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Ok(first) = queue.recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            for job in jobs {
                match job {
                    Job::Write(write, waiter) => self.stage(&mut batch, write, waiter),
                    Job::Checkpoint(reply) => {
                        self.commit(&mut batch);
                        let _ = reply.send(self.checkpoint());
                    }
                    #[cfg(test)]
                    Job::Raw(f) => {
                        self.commit(&mut batch);
                        f(&self.conn);
                    }
                }
            }
            self.commit(&mut batch);
        }
    }

    /// Stages `write` in the open transaction (beginning one when none is
    /// open); `batch` holds the waiters of the writes staged in it.
    fn stage(&self, batch: &mut Vec<(Waiter, bool)>, write: Write, waiter: Waiter) {
        if batch.is_empty()
            && let Err(e) = self.begin()
        {
            waiter.fail(e);
            return;
        }
        // A panic in a write's step (a bug) must not stop the thread that every later
        // write needs: it fails the batch like a database error.
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.apply(write)))
            .unwrap_or_else(|_| {
                tracing::error!(
                    "a write panicked in the database writer; its batch is rolled back"
                );
                Err(StoreError::Database(
                    "internal error while writing; nothing of this batch was written".into(),
                ))
            });
        match applied {
            Ok(affected) => batch.push((waiter, affected)),
            Err(e @ (StoreError::Database(_) | StoreError::StorageFull(_))) => {
                // The transaction may be rolled back already, or unusable.
                let cause = BatchError::of(&e);
                self.roll_back();
                fail_all(batch, &cause);
                waiter.fail(e);
            }
            Err(e) => {
                // Failed before writing anything: it fails alone.
                waiter.fail(e);
                if batch.is_empty() {
                    self.roll_back();
                }
            }
        }
    }

    /// `BEGIN IMMEDIATE`, after rolling back a transaction left open by a
    /// failed batch (it may hold that batch's writes).
    fn begin(&self) -> Result<(), StoreError> {
        self.discard_leftover()?;
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    /// Rolls back a transaction left open by a failed `ROLLBACK`; its error when that
    /// fails too.
    fn discard_leftover(&self) -> Result<(), StoreError> {
        if !self.conn.is_autocommit() {
            self.conn.execute_batch("ROLLBACK")?;
        }
        Ok(())
    }

    /// Best-effort `ROLLBACK` of the open transaction. When it fails, the
    /// transaction stays open and [`Thread::begin`] rolls it back.
    fn roll_back(&self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// Runs one write on the connection; whether it affected a row.
    fn apply(&self, write: Write) -> Result<bool, StoreError> {
        match write {
            Write::Secret { path, update } => {
                let current = load_secret_with(&self.records, &self.conn, &path)?;
                let (secret, _pruned) = update(current)?;
                // The row is rewritten whole, so pruned versions are gone with it.
                let sealed = self.records.seal_secret(&path, &secret)?;
                upsert_sealed(&self.conn, &sealed)?;
                Ok(true)
            }
            Write::PutPolicy(SealedPolicy { id, record }) => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO policies (id, nonce, ciphertext) VALUES (?1, ?2, ?3)
                         ON CONFLICT (id) DO UPDATE SET nonce = excluded.nonce,
                           ciphertext = excluded.ciphertext",
                    )?
                    .execute(params![id, record.nonce.as_slice(), record.ciphertext])?;
                Ok(true)
            }
            Write::DeletePolicy(id) => Ok(self
                .conn
                .prepare_cached("DELETE FROM policies WHERE id = ?1")?
                .execute([&id])?
                > 0),
        }
    }

    /// Commits the open transaction and answers every waiter of `batch`:
    /// all succeed, or all fail and nothing of the batch persists.
    fn commit(&self, batch: &mut Vec<(Waiter, bool)>) {
        if batch.is_empty() {
            self.roll_back();
            return;
        }
        let result = if self.conn.is_autocommit() {
            Err(BatchError::Other(
                "the write transaction was rolled back".to_owned(),
            ))
        } else {
            self.commit_once()
        };
        match result {
            Ok(()) => {
                for (waiter, affected) in batch.drain(..) {
                    waiter.succeed(affected);
                }
                self.bound.apply(&self.conn);
            }
            Err(cause) => {
                self.roll_back();
                fail_all(batch, &cause);
            }
        }
        #[cfg(test)]
        drop(self.fault(FaultPoint::AfterCommit));
    }

    /// One `COMMIT` (in tests, a fault may take its place).
    fn commit_once(&self) -> Result<(), BatchError> {
        #[cfg(test)]
        if let Some(e) = self.fault(FaultPoint::BeforeCommit) {
            // In place of a COMMIT that failed (e.g. a WAL write or fsync
            // error), which SQLite may or may not have rolled back.
            return Err(BatchError::of(&e));
        }
        self.conn
            .execute_batch("COMMIT")
            .map_err(|e| BatchError::of(&StoreError::from(e)))
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        self.discard_leftover()?;
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            return Err(StoreError::Database("WAL checkpoint was blocked".into()));
        }
        Ok(())
    }

    #[cfg(test)]
    fn fault(&self, point: FaultPoint) -> Option<StoreError> {
        let hook = self.fault.lock().clone();
        hook.and_then(|h| h(point))
    }
}

/// Fails every waiter of `batch` with `cause`.
fn fail_all(batch: &mut Vec<(Waiter, bool)>, cause: &BatchError) {
    for (waiter, _) in batch.drain(..) {
        waiter.fail(cause.to_error());
    }
}

/// Why a batch failed, handed to each of its waiters.
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

/// Where the test-only fault hook is called.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FaultPoint {
    /// In place of `COMMIT`; an error returned here fails the batch.
    BeforeCommit,
    /// After a batch was resolved (committed or failed).
    AfterCommit,
}

/// The test-only fault hook.
#[cfg(test)]
pub(super) type FaultHook = Arc<dyn Fn(FaultPoint) -> Option<StoreError> + Send + Sync>;

#[cfg(test)]
impl Writer {
    /// Installs (or with `None` removes) the fault hook.
    pub(super) fn set_fault(&self, hook: Option<FaultHook>) {
        *self.fault.lock() = hook;
    }

    /// Runs `f` on the write connection, on the writer thread, after what is
    /// queued before it was committed, and returns its result.
    pub(super) fn on_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(Job::Raw(Box::new(move |conn| {
            let _ = tx.send(f(conn));
        })));
        rx.recv().expect("the writer thread ran the job")
    }

    /// Holds the writer thread until the returned sender is used or dropped,
    /// so that the jobs queued meanwhile are staged in one batch.
    pub(super) fn hold(&self) -> std::sync::mpsc::Sender<()> {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        self.send(Job::Raw(Box::new(move |_| {
            let _ = rx.recv();
        })));
        tx
    }
}
