//! The PostgreSQL backend of `postgres` mode: several Nexus instances share one store.
//!
//! It stores the same encrypted rows as the SQLite backend (the shared
//! [`records`](crate::store::records) format): PostgreSQL sees HMAC row ids and AES-GCM
//! ciphertext, never a path, a policy name, a value or a time in plaintext.
//!
//! # Layout
//!
//! - `connect`: the connection string's rules and the verifying TLS configuration.
//! - `schema`: the tables, versioned migrations and the key check, under advisory locks.
//! - `listener`: the policy-change listener (`LISTEN`/`NOTIFY` plus a periodic re-read)
//!   that keeps every instance's policy cache current.
//! - this module: [`Database`] (the connection pool and its health, usable while sealed)
//!   and [`PostgresBackend`] (the [`Backend`] built on it once the root key is known).
//!
//! # Guarantees
//!
//! - **Per-secret linearizable writes across instances.** A secret write is one
//!   transaction: it takes a transaction-scoped advisory lock derived from the secret's row
//!   id, reads the row, applies the change (next version, pruning) and writes the row back.
//!   Two instances writing one path queue on that lock, so each write builds on the one
//!   committed before it: versions are distinct and consecutive, none lost. A write that
//!   waits longer than `postgres.timeout` for the lock fails with 503 and changes nothing.
//! - **An acknowledged write is committed** (and, with a synchronous standby, replicated).
//!   A write that fails before its `COMMIT` was sent changed nothing; if the connection is
//!   lost or times out at `COMMIT`, the outcome is unknown and the error says so.
//! - **Bounded retries.** Taking a connection and starting the transaction are retried
//!   ([`ATTEMPTS`] attempts) when PostgreSQL is unreachable; once the change has been
//!   applied to the row read, nothing is retried.
//! - **Timeouts.** Every operation is bounded by `postgres.timeout` on the client side (a
//!   dead server cannot hang a request) and on the server side (`statement_timeout`,
//!   `lock_timeout`). A connection abandoned mid-operation is closed, never reused.
//! - **No cache of secrets.** Every read is a primary-key lookup; only policies are cached,
//!   and the listener invalidates them across instances.

mod connect;
mod listener;
mod schema;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use parking_lot::Mutex;
use spike_crypto::RootKey;

use super::records::{RecordCodec, SealedSecret};
use super::{Backend, BackendKind, PendingWrite, PolicySink, SecretUpdate, StoreError};
use crate::model::{Policy, Secret, Version};

pub use listener::POLL as POLICY_POLL;
pub use schema::SCHEMA_VERSION;

/// Attempts at taking a connection and starting a write before giving up (503).
pub const ATTEMPTS: u32 = 3;
/// How often the health monitor checks the database (reachable, initialized).
pub const MONITOR_INTERVAL: Duration = Duration::from_secs(2);
/// The advisory-lock class (first key of the two-key form) of per-secret write locks.
const SECRET_LOCK_CLASS: i32 = 0x5350_4b53; // "SPKS"
/// The notification channel of policy changes.
pub(crate) const POLICY_CHANNEL: &str = "spike_policies";

/// The settings of a [`Database`].
pub struct Settings<'a> {
    /// The name of the credential the connection string came from (for messages).
    pub credential: &'a str,
    /// The connection string (may hold a password: never logged).
    pub conninfo: &'a str,
    /// The CA bundle that verifies the server (TCP hosts).
    pub ca_file: Option<&'a Path>,
    /// Pooled connections.
    pub pool_size: usize,
    /// The bound of every operation.
    pub timeout: Duration,
}

/// Checks a connection string and CA file against the rules of the `connect` module without
/// connecting (`spike-nexus check-config`).
///
/// # Errors
/// [`StoreError::Config`] naming the rule broken (never the string).
pub fn check_connection(
    credential: &str,
    conninfo: &str,
    ca_file: Option<&Path>,
    timeout: Duration,
) -> Result<(), StoreError> {
    connect::parse(credential, conninfo, ca_file, timeout).map(drop)
}

/// What the health monitor last saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbHealth {
    /// The last check reached the database.
    pub reachable: bool,
    /// The key-check row exists: the cluster was bootstrapped (from the shared store).
    pub initialized: bool,
    /// Why the last check failed (no secret values, no connection string).
    pub error: Option<String>,
    /// At least one check has finished.
    pub checked: bool,
}

/// The connection pool, its own small runtime, and the health monitor. Usable while
/// sealed: it needs no key. Cheap to share behind an `Arc`.
pub struct Database {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

pub(super) struct Shared {
    pool: Pool,
    /// For the listener's own connection (not pooled).
    pg: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    timeout: Duration,
    health: Mutex<DbHealth>,
    migrated: AtomicBool,
    /// Writes to one secret queue here before they take a connection, so that contention on
    /// one path pins one pooled connection per instance, not one per waiting write.
    stripes: Vec<tokio::sync::Mutex<()>>,
}

/// The number of [`Shared::stripes`].
const STRIPES: usize = 256;

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("health", &*self.shared.health.lock())
            .finish_non_exhaustive()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Maps a tokio-postgres error: connection trouble, timeouts, lock waits and a read-only
/// server (a standby) are [`StoreError::Unavailable`] (503, retry later); the rest is
/// [`StoreError::Database`]. Neither holds bound values: every parameter is a row id or
/// ciphertext.
pub(super) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    let Some(db) = e.as_db_error() else {
        return StoreError::Unavailable(format!("PostgreSQL: {e}"));
    };
    let code = db.code().code();
    let text = format!("PostgreSQL: {} (SQLSTATE {code})", db.message());
    // The server is gone or is not the primary: connect elsewhere.
    let unreachable = code.starts_with("08") // connection exception
        || code.starts_with("57P") // admin shutdown, crash shutdown, cannot connect now
        || code == "25006"; // read-only transaction: a standby
    // The server answers but could not finish this one in time: nothing was written.
    let busy = code.starts_with("53") // insufficient resources
        || matches!(code, "40001" | "40P01" | "55P03" | "57014");
    if unreachable {
        StoreError::Unavailable(text)
    } else if busy {
        StoreError::Busy(text)
    } else {
        StoreError::Database(text)
    }
}

fn pool_error(e: deadpool_postgres::PoolError, timeout: Duration) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(e),
        deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
            StoreError::Busy(format!(
                "no pooled PostgreSQL connection free within {timeout:?}"
            ))
        }
        deadpool_postgres::PoolError::Timeout(_) => {
            StoreError::Unavailable(format!("no PostgreSQL connection within {timeout:?}"))
        }
        other => StoreError::Unavailable(format!("PostgreSQL connection pool: {other}")),
    }
}

/// A pooled connection that is closed, not returned to the pool, unless the operation
/// using it finished cleanly (no transaction left open, no request in flight).
struct Conn {
    obj: Option<Object>,
    clean: bool,
}

impl Conn {
    fn client(&self) -> &deadpool_postgres::ClientWrapper {
        // `obj` is only taken in `Drop`.
        self.obj
            .as_deref()
            .unwrap_or_else(|| unreachable!("connection used after drop"))
    }

    fn client_mut(&mut self) -> &mut tokio_postgres::Client {
        match self.obj.as_deref_mut() {
            Some(wrapper) => wrapper,
            None => unreachable!("connection used after drop"),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.clean
            && let Some(obj) = self.obj.take()
        {
            drop(Object::take(obj));
        }
    }
}

impl Shared {
    async fn conn(&self) -> Result<Conn, StoreError> {
        let obj = self
            .pool
            .get()
            .await
            .map_err(|e| pool_error(e, self.timeout))?;
        Ok(Conn {
            obj: Some(obj),
            clean: false,
        })
    }

    /// Runs `op` on a pooled connection, bounded by the timeout; the connection goes back
    /// to the pool only when `op` succeeded or failed with a logical (non-connection) error
    /// without leaving a transaction open.
    async fn with_conn<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = (Conn, Result<T, StoreError>)>,
    {
        let timeout = self.op_timeout();
        let run = async {
            let conn = self.conn().await?;
            let (mut conn, outcome) = op(conn).await;
            conn.clean = !matches!(
                outcome,
                Err(StoreError::Unavailable(_) | StoreError::Busy(_))
            );
            outcome
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::Unavailable(format!(
                "PostgreSQL did not answer within {timeout:?}"
            ))),
        }
    }

    /// The client-side bound of one operation: above the server-side `statement_timeout`
    /// and `lock_timeout` (= `timeout`), so that a server that answers reports its own
    /// timeout first; past it, the server is taken as gone.
    fn op_timeout(&self) -> Duration {
        self.timeout.saturating_mul(2)
    }

    /// Brings the schema up to date, once per process (migrations are idempotent under their
    /// lock, so a race between two callers only repeats a no-op).
    async fn ensure_migrated(&self, conn: &mut Conn) -> Result<(), StoreError> {
        if !self.migrated.load(Ordering::Acquire) {
            schema::migrate(conn.client_mut()).await?;
            self.migrated.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// One health check: migrate when not done yet, then read whether the key-check row
    /// exists.
    async fn check(&self) -> Result<bool, StoreError> {
        self.with_conn(|mut conn| async move {
            let outcome = async {
                self.ensure_migrated(&mut conn).await?;
                schema::has_key_check(&**conn.client()).await
            }
            .await;
            (conn, outcome)
        })
        .await
    }

    fn record(&self, outcome: &Result<bool, StoreError>) {
        let mut health = self.health.lock();
        let was = health.clone();
        match outcome {
            Ok(initialized) => {
                *health = DbHealth {
                    reachable: true,
                    initialized: *initialized,
                    error: None,
                    checked: true,
                };
            }
            // The pool was saturated or a statement timed out: says nothing about reachability.
            Err(StoreError::Busy(_)) if health.checked => return,
            Err(e) => {
                let newer = matches!(e, StoreError::UnsupportedSchema(_));
                health.reachable = newer;
                // A schema this binary cannot read: whether the cluster was bootstrapped is
                // unknown, so it counts as initialized (a bootstrap must not re-key it).
                health.initialized |= newer;
                health.error = Some(e.to_string());
                health.checked = true;
            }
        }
        if was.reachable != health.reachable || was.error != health.error {
            match &health.error {
                None => tracing::info!("PostgreSQL reachable"),
                Some(error) => tracing::warn!(error = %error, "PostgreSQL check failed: {error}"),
            }
        }
    }

    /// Marks the database unreachable after an operation failed to reach it (not after a
    /// lock wait or a saturated pool), and drops the pooled connections, which may point at
    /// a server that is gone or no longer the primary.
    fn note(&self, e: &StoreError) {
        if let StoreError::Unavailable(why) = e {
            let was = {
                let mut health = self.health.lock();
                let was = health.reachable;
                health.reachable = false;
                health.error = Some(e.to_string());
                was
            };
            if was {
                tracing::warn!(error = %why, "PostgreSQL unreachable: {why}");
                self.pool.retain(|_, _| false);
            }
        }
    }
}

impl Database {
    /// Checks the settings and starts the pool (connections are made on demand) and the
    /// health monitor, which migrates the schema as soon as PostgreSQL answers.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] for a connection string or CA file that breaks the rules
    /// (module `connect`); [`StoreError::Database`] when the runtime cannot start.
    pub fn start(settings: &Settings<'_>) -> Result<Database, StoreError> {
        let connection = connect::parse(
            settings.credential,
            settings.conninfo,
            settings.ca_file,
            settings.timeout,
        )?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("spike-pg")
            .enable_all()
            .build()
            .map_err(|e| {
                StoreError::Database(format!("cannot start the PostgreSQL runtime: {e}"))
            })?;
        let manager = Manager::from_config(
            connection.pg.clone(),
            connection.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let timeout = settings.timeout;
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| StoreError::Database(format!("PostgreSQL pool: {e}")))?;
        let shared = Arc::new(Shared {
            pool,
            pg: connection.pg,
            tls: connection.tls,
            timeout,
            health: Mutex::new(DbHealth::default()),
            migrated: AtomicBool::new(false),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        });
        let monitor = Arc::downgrade(&shared);
        runtime.spawn(async move {
            loop {
                let Some(shared) = monitor.upgrade() else {
                    return;
                };
                let outcome = shared.check().await;
                shared.record(&outcome);
                drop(shared);
                tokio::time::sleep(MONITOR_INTERVAL).await;
            }
        });
        Ok(Database {
            shared,
            runtime: Some(runtime),
        })
    }

    /// What the monitor last saw (it checks every [`MONITOR_INTERVAL`]).
    pub fn health(&self) -> DbHealth {
        self.shared.health.lock().clone()
    }

    /// Checks now, blocking the calling thread (not an async worker), and returns the result.
    pub fn check_now(&self) -> DbHealth {
        let shared = Arc::clone(&self.shared);
        let outcome = self.block_on(async move {
            let outcome = shared.check().await;
            shared.record(&outcome);
            Ok(())
        });
        if let Err(e) = outcome {
            self.shared.note(&e);
        }
        self.health()
    }

    /// Runs `fut` on the database's runtime and blocks the calling thread until it is done.
    /// Callers on an async runtime use `spawn_blocking`.
    fn block_on<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let handle = self.spawn(fut)?;
        futures::executor::block_on(handle)
            .map_err(|_| StoreError::Database("a PostgreSQL task failed".into()))?
    }

    fn spawn<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<tokio::task::JoinHandle<T>, StoreError> {
        match &self.runtime {
            Some(rt) => Ok(rt.spawn(fut)),
            None => Err(StoreError::Database(
                "the PostgreSQL runtime stopped".into(),
            )),
        }
    }

    /// Runs a read on a pooled connection, blocking.
    fn read<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: Future<Output = (Conn, Result<T, StoreError>)> + Send,
    {
        let shared = Arc::clone(&self.shared);
        let outcome = self.block_on(async move { shared.with_conn(op).await });
        if let Err(e) = &outcome {
            self.shared.note(e);
        }
        outcome
    }
}

/// The `postgres` backend: a [`Database`] plus the record keys of the root key.
pub struct PostgresBackend {
    db: Arc<Database>,
    records: Arc<RecordCodec>,
    listener: listener::Handle,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresBackend(<keys redacted>)")
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        self.listener.stop();
    }
}

impl PostgresBackend {
    /// Migrates the schema if needed, checks `key` against the key-check row (writing it
    /// into an empty store, under an advisory lock: the first key wins cluster-wide), and
    /// starts the policy listener. Blocks: call it from a thread that may block.
    ///
    /// # Errors
    ///
    /// [`StoreError::WrongRootKey`], [`StoreError::UnsupportedSchema`],
    /// [`StoreError::Integrity`] (records without a key check),
    /// [`StoreError::Unavailable`] and [`StoreError::Database`].
    pub fn open(db: &Arc<Database>, key: &RootKey) -> Result<PostgresBackend, StoreError> {
        let records = Arc::new(RecordCodec::new(key)?);
        let shared = Arc::clone(&db.shared);
        let codec = Arc::clone(&records);
        let opened = db.block_on(async move {
            let mut conn = shared.conn().await?;
            shared.ensure_migrated(&mut conn).await?;
            schema::check_key(conn.client_mut(), &codec).await?;
            conn.clean = true;
            Ok(())
        });
        if let Err(e) = &opened {
            db.shared.note(e);
        }
        opened?;
        let listener = listener::Handle::start(db, Arc::clone(&records))?;
        Ok(PostgresBackend {
            db: Arc::clone(db),
            records,
            listener,
        })
    }

    /// The database this backend uses.
    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }
}

/// The per-secret write lock's second key: the first four bytes of the row id (an HMAC:
/// uniformly spread; two secrets sharing a key only wait for each other).
fn lock_key(id: &[u8]) -> i32 {
    let mut four = [0u8; 4];
    four.copy_from_slice(&id[..4]);
    i32::from_be_bytes(four)
}

const SELECT_SECRET: &str = "SELECT nonce, ciphertext FROM spike.secrets WHERE id = $1";
const UPSERT_SECRET: &str =
    "INSERT INTO spike.secrets (id, nonce, ciphertext, path_nonce, path_ciphertext)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (id) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext,
       path_nonce = excluded.path_nonce, path_ciphertext = excluded.path_ciphertext,
       row_version = spike.secrets.row_version + 1";

/// Loads and opens the secret at `path`, whose row id is `id` ([`RecordCodec::secret_id`]).
async fn load_row(
    client: &deadpool_postgres::ClientWrapper,
    records: &RecordCodec,
    path: &str,
    id: &[u8],
) -> Result<Option<Secret>, StoreError> {
    let stmt = client
        .prepare_cached(SELECT_SECRET)
        .await
        .map_err(pg_error)?;
    let Some(row) = client.query_opt(&stmt, &[&id]).await.map_err(pg_error)? else {
        return Ok(None);
    };
    let nonce: Vec<u8> = row.try_get(0).map_err(pg_error)?;
    let ciphertext: Vec<u8> = row.try_get(1).map_err(pg_error)?;
    records.open_secret(path, id, &nonce, ciphertext).map(Some)
}

/// Begins a write transaction. READ COMMITTED is pinned (whatever the role's default): each
/// statement after the lock sees every commit made before the lock was granted.
const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

/// Commits without the server-side `statement_timeout`: cancelling a commit that waits for a
/// synchronous standby would make PostgreSQL report success for a commit that is only local.
/// The client-side bound still applies; past it, the outcome is unknown.
const COMMIT: &str = "SET LOCAL statement_timeout = 0; COMMIT";

/// Takes the connection and the per-secret lock and reads the row, retrying while
/// PostgreSQL is unreachable ([`ATTEMPTS`]). Returns the connection inside an open
/// transaction.
async fn begin_write(
    shared: &Shared,
    records: &RecordCodec,
    path: &str,
    id: &[u8],
) -> Result<(Conn, Option<Secret>), StoreError> {
    let key = lock_key(id);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let step = async {
            let conn = shared.conn().await?;
            let client = conn.client();
            client.batch_execute(BEGIN).await.map_err(pg_error)?;
            let lock = client
                .prepare_cached("SELECT pg_advisory_xact_lock($1, $2)")
                .await
                .map_err(pg_error)?;
            client
                .execute(&lock, &[&SECRET_LOCK_CLASS, &key])
                .await
                .map_err(pg_error)?;
            // On an error the connection is closed with its transaction.
            let current = load_row(client, records, path, id).await?;
            Ok::<_, StoreError>((conn, current))
        };
        match step.await {
            Ok(started) => return Ok(started),
            Err(StoreError::Unavailable(why)) if attempt < ATTEMPTS => {
                shared.note(&StoreError::Unavailable(why.clone()));
                tracing::debug!(attempt, error = %why, "PostgreSQL write: retrying");
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Where a write stands, for the error of a write cut off by the client-side timeout.
#[derive(Default)]
struct Progress(AtomicBool);

impl Progress {
    fn commit_sent(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// The error of a write that did not finish within `bound`.
    fn timed_out(&self, bound: Duration) -> StoreError {
        if self.0.load(Ordering::Acquire) {
            StoreError::OutcomeUnknown(format!(
                "PostgreSQL did not confirm the commit within {bound:?}: the write may or may \
                 not have been applied; read it back before retrying"
            ))
        } else {
            StoreError::Unavailable(format!(
                "PostgreSQL did not answer within {bound:?}; nothing was committed"
            ))
        }
    }
}

async fn write_secret(
    shared: Arc<Shared>,
    records: Arc<RecordCodec>,
    path: String,
    update: SecretUpdate<'static>,
    progress: Arc<Progress>,
) -> Result<(), StoreError> {
    let id = records.secret_id(&path);
    let stripe = &shared.stripes[usize::from(id[0]) % STRIPES];
    let _queued = stripe.lock().await;
    let (mut conn, current) = begin_write(&shared, &records, &path, &id).await?;
    let client = conn.client();
    let staged = update(current).and_then(|(secret, _pruned)| {
        // The row is rewritten whole, so pruned versions are gone with it.
        records.seal_secret(&path, &secret)
    });
    let sealed = match staged {
        Ok(sealed) => sealed,
        Err(e) => {
            // A logical refusal (not found, invalid): nothing was written.
            client.batch_execute("ROLLBACK").await.map_err(pg_error)?;
            conn.clean = true;
            return Err(e);
        }
    };
    let SealedSecret {
        id,
        record,
        path: sealed_path,
    } = &sealed;
    let stmt = client
        .prepare_cached(UPSERT_SECRET)
        .await
        .map_err(pg_error)?;
    client
        .execute(
            &stmt,
            &[
                id,
                &record.nonce.as_slice(),
                &record.ciphertext,
                &sealed_path.nonce.as_slice(),
                &sealed_path.ciphertext,
            ],
        )
        .await
        .map_err(pg_error)?;
    commit(&mut conn, &progress).await
}

/// Sends `COMMIT`. An error from here on leaves the outcome unknown: the server may have
/// committed before the connection broke.
async fn commit(conn: &mut Conn, progress: &Progress) -> Result<(), StoreError> {
    progress.commit_sent();
    match conn.client().batch_execute(COMMIT).await {
        Ok(()) => {
            conn.clean = true;
            Ok(())
        }
        Err(e) => {
            let e = StoreError::OutcomeUnknown(format!(
                "the commit was not confirmed ({}): the write may or may not have been \
                 applied; read it back before retrying",
                pg_error(e)
            ));
            tracing::warn!(error = %e, "PostgreSQL write: {e}");
            Err(e)
        }
    }
}

/// Bumps the policy epoch and notifies every instance, inside the policy write's transaction
/// (the notification is delivered on commit only).
async fn policy_changed(client: &deadpool_postgres::ClientWrapper) -> Result<i64, StoreError> {
    let epoch: i64 = client
        .query_one(
            "UPDATE spike.changes SET policy_epoch = policy_epoch + 1 WHERE id = 1
             RETURNING policy_epoch",
            &[],
        )
        .await
        .map_err(pg_error)?
        .try_get(0)
        .map_err(pg_error)?;
    client
        .execute(
            "SELECT pg_notify($1, $2)",
            &[&POLICY_CHANNEL, &epoch.to_string()],
        )
        .await
        .map_err(pg_error)?;
    Ok(epoch)
}

/// Rows of `spike.policies` and the epoch they were read at.
type PolicyRows = (i64, Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>);

/// Runs a write within the client-side bound: past it, the error says whether its commit
/// had been sent ([`Progress`]). A failure to reach the database is noted in the health.
async fn bounded_write<T, F, Fut>(shared: Arc<Shared>, op: F) -> Result<T, StoreError>
where
    F: FnOnce(Arc<Shared>, Arc<Progress>) -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let bound = shared.op_timeout();
    let progress = Arc::new(Progress::default());
    let run = op(Arc::clone(&shared), Arc::clone(&progress));
    let outcome = match tokio::time::timeout(bound, run).await {
        Ok(outcome) => outcome,
        Err(_) => Err(progress.timed_out(bound)),
    };
    if let Err(e) = &outcome {
        shared.note(e);
    }
    outcome
}

impl PostgresBackend {
    /// Runs a bounded write on the database runtime and blocks until it is done.
    fn write<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>, Arc<Progress>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let shared = Arc::clone(&self.db.shared);
        self.db.block_on(bounded_write(shared, op))
    }

    /// Applies a policy snapshot read after this instance's own policy write (decrypted here,
    /// on the calling thread), or, when it could not be read, makes the listener re-read.
    fn refreshed(&self, rows: Option<PolicyRows>) {
        let gate = self.listener.gate();
        match rows.map(|(epoch, rows)| (epoch, listener::open_rows(&self.records, rows))) {
            Some((epoch, Ok(policies))) => {
                gate.apply(epoch, policies);
            }
            Some((_, Err(e))) => {
                tracing::warn!(error = %e, "policy cache refresh after a write failed: {e}");
                gate.force_reload();
            }
            None => gate.force_reload(),
        }
    }
}

/// The end of a policy write: bump the epoch (notifying every instance), commit, then read
/// the policies back for this instance's cache. The commit decides the outcome; a failed
/// read-back only leaves the refresh to the listener.
async fn finish_policy_write(
    mut conn: Conn,
    progress: &Progress,
) -> Result<Option<PolicyRows>, StoreError> {
    policy_changed(conn.client()).await?;
    commit(&mut conn, progress).await?;
    match listener::read_rows(conn.client()).await {
        Ok(rows) => Ok(Some(rows)),
        Err(e) => {
            tracing::debug!(error = %e, "policy read-back after a write failed");
            conn.clean = false;
            Ok(None)
        }
    }
}

impl Backend for PostgresBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Postgres
    }

    fn load_secret(&self, path: &str) -> Result<Option<Secret>, StoreError> {
        let records = Arc::clone(&self.records);
        let path = path.to_owned();
        self.db.read(move |conn| async move {
            let id = records.secret_id(&path);
            let outcome = load_row(conn.client(), &records, &path, &id).await;
            (conn, outcome)
        })
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
        let (tx, rx) = futures::channel::oneshot::channel();
        let shared = Arc::clone(&self.db.shared);
        let records = Arc::clone(&self.records);
        let path = path.to_owned();
        let spawned = self.db.spawn(async move {
            let outcome = bounded_write(shared, |shared, progress| {
                write_secret(shared, records, path, update, progress)
            })
            .await;
            // The caller may have gone away; it logs the outcome when it is there.
            let _ = tx.send(outcome);
        });
        match spawned {
            Ok(_) => PendingWrite::queued(rx),
            Err(e) => PendingWrite::ready(Err(e)),
        }
    }

    fn queues_writes(&self) -> bool {
        true
    }

    fn reads_block(&self) -> bool {
        true
    }

    fn shared(&self) -> bool {
        true
    }

    fn policies_fresh(&self) -> bool {
        self.listener.gate().fresh(self.db.shared.timeout)
    }

    fn list_secret_paths(&self) -> Result<Vec<String>, StoreError> {
        // The rows come back from the database runtime; decryption runs on this (blocking)
        // thread, so a large listing never holds up the runtime's I/O.
        let rows = self.db.read(move |conn| async move {
            let outcome = async {
                let rows = conn
                    .client()
                    .query(
                        "SELECT id, path_nonce, path_ciphertext FROM spike.secrets",
                        &[],
                    )
                    .await
                    .map_err(pg_error)?;
                rows.iter()
                    .map(|row| {
                        Ok((
                            row.try_get::<_, Vec<u8>>(0).map_err(pg_error)?,
                            row.try_get::<_, Vec<u8>>(1).map_err(pg_error)?,
                            row.try_get::<_, Vec<u8>>(2).map_err(pg_error)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()
            }
            .await;
            (conn, outcome)
        })?;
        let mut paths = Vec::with_capacity(rows.len());
        for (id, nonce, ciphertext) in rows {
            paths.push(self.records.open_secret_path(&id, &nonce, ciphertext)?);
        }
        paths.sort();
        Ok(paths)
    }

    fn load_policies(&self) -> Result<Vec<Policy>, StoreError> {
        let (_, rows) = self.db.read(move |conn| async move {
            let outcome = listener::read_rows(conn.client()).await;
            (conn, outcome)
        })?;
        listener::open_rows(&self.records, rows)
    }

    fn store_policy(&self, policy: &Policy) -> Result<(), StoreError> {
        let sealed = self.records.seal_policy(policy)?;
        let rows = self.write(move |shared, progress| async move {
            let conn = shared.conn().await?;
            let client = conn.client();
            client.batch_execute(BEGIN).await.map_err(pg_error)?;
            client
                .execute(
                    "INSERT INTO spike.policies (id, nonce, ciphertext) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO UPDATE SET nonce = excluded.nonce,
                       ciphertext = excluded.ciphertext,
                       row_version = spike.policies.row_version + 1",
                    &[
                        &sealed.id,
                        &sealed.record.nonce.as_slice(),
                        &sealed.record.ciphertext,
                    ],
                )
                .await
                .map_err(pg_error)?;
            finish_policy_write(conn, &progress).await
        })?;
        self.refreshed(rows);
        Ok(())
    }

    fn delete_policy(&self, name: &str) -> Result<bool, StoreError> {
        let id = self.records.policy_id(name);
        let (deleted, rows) = self.write(move |shared, progress| async move {
            let mut conn = shared.conn().await?;
            let client = conn.client();
            client.batch_execute(BEGIN).await.map_err(pg_error)?;
            let deleted = client
                .execute("DELETE FROM spike.policies WHERE id = $1", &[&id])
                .await
                .map_err(pg_error)?;
            if deleted == 0 {
                client.batch_execute("ROLLBACK").await.map_err(pg_error)?;
                conn.clean = true;
                return Ok((false, None));
            }
            Ok((true, finish_policy_write(conn, &progress).await?))
        })?;
        if deleted {
            self.refreshed(rows);
        }
        Ok(deleted)
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        self.db.read(move |conn| async move {
            let outcome = async {
                conn.client()
                    .query_one(
                        "SELECT NOT (EXISTS (SELECT 1 FROM spike.secrets)
                                  OR EXISTS (SELECT 1 FROM spike.policies))",
                        &[],
                    )
                    .await
                    .map_err(pg_error)?
                    .try_get(0)
                    .map_err(pg_error)
            }
            .await;
            (conn, outcome)
        })
    }

    fn watch_policies(&self, sink: PolicySink) {
        self.listener.set_sink(sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_spread_and_errors_classify() {
        assert_eq!(lock_key(&[0x12, 0x34, 0x56, 0x78, 0xff]), 0x1234_5678);
        assert_eq!(lock_key(&[0xff; 32]), -1);
    }

    #[test]
    fn a_bad_connection_string_is_refused_before_anything_starts() {
        let e = Database::start(&Settings {
            credential: "nexus-db",
            conninfo: "host=db1 password=hunter2",
            ca_file: None,
            pool_size: 2,
            timeout: Duration::from_secs(1),
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("sslmode=require"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn an_unreachable_database_is_reported_not_hung() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::start(&Settings {
            credential: "nexus-db",
            conninfo: &format!("host={} port=1 user=x dbname=x", dir.path().display()),
            ca_file: None,
            pool_size: 2,
            timeout: Duration::from_millis(500),
        })
        .unwrap();
        let health = db.check_now();
        assert!(!health.reachable, "{health:?}");
        assert!(health.checked);
        assert!(health.error.unwrap().contains("PostgreSQL"));
        let db = Arc::new(db);
        let key = RootKey::from_bytes(&[7; 32]).unwrap();
        assert!(matches!(
            PostgresBackend::open(&db, &key),
            Err(StoreError::Unavailable(_))
        ));
    }
}
