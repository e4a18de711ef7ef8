//! The daemon around [`crate::Keeper`]: identity, socket activation, readiness, and the named
//! tasks (`api`, `watchdog`) on the [`Tasks`] skeleton Nexus uses.

use std::time::Duration;

use spike_daemon::EnvSource;
use spike_daemon::common::IdentitySettings;
use spike_daemon::listen::{ListenFds, ListenerOrigin};
use spike_daemon::notify::Notifier;
use spike_daemon::shutdown::{CancellationToken, TaskError, Tasks};

use crate::config::TRUST_ROLES;

use crate::sealing::{LoadOutcome, SealedShardFile};
use crate::{Keeper, KeeperConfig, KeeperError, ShardStore};

/// Name of the socket-activation fd the keeper serves on (`FileDescriptorName=api`).
pub const LISTEN_FD_NAME: &str = "api";

/// Why the keeper daemon could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// Starting failed: identity, listener, or the keeper itself.
    #[error(transparent)]
    Start(#[from] KeeperError),
    /// A named task failed or panicked, or the tasks outlived the grace period.
    #[error(transparent)]
    Task(#[from] TaskError<KeeperError>),
}

/// Obtains the SVID, checks it, takes the `api` socket from `fds` (or binds
/// `config.listen`), spawns the named tasks `api` ([`Keeper::serve`]) and `watchdog`, sends
/// `READY=1`, and waits for them: the first failure cancels the rest, cancellation (a signal on
/// `shutdown`) is not an error, and `STOPPING=1` goes out as soon as shutdown starts.
///
/// # Errors
/// Identity and listener errors ([`DaemonError::Start`]); a task's failure
/// ([`DaemonError::Task`]).
pub async fn run_daemon(
    config: KeeperConfig,
    env: &dyn EnvSource,
    mut fds: ListenFds,
    notifier: Notifier,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    // The sealed shard is restored before anything is served; a unit that lacks what
    // sealing needs fails here, before the SVID wait.
    let (store, restored) = open_store(&config, env)?;
    let _ = notifier.status("waiting for an X.509-SVID from the SPIFFE Workload API");
    let settings = IdentitySettings {
        endpoint: config.spiffe_endpoint_socket.clone(),
        spiffe_id: config.spiffe_id.clone(),
        timeout: config.spiffe_timeout,
    };
    // Accept peers from every trust domain our trust roots name (not only our own); the own-ID
    // role check is in `Keeper::new`.
    let identity = spike_daemon::identity::connect(&settings, &config.trust_roots, TRUST_ROLES)
        .await
        .map_err(KeeperError::from)?;
    let listen = config.listen;
    let keeper = Keeper::new(config, identity)?.with_store(store);
    let (listener, origin) = fds
        .tcp_or_bind(LISTEN_FD_NAME, listen)
        .await
        .map_err(KeeperError::from)?;
    for name in fds.into_unclaimed() {
        tracing::warn!(name, "ignoring an unexpected socket-activation fd");
    }
    let addr = listener
        .local_addr()
        .map_or_else(|_| listen.to_string(), |a| a.to_string());
    let keeper = {
        let notifier = notifier.clone();
        let addr = addr.clone();
        keeper.with_status(std::sync::Arc::new(move |held: &str| {
            let _ = notifier.status(&format!("serving on {addr}; {held}"));
        }))
    };
    match origin {
        ListenerOrigin::Activated { fd } => {
            tracing::info!(fd, listen = %addr, "using the socket passed by systemd")
        }
        ListenerOrigin::Bound => tracing::info!(listen = %addr, "bound the listen address"),
    }
    let grace = keeper.config().shutdown_grace;
    let mut tasks: Tasks<KeeperError> = Tasks::new(shutdown.clone());
    tasks.spawn("api", move |t| keeper.serve(listener, t));
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
    let _ = notifier.status(&format!("serving on {addr}; {restored}"));
    let stopping = {
        let notifier = notifier.clone();
        let token = shutdown.clone();
        tokio::spawn(async move {
            token.cancelled().await;
            if let Err(e) = notifier.stopping() {
                tracing::debug!(error = %e, "sd_notify STOPPING failed");
            }
        })
    };
    // The API task drains within the grace period by itself; the extra second only bounds a
    // task that ignores the token.
    let result = tasks.join(grace + Duration::from_secs(1)).await;
    // Every task has stopped; make sure `STOPPING=1` went out before returning.
    shutdown.cancel();
    let _ = stopping.await;
    Ok(result?)
}

/// The shard store the daemon serves from: RAM only with sealing off; otherwise restored
/// from the sealed file, with what was found logged (and returned for the status line).
///
/// # Errors
/// [`KeeperError::Sealing`] when the unit lacks the state directory or the credential, and
/// [`KeeperError::InvalidConfig`] when no keeper id is set.
pub fn open_store(
    config: &KeeperConfig,
    env: &dyn EnvSource,
) -> Result<(ShardStore, &'static str), KeeperError> {
    let mode = config.sealing.mode;
    if !mode.is_on() {
        return Ok((
            ShardStore::new(),
            "no shard yet (shard sealing off: RAM only)",
        ));
    }
    let keeper_id = config
        .keeper_id
        .as_deref()
        .ok_or(KeeperError::InvalidConfig {
            key: "keeper_id",
            message: format!(
                "shard_sealing = \"{mode}\" binds the sealed file to the keeper id; set keeper_id or \
                 SPIKE_KEEPER_ID (the unit sets it to %i)"
            ),
        })?;
    let file =
        SealedShardFile::from_credentials(mode, config.state_directory.as_deref(), keeper_id, env)?;
    let path = file.path().display().to_string();
    let (store, outcome) = ShardStore::sealed(file);
    let status = match outcome {
        LoadOutcome::Absent => {
            tracing::info!(
                mode = %mode,
                path,
                "shard sealing on: no sealed shard yet; empty until Nexus or bootstrap contributes one"
            );
            "no shard yet (shard sealing on)"
        }
        LoadOutcome::Loaded(_) => {
            tracing::info!(mode = %mode, path, "restored the shard from its sealed file");
            "shard restored from its sealed file"
        }
        LoadOutcome::Unusable(why) => {
            tracing::error!(
                mode = %mode,
                path,
                "the sealed shard file does not open: {why}. Starting empty; the file is kept \
                 untouched until a new shard arrives. Nexus re-seeds this keeper if it is unsealed \
                 or other keepers hold the threshold; otherwise restore Nexus with \
                 `spike-operator restore DIR` (docs/operations.md, \"When a seal no longer opens\")"
            );
            "no shard: the sealed shard file does not open (see the journal)"
        }
    };
    Ok((store, status))
}
