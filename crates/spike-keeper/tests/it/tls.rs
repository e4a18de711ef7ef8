//! Handshake policy, SVID rotation and shutdown.

use std::time::Duration;

use rustls_pki_types::ServerName;
use spike_client::ClientError;
use spike_identity::{MtlsConnector, SpiffeId};
use spike_proto::ShardBytes;
use tokio::net::TcpStream;

use crate::support::{KEEPER, NEXUS, client, start_keeper, world};

#[tokio::test]
async fn other_workloads_fail_the_handshake() {
    let w = world().await;
    let k = start_keeper(&w.wl).await;
    let err = client(&w.pilot, &k.url)
        .contribute(ShardBytes::new([1; 32]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::RejectedByServer { .. }),
        "{err:?}"
    );
    assert!(!k.store.has_shard());
}

/// The keeper leaf a fresh connection sees.
async fn served_leaf(w: &crate::support::World, k: &crate::support::Running) -> Vec<u8> {
    let config = w.nexus.client_config(|_: &SpiffeId| true).unwrap();
    let connector = MtlsConnector::new(config, Duration::from_secs(5));
    let tcp = TcpStream::connect((k.url.host(), k.url.port()))
        .await
        .unwrap();
    let (tls, peer) = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(peer.to_string(), KEEPER);
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn rotated_svid_is_used_by_new_connections_while_serving() {
    let w = world().await;
    let k = start_keeper(&w.wl).await;
    let nexus = client(&w.nexus, &k.url);
    nexus.contribute(ShardBytes::new([5; 32])).await.unwrap();
    let before = served_leaf(&w, &k).await;
    assert_eq!(nexus.http().idle_connections(), 1);

    let mut updates = k.identity.updates();
    let issued = w.wl.rotate().unwrap();
    let new_keeper_leaf = issued
        .iter()
        .find(|s| s.spiffe_id() == KEEPER)
        .unwrap()
        .leaf()
        .to_vec();
    assert_ne!(before, new_keeper_leaf);
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if served_leaf(&w, &k).await == new_keeper_leaf {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), updates.changed()).await;
        }
    })
    .await
    .expect("new connections present the rotated SVID");

    // The keeper kept its shard and keeps serving old and new connections.
    assert_eq!(nexus.shard().await.unwrap().as_bytes(), &[5; 32]);
    let fresh = client(&w.nexus, &k.url);
    assert_eq!(fresh.shard().await.unwrap().as_bytes(), &[5; 32]);
    assert!(!k.task.is_finished());
    let _ = NEXUS;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_forgets_the_shard() {
    let w = world().await;
    let mut k = start_keeper(&w.wl).await;
    let nexus = client(&w.nexus, &k.url);
    nexus.contribute(ShardBytes::new([9; 32])).await.unwrap();
    k.token.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), &mut k.task)
        .await
        .expect("serve returns within the grace period")
        .unwrap();
    result.unwrap();
    assert!(!k.store.has_shard(), "the shard is dropped on shutdown");
    let err = client(&w.nexus, &k.url).shard().await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn non_keeper_identity_is_refused_at_start() {
    let w = world().await;
    let err = spike_keeper::Keeper::new(crate::support::config(), w.nexus.clone()).unwrap_err();
    assert!(
        matches!(err, spike_keeper::KeeperError::NotAKeeper { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(NEXUS), "{err}");
}
