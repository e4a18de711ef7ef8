//! Shard delivery to real keepers, and the refusals that need a network.

use std::time::Duration;

use spike_bootstrap::{BootstrapError, KeeperTarget, deliver_shards};
use spike_client::{BaseUrl, KeeperClient};
use spike_crypto::{RootKey, Shard, ShardValue, shamir};
use spike_identity::{MtlsAcceptor, SpiffeId};
use tokio::net::TcpListener;

use crate::support::{
    BOOTSTRAP, KEEPER_1, KEEPER_2, NEXUS, PILOT, any, closed_port, config_for, fast_retry,
    identity, keeper, keeper_as, options, roots, world,
};

#[tokio::test]
async fn keepers_receive_shares_that_combine_to_the_key() {
    let w = world().await;
    let keepers = [
        keeper(&w.wl).await,
        keeper(&w.wl).await,
        keeper(&w.wl).await,
    ];
    let urls: Vec<BaseUrl> = keepers.iter().map(|k| k.url.clone()).collect();
    let boot = identity(&w.wl, BOOTSTRAP).await;
    let key = RootKey::generate().unwrap();
    deliver_shards(
        &boot,
        &any(&urls),
        2,
        &roots(),
        &fast_retry(3),
        &options(),
        &key,
    )
    .await
    .unwrap();

    // Read the shards back as Nexus does and reconstruct.
    let nexus = identity(&w.wl, NEXUS).await;
    let mut shards = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let client = KeeperClient::new(&nexus, url.clone(), &roots(), options()).unwrap();
        let bytes = client.shard().await.unwrap();
        let id = u16::try_from(i + 1).unwrap();
        let expected = shamir::share_for(&key, id, 3, 2).unwrap();
        assert_eq!(
            bytes.as_bytes(),
            expected.expose_secret(),
            "keeper {id} holds share {id}"
        );
        shards.push(Shard::new(id, ShardValue::new(*bytes.as_bytes())));
    }
    for pair in [[0, 1], [1, 2], [0, 2]] {
        let subset: Vec<Shard> = pair.iter().map(|&i| shards[i].duplicate_secret()).collect();
        assert_eq!(shamir::combine(&subset, 2).unwrap(), key);
    }
    assert!(keepers.iter().all(|k| k.store.has_shard()));
}

#[tokio::test]
async fn a_keeper_with_the_wrong_spiffe_id_is_exit_6() {
    let w = world().await;
    let good = keeper(&w.wl).await;
    // A "keeper" URL served by the Nexus SVID.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let impostor = identity(&w.wl, NEXUS).await;
    let acceptor = MtlsAcceptor::new(
        impostor.server_config(|_: &SpiffeId| true).unwrap(),
        Duration::from_secs(5),
    );
    let task = tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = acceptor.accept(tcp).await;
        }
    });
    let bad_url = BaseUrl::parse(&format!("https://127.0.0.1:{port}")).unwrap();
    let urls = [good.url.clone(), bad_url];
    let boot = identity(&w.wl, BOOTSTRAP).await;
    let key = RootKey::generate().unwrap();
    let err = deliver_shards(
        &boot,
        &any(&urls),
        2,
        &roots(),
        &fast_retry(5),
        &options(),
        &key,
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), 6, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("keeper 2") && msg.contains(&port.to_string()),
        "{msg}"
    );
    assert!(msg.contains(NEXUS), "the presented ID is named: {msg}");
    task.abort();
}

#[tokio::test]
async fn a_keeper_that_refuses_our_id_is_exit_6() {
    let w = world().await;
    let k = keeper(&w.wl).await;
    // Pilot is not allowed through the keeper's handshake.
    let pilot = identity(&w.wl, PILOT).await;
    let key = RootKey::generate().unwrap();
    let err = deliver_shards(
        &pilot,
        &any(std::slice::from_ref(&k.url)),
        1,
        &roots(),
        &fast_retry(3),
        &options(),
        &key,
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), 6, "{err}");
    assert!(err.to_string().contains("rejected our SVID"), "{err}");
}

#[tokio::test]
async fn an_unreachable_keeper_is_exit_7_after_retries() {
    let w = world().await;
    let good = keeper(&w.wl).await;
    let port = closed_port().await;
    let urls = [
        good.url.clone(),
        BaseUrl::parse(&format!("https://127.0.0.1:{port}")).unwrap(),
    ];
    let boot = identity(&w.wl, BOOTSTRAP).await;
    let key = RootKey::generate().unwrap();
    let err = deliver_shards(
        &boot,
        &any(&urls),
        2,
        &roots(),
        &fast_retry(3),
        &options(),
        &key,
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), 7, "{err}");
    assert!(
        matches!(
            &err,
            BootstrapError::KeeperUnreachable {
                id: 2,
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("rerun bootstrap"), "{err}");
    // The reachable keeper did get its share.
    assert!(good.store.has_shard());
}

#[tokio::test]
async fn wrong_own_identity_is_exit_5() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(
        &["https://127.0.0.1:1".to_owned()],
        "https://127.0.0.1:2",
        dir.path(),
        &w.wl.endpoint(),
    );
    config.spiffe_id = Some(SpiffeId::new(PILOT).unwrap());
    let err = spike_bootstrap::run(&config).await.unwrap_err();
    assert_eq!(err.exit_code(), 5, "{err}");
    assert!(err.to_string().contains(PILOT), "{err}");
    assert!(!config.marker_path().exists());
}

#[tokio::test]
async fn unreachable_nexus_is_exit_8_before_any_key_is_generated() {
    let w = world().await;
    let k = keeper(&w.wl).await;
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port().await;
    let mut config = config_for(
        &[k.url.to_string()],
        &format!("https://127.0.0.1:{port}"),
        dir.path(),
        &w.wl.endpoint(),
    );
    config.keeper_retry = fast_retry(2);
    let err = spike_bootstrap::run(&config).await.unwrap_err();
    assert_eq!(err.exit_code(), 8, "{err}");
    assert!(
        err.to_string().contains("refusing to re-key blindly"),
        "{err}"
    );
    assert!(!k.store.has_shard(), "no shard was delivered");
    assert!(!config.marker_path().exists());
}

/// Three URLs all served with keeper 1's SVID (the review's reproduction): with each URL
/// pinned to its own ID, only keeper 1's URL gets a shard, and the error names both IDs.
#[tokio::test]
async fn a_keeper_url_served_with_another_keepers_svid_gets_nothing() {
    let w = world().await;
    let k1 = keeper_as(&w.wl, KEEPER_1).await;
    let impostor = keeper_as(&w.wl, KEEPER_1).await;
    let targets = [
        KeeperTarget {
            url: k1.url.clone(),
            spiffe_id: Some(SpiffeId::new(KEEPER_1).unwrap()),
        },
        KeeperTarget {
            url: impostor.url.clone(),
            spiffe_id: Some(SpiffeId::new(KEEPER_2).unwrap()),
        },
    ];
    let boot = identity(&w.wl, BOOTSTRAP).await;
    let key = RootKey::generate().unwrap();
    let err = deliver_shards(
        &boot,
        &targets,
        2,
        &roots(),
        &fast_retry(3),
        &options(),
        &key,
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), 6, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("keeper 2") && msg.contains(KEEPER_1) && msg.contains(KEEPER_2),
        "{msg}"
    );
    assert!(msg.contains("pins this URL"), "{msg}");
    assert!(!impostor.store.has_shard(), "the impostor got no shard");
    assert!(k1.store.has_shard());

    // The same through the config: URL-only peers are pinned by position by default.
    let dir = tempfile::tempdir().unwrap();
    let peers = [k1.url.to_string(), impostor.url.to_string()];
    let mut config = config_for(&peers, "https://127.0.0.1:1", dir.path(), "unix:///x");
    assert!(
        config
            .warnings()
            .iter()
            .any(|w| w.contains("by role alone"))
    );
    let toml = format!(
        "keeper_peers = [\"{}\", \"{}\"]\nshamir_shares = 2\n[trust_roots]\nkeeper = \"spike.test\"\n",
        peers[0], peers[1]
    );
    config =
        spike_bootstrap::BootstrapConfig::from_toml(&toml, &spike_daemon::MapEnv::new()).unwrap();
    let ids: Vec<String> = config
        .keepers
        .iter()
        .map(|k| k.spiffe_id.as_ref().unwrap().to_string())
        .collect();
    assert_eq!(ids, [KEEPER_1, KEEPER_2]);
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}
