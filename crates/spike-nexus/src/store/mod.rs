//! Persistence backends and the [`Store`] handle the API layer uses.
//!
//! - [`memory`]: process-memory backend (`memory` mode, lost on restart).
//! - [`lite`]: the no-op backend of `lite` mode (loads nothing, stores succeed).
//! - [`sqlite`]: the encrypted SQLite backend (`sqlite` mode, durable).
//! - [`postgres`]: the PostgreSQL backend (`postgres` mode: several Nexus instances share
//!   one store).
//! - [`records`]: the at-rest record layer every persistent backend shares
//!   (model types to sealed rows and back, on [`spike_crypto::RecordCipher`]).
//!
//! Backends are synchronous, except that secret writes come back as a
//! [`PendingWrite`] (SQLite queues them to its writer thread, and an async
//! caller awaits the commit without blocking a thread). Single-secret reads
//! are cheap (SQLite: a primary-key lookup on a free read connection,
//! normally in the page cache) and run inline; other blocking calls run on
//! `spawn_blocking`.
//! [`Store`] adds the model operations on top: one writer at a time
//! for secrets (load, modify, store under a lock) and an in-memory,
//! write-through cache of compiled policies, so access checks never touch the
//! database.

pub mod lite;
pub mod memory;
pub mod postgres;
pub mod records;
pub mod sqlite;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use thiserror::Error;
use time::OffsetDateTime;

pub use lite::LiteBackend;
pub use memory::MemoryBackend;
pub use postgres::{Database, PostgresBackend};
pub use sqlite::SqliteBackend;

use crate::model::{ModelError, Permission, Policy, Secret, SecretData, Version};

/// Which backend a [`Backend`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendKind {
    /// Process memory.
    Memory,
    /// Encrypted SQLite file.
    Sqlite,
    /// No-op store.
    Lite,
    /// Encrypted rows in PostgreSQL, shared by several instances.
    Postgres,
}

/// Errors of the store and its backends. They never contain secret values.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The secret, version or policy does not exist (HTTP 404).
    #[error("not found")]
    NotFound,
    /// The request violates a model rule (HTTP 400).
    #[error(transparent)]
    Invalid(#[from] ModelError),
    /// The root key does not open the database.
    #[error(
        "the root key does not open this database (key check failed): refusing to start with a different key"
    )]
    WrongRootKey,
    /// The database failed (I/O, locking, SQL); the message holds no secret values.
    #[error("database error: {0}")]
    Database(String),
    /// The storage is full (SQLite `SQLITE_FULL`: `write(2)` failed with `ENOSPC`, which
    /// SQLite's `unixWrite` reports as `SQLITE_FULL`); the message holds SQLite's reason and
    /// no secret values. Reads keep working.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// A record failed to encrypt or to decrypt (corrupted or tampered with).
    #[error("a stored record failed to encrypt or decrypt")]
    Crypto,
    /// A decrypted record is inconsistent with where it was stored.
    #[error("integrity check failed for {path}")]
    Integrity {
        /// The secret path or policy name (or table) concerned.
        path: String,
    },
    /// The database file was not created by this program or by a supported version of it.
    #[error("unsupported database: {0}")]
    UnsupportedSchema(String),
    /// The database cannot be reached or did not answer in time (PostgreSQL: connection
    /// lost, timeout, failover in progress). Nothing was acknowledged; Nexus reconnects by
    /// itself. The message says when a write's outcome is unknown.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database answered but the operation could not finish in time (a lock wait, a
    /// statement timeout, the connection pool exhausted): nothing was written (HTTP 503).
    #[error("database busy: {0}")]
    Busy(String),
    /// A write's `COMMIT` was sent but not confirmed (the connection broke or timed out): it
    /// may or may not have been applied. Never retried by Nexus; clients read back first.
    #[error("write outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The backend's configuration is unusable (a connection string or CA file that breaks
    /// the rules); the message never holds the connection string.
    #[error("{0}")]
    Config(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        // rusqlite messages hold SQL text and SQLite's reason, never bound values.
        // ENOSPC behind another code (an fsync or truncate failing with `SQLITE_IOERR_*`)
        // could only be told apart through `sqlite3_system_errno`, which needs `unsafe`;
        // those stay `Database`.
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            Self::StorageFull(e.to_string())
        } else {
            Self::Database(e.to_string())
        }
    }
}

/// The modification step of [`Backend::update_secret`]: the secret as
/// stored (`None` when absent) to the secret to store and the versions it
/// prunes.
pub type SecretUpdate<'a> =
    Box<dyn FnOnce(Option<Secret>) -> Result<(Secret, Vec<Version>), StoreError> + Send + 'a>;

/// Where a backend that watches shared storage hands every policy when they changed
/// elsewhere ([`Backend::watch_policies`]).
pub type PolicySink = Box<dyn Fn(Vec<Policy>) + Send + Sync>;

/// A write handed to a backend: it resolves once the write is durable, or
/// with the error that stopped it (nothing of it persists then). Await it
/// from async code, or [`PendingWrite::wait`] for it from a thread that may
/// block.
#[must_use = "a write is durable only once its PendingWrite resolves to Ok"]
pub struct PendingWrite<T = ()>(Pending<T>);

enum Pending<T> {
    /// Resolved already (backends without a writer thread).
    Ready(Option<Result<T, StoreError>>),
    /// Queued to a writer thread.
    Queued(futures::channel::oneshot::Receiver<Result<T, StoreError>>),
}

impl<T: Unpin> PendingWrite<T> {
    /// A write that is resolved already.
    pub fn ready(outcome: Result<T, StoreError>) -> Self {
        Self(Pending::Ready(Some(outcome)))
    }

    /// A write queued to a writer that answers on `outcome`.
    pub fn queued(outcome: futures::channel::oneshot::Receiver<Result<T, StoreError>>) -> Self {
        Self(Pending::Queued(outcome))
    }

    /// Blocks the calling thread until the write is resolved. Async code
    /// awaits the write instead.
    ///
    /// # Errors
    ///
    /// The error that stopped the write.
    pub fn wait(self) -> Result<T, StoreError> {
        futures::executor::block_on(self)
    }
}

impl<T> std::fmt::Debug for PendingWrite<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Pending::Ready(_) => "PendingWrite(ready)",
            Pending::Queued(_) => "PendingWrite(queued)",
        })
    }
}

impl<T: Unpin> std::future::Future for PendingWrite<T> {
    type Output = Result<T, StoreError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        match &mut self.get_mut().0 {
            Pending::Ready(outcome) => Poll::Ready(outcome.take().unwrap_or_else(|| {
                Err(StoreError::Database("write polled after it resolved".into()))
            })),
            Pending::Queued(rx) => match std::pin::Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(outcome)) => Poll::Ready(outcome),
                Poll::Ready(Err(_)) => Poll::Ready(Err(StoreError::Database(
                    "the database writer stopped before this write was committed; nothing was written"
                        .into(),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// Persistence. Synchronous except for [`Backend::update_secret`], which
/// hands back a [`PendingWrite`]; callers run the blocking methods on
/// `spawn_blocking`.
///
/// # Implementing a persistent backend
///
/// A backend (SQLite here; a networked SQL database such as PostgreSQL would
/// work the same way) provides only storage of opaque rows:
///
/// - two keyed tables, secrets (`id`, `nonce`, `ciphertext`, `path_nonce`,
///   `path_ciphertext`) and policies (`id`, `nonce`, `ciphertext`), where
///   `id` is a 32-byte primary key, plus one key-check row (`nonce`,
///   `ciphertext`);
/// - upsert by id, delete by id, lookup by id and a full scan;
/// - durability: [`Backend::store_secret`] and [`Backend::store_policy`]
///   return `Ok` only once the write is durable, and reads see durable
///   writes only ([`Backend::update_secret`] may also see the
///   backend's own staged writes, under the rule documented there);
/// - on open, the key check: when the key-check row exists, pass it to
///   [`RecordCodec::check_key`](records::RecordCodec::check_key); when it
///   does not and the tables are empty, store
///   [`RecordCodec::seal_key_check`](records::RecordCodec::seal_key_check);
///   when it does not but records exist, refuse with
///   [`StoreError::Integrity`].
///
/// Everything else comes from [`records::RecordCodec`], built from the root
/// key: row ids, sealing and opening of secrets, paths and policies, and
/// their integrity checks. A backend never sees a plaintext path, name,
/// value or time, and never handles a key. A writer thread with group commit
/// ([`Backend::update_secret`] answering a queued [`PendingWrite`]) is
/// optional: the default loads, modifies and stores at once.
///
/// The record format guarantees, for every backend alike:
///
/// - row ids are `HMAC-SHA256` of `"secret:" + path` or `"policy:" + name`
///   under a key derived from the root key: deterministic for one root key
///   (lookups by id), meaningless without it;
/// - payloads are AES-256-GCM under another derived key, with a fresh nonce
///   per write and associated data `kind || 0 || id`, so a row copied to
///   another id, or a secret's path record used as its secret record, fails
///   to open ([`StoreError::Crypto`]); an opened record that does not belong
///   to its id is [`StoreError::Integrity`];
/// - the key-check record tells a wrong root key
///   ([`StoreError::WrongRootKey`]) from corruption.
///
/// The format is pinned by a golden database test (`tests/it/store.rs`) and
/// known answers in `spike_crypto::at_rest`; a backend must not change it.
pub trait Backend: Send + Sync + 'static {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// Loads the secret at `path`; `None` when it does not exist. Sees
    /// durable writes only (never a staged, uncommitted one).
    fn load_secret(&self, path: &str) -> Result<Option<Secret>, StoreError>;
    /// Stores the whole secret. Durable when it returns `Ok` (SQLite:
    /// committed, WAL, synchronous=FULL). The `pruned` versions are gone from
    /// `secret` and must be gone from storage afterwards.
    fn store_secret(
        &self,
        path: &str,
        secret: &Secret,
        pruned: &[Version],
    ) -> Result<(), StoreError>;
    /// One load-modify-store step for the secret at `path`: `update` gets
    /// the secret as the writer sees it (`None` when absent) and returns the
    /// secret to store with the versions it prunes. The write is durable once
    /// the returned [`PendingWrite`] resolves to `Ok`.
    ///
    /// A backend with group commit may show `update` a write that is staged
    /// and not yet durable, but must then fail the new write when the
    /// commit of the one it builds on fails, so that a write reported as
    /// failed never persists inside another (docs/security.md#store). An
    /// error from `update` stores nothing. The default loads durable data
    /// and stores at once; callers serialize these steps
    /// ([`Store`] holds a lock around each).
    fn update_secret(&self, path: &str, update: SecretUpdate<'static>) -> PendingWrite {
        // Blocks: callers on an async runtime use `spawn_blocking` unless `queues_writes`.
        let outcome = self.load_secret(path).and_then(|current| {
            let (secret, pruned) = update(current)?;
            self.store_secret(path, &secret, &pruned)
        });
        PendingWrite::ready(outcome)
    }
    /// True when [`Backend::update_secret`] only queues the write to a writer thread and
    /// returns at once (SQLite); false when it writes before it returns (the default).
    fn queues_writes(&self) -> bool {
        false
    }
    /// True when reads wait on the network (PostgreSQL): then the API layer runs them on
    /// the blocking pool instead of inline.
    fn reads_block(&self) -> bool {
        false
    }
    /// True when other processes write this store too (PostgreSQL): then the backend keeps
    /// the [`Store`]'s policy cache itself, through the sink of
    /// [`Backend::watch_policies`], in commit order, also for this instance's own writes
    /// (the sink has seen a write when its call returns), and [`Store`] never edits the cache.
    fn shared(&self) -> bool {
        false
    }
    /// Whether the policy cache is known to be current (a shared store's listener has read
    /// the policy epoch recently). Access checks fail closed while it is not.
    fn policies_fresh(&self) -> bool {
        true
    }
    /// Registers where policies go when another writer of a shared store changed them.
    /// Backends that no other process writes (the default) never call it.
    fn watch_policies(&self, sink: PolicySink) {
        drop(sink);
    }
    /// Every secret path, sorted ascending (including fully deleted secrets).
    fn list_secret_paths(&self) -> Result<Vec<String>, StoreError>;
    /// Every policy.
    fn load_policies(&self) -> Result<Vec<Policy>, StoreError>;
    /// Creates or replaces the policy with the same name.
    fn store_policy(&self, policy: &Policy) -> Result<(), StoreError>;
    /// Deletes a policy; `false` when it did not exist.
    fn delete_policy(&self, name: &str) -> Result<bool, StoreError>;
    /// True when there are no secrets and no policies.
    fn is_empty(&self) -> Result<bool, StoreError>;
}

/// [`Backend::store_secret`] of a backend whose writes all go through its own
/// [`Backend::update_secret`] (a writer thread, a database transaction): the whole secret
/// replaces the stored row, so pruned versions are gone with the rewrite.
pub(crate) fn store_by_update<B: Backend + ?Sized>(
    backend: &B,
    path: &str,
    secret: &Secret,
) -> Result<(), StoreError> {
    let secret = secret.duplicate();
    backend
        .update_secret(path, Box::new(move |_| Ok((secret, Vec::new()))))
        .wait()
}

/// The model plus a backend, used by the API layer. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    max_versions: u64,
    /// Serializes secret load-modify-store sequences.
    secret_writer: Mutex<()>,
    /// Serializes policy writes (backend write + cache update).
    policy_writer: Mutex<()>,
    /// Write-through cache of every policy, by name.
    policies: RwLock<BTreeMap<String, Policy>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend.kind())
            .field("max_versions", &self.inner.max_versions)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Wraps `backend`, loading and caching its policies. `max_versions` is
    /// applied to every secret on put (SPIKE's store-wide setting).
    ///
    /// # Errors
    ///
    /// Whatever loading the policies fails with.
    pub fn new(backend: Arc<dyn Backend>, max_versions: u64) -> Result<Store, StoreError> {
        let policies = backend
            .load_policies()?
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        let inner = Arc::new(Inner {
            backend,
            max_versions,
            secret_writer: Mutex::new(()),
            policy_writer: Mutex::new(()),
            policies: RwLock::new(policies),
        });
        let cache = Arc::downgrade(&inner);
        inner
            .backend
            .watch_policies(Box::new(move |policies: Vec<Policy>| {
                if let Some(inner) = cache.upgrade() {
                    *inner.policies.write() =
                        policies.into_iter().map(|p| (p.name.clone(), p)).collect();
                }
            }));
        Ok(Store { inner })
    }

    /// Whether the policy cache is known to be current ([`Backend::policies_fresh`]); access
    /// checks answer 503 while it is not.
    pub fn policies_fresh(&self) -> bool {
        self.inner.backend.policies_fresh()
    }

    /// Whether reads wait on the network ([`Backend::reads_block`]): then async callers run
    /// them on the blocking pool.
    pub fn reads_block(&self) -> bool {
        self.inner.backend.reads_block()
    }

    /// The backend kind.
    pub fn backend_kind(&self) -> BackendKind {
        self.inner.backend.kind()
    }

    /// Whether secret writes are queued to a writer thread ([`Backend::queues_writes`]):
    /// then submitting one never blocks.
    pub fn queues_writes(&self) -> bool {
        self.inner.backend.queues_writes()
    }

    /// The store-wide maximum number of versions per secret.
    pub fn max_versions(&self) -> u64 {
        self.inner.max_versions
    }

    /// docs/protocol.md#secrets upsert: a new secret gets version 1, an existing one the next
    /// version; versions beyond `max_versions` are pruned from storage. Blocks until the
    /// write is durable; async callers use [`Store::submit_put_secret`].
    ///
    /// # Errors
    ///
    /// Backend errors.
    pub fn put_secret(&self, path: &str, data: SecretData) -> Result<(), StoreError> {
        self.submit_put_secret(path, data).wait()
    }

    /// [`Store::put_secret`] without blocking: the write resolves once it is durable.
    pub fn submit_put_secret(&self, path: &str, data: SecretData) -> PendingWrite {
        let now = OffsetDateTime::now_utc();
        let max_versions = self.inner.max_versions;
        self.update_secret(
            path,
            Box::new(move |current| {
                Ok(match current {
                    None => (Secret::new_first(data, max_versions, now), Vec::new()),
                    Some(mut secret) => {
                        secret.metadata.max_versions = max_versions;
                        let pruned = secret.put(data, now);
                        (secret, pruned)
                    }
                })
            }),
        )
    }

    /// One load-modify-store step, serialized with every other secret write.
    fn update_secret(&self, path: &str, update: SecretUpdate<'static>) -> PendingWrite {
        // A backend with a writer thread only queues here; the default
        // backend implementation runs the whole step under this lock.
        let _writer = self.inner.secret_writer.lock();
        self.inner.backend.update_secret(path, update)
    }

    /// docs/protocol.md#secrets get: version 0 is the current one.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when the path, the version or a live current
    /// version does not exist, or the version is deleted.
    pub fn get_secret(&self, path: &str, version: Version) -> Result<SecretData, StoreError> {
        let secret = self.load(path)?;
        secret
            .get(version)
            .map(|v| v.data.duplicate())
            .ok_or(StoreError::NotFound)
    }

    /// docs/protocol.md#secrets metadata (`GetRawSecret`): the same checks as [`Store::get_secret`]
    /// for `version`, then the whole secret with every version.
    ///
    /// # Errors
    ///
    /// As [`Store::get_secret`].
    pub fn secret_metadata(&self, path: &str, version: Version) -> Result<Secret, StoreError> {
        let secret = self.load(path)?;
        if secret.get(version).is_none() {
            return Err(StoreError::NotFound);
        }
        Ok(secret)
    }

    /// docs/protocol.md#secrets soft delete (empty list / 0 = current version). Always stores.
    /// Blocks until the write is durable; async callers use [`Store::submit_delete_secret`].
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for an unknown path; backend errors.
    pub fn delete_secret(&self, path: &str, versions: &[Version]) -> Result<(), StoreError> {
        self.submit_delete_secret(path, versions).wait()
    }

    /// [`Store::delete_secret`] without blocking.
    pub fn submit_delete_secret(&self, path: &str, versions: &[Version]) -> PendingWrite {
        let versions = versions.to_vec();
        self.update_secret(
            path,
            Box::new(move |current| {
                let mut secret = current.ok_or(StoreError::NotFound)?;
                secret.soft_delete(&versions, OffsetDateTime::now_utc());
                Ok((secret, Vec::new()))
            }),
        )
    }

    /// docs/protocol.md#secrets undelete. Blocks until the write is durable; async callers
    /// use [`Store::submit_undelete_secret`].
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for an unknown path or when nothing was
    /// undeleted; backend errors.
    pub fn undelete_secret(&self, path: &str, versions: &[Version]) -> Result<(), StoreError> {
        self.submit_undelete_secret(path, versions).wait()
    }

    /// [`Store::undelete_secret`] without blocking.
    pub fn submit_undelete_secret(&self, path: &str, versions: &[Version]) -> PendingWrite {
        let versions = versions.to_vec();
        self.update_secret(
            path,
            Box::new(move |current| {
                let mut secret = current.ok_or(StoreError::NotFound)?;
                secret
                    .undelete(&versions, OffsetDateTime::now_utc())
                    .map_err(|e| match e {
                        ModelError::NothingToUndelete => StoreError::NotFound,
                        other => StoreError::Invalid(other),
                    })?;
                Ok((secret, Vec::new()))
            }),
        )
    }

    /// Every secret path, sorted ascending, including fully deleted secrets.
    ///
    /// # Errors
    ///
    /// Backend errors.
    pub fn list_secrets(&self) -> Result<Vec<String>, StoreError> {
        self.inner.backend.list_secret_paths()
    }

    /// Creates or updates (by name) a policy; an update keeps `created_at`.
    /// Returns the stored policy.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for an empty name, an invalid pattern or a
    /// reserved-path violation (docs/protocol.md#policies); backend errors.
    pub fn put_policy(
        &self,
        name: &str,
        spiffeid_pattern: &str,
        path_pattern: &str,
        permissions: Vec<Permission>,
    ) -> Result<Policy, StoreError> {
        let _writer = self.inner.policy_writer.lock();
        let now = OffsetDateTime::now_utc();
        let created_at = self
            .inner
            .policies
            .read()
            .get(name)
            .map_or(now, |p| p.created_at);
        let policy = Policy::new(
            name.to_owned(),
            spiffeid_pattern.to_owned(),
            path_pattern.to_owned(),
            permissions,
            created_at,
            now,
        )?;
        self.inner.backend.store_policy(&policy)?;
        if !self.inner.backend.shared() {
            self.inner
                .policies
                .write()
                .insert(policy.name.clone(), policy.clone());
        }
        Ok(policy)
    }

    /// The policy named `name`.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`].
    pub fn get_policy(&self, name: &str) -> Result<Policy, StoreError> {
        self.inner
            .policies
            .read()
            .get(name)
            .cloned()
            .ok_or(StoreError::NotFound)
    }

    /// Deletes the policy named `name`.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when it does not exist; backend errors.
    pub fn delete_policy(&self, name: &str) -> Result<(), StoreError> {
        let _writer = self.inner.policy_writer.lock();
        if self.inner.backend.shared() {
            // The store decides (another instance may have written it a moment ago); the
            // backend has refreshed the cache when this returns.
            return if self.inner.backend.delete_policy(name)? {
                Ok(())
            } else {
                Err(StoreError::NotFound)
            };
        }
        if !self.inner.policies.read().contains_key(name) {
            return Err(StoreError::NotFound);
        }
        self.inner.backend.delete_policy(name)?;
        self.inner.policies.write().remove(name);
        Ok(())
    }

    /// Every policy sorted by name, keeping those whose patterns equal the
    /// given filters exactly (a `None` filter keeps all).
    pub fn list_policies(
        &self,
        spiffeid_filter: Option<&str>,
        path_filter: Option<&str>,
    ) -> Vec<Policy> {
        self.inner
            .policies
            .read()
            .values()
            .filter(|p| spiffeid_filter.is_none_or(|f| p.spiffeid_pattern == f))
            .filter(|p| path_filter.is_none_or(|f| p.path_pattern == f))
            .cloned()
            .collect()
    }

    /// docs/protocol.md#policies: true when a single policy grants every wanted permission (or
    /// `super`) to `peer_id` on `path`. No policies means deny.
    pub fn check_access(&self, peer_id: &str, path: &str, wants: &[Permission]) -> bool {
        self.inner
            .policies
            .read()
            .values()
            .any(|p| p.grants(peer_id, path, wants))
    }

    /// True when some policy for `peer_id` grants every wanted permission (or `super`) on some
    /// path (the pre-body check of [`crate::authz::may_be_allowed`]).
    pub fn may_grant(&self, peer_id: &str, wants: &[Permission]) -> bool {
        self.inner
            .policies
            .read()
            .values()
            .any(|p| p.may_grant(peer_id, wants))
    }

    /// True when the backend holds no secrets and no policies.
    ///
    /// # Errors
    ///
    /// Backend errors.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        self.inner.backend.is_empty()
    }

    fn load(&self, path: &str) -> Result<Secret, StoreError> {
        self.inner
            .backend
            .load_secret(path)?
            .ok_or(StoreError::NotFound)
    }
}
