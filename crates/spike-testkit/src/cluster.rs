//! The in-process SPIKE cluster of the integration tests, the Pilot end-to-end tests and the
//! bench (feature `cluster`): one [`WorkloadApiServer`] serving every role identity, keepers
//! and Nexus instances on `127.0.0.1:0`, typed clients per role, and [`eventually`].
//!
//! Bootstrap by hand is [`World::seed_keepers`], as `spike-bootstrap` does it
//! (docs/protocol.md#bootstrap-and-keepers): split a root key and contribute shard *i* to
//! keeper *i*; a Nexus (re)started afterwards recovers the key from the keepers on its own.
//!
//! Every setup step returns a [`ClusterError`]; tests unwrap it, the bench reports it.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use spike_client::{BaseUrl, ClientOptions, KeeperClient, NexusClient};
use spike_crypto::{RootKey, shamir};
use spike_daemon::config::GoDuration;
use spike_daemon::listen::ListenFds;
use spike_daemon::notify::Notifier;
use spike_identity::{Identity, IdentityOptions, SpiffeId};
use spike_nexus::config::{Config, ConfigFile, PeerList, TrustRootsFile};
use spike_nexus::state::NexusState;
use spike_nexus::{NexusError, Running};
use spike_proto::ShardBytes;
use spike_proto::spiffe_id::{TrustRoot, TrustRoots};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{DEFAULT_TRUST_DOMAIN, TestPki, TestkitError, WorkloadApiServer};

/// The trust domain of every role here.
pub const TRUST_DOMAIN: &str = DEFAULT_TRUST_DOMAIN;
/// Nexus SPIFFE ID path.
pub const NEXUS: &str = "/spike/nexus";
/// Bootstrap SPIFFE ID path.
pub const BOOTSTRAP: &str = "/spike/bootstrap";
/// Pilot superuser SPIFFE ID path.
pub const SUPERUSER: &str = "/spike/pilot/role/superuser";
/// Pilot recover SPIFFE ID path.
pub const RECOVER: &str = "/spike/pilot/role/recover";
/// Pilot restore SPIFFE ID path.
pub const RESTORE: &str = "/spike/pilot/role/restore";
/// SPIKE Lite workload SPIFFE ID path.
pub const LITE: &str = "/spike/workload/role/lite";
/// An ordinary workload's SPIFFE ID path.
pub const WORKLOAD: &str = "/app/web";
/// SPIFFE ID paths of the three keepers of a default cluster ([`keeper_path`] of 0, 1, 2).
pub const KEEPERS: [&str; 3] = ["/spike/keeper/1", "/spike/keeper/2", "/spike/keeper/3"];
/// Shamir shares of a default cluster (one per keeper).
pub const SHARES: u16 = 3;
/// Shamir threshold of a default cluster.
pub const THRESHOLD: u16 = 2;

/// How long [`NexusHandle::stop`] and [`KeeperHandle::stop`] wait.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// Errors of setting up or tearing down the cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The test PKI or the Workload API server failed.
    #[error(transparent)]
    Testkit(#[from] TestkitError),
    /// A step failed; `what` names it.
    #[error("{what}: {source}")]
    Step {
        /// The step.
        what: String,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A daemon did not stop (or unseal) in time, or its task panicked.
    #[error("{0}")]
    Timeout(String),
}

trait Step<T> {
    fn step(self, what: impl Into<String>) -> Result<T, ClusterError>;
}

impl<T, E: Into<Box<dyn std::error::Error + Send + Sync>>> Step<T> for Result<T, E> {
    fn step(self, what: impl Into<String>) -> Result<T, ClusterError> {
        self.map_err(|e| ClusterError::Step {
            what: what.into(),
            source: e.into(),
        })
    }
}

/// The SPIFFE ID path of keeper `index` (0-based): `/spike/keeper/<index + 1>`.
pub fn keeper_path(index: usize) -> String {
    format!("/spike/keeper/{}", index + 1)
}

/// Trust roots of the cluster (every role under [`TRUST_DOMAIN`]).
///
/// # Errors
/// Never in practice (the constant is a valid root).
pub fn roots() -> Result<TrustRoots, ClusterError> {
    Ok(TrustRoots::uniform(
        TrustRoot::new(TRUST_DOMAIN).step("trust root")?,
    ))
}

/// A Nexus configuration file: `backend` on `127.0.0.1:0` with its data in `data`, every
/// trust root [`TRUST_DOMAIN`], Shamir [`SHARES`]/[`THRESHOLD`], no keepers, no health
/// socket, no metrics listener; every other key at its default.
pub fn base_config_file(backend: &str, data: &Path) -> ConfigFile {
    ConfigFile {
        listen: "127.0.0.1:0".to_owned(),
        backend_store: backend.to_owned(),
        keeper_peers: None,
        shamir_shares: SHARES,
        shamir_threshold: THRESHOLD,
        data_dir: Some(data.to_owned()),
        trust_roots: TrustRootsFile {
            nexus: Some(TRUST_DOMAIN.to_owned()),
            keeper: Some(TRUST_DOMAIN.to_owned()),
            bootstrap: Some(TRUST_DOMAIN.to_owned()),
            pilot: Some(TRUST_DOMAIN.to_owned()),
            lite_workload: Some(TRUST_DOMAIN.to_owned()),
        },
        health_socket: None,
        metrics_listen: String::new(),
        ..ConfigFile::default()
    }
}

/// The test configuration: [`base_config_file`] with `keepers` as peers, the health socket
/// `data/health.sock`, metrics on `127.0.0.1:0`, fast keeper and recovery intervals, a 2 s
/// shutdown grace and a 256 KiB body limit.
pub fn test_config_file(backend: &str, keepers: &[String], data: &Path) -> ConfigFile {
    ConfigFile {
        keeper_peers: Some(PeerList::urls(keepers)),
        health_socket: Some(data.join("health.sock")),
        metrics_listen: "127.0.0.1:0".to_owned(),
        keeper_update_interval: GoDuration(Duration::from_secs(3)),
        keeper_probe_interval: GoDuration(Duration::from_millis(300)),
        keeper_timeout: GoDuration(Duration::from_secs(2)),
        recovery_initial_interval: GoDuration(Duration::from_millis(50)),
        recovery_max_interval: GoDuration(Duration::from_millis(300)),
        shutdown_grace: GoDuration(Duration::from_secs(2)),
        request_body_limit: 256 * 1024,
        ..base_config_file(backend, data)
    }
}

/// The PKI, one Workload API server serving every identity of the world, and a scratch
/// directory. Must be created inside a Tokio runtime (the server is a task).
#[derive(Debug)]
pub struct World {
    /// The test PKI.
    pub pki: TestPki,
    /// The Workload API server serving every identity.
    pub wl: WorkloadApiServer,
    /// Scratch directory (data directories go below it).
    pub dir: TempDir,
}

impl World {
    /// A world serving every role and the three [`KEEPERS`].
    ///
    /// # Errors
    /// When the PKI, the server or the directory cannot be created.
    pub fn new() -> Result<World, ClusterError> {
        let mut paths = vec![
            NEXUS, BOOTSTRAP, SUPERUSER, RECOVER, RESTORE, LITE, WORKLOAD,
        ];
        paths.extend(KEEPERS);
        World::serving(&paths, tempfile::tempdir().step("temporary directory")?)
    }

    /// A world serving the SPIFFE ID `paths`, with scratch directory `dir`.
    ///
    /// # Errors
    /// When the PKI or the server cannot start.
    pub fn serving<S: AsRef<str>>(paths: &[S], dir: TempDir) -> Result<World, ClusterError> {
        let pki = TestPki::new()?;
        let ids: Vec<String> = paths.iter().map(|p| pki.id(p.as_ref())).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let wl = WorkloadApiServer::start_in_tempdir(&pki, &refs)?;
        Ok(World { pki, wl, dir })
    }

    /// The SPIFFE ID of `path`.
    pub fn id(&self, path: &str) -> String {
        self.pki.id(path)
    }

    /// `dir/<name>`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The identity of `path`, through the Workload API.
    ///
    /// # Errors
    /// When the Workload API does not deliver it within 10 s.
    pub async fn identity(&self, path: &str) -> Result<Identity, ClusterError> {
        let id = self.id(path);
        Identity::connect_with(IdentityOptions {
            endpoint: Some(self.wl.endpoint()),
            timeout: Duration::from_secs(10),
            expected_id: Some(SpiffeId::from_str(&id).step(id.clone())?),
            trust_domains: None,
        })
        .await
        .step(format!("identity {id}"))
    }

    /// [`test_config_file`] as a [`Config`].
    ///
    /// # Errors
    /// When it does not validate.
    pub fn config(
        &self,
        backend: &str,
        keepers: &[String],
        data: &Path,
    ) -> Result<Config, ClusterError> {
        Config::try_from(test_config_file(backend, keepers, data)).step("Nexus configuration")
    }

    /// Starts Nexus with `config` and no notifier.
    ///
    /// # Errors
    /// When the identity cannot be fetched or Nexus cannot start.
    pub async fn start_nexus(&self, config: Config) -> Result<NexusHandle, ClusterError> {
        self.start_nexus_with(config, Notifier::disabled()).await
    }

    /// Starts Nexus with `config` and `notifier`.
    ///
    /// # Errors
    /// When the identity cannot be fetched or Nexus cannot start.
    pub async fn start_nexus_with(
        &self,
        config: Config,
        notifier: Notifier,
    ) -> Result<NexusHandle, ClusterError> {
        let identity = self.identity(NEXUS).await?;
        NexusHandle::start(config, identity, notifier).await
    }

    /// A Nexus client as `who` (5 s timeout).
    ///
    /// # Errors
    /// When the identity cannot be fetched.
    pub async fn client(
        &self,
        who: &str,
        nexus: &NexusHandle,
    ) -> Result<NexusClient, ClusterError> {
        let identity = self.identity(who).await?;
        NexusClient::new(
            &identity,
            BaseUrl::parse(&nexus.url()).step("Nexus URL")?,
            &roots()?,
            ClientOptions::with_timeout(Duration::from_secs(5)),
        )
        .step("Nexus client")
    }

    /// Starts keeper `index` (0-based, identity [`keeper_path`]) on `port` (0 = any; a busy
    /// port is retried for 5 s, for restarts on the same port).
    ///
    /// # Errors
    /// When the keeper cannot start.
    pub async fn start_keeper(
        &self,
        index: usize,
        port: u16,
    ) -> Result<KeeperHandle, ClusterError> {
        let path = keeper_path(index);
        let toml = format!(
            "listen = \"127.0.0.1:{port}\"\nspiffe_id = \"{}\"\nshutdown_grace_period = \"1s\"\n\
             [trust_roots]\nnexus = \"{TRUST_DOMAIN}\"\nkeeper = \"{TRUST_DOMAIN}\"\n\
             bootstrap = \"{TRUST_DOMAIN}\"\n",
            self.id(&path)
        );
        let config = spike_keeper::KeeperConfig::from_toml(&toml, &spike_daemon::MapEnv::new())
            .step("keeper configuration")?;
        let identity = self.identity(&path).await?;
        let listener = bind_retry(port).await?;
        let port = listener.local_addr().step("keeper address")?.port();
        let keeper = spike_keeper::Keeper::new(config, identity).step("keeper")?;
        let store = keeper.store();
        let token = CancellationToken::new();
        let join = tokio::spawn(keeper.serve(listener, token.clone()));
        Ok(KeeperHandle {
            port,
            url: format!("https://127.0.0.1:{port}"),
            store,
            token,
            join,
        })
    }

    /// Starts keepers `0..count` on free ports.
    ///
    /// # Errors
    /// When a keeper cannot start.
    pub async fn start_keepers(&self, count: usize) -> Result<Vec<KeeperHandle>, ClusterError> {
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            out.push(self.start_keeper(i, 0).await?);
        }
        Ok(out)
    }

    /// Bootstrap by hand: splits `key` into one shard per keeper (`threshold` needed) and
    /// contributes shard *i* to keeper *i* with the Bootstrap identity.
    ///
    /// # Errors
    /// When splitting fails or a keeper refuses.
    pub async fn seed_keepers(
        &self,
        keepers: &[KeeperHandle],
        key: &RootKey,
        threshold: u16,
    ) -> Result<(), ClusterError> {
        let identity = self.identity(BOOTSTRAP).await?;
        let shares = u16::try_from(keepers.len()).step("keeper count")?;
        let shards = shamir::split(key, shares, threshold).step("splitting the root key")?;
        for (shard, keeper) in shards.iter().zip(keepers) {
            let client = KeeperClient::new(
                &identity,
                BaseUrl::parse(&keeper.url).step("keeper URL")?,
                &roots()?,
                ClientOptions::with_timeout(Duration::from_secs(10)),
            )
            .step("keeper client")?;
            client
                .contribute(ShardBytes::new(*shard.expose_secret()))
                .await
                .step(format!("contributing to {}", keeper.url))?;
        }
        Ok(())
    }
}

async fn bind_retry(port: u16) -> Result<tokio::net::TcpListener, ClusterError> {
    let mut last = None;
    for _ in 0..50 {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ClusterError::Step {
        what: format!("cannot bind 127.0.0.1:{port}"),
        source: last.map_or_else(|| "no attempt".into(), Into::into),
    })
}

async fn join<E>(
    join: JoinHandle<Result<(), E>>,
    limit: Duration,
    what: &str,
) -> Result<(), ClusterError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    tokio::time::timeout(limit, join)
        .await
        .map_err(|_| ClusterError::Timeout(format!("{what} did not stop within {limit:?}")))?
        .map_err(|e| ClusterError::Timeout(format!("{what} task failed: {e}")))?
        .step(what)
}

/// A running Nexus.
#[derive(Debug)]
pub struct NexusHandle {
    /// The bound API address.
    pub addr: std::net::SocketAddr,
    /// The bound metrics address, if enabled.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The health socket, if enabled.
    pub health_socket: Option<PathBuf>,
    /// The shared state (seal state, metrics).
    pub state: NexusState,
    /// Cancels Nexus.
    pub token: CancellationToken,
    join: JoinHandle<Result<(), NexusError>>,
}

impl NexusHandle {
    /// Starts Nexus with `config`, an identity already fetched and `notifier`.
    ///
    /// # Errors
    /// When Nexus cannot start.
    pub async fn start(
        config: Config,
        identity: Identity,
        notifier: Notifier,
    ) -> Result<NexusHandle, ClusterError> {
        let token = CancellationToken::new();
        let running: Running =
            spike_nexus::start(config, identity, notifier, ListenFds::none(), token.clone())
                .await
                .step("starting Nexus")?;
        Ok(NexusHandle {
            addr: running.api_addr,
            metrics_addr: running.metrics_addr,
            health_socket: running.health_socket.clone(),
            state: running.state.clone(),
            token,
            join: tokio::spawn(running.wait()),
        })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Cancels Nexus and waits 10 s for it to stop.
    ///
    /// # Errors
    /// When it does not stop in time or stops with an error.
    pub async fn stop(self) -> Result<(), ClusterError> {
        self.stop_within(STOP_LIMIT).await
    }

    /// Cancels Nexus and waits `limit` for it to stop.
    ///
    /// # Errors
    /// When it does not stop in time or stops with an error.
    pub async fn stop_within(self, limit: Duration) -> Result<(), ClusterError> {
        self.token.cancel();
        join(self.join, limit, "Nexus").await
    }

    /// Waits until the state is unsealed, at most `limit`.
    ///
    /// # Errors
    /// When Nexus does not unseal in time.
    pub async fn wait_unsealed(&self, limit: Duration) -> Result<(), ClusterError> {
        let mut rx = self.state.watch_unsealed();
        tokio::time::timeout(limit, rx.wait_for(|u| *u))
            .await
            .map_err(|_| ClusterError::Timeout(format!("Nexus did not unseal within {limit:?}")))?
            .map_err(|_| ClusterError::Timeout("Nexus stopped before unsealing".to_owned()))?;
        Ok(())
    }
}

/// A running keeper.
#[derive(Debug)]
pub struct KeeperHandle {
    /// Its port.
    pub port: u16,
    /// Its base URL.
    pub url: String,
    /// Its shard store.
    pub store: spike_keeper::ShardStore,
    token: CancellationToken,
    join: JoinHandle<Result<(), spike_keeper::KeeperError>>,
}

impl KeeperHandle {
    /// Cancels the keeper and waits 10 s for it to stop; returns its port.
    ///
    /// # Errors
    /// When it does not stop in time or stops with an error.
    pub async fn stop(self) -> Result<u16, ClusterError> {
        self.stop_within(STOP_LIMIT).await
    }

    /// Cancels the keeper and waits `limit` for it to stop; returns its port.
    ///
    /// # Errors
    /// When it does not stop in time or stops with an error.
    pub async fn stop_within(self, limit: Duration) -> Result<u16, ClusterError> {
        self.token.cancel();
        join(self.join, limit, "keeper").await?;
        Ok(self.port)
    }
}

/// The URLs of `keepers`, in shard order.
pub fn urls(keepers: &[KeeperHandle]) -> Vec<String> {
    keepers.iter().map(|k| k.url.clone()).collect()
}

/// URLs of three keepers that are not running (nothing listens on these ports).
///
/// # Errors
/// When no port can be bound.
pub fn dead_keepers() -> Result<Vec<String>, ClusterError> {
    (0..3)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").step("free port")?;
            let port = l.local_addr().step("free port")?.port();
            Ok(format!("https://127.0.0.1:{port}"))
        })
        .collect()
}

/// Polls `cond` every 50 ms for up to `secs` seconds.
///
/// # Panics
/// When `cond` is still false after `secs` seconds (a test assertion).
pub async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
