//! SPIKE Keeper: holds one Shamir shard of the root key, in memory, and with shard sealing on
//! also sealed to the machine on disk.
//!
//! A keeper answers two routes over mTLS (docs/protocol.md#bootstrap-and-keepers): Nexus and Bootstrap *contribute* the
//! shard, and Nexus reads it back (*shard*) to reconstruct the root key after a restart.
//! The TLS handshake already refuses every peer that is neither Nexus nor Bootstrap (docs/protocol.md#identities-and-authorization);
//! each route then checks the caller's role again. By default (`shard_sealing = "off"`) the
//! shard never touches the disk: a restarted keeper is empty until Nexus pushes the shard
//! again (docs/protocol.md#bootstrap-and-keepers). With sealing on, [`sealing`] keeps it in a
//! file encrypted under a key systemd seals to the machine, and restores it before serving.
//!
//! [`run`] is the whole daemon minus process setup; `main.rs` adds argument parsing,
//! logging, hardening, signals, socket activation and sd_notify through [`daemon`].
//!
//! # Layout
//!
//! - [`config`][]: [`KeeperConfig`] from TOML + `SPIKE_*` variables, every key documented.
//! - [`state`][]: [`ShardStore`], the zeroizing in-memory shard, optionally backed by its
//!   sealed file.
//! - [`sealing`][]: the `shard_sealing` settings and the sealed shard file.
//! - [`provision`][]: `spike-keeper sealing-key`, the root oneshot that creates and checks the
//!   sealing key credential with `systemd-creds`.
//! - [`api`][]: the router and the two handlers with their guards.
//! - [`daemon`][]: socket activation, readiness and watchdog around [`Keeper::serve`], as
//!   named [`spike_daemon::shutdown::Tasks`].
//! - [`error`][]: [`KeeperError`].

pub mod api;
pub mod config;
pub mod daemon;
pub mod error;
pub mod provision;
pub mod sealing;
pub mod state;

use std::sync::Arc;

use spike_daemon::serve::{ServeOptions, serve_mtls};
use spike_daemon::shutdown::CancellationToken;
use spike_identity::{Identity, MtlsAcceptor, SpiffeId};
use tokio::net::TcpListener;

pub use config::KeeperConfig;
pub use error::KeeperError;
pub use state::ShardStore;

/// A keeper ready to serve: identity checked, TLS configured, shard store empty.
pub struct Keeper {
    config: KeeperConfig,
    identity: Identity,
    store: ShardStore,
    acceptor: MtlsAcceptor,
    status: Option<api::StatusHook>,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper")
            .field("config", &self.config)
            .field("identity", &self.identity)
            .field("store", &self.store)
            .field("status", &self.status.is_some())
            .finish_non_exhaustive()
    }
}

impl Keeper {
    /// Checks that `identity` is a Keeper ID under the configured roots (ARCHITECTURE.md) and builds
    /// the TLS server configuration whose handshake admits only Nexus and Bootstrap peers.
    ///
    /// # Errors
    /// [`KeeperError::NotAKeeper`], or [`KeeperError::Identity`] if rustls refuses the
    /// configuration.
    pub fn new(config: KeeperConfig, identity: Identity) -> Result<Self, KeeperError> {
        spike_daemon::identity::check_own_role(
            &identity,
            &config.trust_roots,
            spike_proto::Role::Keeper,
        )
        .map_err(|e| KeeperError::NotAKeeper {
            id: e.id,
            roots: e.roots,
        })?;
        let roots = config.trust_roots.clone();
        let allow = move |peer: &SpiffeId| {
            let id = peer.to_string();
            roots.is_nexus(&id) || roots.is_bootstrap(&id)
        };
        let acceptor = MtlsAcceptor::new(
            identity.server_config(allow)?,
            config.limits.handshake_timeout,
        );
        Ok(Self {
            config,
            identity,
            store: ShardStore::new(),
            acceptor,
            status: None,
        })
    }

    /// Serves from `store` instead of an empty RAM-only one (a store restored from its
    /// sealed file, [`ShardStore::sealed`]).
    #[must_use]
    pub fn with_store(mut self, store: ShardStore) -> Self {
        self.store = store;
        self
    }

    /// Tells `hook` what the keeper holds after each stored contribution.
    #[must_use]
    pub fn with_status(mut self, hook: api::StatusHook) -> Self {
        self.status = Some(hook);
        self
    }

    /// The shard store (a handle).
    pub fn store(&self) -> ShardStore {
        self.store.clone()
    }

    /// The identity in use.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The configuration in use.
    pub fn config(&self) -> &KeeperConfig {
        &self.config
    }

    /// Serves on `listener` with [`serve_mtls`] until `shutdown` is cancelled, then drains
    /// within the grace period and clears the shard.
    ///
    /// # Errors
    /// [`KeeperError::Grace`] if connections outlived the grace period.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), KeeperError> {
        let router = api::router(
            self.store.clone(),
            Arc::new(self.config.trust_roots.clone()),
            self.config.limits.request_body_limit,
            self.status.clone(),
        );
        let options = ServeOptions {
            name: "SPIKE Keeper API",
            limits: self.config.limits,
            shutdown_grace: self.config.shutdown_grace,
        };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(listen = %addr, spiffe_id = %self.identity.own_id(), "keeper serving");
        }
        let served = serve_mtls(listener, self.acceptor, router, options, || {}, shutdown).await;
        self.store.clear();
        Ok(served?)
    }
}

/// Runs a keeper on `listener` until `shutdown` is cancelled: [`Keeper::new`] then
/// [`Keeper::serve`], with a RAM-only store (the daemon, [`daemon::run_daemon`], restores a
/// sealed one with [`daemon::open_store`] and [`Keeper::with_store`]).
///
/// # Errors
/// As [`Keeper::new`] and [`Keeper::serve`].
pub async fn run(
    config: KeeperConfig,
    identity: Identity,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), KeeperError> {
    Keeper::new(config, identity)?
        .serve(listener, shutdown)
        .await
}
