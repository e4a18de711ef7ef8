//! Nexus with real in-process keepers: bootstrap, restart recovery, threshold behaviour,
//! re-seeding, break-the-glass restore, SVID rotation under load.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use spike_client::{BaseUrl, ClientOptions, KeeperClient, NexusClient};
use spike_crypto::{Cipher, RootKey, shamir, verify};
use spike_proto::ShardBytes;

use crate::harness::*;

/// The bootstrap steps (docs/protocol.md#bootstrap-and-keepers) done with spike-client + spike-crypto: generate a key, push
/// shard i to keeper i, then prove to Nexus (once unsealed) that it holds the same key.
async fn bootstrap(w: &World, keepers: &[KeeperHandle], nexus: &NexusHandle) -> RootKey {
    let identity = w.identity(BOOTSTRAP).await.unwrap();
    let key = RootKey::generate().unwrap();
    for (shard, keeper) in shamir::split(&key, 3, 2).unwrap().iter().zip(keepers) {
        let client = KeeperClient::new(
            &identity,
            BaseUrl::parse(&keeper.url).unwrap(),
            &roots().unwrap(),
            ClientOptions::with_timeout(Duration::from_secs(5)),
        )
        .unwrap();
        client
            .contribute(ShardBytes::new(*shard.expose_secret()))
            .await
            .unwrap();
    }
    nexus.wait_unsealed(Duration::from_secs(10)).await.unwrap();
    let nexus_client = w.client(BOOTSTRAP, nexus).await.unwrap();
    let text = verify::random_text().unwrap();
    let (nonce, ct) = Cipher::new(&key).seal(text.as_bytes()).unwrap();
    let hash = nexus_client.bootstrap_verify(&nonce, &ct).await.unwrap();
    assert!(verify::hash_matches(text.as_bytes(), &hash));
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_restart_threshold_reseed_and_restore() {
    let w = World::new().unwrap();
    let data = w.path("db");
    let mut keepers = w.start_keepers(KEEPERS.len()).await.unwrap();
    let peers = urls(&keepers);
    let nexus = w
        .start_nexus(w.config("sqlite", &peers, &data).unwrap())
        .await
        .unwrap();
    let sock = nexus.health_socket.clone().unwrap();
    eventually(5, "keepers probed", || {
        nexus.state.health().keepers_reachable == 3
    })
    .await;
    assert_eq!(unix_get(&sock, "/v1/sys/health").await.0, 501);

    // 1. bootstrap, unseal, round trip
    let _key = bootstrap(&w, &keepers, &nexus).await;
    let su = w.client(SUPERUSER, &nexus).await.unwrap();
    su.put_secret("app/db", values(&[("user", "admin"), ("pass", "s3cret")]))
        .await
        .unwrap();
    assert_eq!(su.get_secret("app/db", 0).await.unwrap()["pass"], "s3cret");
    assert_eq!(unix_get(&sock, "/v1/sys/health").await.0, 200);

    // 2. a keeper restarted empty is re-seeded
    let port = keepers.remove(2).stop().await.unwrap();
    keepers.push(w.start_keeper(2, port).await.unwrap());
    assert!(!keepers[2].store.has_shard());
    eventually(5, "keeper 3 re-seeded", || keepers[2].store.has_shard()).await;

    // 3. Nexus restart unseals from keepers alone; data reads back
    nexus.stop().await.unwrap();
    let nexus = w
        .start_nexus(w.config("sqlite", &peers, &data).unwrap())
        .await
        .unwrap();
    nexus.wait_unsealed(Duration::from_secs(10)).await.unwrap();
    let su = w.client(SUPERUSER, &nexus).await.unwrap();
    assert_eq!(su.get_secret("app/db", 0).await.unwrap()["user"], "admin");
    let exported = w
        .client(RECOVER, &nexus)
        .await
        .unwrap()
        .recover()
        .await
        .unwrap();
    assert_eq!(exported.len(), 3);

    // 4. down to exactly the threshold: still unseals
    let port3 = keepers.pop().unwrap().stop().await.unwrap();
    nexus.stop().await.unwrap();
    let nexus = w
        .start_nexus(w.config("sqlite", &peers, &data).unwrap())
        .await
        .unwrap();
    nexus.wait_unsealed(Duration::from_secs(10)).await.unwrap();
    nexus.stop().await.unwrap();

    // 5. below the threshold: stays sealed, 503 on routes and on health
    let port2 = keepers.pop().unwrap().stop().await.unwrap();
    let nexus = w
        .start_nexus(w.config("sqlite", &peers, &data).unwrap())
        .await
        .unwrap();
    let sock = nexus.health_socket.clone().unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!nexus.state.is_unsealed());
    let su = w.client(SUPERUSER, &nexus).await.unwrap();
    let raw = post_json(
        &su,
        "/v1/store/secrets",
        Some("get"),
        r#"{"path":"app/db"}"#,
    )
    .await;
    assert_eq!(raw.status, 503);
    let (status, body) = unix_get(&sock, "/v1/sys/health").await;
    assert_eq!(status, 503);
    assert_eq!(body["shards_collected"], 1);
    assert_eq!(body["keepers_reachable"], 1);

    // 6. break the glass: keepers come back empty, operator restores from the exported
    //    shards; Nexus unseals and pushes shards to every keeper at once.
    keepers[0].store.clear();
    keepers.push(w.start_keeper(1, port2).await.unwrap());
    keepers.push(w.start_keeper(2, port3).await.unwrap());
    let restore = w.client(RESTORE, &nexus).await.unwrap();
    let st = restore
        .restore(1, ShardBytes::new(*exported[&1].as_bytes()))
        .await
        .unwrap();
    assert!(!st.restored);
    let st = restore
        .restore(3, ShardBytes::new(*exported[&3].as_bytes()))
        .await
        .unwrap();
    assert!(st.restored);
    assert_eq!(su.get_secret("app/db", 0).await.unwrap()["user"], "admin");
    eventually(5, "every keeper re-seeded", || {
        keepers.iter().all(|k| k.store.has_shard())
    })
    .await;
    nexus.stop().await.unwrap();
    for k in keepers {
        k.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svid_rotation_under_load_fails_no_request() {
    let w = World::new().unwrap();
    let data = w.path("db");
    let keepers = w.start_keepers(KEEPERS.len()).await.unwrap();
    let nexus = w
        .start_nexus(w.config("sqlite", &urls(&keepers), &data).unwrap())
        .await
        .unwrap();
    bootstrap(&w, &keepers, &nexus).await;

    // A fresh connection (handshake) per request, so rotations are exercised.
    let identity = w.identity(SUPERUSER).await.unwrap();
    let client = NexusClient::new(
        &identity,
        BaseUrl::parse(&format!("https://127.0.0.1:{}", nexus.addr.port())).unwrap(),
        &roots().unwrap(),
        ClientOptions {
            max_idle_connections: 0,
            ..ClientOptions::with_timeout(Duration::from_secs(5))
        },
    )
    .unwrap();
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (failures, done, stop) = (failures.clone(), done.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.is_cancelled() {
                i += 1;
                let v = i.to_string();
                let ok = client
                    .put_secret("rot/x", values(&[("v", &v)]))
                    .await
                    .is_ok()
                    && client
                        .get_secret("rot/x", 0)
                        .await
                        .is_ok_and(|d| d["v"] == v);
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        w.wl.rotate().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    load.await.unwrap();
    assert!(done.load(Ordering::Relaxed) > 5, "load ran");
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    // keepers stayed reachable through their own rotation
    let h = nexus.state.health();
    assert_eq!(h.keepers_reachable, 3);
    nexus.stop().await.unwrap();
    for k in keepers {
        k.stop().await.unwrap();
    }
}
