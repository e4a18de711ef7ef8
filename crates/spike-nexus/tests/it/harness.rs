//! In-process test world: one Workload API server serving every identity, Nexus instances on
//! 127.0.0.1:0, typed clients per caller role.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use spike_client::{BaseUrl, ClientOptions, NexusClient, RawResponse};
use spike_daemon::listen::ListenFds;
use spike_daemon::notify::Notifier;
use spike_identity::{Identity, IdentityOptions, SpiffeId};
use spike_nexus::config::{Config, ConfigFile, PeerList, TrustRootsFile};
use spike_nexus::state::NexusState;
use spike_nexus::{NexusError, Running};
use spike_proto::spiffe_id::{TrustRoot, TrustRoots};
use spike_testkit::{TestPki, WorkloadApiServer};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) const NEXUS: &str = "/spike/nexus";
pub(crate) const BOOTSTRAP: &str = "/spike/bootstrap";
pub(crate) const SUPERUSER: &str = "/spike/pilot/role/superuser";
pub(crate) const RECOVER: &str = "/spike/pilot/role/recover";
pub(crate) const RESTORE: &str = "/spike/pilot/role/restore";
pub(crate) const LITE: &str = "/spike/workload/role/lite";
pub(crate) const WORKLOAD: &str = "/app/web";
pub(crate) const KEEPERS: [&str; 3] = ["/spike/keeper/1", "/spike/keeper/2", "/spike/keeper/3"];

pub(crate) struct World {
    pub(crate) pki: TestPki,
    pub(crate) wl: WorkloadApiServer,
    pub(crate) dir: TempDir,
}

pub(crate) fn roots() -> TrustRoots {
    TrustRoots::uniform(TrustRoot::new("spike.test").unwrap())
}

impl World {
    pub(crate) fn new() -> World {
        let pki = TestPki::new().unwrap();
        let mut ids: Vec<String> = [
            NEXUS, BOOTSTRAP, SUPERUSER, RECOVER, RESTORE, LITE, WORKLOAD,
        ]
        .iter()
        .map(|p| pki.id(p))
        .collect();
        ids.extend(KEEPERS.iter().map(|p| pki.id(p)));
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let wl = WorkloadApiServer::start_in_tempdir(&pki, &refs).unwrap();
        World {
            pki,
            wl,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn id(&self, path: &str) -> String {
        self.pki.id(path)
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

    pub(crate) fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A config file for `backend` with fast intervals.
    pub(crate) fn config_file(&self, backend: &str, keepers: &[String], data: &Path) -> ConfigFile {
        ConfigFile {
            listen: "127.0.0.1:0".to_owned(),
            backend_store: backend.to_owned(),
            keeper_peers: Some(PeerList::List(keepers.to_vec())),
            shamir_shares: 3,
            shamir_threshold: 2,
            data_dir: Some(data.to_owned()),
            trust_roots: TrustRootsFile {
                nexus: Some("spike.test".to_owned()),
                keeper: Some("spike.test".to_owned()),
                bootstrap: Some("spike.test".to_owned()),
                pilot: Some("spike.test".to_owned()),
                lite_workload: Some("spike.test".to_owned()),
            },
            health_socket: Some(data.join("health.sock")),
            metrics_listen: "127.0.0.1:0".to_owned(),
            keeper_update_interval: spike_daemon::config::GoDuration(Duration::from_secs(3)),
            keeper_probe_interval: spike_daemon::config::GoDuration(Duration::from_millis(300)),
            keeper_timeout: spike_daemon::config::GoDuration(Duration::from_secs(2)),
            recovery_initial_interval: spike_daemon::config::GoDuration(Duration::from_millis(50)),
            recovery_max_interval: spike_daemon::config::GoDuration(Duration::from_millis(300)),
            shutdown_grace: spike_daemon::config::GoDuration(Duration::from_secs(2)),
            request_body_limit: 256 * 1024,
            ..ConfigFile::default()
        }
    }

    pub(crate) fn config(&self, backend: &str, keepers: &[String], data: &Path) -> Config {
        Config::try_from(self.config_file(backend, keepers, data)).unwrap()
    }

    pub(crate) async fn start_nexus(&self, config: Config) -> NexusHandle {
        self.start_nexus_with(config, Notifier::disabled()).await
    }

    pub(crate) async fn start_nexus_with(&self, config: Config, notifier: Notifier) -> NexusHandle {
        let identity = self.identity(NEXUS).await;
        let token = CancellationToken::new();
        let running =
            spike_nexus::start(config, identity, notifier, ListenFds::none(), token.clone())
                .await
                .unwrap();
        NexusHandle::new(running, token)
    }

    pub(crate) async fn client(&self, who: &str, nexus: &NexusHandle) -> NexusClient {
        let identity = self.identity(who).await;
        NexusClient::new(
            &identity,
            BaseUrl::parse(&format!("https://127.0.0.1:{}", nexus.addr.port())).unwrap(),
            &roots(),
            ClientOptions::with_timeout(Duration::from_secs(5)),
        )
        .unwrap()
    }
}

pub(crate) struct NexusHandle {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    pub(crate) health_socket: Option<PathBuf>,
    pub(crate) state: NexusState,
    pub(crate) token: CancellationToken,
    join: JoinHandle<Result<(), NexusError>>,
}

impl NexusHandle {
    fn new(running: Running, token: CancellationToken) -> Self {
        let addr = running.api_addr;
        let metrics_addr = running.metrics_addr;
        let health_socket = running.health_socket.clone();
        let state = running.state.clone();
        let join = tokio::spawn(running.wait());
        NexusHandle {
            addr,
            metrics_addr,
            health_socket,
            state,
            token,
            join,
        }
    }

    pub(crate) async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.join)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    /// Waits until the state is unsealed (or panics after `secs`).
    pub(crate) async fn wait_unsealed(&self, secs: u64) {
        let mut rx = self.state.watch_unsealed();
        tokio::time::timeout(Duration::from_secs(secs), rx.wait_for(|u| *u))
            .await
            .expect("Nexus did not unseal in time")
            .unwrap();
    }
}

/// A raw POST through the client's mTLS connection.
pub(crate) async fn post(
    client: &NexusClient,
    path: &str,
    action: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> RawResponse {
    client
        .http()
        .request(http::Method::POST, path, action, content_type, body.into())
        .await
        .unwrap()
}

pub(crate) async fn post_json(
    client: &NexusClient,
    path: &str,
    action: Option<&str>,
    body: &str,
) -> RawResponse {
    post(
        client,
        path,
        action,
        Some("application/json"),
        body.to_owned(),
    )
    .await
}

pub(crate) fn body_json(raw: &RawResponse) -> serde_json::Value {
    serde_json::from_slice(&raw.body).unwrap_or(serde_json::Value::Null)
}

pub(crate) fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// GET over the plain health unix socket.
pub(crate) async fn unix_get(socket: &Path, target: &str) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// GET over plain TCP (metrics).
pub(crate) async fn tcp_get(addr: std::net::SocketAddr, target: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// URLs of keepers that are not running (nothing listens on these ports).
pub(crate) fn dead_keepers() -> Vec<String> {
    (0..3)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("https://127.0.0.1:{}", l.local_addr().unwrap().port())
        })
        .collect()
}

pub(crate) struct KeeperHandle {
    pub(crate) port: u16,
    pub(crate) url: String,
    pub(crate) store: spike_keeper::ShardStore,
    token: CancellationToken,
    join: JoinHandle<Result<(), spike_keeper::KeeperError>>,
}

impl KeeperHandle {
    pub(crate) async fn stop(self) -> u16 {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.join)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        self.port
    }
}

impl World {
    /// Starts keeper `index` (0-based) on `port` (0 = any).
    pub(crate) async fn start_keeper(&self, index: usize, port: u16) -> KeeperHandle {
        let toml = format!(
            "listen = \"127.0.0.1:{port}\"\nspiffe_id = \"{}\"\nshutdown_grace_period = \"1s\"\n\
             [trust_roots]\nnexus = \"spike.test\"\nkeeper = \"spike.test\"\nbootstrap = \"spike.test\"\n",
            self.id(KEEPERS[index])
        );
        let config =
            spike_keeper::KeeperConfig::from_toml(&toml, &spike_daemon::MapEnv::new()).unwrap();
        let identity = self.identity(KEEPERS[index]).await;
        let listener = bind_retry(port).await;
        let port = listener.local_addr().unwrap().port();
        let keeper = spike_keeper::Keeper::new(config, identity).unwrap();
        let store = keeper.store();
        let token = CancellationToken::new();
        let join = tokio::spawn(keeper.serve(listener, token.clone()));
        KeeperHandle {
            port,
            url: format!("https://127.0.0.1:{port}"),
            store,
            token,
            join,
        }
    }

    pub(crate) async fn start_keepers(&self) -> Vec<KeeperHandle> {
        let mut out = Vec::new();
        for i in 0..3 {
            out.push(self.start_keeper(i, 0).await);
        }
        out
    }
}

async fn bind_retry(port: u16) -> tokio::net::TcpListener {
    for _ in 0..50 {
        if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot bind 127.0.0.1:{port}");
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
