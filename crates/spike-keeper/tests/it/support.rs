//! Identities and in-process keepers.

use std::time::Duration;

use spike_client::{BaseUrl, ClientOptions, KeeperClient};
use spike_daemon::shutdown::CancellationToken;
use spike_identity::{Identity, IdentityOptions, SpiffeId};
use spike_keeper::{Keeper, KeeperConfig, KeeperError, ShardStore};
use spike_proto::{TrustRoot, TrustRoots};
use spike_testkit::{TestPki, WorkloadApiServer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub(crate) const NEXUS: &str = "spiffe://spike.test/spike/nexus";
pub(crate) const KEEPER: &str = "spiffe://spike.test/spike/keeper";
pub(crate) const BOOTSTRAP: &str = "spiffe://spike.test/spike/bootstrap";
pub(crate) const PILOT: &str = "spiffe://spike.test/spike/pilot/role/superuser";

pub(crate) fn roots() -> TrustRoots {
    TrustRoots::uniform(TrustRoot::new("spike.test").unwrap())
}

pub(crate) struct World {
    pub(crate) _pki: TestPki,
    pub(crate) wl: WorkloadApiServer,
    pub(crate) nexus: Identity,
    pub(crate) bootstrap: Identity,
    pub(crate) pilot: Identity,
}

pub(crate) async fn identity(wl: &WorkloadApiServer, id: &str) -> Identity {
    Identity::connect_with(IdentityOptions {
        endpoint: Some(wl.endpoint()),
        timeout: Duration::from_secs(5),
        expected_id: Some(SpiffeId::new(id).unwrap()),
        trust_domains: None,
    })
    .await
    .unwrap()
}

pub(crate) async fn world() -> World {
    let pki = TestPki::new().unwrap();
    let wl = WorkloadApiServer::start_in_tempdir(&pki, &[KEEPER, NEXUS, BOOTSTRAP, PILOT]).unwrap();
    let nexus = identity(&wl, NEXUS).await;
    let bootstrap = identity(&wl, BOOTSTRAP).await;
    let pilot = identity(&wl, PILOT).await;
    World {
        _pki: pki,
        wl,
        nexus,
        bootstrap,
        pilot,
    }
}

pub(crate) fn config() -> KeeperConfig {
    KeeperConfig {
        trust_roots: roots(),
        shutdown_grace: Duration::from_secs(2),
        ..KeeperConfig::default()
    }
}

pub(crate) struct Running {
    pub(crate) url: BaseUrl,
    pub(crate) store: ShardStore,
    pub(crate) token: CancellationToken,
    pub(crate) task: JoinHandle<Result<(), KeeperError>>,
    pub(crate) identity: Identity,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

pub(crate) async fn start_keeper(wl: &WorkloadApiServer) -> Running {
    start_keeper_with(wl, ShardStore::new()).await
}

/// A keeper serving from `store` (a sealed one, for the sealing tests).
pub(crate) async fn start_keeper_with(wl: &WorkloadApiServer, store: ShardStore) -> Running {
    let identity = identity(wl, KEEPER).await;
    let keeper = Keeper::new(config(), identity.clone())
        .unwrap()
        .with_store(store);
    let store = keeper.store();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let token = CancellationToken::new();
    let task = tokio::spawn(keeper.serve(listener, token.clone()));
    Running {
        url: BaseUrl::parse(&format!("https://127.0.0.1:{port}")).unwrap(),
        store,
        token,
        task,
        identity,
    }
}

pub(crate) fn client(identity: &Identity, url: &BaseUrl) -> KeeperClient {
    KeeperClient::new(
        identity,
        url.clone(),
        &roots(),
        ClientOptions::with_timeout(Duration::from_secs(5)),
    )
    .unwrap()
}
