//! The seal state: sealed (collecting shards) or unsealed (root key, store and cipher live).
//!
//! [`NexusState`] is the clone-able handle shared by the API, the recovery task and the
//! health listeners. [`NexusState::unseal`] is the one unseal path, used by keeper recovery
//! and operator restore alike: it opens the store with the candidate root key, which verifies
//! the key against the database's key-check record, and only then switches to unsealed.
//!
//! Progress is reported to systemd as `STATUS=` lines (the denominator is the threshold, the
//! number of shards needed), re-evaluated whenever the collected count, keeper health or the
//! last unseal failure changes, sent and logged only when the text changes:
//!
//! - `sealed: waiting for bootstrap (0/2 shards)`: never bootstrapped;
//! - `sealed: 1/2 shards from keepers`;
//! - `sealed: has data but no keeper holds a shard (0/2); restore from the recovery shards:
//!   spike-operator restore DIR (docs/operations.md)`: the database has data, at least one
//!   keeper answers, none holds a shard and too few are unreachable to make up the threshold
//!   (e.g. after a full power cut: keepers keep shards in RAM only);
//! - `sealed: cannot open the store: database or disk is full (free space under
//!   /var/lib/spike-nexus; Nexus retries by itself)`: the last unseal failed for a reason
//!   other than a wrong key (also served as `store_error` in the health body);
//! - `sealed: keepers disagree: …`: the shards received do not all fit one root key (a keeper
//!   holds a wrong shard); no shard is pushed, see [`Disagreement`];
//! - `unsealed`, or `unsealed; shard pushes held: …` while keepers disagree.
//!
//! Only a key that some key check confirms is ever used to re-seed keepers: the database's
//! key check (sqlite), lite's key-check file ([`crate::keys`]), or, before either exists, the
//! agreement of every shard received. Operator restore needs an existing key check
//! ([`UnsealError::NoKeyCheck`]), so the restore role cannot choose the root key of an
//! install that was never bootstrapped.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use spike_crypto::{Cipher, RootKey, Shard};
use spike_daemon::notify::Notifier;
use tokio::sync::{Notify, watch};

use crate::audit::Audit;
use crate::config::Config;
use crate::metrics::{Gauges, Metrics};
use crate::store::{
    Backend, BackendKind, Database, LiteBackend, MemoryBackend, PostgresBackend, SqliteBackend,
    Store, StoreError,
};

/// What an unsealed Nexus holds.
pub struct Unsealed {
    /// Secrets and policies.
    pub store: Store,
    /// The AEAD for the cipher and bootstrap-verify routes.
    pub cipher: Cipher,
    /// The root key (`None` in memory mode, which has none).
    pub root_key: Option<RootKey>,
}

impl std::fmt::Debug for Unsealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsealed")
            .field("has_root_key", &self.root_key.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Seal {
    Sealed { collected: usize },
    Unsealed(Arc<Unsealed>),
}

/// Why an unseal attempt failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnsealError {
    /// The reconstructed key does not open the existing database.
    #[error("the reconstructed root key does not match the database's key check")]
    WrongKey,
    /// The store could not be opened.
    #[error("cannot open the store {}: {source}", path.display())]
    Store {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The data directory could not be created.
    #[error("cannot create the data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The blocking open task failed.
    #[error("the store open task failed")]
    Join,
    /// There is no key check to verify a restored key against: Nexus was never bootstrapped
    /// (no database; in lite mode no key the keepers agreed on yet). Restore cannot choose
    /// the root key; Bootstrap generates it.
    #[error(
        "Nexus has no key check to verify a restored root key against (it was never \
         bootstrapped); restore cannot choose the root key: run spike-bootstrap instead"
    )]
    NoKeyCheck,
    /// Lite mode's key-check file could not be read or written.
    #[error("lite key check: {0}")]
    KeyCheckFile(#[from] crate::keys::KeyCheckFileError),
    /// The PostgreSQL backend cannot start (its settings or credential are unusable).
    #[error("cannot start the PostgreSQL backend: {0}")]
    Database(#[source] StoreError),
}

/// The `path` of [`UnsealError::Store`] for the PostgreSQL backend (it has no file).
pub const POSTGRES_STORE: &str = "PostgreSQL";

/// Keepers hold shards that do not all fit one root key. While this is recorded no shard is
/// pushed to any keeper, until the shards agree again (the wrong keeper was cleared) or an
/// operator restores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    /// Keepers (shard ids) whose shards do not fit the key the others agree on (with
    /// `refused_by`: every keeper that answered).
    pub misfits: Vec<u16>,
    /// Set when the shards agree with each other but not with this key check (a path or
    /// "the database's key check").
    pub refused_by: Option<String>,
}

impl Disagreement {
    /// Keepers `misfits` hold shards that do not fit the key the others agree on.
    pub fn misfits(misfits: Vec<u16>) -> Self {
        Self {
            misfits,
            refused_by: None,
        }
    }

    /// The health/log text, naming the keepers and the ways out.
    pub fn describe(&self, unsealed: bool) -> String {
        if let Some(check) = &self.refused_by {
            return format!(
                "keepers disagree with the key check: the shards of keepers {} agree on a root \
                 key that does not match {check}; no shard is pushed. Restore from the recovery \
                 shards (spike operator restore), or, only after a deliberate re-bootstrap of a \
                 lite Nexus, move the key-check file away (docs/operations.md)",
                crate::keys::id_list(&self.misfits)
            );
        }
        let ids = crate::keys::id_list(&self.misfits);
        let (whose, verb) = if self.misfits.len() == 1 {
            (format!("keeper {ids}"), "holds")
        } else {
            (format!("keepers {ids}"), "hold")
        };
        let units: Vec<String> = self
            .misfits
            .iter()
            .map(|i| format!("spike-keeper@{i}"))
            .collect();
        let restore = if unsealed {
            "or confirm the live key with the recovery shards: spike operator restore"
        } else {
            "or restore from the recovery shards: spike operator restore"
        };
        format!(
            "keepers disagree: {whose} {verb} a shard that does not fit the root key the other \
             shards give; no shard is pushed until they agree. Clear the wrong shard (systemctl \
             restart {}; with shard sealing on, clear its sealed shard instead: docs/operations.md, \
             \"Clear a keeper's sealed shard\"; Nexus re-seeds it), {restore} (docs/operations.md)",
            units.join(" ")
        )
    }
}

/// Health of one keeper as last observed.
#[derive(Debug, Default)]
struct KeeperHealth {
    reachable: AtomicBool,
    has_shard: AtomicBool,
}

/// The health snapshot served on `/v1/sys/health` and `/v1/sys/seal-status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// Bootstrapped at some point (DB exists, a keeper holds a shard, or unsealed).
    pub initialized: bool,
    /// Root key not in memory.
    pub sealed: bool,
    /// Shards collected towards unsealing.
    pub shards_collected: usize,
    /// Shards needed.
    pub threshold: u16,
    /// Keepers that answered the last probe.
    pub keepers_reachable: usize,
    /// The database file exists and is not empty (PostgreSQL: the shared store's key-check
    /// row exists).
    pub has_data: bool,
    /// The backend answers (always true but for PostgreSQL).
    pub backend_reachable: bool,
    /// Why the backend does not answer (PostgreSQL), when it does not.
    pub backend_error: Option<String>,
    /// Why the last unseal attempt failed, when it failed for a reason other than a wrong
    /// key (cleared by a successful unseal). No secret values.
    pub store_error: Option<String>,
    /// Set while keepers hold shards that do not fit one root key (no shard is pushed).
    pub keepers_disagree: Option<String>,
}

/// The last unseal failure that was not a wrong key.
#[derive(Debug, Clone)]
struct StoreFailure {
    /// The full message (health body, log).
    message: String,
    /// The `STATUS=` line.
    status: String,
}

struct Inner {
    config: Arc<Config>,
    seal: RwLock<Seal>,
    unseal_lock: tokio::sync::Mutex<()>,
    restore: Mutex<Vec<Shard>>,
    keepers: Vec<KeeperHealth>,
    notifier: Notifier,
    metrics: Metrics,
    audit: Audit,
    unsealed_tx: watch::Sender<bool>,
    push_now: Notify,
    store_failure: Mutex<Option<StoreFailure>>,
    /// The last `STATUS=` text sent, to send and log changes only.
    status: Mutex<String>,
    /// Keepers disagree: no shard pushes (see [`Disagreement`]).
    disagreement: Mutex<Option<Disagreement>>,
    /// An operator restore confirmed the key: the next push goes out despite a disagreement.
    operator_push: AtomicBool,
    /// The PostgreSQL pool and health monitor (`postgres` backend only), up while sealed.
    database: Option<Arc<Database>>,
}

/// The shared Nexus state; cheap to clone.
#[derive(Clone)]
pub struct NexusState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NexusState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NexusState")
            .field("seal", &*self.inner.seal.read())
            .finish_non_exhaustive()
    }
}

impl NexusState {
    /// A new state. Memory mode is unsealed at once (random cipher, in-memory store);
    /// sqlite and lite start sealed.
    ///
    /// # Errors
    /// [`UnsealError`] when the memory store or cipher cannot be created.
    pub fn new(
        config: Arc<Config>,
        notifier: Notifier,
        metrics: Metrics,
    ) -> Result<NexusState, UnsealError> {
        let keepers = config
            .keepers
            .iter()
            .map(|_| KeeperHealth::default())
            .collect();
        let (unsealed_tx, _) = watch::channel(false);
        let database = if config.backend == BackendKind::Postgres {
            Some(Arc::new(start_database(&config)?))
        } else {
            None
        };
        let state = NexusState {
            inner: Arc::new(Inner {
                config,
                seal: RwLock::new(Seal::Sealed { collected: 0 }),
                unseal_lock: tokio::sync::Mutex::new(()),
                restore: Mutex::new(Vec::new()),
                keepers,
                notifier,
                metrics,
                audit: Audit::start(),
                unsealed_tx,
                push_now: Notify::new(),
                store_failure: Mutex::new(None),
                status: Mutex::new(String::new()),
                disagreement: Mutex::new(None),
                operator_push: AtomicBool::new(false),
                database,
            }),
        };
        if state.is_memory() {
            let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
            let store =
                Store::new(backend, state.inner.config.max_secret_versions).map_err(|source| {
                    UnsealError::Store {
                        path: PathBuf::new(),
                        source,
                    }
                })?;
            let cipher = Cipher::random().map_err(|_| UnsealError::Join)?;
            state.set_unsealed(Unsealed {
                store,
                cipher,
                root_key: None,
            });
        } else {
            state.report_sealed(0);
        }
        Ok(state)
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.inner.config
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The audit stream.
    pub fn audit(&self) -> &Audit {
        &self.inner.audit
    }

    /// Whether the backend is `memory`.
    pub fn is_memory(&self) -> bool {
        self.inner.config.backend == BackendKind::Memory
    }

    /// Whether the backend is `lite`.
    pub fn is_lite(&self) -> bool {
        self.inner.config.backend == BackendKind::Lite
    }

    /// The unsealed state, if the root key is live.
    pub fn unsealed(&self) -> Option<Arc<Unsealed>> {
        match &*self.inner.seal.read() {
            Seal::Unsealed(u) => Some(Arc::clone(u)),
            Seal::Sealed { .. } => None,
        }
    }

    /// Whether the root key is live.
    pub fn is_unsealed(&self) -> bool {
        matches!(&*self.inner.seal.read(), Seal::Unsealed(_))
    }

    /// A receiver that turns `true` once unsealed.
    pub fn watch_unsealed(&self) -> watch::Receiver<bool> {
        self.inner.unsealed_tx.subscribe()
    }

    /// Asks the keeper sync task to push shards to every keeper now.
    pub fn request_push(&self) {
        self.inner.push_now.notify_one();
    }

    /// Asks for a push to every keeper on an operator's authority (operator restore): it goes
    /// out even while keepers disagree, and clears the disagreement.
    pub fn request_operator_push(&self) {
        self.inner.operator_push.store(true, Ordering::SeqCst);
        self.inner.push_now.notify_one();
    }

    /// Takes the operator's push authority (see [`NexusState::request_operator_push`]).
    pub fn take_operator_push(&self) -> bool {
        self.inner.operator_push.swap(false, Ordering::SeqCst)
    }

    /// The current disagreement among keepers, if any.
    pub fn disagreement(&self) -> Option<Disagreement> {
        self.inner.disagreement.lock().clone()
    }

    /// Records (or clears, with `None`) a disagreement among keepers; logs and updates
    /// `STATUS=` when it changes.
    pub fn set_disagreement(&self, value: Option<Disagreement>) {
        let changed = {
            let mut slot = self.inner.disagreement.lock();
            let changed = *slot != value;
            slot.clone_from(&value);
            changed
        };
        if !changed {
            return;
        }
        match &value {
            Some(d) => tracing::error!(
                keepers = ?d.misfits,
                "{}",
                d.describe(self.is_unsealed())
            ),
            None => tracing::info!("keepers agree on the root key again; shard pushes resume"),
        }
        match self.unsealed() {
            Some(_) => self.report_unsealed(),
            None => self.refresh_sealed_status(),
        }
    }

    /// Resolves when [`NexusState::request_push`] was called.
    pub async fn push_requested(&self) {
        self.inner.push_now.notified().await;
    }

    /// Records progress of keeper recovery (shards collected so far).
    pub fn set_collected(&self, collected: usize) {
        let mut seal = self.inner.seal.write();
        if let Seal::Sealed { collected: c } = &mut *seal {
            if *c == collected {
                return;
            }
            *c = collected;
        } else {
            return;
        }
        drop(seal);
        self.report_sealed(collected);
    }

    /// Records the result of probing keeper `id` (1-based); re-evaluates the `STATUS=` line
    /// while sealed when it changed.
    pub fn set_keeper_health(&self, id: u16, reachable: bool, has_shard: bool) {
        if let Some(k) = usize::from(id)
            .checked_sub(1)
            .and_then(|i| self.inner.keepers.get(i))
        {
            let was_reachable = k.reachable.swap(reachable, Ordering::Relaxed);
            let had_shard = k.has_shard.swap(reachable && has_shard, Ordering::Relaxed);
            if was_reachable != reachable || had_shard != (reachable && has_shard) {
                self.refresh_sealed_status();
            }
        }
    }

    /// Re-evaluates the `STATUS=` line if sealed.
    fn refresh_sealed_status(&self) {
        let collected = match &*self.inner.seal.read() {
            Seal::Sealed { collected } => *collected,
            Seal::Unsealed(_) => return,
        };
        self.report_sealed(collected);
    }

    /// The operator-restore shards collected so far (guarded).
    pub fn restore_shards(&self) -> parking_lot::MutexGuard<'_, Vec<Shard>> {
        self.inner.restore.lock()
    }

    fn report_sealed(&self, collected: usize) {
        let text = self.sealed_status(collected);
        self.set_status(&text, || {
            tracing::info!(seal_state = %text, "seal state: {text}");
        });
    }

    /// The one-line `STATUS=` text while sealed (see the module docs).
    fn sealed_status(&self, collected: usize) -> String {
        if let Some(failure) = &*self.inner.store_failure.lock() {
            return failure.status.clone();
        }
        if let Some(d) = &*self.inner.disagreement.lock() {
            return format!("sealed: {}", d.describe(false));
        }
        if let (false, error) = self.backend_health() {
            return format!(
                "sealed: PostgreSQL unreachable: {} (Nexus retries by itself; docs/ha.md)",
                error.unwrap_or_default()
            );
        }
        let threshold = self.inner.config.threshold;
        if collected == 0 && self.has_data() && self.no_keeper_can_unseal() {
            return format!(
                "sealed: has data but no keeper holds a shard (0/{threshold}); restore from the recovery shards: spike-operator restore DIR (docs/operations.md)"
            );
        }
        if collected == 0 && !self.initialized() {
            format!("sealed: waiting for bootstrap ({collected}/{threshold} shards)")
        } else {
            format!("sealed: {collected}/{threshold} shards from keepers")
        }
    }

    /// At least one keeper answers, none holds a shard, and the unreachable ones are too few
    /// to make up the threshold even if they all held one.
    fn no_keeper_can_unseal(&self) -> bool {
        let keepers = &self.inner.keepers;
        let reachable = keepers
            .iter()
            .filter(|k| k.reachable.load(Ordering::Relaxed))
            .count();
        let any_shard = keepers.iter().any(|k| k.has_shard.load(Ordering::Relaxed));
        reachable > 0
            && !any_shard
            && keepers.len() - reachable < usize::from(self.inner.config.threshold)
    }

    /// Sends `text` as `STATUS=` and runs `log` when it differs from the last one sent.
    fn set_status(&self, text: &str, log: impl FnOnce()) {
        let mut last = self.inner.status.lock();
        if *last == text {
            return;
        }
        text.clone_into(&mut last);
        drop(last);
        log();
        if let Err(e) = self.inner.notifier.status(text) {
            tracing::debug!(error = %e, "sd_notify STATUS failed");
        }
    }

    fn set_unsealed(&self, unsealed: Unsealed) {
        *self.inner.seal.write() = Seal::Unsealed(Arc::new(unsealed));
        self.inner.unsealed_tx.send_replace(true);
        self.report_unsealed();
    }

    fn report_unsealed(&self) {
        let text = match &*self.inner.disagreement.lock() {
            Some(d) => format!("unsealed; shard pushes held: {}", d.describe(true)),
            None => "unsealed".to_owned(),
        };
        let text = match self.backend_health() {
            (false, error) => format!(
                "{text}; PostgreSQL unreachable: {} (requests answer 503; Nexus reconnects by \
                 itself; docs/ha.md)",
                error.unwrap_or_default()
            ),
            (true, _) => text,
        };
        self.set_status(&text, || {
            tracing::info!(seal_state = %text, "Nexus is {text}");
        });
    }

    /// Remembers why an unseal attempt failed (not for a wrong key), logs it at error level
    /// when it changed, and puts it on the `STATUS=` line.
    fn record_store_failure(&self, error: &UnsealError, origin: &'static str) {
        let message = error.to_string();
        let data_dir = self.inner.config.data_dir.display();
        let (what, cause) = match error {
            UnsealError::Store { source, .. } => ("cannot open the store", store_cause(source)),
            UnsealError::DataDir { source, .. } => {
                ("cannot create the data directory", source.to_string())
            }
            UnsealError::KeyCheckFile(e) => ("cannot use the lite key check", e.to_string()),
            UnsealError::Database(e) => ("cannot start the PostgreSQL backend", e.to_string()),
            UnsealError::Join | UnsealError::WrongKey | UnsealError::NoKeyCheck => {
                ("cannot open the store", message.clone())
            }
        };
        let postgres = self.inner.config.backend == BackendKind::Postgres;
        let full = matches!(
            error,
            UnsealError::Store {
                source: StoreError::StorageFull(_),
                ..
            }
        );
        let action = if postgres {
            "check PostgreSQL, docs/ha.md; data dir"
        } else if full {
            "free space under"
        } else {
            // A full disk can also surface as "disk I/O error".
            "check free space and permissions under"
        };
        let retry = if origin == ORIGIN_KEEPERS {
            "Nexus retries by itself"
        } else {
            "then restore again"
        };
        let status = format!("sealed: {what}: {cause} ({action} {data_dir}; {retry})");
        let changed = {
            let mut slot = self.inner.store_failure.lock();
            let changed = slot.as_ref().is_none_or(|f| f.message != message);
            *slot = Some(StoreFailure {
                message: message.clone(),
                status,
            });
            changed
        };
        if changed {
            tracing::error!(origin, error = %message, "unseal failed: {message}; Nexus stays sealed");
        } else {
            tracing::debug!(origin, error = %message, "unseal failed again");
        }
        self.refresh_sealed_status();
    }

    /// Unseals with `key`: opens the store (verifying the key against the database's key
    /// check in sqlite mode), builds the cipher, switches to unsealed and asks for an
    /// immediate shard push to every keeper. Idempotent for the key already in use.
    ///
    /// # Errors
    /// [`UnsealError::WrongKey`] when the key does not open the existing database (the state
    /// stays sealed), other variants for I/O failures. In memory mode this is a no-op.
    pub async fn unseal(&self, key: RootKey, origin: &'static str) -> Result<(), UnsealError> {
        self.unseal_with(key, origin, false).await
    }

    /// Unseals only if an existing key check confirms `key` (the database's, or lite's
    /// key-check file): operator restore, and keeper recovery while keepers disagree.
    ///
    /// # Errors
    /// [`UnsealError::NoKeyCheck`] when there is none yet; otherwise as
    /// [`NexusState::unseal`].
    pub async fn unseal_checked(
        &self,
        key: RootKey,
        origin: &'static str,
    ) -> Result<(), UnsealError> {
        self.unseal_with(key, origin, true).await
    }

    async fn unseal_with(
        &self,
        key: RootKey,
        origin: &'static str,
        require_check: bool,
    ) -> Result<(), UnsealError> {
        let _guard = self.inner.unseal_lock.lock().await;
        let result = self.unseal_locked(key, origin, require_check).await;
        match &result {
            Ok(()) | Err(UnsealError::WrongKey | UnsealError::NoKeyCheck) => {}
            Err(e) => self.record_store_failure(e, origin),
        }
        result
    }

    /// Whether a key check exists to verify a root key against: the database (sqlite) or
    /// lite's key-check file.
    pub fn has_key_check(&self) -> bool {
        match self.inner.config.backend {
            BackendKind::Lite => {
                crate::keys::lite_keycheck_path(&self.inner.config.data_dir).exists()
            }
            BackendKind::Memory => false,
            _ => self.has_data(),
        }
    }

    async fn unseal_locked(
        &self,
        key: RootKey,
        origin: &'static str,
        require_check: bool,
    ) -> Result<(), UnsealError> {
        if let Some(current) = self.unsealed() {
            return match &current.root_key {
                Some(k) if *k == key => Ok(()),
                None => Ok(()),
                Some(_) => Err(UnsealError::WrongKey),
            };
        }
        let config = Arc::clone(&self.inner.config);
        if require_check && config.backend != BackendKind::Memory && !self.has_key_check() {
            return Err(UnsealError::NoKeyCheck);
        }
        let backend: Arc<dyn Backend> = match config.backend {
            BackendKind::Lite => {
                let dir = config.data_dir.clone();
                let key2 = key.duplicate_secret();
                tokio::task::spawn_blocking(move || lite_key_check(&dir, &key2))
                    .await
                    .map_err(|_| UnsealError::Join)??;
                Arc::new(LiteBackend::new())
            }
            BackendKind::Memory => return Ok(()),
            BackendKind::Postgres => {
                let db = self.database().ok_or(UnsealError::Join)?;
                let key2 = key.duplicate_secret();
                let opened = tokio::task::spawn_blocking(move || {
                    PostgresBackend::open(&db, &key2).map_err(|e| match e {
                        StoreError::WrongRootKey => UnsealError::WrongKey,
                        source => UnsealError::Store {
                            path: PathBuf::from(POSTGRES_STORE),
                            source,
                        },
                    })
                })
                .await
                .map_err(|_| UnsealError::Join)??;
                Arc::new(opened)
            }
            _ => {
                let dir = config.data_dir.clone();
                let path = config.db_path();
                let key2 = key.duplicate_secret();
                let opened = tokio::task::spawn_blocking(move || {
                    create_private_dir(&dir).map_err(|source| UnsealError::DataDir {
                        path: dir.clone(),
                        source,
                    })?;
                    SqliteBackend::open(&path, &key2).map_err(|e| match e {
                        StoreError::WrongRootKey => UnsealError::WrongKey,
                        source => UnsealError::Store { path, source },
                    })
                })
                .await
                .map_err(|_| UnsealError::Join)??;
                Arc::new(opened)
            }
        };
        let store_path = self.store_path();
        let max_versions = config.max_secret_versions;
        // Loading the policies may wait on the network (PostgreSQL).
        let store = tokio::task::spawn_blocking(move || Store::new(backend, max_versions))
            .await
            .map_err(|_| UnsealError::Join)?
            .map_err(|source| UnsealError::Store {
                path: store_path,
                source,
            })?;
        let cipher = Cipher::new(&key);
        // Cleared before the switch, so nobody sees unsealed with a stale store error.
        if self.inner.store_failure.lock().take().is_some() {
            tracing::info!(
                origin,
                "the store opened; the earlier unseal failure is resolved"
            );
        }
        self.set_unsealed(Unsealed {
            store,
            cipher,
            root_key: Some(key),
        });
        tracing::info!(origin, "root key accepted");
        self.request_push();
        Ok(())
    }

    /// Whether the database file exists and is not empty; with PostgreSQL, whether the shared
    /// store's key-check row exists (as last seen: the monitor checks every
    /// [`crate::store::postgres::MONITOR_INTERVAL`]).
    pub fn has_data(&self) -> bool {
        match self.inner.config.backend {
            BackendKind::Sqlite => {
                std::fs::metadata(self.inner.config.db_path()).is_ok_and(|m| m.len() > 0)
            }
            BackendKind::Postgres => self
                .inner
                .database
                .as_ref()
                .is_some_and(|db| db.health().initialized),
            _ => false,
        }
    }

    /// The PostgreSQL database (`postgres` backend only).
    pub fn database(&self) -> Option<Arc<Database>> {
        self.inner.database.clone()
    }

    /// Whether the backend answers, and why not (PostgreSQL; other backends always answer).
    pub fn backend_health(&self) -> (bool, Option<String>) {
        match &self.inner.database {
            Some(db) => {
                let h = db.health();
                (h.reachable, h.error)
            }
            None => (true, None),
        }
    }

    /// What [`UnsealError::Store`] names as the store.
    fn store_path(&self) -> PathBuf {
        match self.inner.config.backend {
            BackendKind::Postgres => PathBuf::from(POSTGRES_STORE),
            _ => self.inner.config.db_path(),
        }
    }

    /// Re-evaluates the `STATUS=` line after the backend's reachability changed (sealed or
    /// unsealed).
    pub fn refresh_status(&self) {
        if self.is_unsealed() {
            self.report_unsealed();
        } else {
            self.refresh_sealed_status();
        }
    }

    /// Whether Nexus was ever bootstrapped: unsealed, or the database (lite: the key-check
    /// file; PostgreSQL: the shared key-check row) exists, or a keeper holds a shard, or a
    /// root key was reconstructed but the store failed to open. With PostgreSQL unreachable
    /// (or not checked yet) the answer is unknown, and reported as initialized: a bootstrap
    /// must never re-key a cluster it cannot see (it waits on `backend_reachable`).
    pub fn initialized(&self) -> bool {
        let postgres_unknown = self
            .inner
            .database
            .as_ref()
            .is_some_and(|db| !db.health().reachable);
        postgres_unknown
            || self.is_memory()
            || self.is_unsealed()
            || self.has_data()
            || (self.is_lite() && self.has_key_check())
            || self.inner.store_failure.lock().is_some()
            || self
                .inner
                .keepers
                .iter()
                .any(|k| k.has_shard.load(Ordering::Relaxed))
    }

    /// The health snapshot.
    pub fn health(&self) -> HealthReport {
        let (backend_reachable, backend_error) = self.backend_health();
        // Health is served to any peer: the class of the failure only; the server's own
        // message (role, database, client address) stays in the journal and STATUS=.
        let backend_error = backend_error.as_deref().map(backend_error_class);
        let (sealed, collected) = match &*self.inner.seal.read() {
            Seal::Sealed { collected } => (true, *collected),
            Seal::Unsealed(_) => (false, 0),
        };
        HealthReport {
            initialized: self.initialized(),
            sealed,
            shards_collected: collected,
            threshold: self.inner.config.threshold,
            keepers_reachable: self
                .inner
                .keepers
                .iter()
                .filter(|k| k.reachable.load(Ordering::Relaxed))
                .count(),
            has_data: self.has_data(),
            backend_reachable,
            backend_error,
            store_error: self
                .inner
                .store_failure
                .lock()
                .as_ref()
                .map(|f| f.message.clone()),
            keepers_disagree: self
                .inner
                .disagreement
                .lock()
                .as_ref()
                .map(|d| d.describe(!sealed)),
        }
    }

    /// The gauges for the metrics endpoint.
    pub fn gauges(&self) -> Gauges {
        let h = self.health();
        Gauges {
            sealed: h.sealed,
            initialized: h.initialized,
            shards_collected: h.shards_collected,
            backend_reachable: h.backend_reachable,
            keepers: self
                .inner
                .config
                .keepers
                .iter()
                .zip(&self.inner.keepers)
                .map(|(peer, k)| {
                    (
                        peer.id,
                        k.reachable.load(Ordering::Relaxed),
                        k.has_shard.load(Ordering::Relaxed),
                    )
                })
                .collect(),
        }
    }
}

/// The `origin` of keeper recovery's unseal attempts ([`NexusState::unseal`]), which are
/// retried on every probe until they succeed.
pub const ORIGIN_KEEPERS: &str = "keepers";

/// SQLite's own reason for a database failure, without our prefix.
fn store_cause(e: &StoreError) -> String {
    match e {
        StoreError::Database(m) | StoreError::StorageFull(m) => m.clone(),
        other => other.to_string(),
    }
}

/// The class of a PostgreSQL failure for the health body.
fn backend_error_class(error: &str) -> String {
    let e = error.to_ascii_lowercase();
    let class = if e.contains("newer than this nexus") {
        "the database schema is newer than this Nexus: upgrade it"
    } else if e.contains("password") || e.contains("pg_hba") || e.contains("authentication") {
        "authentication refused"
    } else if e.contains("certificate") || e.contains("tls") || e.contains("ssl") {
        "TLS failed"
    } else if e.contains("read-only") || e.contains("25006") {
        "connected to a standby (read-only)"
    } else if e.contains("did not answer") || e.contains("timed out") || e.contains("timeout") {
        "no answer in time"
    } else if e.contains("refused") || e.contains("no such file") {
        "connection refused"
    } else {
        "unreachable"
    };
    format!("{class} (journalctl -u spike-nexus has the cause)")
}

/// Starts the PostgreSQL pool and health monitor from the configuration and the connection
/// string credential.
fn start_database(config: &Config) -> Result<Database, UnsealError> {
    let pg = &config.postgres;
    let conninfo = pg
        .read_conninfo()
        .map_err(|e| UnsealError::Database(StoreError::Config(e.to_string())))?;
    let db = Database::start(&crate::store::postgres::Settings {
        credential: &pg.credential,
        conninfo: &conninfo,
        ca_file: pg.ca_file.as_deref(),
        pool_size: pg.pool_size,
        timeout: pg.timeout,
    })
    .map_err(UnsealError::Database)?;
    drop(conninfo);
    Ok(db)
}

/// Lite mode's key check: the key must open the key-check file; with no file yet, the key
/// (which the keepers agreed on, see [`crate::recovery`]) is recorded.
fn lite_key_check(dir: &std::path::Path, key: &RootKey) -> Result<(), UnsealError> {
    use crate::keys::{FileCheck, check_file, lite_keycheck_path, write_file};
    create_private_dir(dir).map_err(|source| UnsealError::DataDir {
        path: dir.to_owned(),
        source,
    })?;
    let path = lite_keycheck_path(dir);
    match check_file(&path, key)? {
        FileCheck::Matches => Ok(()),
        FileCheck::Differs => Err(UnsealError::WrongKey),
        FileCheck::Absent => {
            write_file(&path, key)?;
            tracing::info!(file = %path.display(), "lite mode: recorded the key check of the root key the keepers agree on");
            Ok(())
        }
    }
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
