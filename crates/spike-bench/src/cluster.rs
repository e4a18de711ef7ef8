//! The in-process deployment: [`spike_testkit::cluster`] (one test Workload API server
//! serving every identity, real keepers on `127.0.0.1:0`, Nexus started through
//! [`spike_nexus::start`]) with the bench's choices: any number of keepers, default Nexus
//! intervals, no health socket or metrics listener, errors instead of panics.
//!
//! Bootstrap is done by hand as `spike-bootstrap` does it (docs/protocol.md#bootstrap-and-keepers): generate a root key, split
//! it, and contribute shard *i* to keeper *i*; a Nexus (re)started afterwards recovers the
//! key from the keepers on its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use spike_client::BaseUrl;
use spike_crypto::RootKey;
use spike_daemon::notify::Notifier;
use spike_identity::Identity;
use spike_nexus::config::{Config, ConfigFile, PeerList};
use spike_nexus::model::SecretData;
use spike_nexus::store::{Backend, SqliteBackend, Store};
use spike_testkit::cluster::{self, KeeperHandle, World, keeper_path, roots, urls};
use tokio::time::Instant;

pub use spike_testkit::cluster::{BOOTSTRAP, NEXUS, NexusHandle, SUPERUSER, TRUST_DOMAIN};

use crate::load::{Target, secret_path, secret_values};

/// How long a Nexus or keeper gets to stop.
pub const STOP_LIMIT: Duration = Duration::from_secs(15);

/// Storage backend of the in-process Nexus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// In-memory store; unsealed at start, no keepers.
    Memory,
    /// Encrypted SQLite; unsealed from keepers after a bootstrap by hand.
    Sqlite,
    /// PostgreSQL (a throwaway durable cluster started by the benchmark, unix socket):
    /// unsealed from keepers after a bootstrap by hand, one or more instances.
    Postgres,
}

/// The in-process world.
#[derive(Debug)]
pub struct Cluster {
    world: World,
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
        Cluster::with_identities(keepers, &[])
    }

    /// As [`Cluster::new`], and the Workload API server also serves the SPIFFE ID paths
    /// `extra` (e.g. a workload without any policy).
    ///
    /// # Errors
    /// When the test CA or the Workload API server cannot start.
    pub fn with_identities(keepers: usize, extra: &[&str]) -> Result<Cluster> {
        let mut paths: Vec<String> = [NEXUS, BOOTSTRAP, SUPERUSER]
            .iter()
            .chain(extra)
            .map(|p| (*p).to_owned())
            .collect();
        paths.extend((0..keepers).map(keeper_path));
        let dir = tempfile::Builder::new().prefix("spike-bench-").tempdir()?;
        Ok(Cluster {
            world: World::serving(&paths, dir)?,
            keepers: Vec::new(),
            keeper_count: keepers,
        })
    }

    /// Temporary directory for data that has no explicit place.
    pub fn dir(&self) -> &Path {
        self.world.dir.path()
    }

    /// The SPIFFE ID of `path` (e.g. `spiffe://spike.ist/spike/nexus` for [`NEXUS`]).
    pub fn spiffe_id(&self, path: &str) -> String {
        self.world.id(path)
    }

    /// The Workload API endpoint (`unix:<path>`) serving every identity, for a Nexus run as
    /// a child process.
    pub fn workload_endpoint(&self) -> String {
        self.world.wl.endpoint()
    }

    /// The identity for SPIFFE ID path `path` (e.g. [`SUPERUSER`]).
    ///
    /// # Errors
    /// When the Workload API does not deliver it.
    pub async fn identity(&self, path: &str) -> Result<Identity> {
        Ok(self.world.identity(path).await?)
    }

    /// Starts every keeper on `127.0.0.1:0`.
    ///
    /// # Errors
    /// When a keeper cannot start.
    pub async fn start_keepers(&mut self) -> Result<()> {
        let started = self.world.start_keepers(self.keeper_count).await?;
        self.keepers.extend(started);
        Ok(())
    }

    /// Keeper URLs in shard order.
    pub fn keeper_urls(&self) -> Vec<String> {
        urls(&self.keepers)
    }

    /// Bootstrap by hand: splits `key` into one shard per keeper (`threshold` needed) and
    /// contributes shard *i* to keeper *i*.
    ///
    /// # Errors
    /// When splitting fails or a keeper refuses.
    pub async fn seed_keepers(&self, key: &RootKey, threshold: u16) -> Result<()> {
        Ok(self
            .world
            .seed_keepers(&self.keepers, key, threshold)
            .await?)
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
        let backend = match backend {
            BackendChoice::Memory => "memory",
            BackendChoice::Sqlite => "sqlite",
            BackendChoice::Postgres => "postgres",
        };
        let file = ConfigFile {
            keeper_peers: (!keepers.is_empty()).then(|| PeerList::urls(&keepers)),
            shamir_shares: shares,
            // Memory mode has no keepers; the shamir settings only need to validate.
            shamir_threshold: threshold.min(shares),
            ..cluster::base_config_file(backend, data)
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
        Ok(NexusHandle::start(config, identity, Notifier::disabled()).await?)
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
            k.stop_within(STOP_LIMIT).await?;
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
        base: BaseUrl::parse(&nexus.url())?,
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
