//! The daemon around [`crate::Keeper`]: identity, socket activation, readiness, watchdog.

use spike_daemon::common::IdentitySettings;
use spike_daemon::listen::{ListenFds, ListenerOrigin};
use spike_daemon::notify::Notifier;
use spike_daemon::shutdown::CancellationToken;

use crate::config::TRUST_ROLES;

use crate::{Keeper, KeeperConfig, KeeperError};

/// Name of the socket-activation fd the keeper serves on (`FileDescriptorName=api`).
pub const LISTEN_FD_NAME: &str = "api";

/// Obtains the SVID, checks it, takes the `api` socket from `fds` (or binds
/// `config.listen`), sends `READY=1`, serves until `shutdown`, then sends `STOPPING=1`.
///
/// # Errors
/// Identity, listener and serve errors.
pub async fn run_daemon(
    config: KeeperConfig,
    mut fds: ListenFds,
    notifier: Notifier,
    shutdown: CancellationToken,
) -> Result<(), KeeperError> {
    let _ = notifier.status("waiting for an X.509-SVID from the SPIFFE Workload API");
    let settings = IdentitySettings {
        endpoint: config.spiffe_endpoint_socket.clone(),
        spiffe_id: config.spiffe_id.clone(),
        timeout: config.spiffe_source_timeout,
    };
    // Accept peers from every trust domain our trust roots name (not only our own); the own-ID
    // role check is in `Keeper::new`.
    let identity =
        spike_daemon::identity::connect(&settings, &config.trust_roots, TRUST_ROLES).await?;
    let listen = config.listen;
    let keeper = Keeper::new(config, identity)?;
    let (listener, origin) = fds.tcp_or_bind(LISTEN_FD_NAME, listen).await?;
    for name in fds.into_unclaimed() {
        tracing::warn!(name, "ignoring an unexpected socket-activation fd");
    }
    let addr = listener
        .local_addr()
        .map_or_else(|_| listen.to_string(), |a| a.to_string());
    match origin {
        ListenerOrigin::Activated { fd } => {
            tracing::info!(fd, listen = %addr, "using the socket passed by systemd")
        }
        ListenerOrigin::Bound => tracing::info!(listen = %addr, "bound the listen address"),
    }
    let _ = notifier.ready();
    let _ = notifier.status(&format!("serving on {addr}; no shard yet"));
    let watchdog = notifier.spawn_watchdog(shutdown.clone());
    let result = keeper.serve(listener, shutdown.clone()).await;
    let _ = notifier.stopping();
    shutdown.cancel();
    let _ = watchdog.await;
    result
}
