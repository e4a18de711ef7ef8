//! The test world: one Workload API server serving every identity (Nexus, keepers,
//! bootstrap, the Pilot roles), one extra server per Pilot role for Go processes (they take
//! the first SVID they get), three in-process keepers and an in-process SQLite Nexus.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use spike_client::{BaseUrl, ClientOptions, KeeperClient};
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
use spike_testkit::{TestPki, WorkloadApiServer};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) const TRUST_DOMAIN: &str = "spike.test";
pub(crate) const NEXUS: &str = "/spike/nexus";
pub(crate) const BOOTSTRAP: &str = "/spike/bootstrap";
pub(crate) const SUPERUSER: &str = "/spike/pilot/role/superuser";
pub(crate) const RECOVER: &str = "/spike/pilot/role/recover";
pub(crate) const RESTORE: &str = "/spike/pilot/role/restore";
pub(crate) const KEEPERS: [&str; 3] = ["/spike/keeper/1", "/spike/keeper/2", "/spike/keeper/3"];
/// Shamir parameters of every cluster here.
pub(crate) const SHARES: u16 = 3;
pub(crate) const THRESHOLD: u16 = 2;

pub(crate) fn roots() -> TrustRoots {
    TrustRoots::uniform(TrustRoot::new(TRUST_DOMAIN).unwrap())
}

/// The PKI, the shared Workload API server, one single-identity server per Pilot role, and
/// a scratch directory.
pub(crate) struct World {
    pub(crate) pki: TestPki,
    pub(crate) wl: WorkloadApiServer,
    roles: BTreeMap<&'static str, WorkloadApiServer>,
    pub(crate) dir: TempDir,
}

impl World {
    /// Must be called inside a Tokio runtime (the Workload API servers are tasks).
    pub(crate) fn new() -> World {
        let pki = TestPki::new().unwrap();
        let mut ids: Vec<String> = [NEXUS, BOOTSTRAP, SUPERUSER, RECOVER, RESTORE]
            .iter()
            .map(|p| pki.id(p))
            .collect();
        ids.extend(KEEPERS.iter().map(|p| pki.id(p)));
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let wl = WorkloadApiServer::start_in_tempdir(&pki, &refs).unwrap();
        let roles = [SUPERUSER, RECOVER, RESTORE]
            .into_iter()
            .map(|role| {
                let id = pki.id(role);
                let server = WorkloadApiServer::start_in_tempdir(&pki, &[id.as_str()]).unwrap();
                (role, server)
            })
            .collect();
        World {
            pki,
            wl,
            roles,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn id(&self, path: &str) -> String {
        self.pki.id(path)
    }

    /// `unix://<socket>` of the server serving every identity.
    pub(crate) fn endpoint(&self) -> String {
        unix_url(self.wl.socket_path())
    }

    /// `unix://<socket>` of the server serving only `role` (SUPERUSER, RECOVER or RESTORE).
    pub(crate) fn role_endpoint(&self, role: &str) -> String {
        unix_url(self.roles[role].socket_path())
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) async fn identity(&self, path: &str) -> Identity {
        Identity::connect_with(IdentityOptions {
            endpoint: Some(self.wl.endpoint()),
            timeout: Duration::from_secs(10),
            expected_id: Some(SpiffeId::from_str(&self.id(path)).unwrap()),
            trust_domains: None,
        })
        .await
        .unwrap()
    }

    /// A Nexus configuration: SQLite in `data`, the given keepers, fast intervals.
    fn nexus_config(&self, keepers: &[String], data: &Path) -> Config {
        let file = ConfigFile {
            listen: "127.0.0.1:0".to_owned(),
            backend_store: "sqlite".to_owned(),
            keeper_peers: Some(PeerList::List(keepers.to_vec())),
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
            health_socket: Some(data.join("health.sock")),
            metrics_listen: String::new(),
            keeper_update_interval: GoDuration(Duration::from_secs(3)),
            keeper_probe_interval: GoDuration(Duration::from_millis(300)),
            keeper_timeout: GoDuration(Duration::from_secs(2)),
            recovery_initial_interval: GoDuration(Duration::from_millis(50)),
            recovery_max_interval: GoDuration(Duration::from_millis(300)),
            shutdown_grace: GoDuration(Duration::from_secs(2)),
            ..ConfigFile::default()
        };
        Config::try_from(file).unwrap()
    }

    pub(crate) async fn start_nexus(&self, keepers: &[String], data: &Path) -> NexusHandle {
        let identity = self.identity(NEXUS).await;
        let token = CancellationToken::new();
        let running = spike_nexus::start(
            self.nexus_config(keepers, data),
            identity,
            Notifier::disabled(),
            ListenFds::none(),
            token.clone(),
        )
        .await
        .unwrap();
        NexusHandle::new(running, token)
    }

    /// Starts keeper `index` (0-based) on a free port.
    pub(crate) async fn start_keeper(&self, index: usize) -> KeeperHandle {
        let toml = format!(
            "listen = \"127.0.0.1:0\"\nspiffe_id = \"{}\"\nshutdown_grace_period = \"1s\"\n\
             [trust_roots]\nnexus = \"{TRUST_DOMAIN}\"\nkeeper = \"{TRUST_DOMAIN}\"\n\
             bootstrap = \"{TRUST_DOMAIN}\"\n",
            self.id(KEEPERS[index])
        );
        let config =
            spike_keeper::KeeperConfig::from_toml(&toml, &spike_daemon::MapEnv::new()).unwrap();
        let identity = self.identity(KEEPERS[index]).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let keeper = spike_keeper::Keeper::new(config, identity).unwrap();
        let store = keeper.store();
        let token = CancellationToken::new();
        let join = tokio::spawn(keeper.serve(listener, token.clone()));
        KeeperHandle {
            url: format!("https://127.0.0.1:{port}"),
            store,
            token,
            join,
        }
    }

    pub(crate) async fn start_keepers(&self) -> Vec<KeeperHandle> {
        let mut out = Vec::new();
        for i in 0..KEEPERS.len() {
            out.push(self.start_keeper(i).await);
        }
        out
    }

    /// Bootstraps by hand as SPIKE Bootstrap does: a fresh root key, split 3/2, shard `i`
    /// contributed to keeper `i` (keeper ids are 1-based list positions) with the Bootstrap
    /// SVID. Nexus then recovers the key from the keepers on its own.
    pub(crate) async fn bootstrap(&self, keepers: &[KeeperHandle]) -> RootKey {
        let key = RootKey::generate().unwrap();
        let shards = shamir::split(&key, SHARES, THRESHOLD).unwrap();
        let identity = self.identity(BOOTSTRAP).await;
        for (keeper, shard) in keepers.iter().zip(&shards) {
            let client = KeeperClient::new(
                &identity,
                BaseUrl::parse(&keeper.url).unwrap(),
                &roots(),
                ClientOptions::with_timeout(Duration::from_secs(5)),
            )
            .unwrap();
            client
                .contribute(ShardBytes::new(*shard.expose_secret()))
                .await
                .unwrap();
        }
        key
    }
}

fn unix_url(socket: &Path) -> String {
    format!("unix://{}", socket.display())
}

/// The recovery text of every shard of `key`: `spike:<id>:<hex>` by id.
pub(crate) fn shard_texts(key: &RootKey) -> BTreeMap<u16, String> {
    shamir::split(key, SHARES, THRESHOLD)
        .unwrap()
        .iter()
        .map(|s| {
            (
                s.id(),
                spike_crypto::shard_text::format(s).as_str().to_owned(),
            )
        })
        .collect()
}

pub(crate) struct NexusHandle {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) state: NexusState,
    token: CancellationToken,
    join: JoinHandle<Result<(), NexusError>>,
}

impl NexusHandle {
    fn new(running: Running, token: CancellationToken) -> Self {
        let addr = running.api_addr;
        let state = running.state.clone();
        let join = tokio::spawn(running.wait());
        NexusHandle {
            addr,
            state,
            token,
            join,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub(crate) async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.join)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    pub(crate) async fn wait_unsealed(&self, secs: u64) {
        let mut rx = self.state.watch_unsealed();
        tokio::time::timeout(Duration::from_secs(secs), rx.wait_for(|u| *u))
            .await
            .expect("Nexus did not unseal in time")
            .unwrap();
    }
}

pub(crate) struct KeeperHandle {
    pub(crate) url: String,
    pub(crate) store: spike_keeper::ShardStore,
    token: CancellationToken,
    join: JoinHandle<Result<(), spike_keeper::KeeperError>>,
}

impl KeeperHandle {
    pub(crate) async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.join)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

pub(crate) fn urls(keepers: &[KeeperHandle]) -> Vec<String> {
    keepers.iter().map(|k| k.url.clone()).collect()
}

/// Three keepers and a SQLite Nexus on them.
pub(crate) struct Cluster {
    pub(crate) keepers: Vec<KeeperHandle>,
    pub(crate) nexus: NexusHandle,
    pub(crate) data: PathBuf,
}

impl Cluster {
    /// Fresh keepers and a fresh Nexus (sealed, never bootstrapped).
    pub(crate) async fn start(w: &World, name: &str) -> Cluster {
        let data = w.path(name);
        let keepers = w.start_keepers().await;
        let nexus = w.start_nexus(&urls(&keepers), &data).await;
        Cluster {
            keepers,
            nexus,
            data,
        }
    }

    /// A fresh cluster bootstrapped by hand and unsealed; returns the root key too.
    pub(crate) async fn bootstrapped(w: &World, name: &str) -> (Cluster, RootKey) {
        let c = Cluster::start(w, name).await;
        let key = w.bootstrap(&c.keepers).await;
        c.nexus.wait_unsealed(30).await;
        (c, key)
    }

    /// Stops everything, then starts three empty keepers and a Nexus on the same database:
    /// initialized but sealed until an operator restores the key.
    pub(crate) async fn restart_with_empty_keepers(self, w: &World) -> Cluster {
        let Cluster {
            keepers,
            nexus,
            data,
        } = self;
        nexus.stop().await;
        for k in keepers {
            k.stop().await;
        }
        let keepers = w.start_keepers().await;
        let nexus = w.start_nexus(&urls(&keepers), &data).await;
        Cluster {
            keepers,
            nexus,
            data,
        }
    }

    pub(crate) async fn stop(self) {
        self.nexus.stop().await;
        for k in self.keepers {
            k.stop().await;
        }
    }
}

/// Polls `cond` every 50 ms for up to `secs` seconds.
pub(crate) async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
