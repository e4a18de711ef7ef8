//! The in-process deployment: one test Workload API server serving every identity, real
//! keepers on `127.0.0.1:0`, and Nexus started through [`spike_nexus::start`].
//!
//! Bootstrap is done by hand as `spike-bootstrap` does it (docs/protocol.md#bootstrap-and-keepers): generate a root key, split
//! it, and contribute shard *i* to keeper *i*; a Nexus (re)started afterwards recovers the
//! key from the keepers on its own.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use spike_client::{BaseUrl, ClientOptions, KeeperClient};
use spike_crypto::{RootKey, shamir};
use spike_daemon::listen::ListenFds;
use spike_daemon::notify::Notifier;
use spike_identity::{Identity, IdentityOptions, SpiffeId};
use spike_nexus::config::{Config, ConfigFile, PeerList, TrustRootsFile};
use spike_nexus::model::SecretData;
use spike_nexus::state::NexusState;
use spike_nexus::store::{Backend, SqliteBackend, Store};
use spike_nexus::{NexusError, Running};
use spike_proto::ShardBytes;
use spike_proto::spiffe_id::{TrustRoot, TrustRoots};
use spike_testkit::{TestPki, WorkloadApiServer};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::load::{Target, secret_path, secret_values};

/// The trust domain of the test PKI.
pub const TRUST_DOMAIN: &str = "spike.test";
/// Nexus SPIFFE ID path.
pub const NEXUS: &str = "/spike/nexus";
/// Bootstrap SPIFFE ID path.
pub const BOOTSTRAP: &str = "/spike/bootstrap";
/// Pilot superuser SPIFFE ID path (the load generator's identity).
pub const SUPERUSER: &str = "/spike/pilot/role/superuser";

/// Storage backend of the in-process Nexus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// In-memory store; unsealed at start, no keepers.
    Memory,
    /// Encrypted SQLite; unsealed from keepers after a bootstrap by hand.
    Sqlite,
}

/// Trust roots of the test world (every role under `spike.test`).
///
/// # Errors
/// Never in practice (the constant is a valid root).
pub fn roots() -> Result<TrustRoots> {
    Ok(TrustRoots::uniform(TrustRoot::new(TRUST_DOMAIN)?))
}

fn keeper_path(i: usize) -> String {
    format!("/spike/keeper/{}", i + 1)
}

/// A running keeper.
#[derive(Debug)]
pub struct KeeperHandle {
    /// Its base URL.
    pub url: String,
    token: CancellationToken,
    join: JoinHandle<Result<(), spike_keeper::KeeperError>>,
}

/// A running Nexus.
#[derive(Debug)]
pub struct NexusHandle {
    /// The bound API address.
    pub addr: std::net::SocketAddr,
    /// The shared state (seal state).
    pub state: NexusState,
    token: CancellationToken,
    join: JoinHandle<Result<(), NexusError>>,
}

impl NexusHandle {
    /// Waits until unsealed, at most `limit`.
    ///
    /// # Errors
    /// When Nexus does not unseal in time.
    pub async fn wait_unsealed(&self, limit: Duration) -> Result<()> {
        let mut rx = self.state.watch_unsealed();
        tokio::time::timeout(limit, rx.wait_for(|u| *u))
            .await
            .map_err(|_| anyhow!("Nexus did not unseal within {limit:?}"))?
            .map_err(|_| anyhow!("Nexus stopped before unsealing"))?;
        Ok(())
    }

    /// Cancels Nexus and waits for it to stop.
    ///
    /// # Errors
    /// When it does not stop within 15 s or stops with an error.
    pub async fn stop(self) -> Result<()> {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.join)
            .await
            .map_err(|_| anyhow!("Nexus did not stop in time"))?
            .map_err(|e| anyhow!("Nexus task failed: {e}"))??;
        Ok(())
    }
}

/// The in-process world.
#[derive(Debug)]
pub struct Cluster {
    pki: TestPki,
    wl: WorkloadApiServer,
    /// Temporary directory for data that has no explicit place.
    pub dir: TempDir,
    keepers: Vec<KeeperHandle>,
    keeper_count: usize,
}

impl Cluster {
    /// Starts the Workload API server with identities for Nexus, bootstrap, the superuser
    /// and `keepers` keepers (the keepers themselves start with [`Cluster::start_keepers`]).
    ///
    /// # Errors
    /// When the test CA or the Workload API server cannot start.
    pub fn new(keepers: usize) -> Result<Cluster> {
        let pki = TestPki::new()?;
        let mut ids: Vec<String> = [NEXUS, BOOTSTRAP, SUPERUSER]
            .iter()
            .map(|p| pki.id(p))
            .collect();
        ids.extend((0..keepers).map(|i| pki.id(&keeper_path(i))));
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let wl = WorkloadApiServer::start_in_tempdir(&pki, &refs)?;
        Ok(Cluster {
            pki,
            wl,
            dir: tempfile::Builder::new().prefix("spike-bench-").tempdir()?,
            keepers: Vec::new(),
            keeper_count: keepers,
        })
    }

    /// The identity for SPIFFE ID path `path` (e.g. [`SUPERUSER`]).
    ///
    /// # Errors
    /// When the Workload API does not deliver it.
    pub async fn identity(&self, path: &str) -> Result<Identity> {
        let id = self.pki.id(path);
        Ok(Identity::connect_with(IdentityOptions {
            endpoint: Some(self.wl.endpoint()),
            timeout: Duration::from_secs(10),
            expected_id: Some(SpiffeId::from_str(&id).map_err(|e| anyhow!("{id}: {e}"))?),
            trust_domains: None,
        })
        .await?)
    }

    /// Starts every keeper on `127.0.0.1:0`.
    ///
    /// # Errors
    /// When a keeper cannot start.
    pub async fn start_keepers(&mut self) -> Result<()> {
        for i in 0..self.keeper_count {
            let toml = format!(
                "listen = \"127.0.0.1:0\"\nspiffe_id = \"{}\"\nshutdown_grace_period = \"1s\"\n\
                 [trust_roots]\nnexus = \"{TRUST_DOMAIN}\"\nkeeper = \"{TRUST_DOMAIN}\"\n\
                 bootstrap = \"{TRUST_DOMAIN}\"\n",
                self.pki.id(&keeper_path(i))
            );
            let config =
                spike_keeper::KeeperConfig::from_toml(&toml, &spike_daemon::MapEnv::new())?;
            let identity = self.identity(&keeper_path(i)).await?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let port = listener.local_addr()?.port();
            let keeper = spike_keeper::Keeper::new(config, identity)?;
            let token = CancellationToken::new();
            let join = tokio::spawn(keeper.serve(listener, token.clone()));
            self.keepers.push(KeeperHandle {
                url: format!("https://127.0.0.1:{port}"),
                token,
                join,
            });
        }
        Ok(())
    }

    /// Keeper URLs in shard order.
    pub fn keeper_urls(&self) -> Vec<String> {
        self.keepers.iter().map(|k| k.url.clone()).collect()
    }

    /// Bootstrap by hand: splits `key` into one shard per keeper (`threshold` needed) and
    /// contributes shard *i* to keeper *i*.
    ///
    /// # Errors
    /// When splitting fails or a keeper refuses.
    pub async fn seed_keepers(&self, key: &RootKey, threshold: u16) -> Result<()> {
        let identity = self.identity(BOOTSTRAP).await?;
        let shares = u16::try_from(self.keepers.len())?;
        let shards = shamir::split(key, shares, threshold)?;
        for (shard, keeper) in shards.iter().zip(&self.keepers) {
            let client = KeeperClient::new(
                &identity,
                BaseUrl::parse(&keeper.url)?,
                &roots()?,
                ClientOptions::with_timeout(Duration::from_secs(10)),
            )?;
            client
                .contribute(ShardBytes::new(*shard.expose_secret()))
                .await
                .with_context(|| format!("contributing to {}", keeper.url))?;
        }
        Ok(())
    }

    /// A Nexus configuration: `backend` on `127.0.0.1:0`, the running keepers as peers
    /// (`threshold` of them needed), database in `data`, no health socket or metrics
    /// listener; every other setting at its default.
    ///
    /// # Errors
    /// When the configuration does not validate.
    pub fn nexus_config(
        &self,
        backend: BackendChoice,
        threshold: u16,
        data: &Path,
    ) -> Result<Config> {
        let keepers = self.keeper_urls();
        let shares = u16::try_from(keepers.len().max(1))?;
        let file = ConfigFile {
            listen: "127.0.0.1:0".to_owned(),
            backend_store: match backend {
                BackendChoice::Memory => "memory",
                BackendChoice::Sqlite => "sqlite",
            }
            .to_owned(),
            keeper_peers: (!keepers.is_empty()).then(|| PeerList::List(keepers.clone())),
            shamir_shares: shares,
            // Memory mode has no keepers; the shamir settings only need to validate.
            shamir_threshold: threshold.min(shares),
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
        };
        Config::try_from(file).map_err(|e| anyhow!("invalid Nexus configuration: {e}"))
    }

    /// Starts Nexus with `config` (the identity is fetched first, outside any timing the
    /// caller does after this returns).
    ///
    /// # Errors
    /// When Nexus cannot start.
    pub async fn start_nexus(&self, config: Config) -> Result<NexusHandle> {
        let identity = self.identity(NEXUS).await?;
        self.start_nexus_with(config, identity).await
    }

    /// Starts Nexus with `config` and an identity already fetched.
    ///
    /// # Errors
    /// When Nexus cannot start.
    pub async fn start_nexus_with(
        &self,
        config: Config,
        identity: Identity,
    ) -> Result<NexusHandle> {
        let token = CancellationToken::new();
        let running: Running = spike_nexus::start(
            config,
            identity,
            Notifier::disabled(),
            ListenFds::none(),
            token.clone(),
        )
        .await?;
        let addr = running.api_addr;
        let state = running.state.clone();
        let join = tokio::spawn(running.wait());
        Ok(NexusHandle {
            addr,
            state,
            token,
            join,
        })
    }

    /// A load target: `nexus` as the Pilot superuser.
    ///
    /// # Errors
    /// When the identity cannot be fetched or the URL is invalid.
    pub async fn superuser_target(&self, nexus: &NexusHandle) -> Result<Target> {
        target_for(self.identity(SUPERUSER).await?, nexus)
    }

    /// Stops every keeper.
    ///
    /// # Errors
    /// When a keeper does not stop cleanly.
    pub async fn stop_keepers(&mut self) -> Result<()> {
        for k in self.keepers.drain(..) {
            k.token.cancel();
            tokio::time::timeout(Duration::from_secs(15), k.join)
                .await
                .map_err(|_| anyhow!("keeper did not stop in time"))?
                .map_err(|e| anyhow!("keeper task failed: {e}"))??;
        }
        Ok(())
    }
}

/// A load target: `nexus` as the holder of `identity`.
///
/// # Errors
/// When the URL is invalid (never in practice).
pub fn target_for(identity: Identity, nexus: &NexusHandle) -> Result<Target> {
    Ok(Target {
        identity,
        base: BaseUrl::parse(&format!("https://127.0.0.1:{}", nexus.addr.port()))?,
        roots: roots()?,
    })
}

/// Elapsed time since `start` in milliseconds.
pub fn millis_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// The database file of a Nexus data directory.
pub fn db_path(data: &Path) -> PathBuf {
    data.join("spike.db")
}

/// The benchmark root key file of a data directory (hex; a test fixture, never a real key).
pub fn key_path(data: &Path) -> PathBuf {
    data.join("bench-root-key.hex")
}

/// Writes `secrets` secrets (`bench/secret-<i>`, one `value_size`-byte value each) straight
/// into the encrypted SQLite database of `data`, under `key`, through the same store code
/// Nexus uses. Progress every 10 % on stderr when `progress`.
///
/// # Errors
/// Database errors.
pub fn populate_sqlite(
    data: &Path,
    key: &RootKey,
    secrets: u64,
    value_size: usize,
    progress: bool,
) -> Result<()> {
    std::fs::create_dir_all(data)?;
    let backend = std::sync::Arc::new(SqliteBackend::open(&db_path(data), key)?);
    let store = Store::new(
        std::sync::Arc::clone(&backend) as std::sync::Arc<dyn Backend>,
        10,
    )?;
    let step = (secrets / 10).max(1);
    for i in 0..secrets {
        store.put_secret(
            &secret_path(i),
            SecretData::from_map(secret_values(value_size, i)),
        )?;
        if progress && (i + 1) % step == 0 {
            eprintln!("populated {}/{secrets}", i + 1);
        }
    }
    backend.checkpoint()?;
    Ok(())
}

/// Loads (or creates, when absent) the benchmark root key of `data`.
///
/// # Errors
/// I/O errors or a malformed key file.
pub fn load_or_create_key(data: &Path) -> Result<(RootKey, bool)> {
    let path = key_path(data);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim()).context("malformed key file")?;
            let arr: [u8; 32] = bytes
                .try_into()
                .map_err(|_| anyhow!("key file must hold 32 bytes"))?;
            Ok((RootKey::from_bytes(&arr)?, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data)?;
            let key = RootKey::generate()?;
            write_private(&path, &hex::encode(key.expose_secret()))?;
            Ok((key, true))
        }
        Err(e) => Err(e.into()),
    }
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
