//! Identities, keepers and configs.

use std::time::Duration;

use spike_bootstrap::{BootstrapConfig, RetryPolicy};
use spike_client::{BaseUrl, ClientOptions};
use spike_daemon::MapEnv;
use spike_daemon::shutdown::CancellationToken;
use spike_identity::{Identity, IdentityOptions, SpiffeId};
use spike_keeper::{Keeper, KeeperConfig, ShardStore};
use spike_proto::{TrustRoot, TrustRoots};
use spike_testkit::{TestPki, WorkloadApiServer};
use tokio::net::TcpListener;

pub(crate) const NEXUS: &str = "spiffe://spike.test/spike/nexus";
pub(crate) const KEEPER: &str = "spiffe://spike.test/spike/keeper";
/// The IDs `spike-register` issues: keeper *i* is `…/spike/keeper/<i>`.
pub(crate) const KEEPER_1: &str = "spiffe://spike.test/spike/keeper/1";
pub(crate) const KEEPER_2: &str = "spiffe://spike.test/spike/keeper/2";
pub(crate) const BOOTSTRAP: &str = "spiffe://spike.test/spike/bootstrap";
pub(crate) const PILOT: &str = "spiffe://spike.test/spike/pilot/role/superuser";

pub(crate) fn roots() -> TrustRoots {
    TrustRoots::uniform(TrustRoot::new("spike.test").unwrap())
}

pub(crate) fn options() -> ClientOptions {
    ClientOptions::with_timeout(Duration::from_secs(5))
}

pub(crate) fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts: attempts,
        initial_interval: Duration::from_millis(10),
        max_interval: Duration::from_millis(40),
        overall: Duration::from_secs(10),
    }
}

pub(crate) struct World {
    pub(crate) _pki: TestPki,
    pub(crate) wl: WorkloadApiServer,
}

pub(crate) async fn world() -> World {
    let pki = TestPki::new().unwrap();
    let wl = WorkloadApiServer::start_in_tempdir(
        &pki,
        &[BOOTSTRAP, KEEPER, KEEPER_1, KEEPER_2, NEXUS, PILOT],
    )
    .unwrap();
    World { _pki: pki, wl }
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

pub(crate) struct RunningKeeper {
    pub(crate) url: BaseUrl,
    pub(crate) store: ShardStore,
    token: CancellationToken,
}

impl Drop for RunningKeeper {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

pub(crate) async fn keeper(wl: &WorkloadApiServer) -> RunningKeeper {
    keeper_as(wl, KEEPER).await
}

/// A keeper serving the SVID `id`.
pub(crate) async fn keeper_as(wl: &WorkloadApiServer, id: &str) -> RunningKeeper {
    let config = KeeperConfig {
        trust_roots: roots(),
        ..KeeperConfig::default()
    };
    let keeper = Keeper::new(config, identity(wl, id).await).unwrap();
    let store = keeper.store();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let token = CancellationToken::new();
    tokio::spawn(keeper.serve(listener, token.clone()));
    RunningKeeper {
        url: BaseUrl::parse(&format!("https://127.0.0.1:{port}")).unwrap(),
        store,
        token,
    }
}

/// A port nothing listens on.
pub(crate) async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// Keepers accepted by role alone (they all serve [`KEEPER`]), for the delivery tests that
/// are not about pinning.
pub(crate) fn any(urls: &[BaseUrl]) -> Vec<spike_bootstrap::KeeperTarget> {
    urls.iter()
        .cloned()
        .map(spike_bootstrap::KeeperTarget::any_keeper)
        .collect()
}

/// A config for `keepers`, with a state dir and the test trust domain. The keepers all serve
/// [`KEEPER`], so they are accepted by role (`keeper_identity = "role"`).
pub(crate) fn config_for(
    keepers: &[String],
    nexus: &str,
    state_dir: &std::path::Path,
    endpoint: &str,
) -> BootstrapConfig {
    let peers = keepers.join(",");
    let toml = format!(
        "nexus_api_url = \"{nexus}\"\nshamir_shares = {}\nshamir_threshold = {}\n\
         state_dir = \"{}\"\nspiffe_endpoint_socket = \"{endpoint}\"\n\
         spiffe_id = \"{BOOTSTRAP}\"\nspiffe_source_timeout = \"5s\"\n\
         keeper_identity = \"role\"\n\
         keeper_max_retries = 1\nkeeper_retry_initial_interval = \"10ms\"\n\
         keeper_retry_max_interval = \"10ms\"\nhttp_client_timeout = \"5s\"\n\
         [trust_roots]\nnexus = \"spike.test\"\nkeeper = \"spike.test\"\nbootstrap = \"spike.test\"\n",
        keepers.len(),
        keepers.len().min(2),
        state_dir.display()
    );
    BootstrapConfig::from_toml(
        &toml,
        &MapEnv::new().with("SPIKE_NEXUS_KEEPER_PEERS", peers),
    )
    .unwrap()
}
