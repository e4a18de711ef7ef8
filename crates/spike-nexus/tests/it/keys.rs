//! Root-key integrity under attack: keepers pinned to their SPIFFE IDs, shards that must agree
//! on one key before any push, lite's key check, and restore that cannot choose the key.

use spike_client::{BaseUrl, ClientOptions, KeeperClient};
use spike_crypto::{RootKey, ShardValue, shamir};
use spike_identity::SpiffeId;
use spike_nexus::keys::lite_keycheck_path;
use spike_proto::ShardBytes;

use crate::harness::*;

/// A valid scalar that is nobody's share.
fn bogus() -> ShardValue {
    ShardValue::new([7; 32])
}

fn share(key: &RootKey, id: u16) -> ShardValue {
    ShardValue::new(*shamir::share_for(key, id, 3, 2).unwrap().expose_secret())
}

/// Puts share *i* of `key` on keeper *i*, as Bootstrap does.
fn seed(keepers: &[KeeperHandle], key: &RootKey) {
    for (i, k) in keepers.iter().enumerate() {
        k.store
            .set(share(key, u16::try_from(i + 1).unwrap()))
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_url_served_with_another_keepers_svid_gets_no_shard() {
    let w = World::new().unwrap();
    // Keeper 1 twice: once at its own URL, once at keeper 2's.
    let k1 = w.start_keeper(0, 0).await.unwrap();
    let impostor = w.start_keeper(0, 0).await.unwrap();
    let k3 = w.start_keeper(2, 0).await.unwrap();
    let key = RootKey::generate().unwrap();
    k1.store.set(share(&key, 1)).unwrap();
    k3.store.set(share(&key, 3)).unwrap();
    let peers = vec![k1.url.clone(), impostor.url.clone(), k3.url.clone()];
    let config = w.config("sqlite", &peers, &w.path("db")).unwrap();
    assert_eq!(
        config.keepers[1]
            .spiffe_id
            .as_ref()
            .map(ToString::to_string),
        Some(w.id(KEEPERS[1]))
    );
    let nexus = w.start_nexus(config).await.unwrap();
    nexus.wait_unsealed(Duration::from_secs(10)).await.unwrap();
    // Pushes and probes run every 300 ms; give them several rounds.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !impostor.store.has_shard(),
        "a keeper at keeper 2's URL with keeper 1's SVID got a shard"
    );
    let gauges = nexus.state.gauges();
    assert!(
        gauges
            .keepers
            .iter()
            .any(|(id, reachable, _)| *id == 2 && !reachable),
        "keeper 2 counts as unreachable: {:?}",
        gauges.keepers
    );

    // What the log says: both IDs, and that nothing was sent.
    let identity = w.identity(NEXUS).await.unwrap();
    let want = SpiffeId::new(w.id(KEEPERS[1])).unwrap();
    let client = KeeperClient::pinned(
        &identity,
        BaseUrl::parse(&impostor.url).unwrap(),
        Some(want),
        &roots().unwrap(),
        ClientOptions::with_timeout(Duration::from_secs(5)),
    )
    .unwrap();
    let err = client.shard().await.unwrap_err();
    let text = client
        .identity_mismatch(&err)
        .expect("an identity mismatch");
    assert!(
        text.contains(&w.id(KEEPERS[0]))
            && text.contains(&w.id(KEEPERS[1]))
            && text.contains("nothing was sent"),
        "{text}"
    );
    nexus.stop().await.unwrap();
    for k in [k1, impostor, k3] {
        k.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lite_with_one_bogus_shard_stays_sealed_pushes_nothing_until_it_is_cleared() {
    let w = World::new().unwrap();
    let data = w.path("lite");
    let mut keepers = w.start_keepers(KEEPERS.len()).await.unwrap();
    let key = RootKey::generate().unwrap();
    seed(&keepers, &key);
    keepers[0].store.set(bogus()).unwrap();
    let peers = urls(&keepers);
    let nexus = w
        .start_nexus(w.config("lite", &peers, &data).unwrap())
        .await
        .unwrap();
    eventually(5, "the disagreement is reported", || {
        nexus.state.health().keepers_disagree.is_some()
    })
    .await;
    // Several recovery rounds later: still sealed, nothing pushed, nothing recorded.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !nexus.state.is_unsealed(),
        "unsealed with a key the keepers do not agree on"
    );
    assert!(
        keepers[0].store.get() == Some(bogus()),
        "keeper 1 was overwritten"
    );
    assert!(
        keepers[1].store.get() == Some(share(&key, 2)),
        "keeper 2 was overwritten"
    );
    assert!(
        keepers[2].store.get() == Some(share(&key, 3)),
        "keeper 3 was overwritten"
    );
    assert!(!lite_keycheck_path(&data).exists());
    let text = nexus.state.health().keepers_disagree.unwrap();
    assert!(
        text.contains("keeper 1 holds") && text.contains("systemctl restart spike-keeper@1"),
        "{text}"
    );
    let (code, body) = unix_get(nexus.health_socket.as_ref().unwrap(), "/v1/sys/health").await;
    assert_eq!(code, 503);
    assert_eq!(body["keepers_disagree"].as_str(), Some(text.as_str()));

    // The way out the message names: keeper 1 restarts empty; the other two agree, Nexus
    // unseals with the right key, records lite's key check and re-seeds keeper 1.
    let port = keepers.remove(0).stop().await.unwrap();
    keepers.insert(0, w.start_keeper(0, port).await.unwrap());
    nexus.wait_unsealed(Duration::from_secs(10)).await.unwrap();
    eventually(5, "keeper 1 re-seeded with the right share", || {
        keepers[0].store.get() == Some(share(&key, 1))
    })
    .await;
    assert!(nexus.state.health().keepers_disagree.is_none());
    assert!(lite_keycheck_path(&data).exists());
    nexus.stop().await.unwrap();

    // Lite now has a key check: shards of another key, though they agree, do not unseal it.
    let other = RootKey::generate().unwrap();
    seed(&keepers, &other);
    let nexus = w
        .start_nexus(w.config("lite", &peers, &data).unwrap())
        .await
        .unwrap();
    eventually(5, "the refusal is reported", || {
        nexus
            .state
            .health()
            .keepers_disagree
            .is_some_and(|t| t.contains("lite-keycheck") && t.contains("spike operator restore"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !nexus.state.is_unsealed(),
        "lite accepted a key its key check refuses"
    );
    assert!(keepers[0].store.get() == Some(share(&other, 1)));

    // Operator restore in lite is checked too: a wrong key is refused, the right one unseals
    // and re-seeds every keeper.
    let restore = w.client(RESTORE, &nexus).await.unwrap();
    let wrong = shamir::split(&other, 3, 2).unwrap();
    restore
        .restore(1, ShardBytes::new(*wrong[0].expose_secret()))
        .await
        .unwrap();
    let err = restore
        .restore(2, ShardBytes::new(*wrong[1].expose_secret()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, spike_client::ClientError::BadRequest { .. }),
        "{err}"
    );
    assert!(!nexus.state.is_unsealed());
    let right = shamir::split(&key, 3, 2).unwrap();
    for s in &right[..2] {
        restore
            .restore(i64::from(s.id()), ShardBytes::new(*s.expose_secret()))
            .await
            .unwrap();
    }
    assert!(nexus.state.is_unsealed());
    eventually(
        5,
        "every keeper re-seeded by the operator's restore",
        || {
            keepers
                .iter()
                .enumerate()
                .all(|(i, k)| k.store.get() == Some(share(&key, u16::try_from(i + 1).unwrap())))
        },
    )
    .await;
    nexus.stop().await.unwrap();
    for k in keepers {
        k.stop().await.unwrap();
    }
}

/// L4: with no key check (never bootstrapped), restore cannot choose the root key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_before_bootstrap_is_refused_in_sqlite_and_lite() {
    let w = World::new().unwrap();
    let keepers = w.start_keepers(KEEPERS.len()).await.unwrap();
    let chosen = shamir::split(&RootKey::generate().unwrap(), 3, 2).unwrap();
    for backend in ["sqlite", "lite"] {
        let data = w.path(backend);
        let nexus = w
            .start_nexus(w.config(backend, &urls(&keepers), &data).unwrap())
            .await
            .unwrap();
        let restore = w.client(RESTORE, &nexus).await.unwrap();
        restore
            .restore(1, ShardBytes::new(*chosen[0].expose_secret()))
            .await
            .unwrap();
        let err = restore
            .restore(2, ShardBytes::new(*chosen[1].expose_secret()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, spike_client::ClientError::BadRequest { .. }),
            "{backend}: {err}"
        );
        let body = err.to_string();
        assert!(
            !nexus.state.is_unsealed(),
            "{backend}: restore chose the root key"
        );
        assert!(
            keepers.iter().all(|k| !k.store.has_shard()),
            "{backend}: {body}"
        );
        assert!(!data.join("spike.db").exists() || backend == "lite");
        nexus.stop().await.unwrap();
    }
    for k in keepers {
        k.stop().await.unwrap();
    }
}

/// sqlite with data: keepers 2 and 3 give the key the database confirms, keeper 1 a wrong
/// shard. Nexus unseals but pushes nothing; an operator restore of the live key re-seeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_key_with_a_disagreeing_keeper_holds_pushes_until_the_operator_confirms() {
    let w = World::new().unwrap();
    let data = w.path("db");
    let keepers = w.start_keepers(KEEPERS.len()).await.unwrap();
    let key = RootKey::generate().unwrap();
    seed(&keepers, &key);
    let peers = urls(&keepers);
    let nexus = w
        .start_nexus(w.config("sqlite", &peers, &data).unwrap())
        .await
        .unwrap();
    nexus.wait_unsealed(Duration::from_secs(10)).await.unwrap();
    nexus.stop().await.unwrap();

    keepers[0].store.set(bogus()).unwrap();
    let nexus = w
        .start_nexus(w.config("sqlite", &peers, &data).unwrap())
        .await
        .unwrap();
    nexus.wait_unsealed(Duration::from_secs(10)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        keepers[0].store.get() == Some(bogus()),
        "pushed while keepers disagree"
    );
    let text = nexus.state.health().keepers_disagree.expect("reported");
    assert!(text.contains("spike operator restore"), "{text}");

    let restore = w.client(RESTORE, &nexus).await.unwrap();
    let right = shamir::split(&key, 3, 2).unwrap();
    let st = restore
        .restore(2, ShardBytes::new(*right[1].expose_secret()))
        .await
        .unwrap();
    assert!(!st.restored, "shards are collected while keepers disagree");
    let st = restore
        .restore(3, ShardBytes::new(*right[2].expose_secret()))
        .await
        .unwrap();
    assert!(st.restored);
    eventually(5, "keeper 1 re-seeded on the operator's authority", || {
        keepers[0].store.get() == Some(share(&key, 1))
    })
    .await;
    eventually(5, "the disagreement clears", || {
        nexus.state.health().keepers_disagree.is_none()
    })
    .await;
    nexus.stop().await.unwrap();
    for k in keepers {
        k.stop().await.unwrap();
    }
}
