//! SPIKE Nexus: the secret store.
//!
//! Nexus holds the root key in memory (reconstructed from keeper shards or an operator
//! restore), stores secrets and policies encrypted at rest, and serves SPIKE's HTTP API over
//! mTLS. [`run`] is the whole daemon minus process setup (which `main.rs` does); [`start`]
//! returns a [`Running`] handle with the bound addresses, for tests and embedding.
//!
//! # Layout
//!
//! - [`model`]: the pure secret and policy model (versions, soft delete, policy matching).
//! - [`store`]: persistence backends (memory, lite, encrypted SQLite with its writer thread,
//!   PostgreSQL shared by several instances)
//!   and the [`store::Store`] handle.
//! - [`config`]: TOML + `SPIKE_*` environment configuration, validated into [`config::Config`].
//! - [`state`]: the seal state and the single unseal path ([`state::NexusState`]).
//! - [`authz`]: the per-route authorization guard (docs/protocol.md#identities-and-authorization).
//! - [`api`]: the dispatcher, the route handlers and the health extension.
//! - [`server`]: the plain accept loops (health unix socket, metrics); the mTLS API loop is
//!   [`spike_daemon::serve::serve_mtls`].
//! - [`keys`]: whether shards agree on one root key, and lite mode's key-check file.
//! - [`recovery`]: keeper recovery, periodic shard push and keeper probing.
//! - [`metrics`]: Prometheus text exposition.
//! - [`audit`]: the per-request audit event and the thread that writes the stream off the
//!   request path.
//! - [`probe`]: local health-socket probes (`spike-nexus health`, `wait-unsealed`) and the
//!   readiness units (`watch-ready`, `trigger-ready`).

pub mod api;
pub mod audit;
pub mod authz;
pub mod config;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod probe;
pub mod recovery;
pub mod server;
pub mod state;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use spike_daemon::listen::{ListenError, ListenFds};
use spike_daemon::notify::Notifier;
use spike_daemon::shutdown::Tasks;
use spike_identity::{Identity, MtlsAcceptor};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::recovery::{Keepers, RecoveryError};
use crate::server::ServeOptions;
use crate::state::{NexusState, UnsealError};

/// Why Nexus stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NexusError {
    /// The workload's own SVID is not a Nexus ID under the configured trust roots.
    #[error("SPIFFE ID {id} is not a SPIKE Nexus ID under trust roots {roots}")]
    NotNexus {
        /// The own ID.
        id: String,
        /// The Nexus trust roots.
        roots: String,
    },
    /// A listener could not be obtained.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The TLS server configuration could not be built.
    #[error(transparent)]
    Identity(#[from] spike_identity::IdentityError),
    /// The keeper clients could not be built.
    #[error(transparent)]
    Keepers(#[from] RecoveryError),
    /// The initial state could not be created.
    #[error(transparent)]
    State(#[from] UnsealError),
    /// An accept loop failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Connections outlived the shutdown grace period and were dropped.
    #[error(transparent)]
    Grace(#[from] spike_daemon::shutdown::GraceExpired),
    /// A task failed.
    #[error("{0}")]
    Task(String),
}

/// A started Nexus.
#[derive(Debug)]
pub struct Running {
    /// The bound mTLS API address.
    pub api_addr: SocketAddr,
    /// The bound metrics address, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// The health socket path, if enabled.
    pub health_socket: Option<PathBuf>,
    /// The shared state (seal state, metrics).
    pub state: NexusState,
    tasks: Tasks<NexusError>,
    grace: Duration,
    notifier: Notifier,
    token: CancellationToken,
}

impl Running {
    /// Waits until every task stopped (after `token` is cancelled, or on the first failure).
    ///
    /// # Errors
    /// The first task failure.
    pub async fn wait(self) -> Result<(), NexusError> {
        let Running {
            tasks,
            grace,
            notifier,
            token,
            state,
            ..
        } = self;
        let stopping = {
            let notifier = notifier.clone();
            let token = token.clone();
            tokio::spawn(async move {
                token.cancelled().await;
                if let Err(e) = notifier.stopping() {
                    tracing::debug!(error = %e, "sd_notify STOPPING failed");
                }
            })
        };
        let result = tasks
            .join(grace + Duration::from_secs(1))
            .await
            .map_err(|e| NexusError::Task(e.to_string()));
        // Every task has stopped: write the buffered audit events, and make sure
        // `STOPPING=1` went out before returning.
        state.audit().close();
        token.cancel();
        let _ = stopping.await;
        result
    }
}

fn metrics_router(state: NexusState) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(
                |axum::extract::State(state): axum::extract::State<NexusState>| async move {
                    let text = state.metrics().render(&state.gauges());
                    (
                        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        text,
                    )
                        .into_response()
                },
            ),
        )
        .with_state(state)
}

/// Starts Nexus: checks the own SVID, binds (or adopts) the listeners, spawns the named tasks
/// (`api`, `health`, `metrics`, `keepers`, `watchdog`) and sends `READY=1`.
///
/// # Errors
/// [`NexusError`] when the identity is not Nexus, a listener cannot be bound, or the keeper
/// clients cannot be built.
pub async fn start(
    config: Config,
    identity: Identity,
    notifier: Notifier,
    mut listen: ListenFds,
    token: CancellationToken,
) -> Result<Running, NexusError> {
    spike_daemon::identity::check_own_role(
        &identity,
        &config.trust_roots,
        spike_proto::spiffe_id::Role::Nexus,
    )
    .map_err(|e| NexusError::NotNexus {
        id: e.id,
        roots: e.roots,
    })?;
    let own = identity.own_id().to_string();
    let config = Arc::new(config);
    let state = NexusState::new(Arc::clone(&config), notifier.clone(), Metrics::new())?;
    let keepers = Keepers::new(&identity, &config)?;
    let server_config = identity.server_config(spike_identity::allow_any())?;
    let acceptor = MtlsAcceptor::new(server_config, config.limits.handshake_timeout);
    let api_options = spike_daemon::serve::ServeOptions {
        name: "SPIKE Nexus API",
        limits: config.limits,
        shutdown_grace: config.shutdown_grace,
    };
    let health_options = ServeOptions {
        limits: config.limits,
        max_connections: config.health_max_connections,
        grace: config.shutdown_grace,
    };
    let metrics_options = ServeOptions {
        max_connections: config.metrics_max_connections,
        ..health_options
    };

    let (api_listener, origin) = listen.tcp_or_bind("api", config.listen).await?;
    let api_addr = api_listener.local_addr()?;
    tracing::info!(listen = %api_addr, ?origin, spiffe_id = %own, "API listening");

    let health = match &config.health_socket {
        Some(path) => {
            if let Some(parent) = path.parent()
                && !parent.as_os_str().is_empty()
                && let Err(e) = std::fs::create_dir_all(parent)
            {
                tracing::warn!(error = %e, dir = %parent.display(), "cannot create the health socket directory");
            }
            let (l, _) = listen.unix_or_bind("health", path)?;
            Some((l, path.clone()))
        }
        None => None,
    };
    let metrics = match config.metrics_listen {
        Some(addr) => {
            let (listener, origin) = listen.tcp_or_bind("metrics", addr).await?;
            if let (spike_daemon::listen::ListenerOrigin::Activated { .. }, Ok(bound)) =
                (origin, listener.local_addr())
                && bound != addr
            {
                tracing::warn!(
                    %bound,
                    metrics_listen = %addr,
                    "metrics are served on {bound}, the socket systemd passed \
                     (spike-nexus-metrics.socket), not on metrics_listen = {addr}; change \
                     ListenStream= there (a drop-in) to move them"
                );
            }
            Some(listener)
        }
        None => None,
    };
    let metrics_addr = match &metrics {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    for name in listen.into_unclaimed() {
        tracing::warn!(name, "unused socket-activation fd");
    }

    let mut tasks: Tasks<NexusError> = Tasks::new(token.clone());
    {
        let router = api::router(state.clone());
        let metrics = state.metrics().clone();
        // Every failed TLS handshake counts in `spike_nexus_tls_handshake_failures_total`.
        let on_handshake_failure = move || metrics.record_handshake_failure();
        tasks.spawn("api", move |t| async move {
            spike_daemon::serve::serve_mtls(
                api_listener,
                acceptor,
                router,
                api_options,
                on_handshake_failure,
                t,
            )
            .await
            .or_else(|e| cut_off("api", &e))
        });
    }
    let health_socket = match health {
        Some((listener, path)) => {
            let router = api::health_router(state.clone());
            tasks.spawn("health", move |t| async move {
                server::serve_unix(listener, router, health_options, t)
                    .await
                    .or_else(|e| cut_off("health", &e))
            });
            Some(path)
        }
        None => None,
    };
    if let Some(listener) = metrics {
        let router = metrics_router(state.clone());
        tasks.spawn("metrics", move |t| async move {
            server::serve_plain_tcp(listener, router, metrics_options, t)
                .await
                .or_else(|e| cut_off("metrics", &e))
        });
    }
    {
        let state = state.clone();
        tasks.spawn("keepers", move |t| async move {
            recovery::run(state, keepers, t)
                .await
                .map_err(NexusError::Keepers)
        });
    }
    if state.database().is_some() {
        // The STATUS= line follows PostgreSQL's reachability, sealed or not.
        let state = state.clone();
        tasks.spawn("backend", move |t| async move {
            let mut ticker = tokio::time::interval(std::time::Duration::from_millis(500));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = t.cancelled() => return Ok(()),
                    _ = ticker.tick() => state.refresh_status(),
                }
            }
        });
    }
    {
        let notifier = notifier.clone();
        tasks.spawn("watchdog", move |t| async move {
            notifier.run_watchdog(t).await;
            Ok(())
        });
    }
    if let Err(e) = notifier.ready() {
        tracing::debug!(error = %e, "sd_notify READY failed");
    }
    Ok(Running {
        api_addr,
        metrics_addr,
        health_socket,
        state,
        tasks,
        grace: config.shutdown_grace,
        notifier,
        token,
    })
}

/// Runs Nexus until `shutdown` is cancelled (binding its own listeners; no socket
/// activation). `main` uses [`start`] with the activated fds.
///
/// # Errors
/// As [`start`] and [`Running::wait`].
pub async fn run(
    config: Config,
    identity: Identity,
    notifier: Notifier,
    shutdown: CancellationToken,
) -> Result<(), NexusError> {
    start(config, identity, notifier, ListenFds::none(), shutdown)
        .await?
        .wait()
        .await
}

/// The daemon as `main` runs it: notifier and socket-activation fds from the process
/// environment, SIGTERM/SIGINT handling, the Workload API identity (bounded wait, the error
/// names the socket), then [`start`] and [`Running::wait`].
///
/// # Errors
/// As [`start`]; [`NexusError::Identity`] when no SVID arrives in time.
pub async fn run_daemon(config: Config) -> Result<(), NexusError> {
    let notifier = Notifier::from_env();
    let token = CancellationToken::new();
    let _signals = spike_daemon::shutdown::spawn_signal_handler(token.clone())?;
    let _ = notifier.status("waiting for an X.509-SVID from the SPIFFE Workload API");
    let settings = spike_daemon::common::IdentitySettings {
        endpoint: config.spiffe_endpoint.clone(),
        spiffe_id: config.spiffe_id.clone(),
        timeout: config.spiffe_timeout,
    };
    // Peers from every trust domain of every role; the own-ID role check is in `start`.
    let identity = spike_daemon::identity::connect(
        &settings,
        &config.trust_roots,
        &spike_proto::spiffe_id::Role::ALL,
    )
    .await?;
    let fds = spike_daemon::listen::take_listeners()?;
    start(config, identity, notifier, fds, token)
        .await?
        .wait()
        .await
}

/// Connections still open when the shutdown grace ran out were cut off: that is logged, not a
/// failed stop, so `systemctl stop` and restarts end clean (the journal names the listener).
fn cut_off(
    listener: &'static str,
    e: &spike_daemon::shutdown::GraceExpired,
) -> Result<(), NexusError> {
    tracing::warn!(listener, "{e}: the connections still open were cut off");
    Ok(())
}
