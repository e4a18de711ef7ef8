//! Lite mode and systemd notifications.

use std::time::Duration;

use spike_crypto::{RootKey, shamir};
use spike_daemon::notify::Notifier;
use spike_proto::ShardBytes;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lite_mode_serves_only_its_routes() {
    let w = World::new().unwrap();
    let keepers = w.start_keepers(KEEPERS.len()).await.unwrap();
    let peers: Vec<String> = keepers.iter().map(|k| k.url.clone()).collect();
    let nexus = w
        .start_nexus(w.config("lite", &peers, &w.path("lite")).unwrap())
        .await
        .unwrap();
    // Bootstrap: the keepers' shards agree, Nexus unseals and records lite's key check.
    let key = RootKey::generate().unwrap();
    w.seed_keepers(&keepers, &key, 2).await.unwrap();
    nexus.wait_unsealed(Duration::from_secs(5)).await.unwrap();
    assert!(spike_nexus::keys::lite_keycheck_path(&w.path("lite")).exists());
    let lite = w.client(LITE, &nexus).await.unwrap();
    let enc = lite.encrypt(b"x").await.unwrap();
    let plain = lite
        .decrypt(
            1,
            enc.nonce.as_deref().unwrap(),
            enc.ciphertext.as_deref().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(plain, b"x");
    let su = w.client(SUPERUSER, &nexus).await.unwrap();
    for (path, action) in [
        ("/v1/store/secrets", None),
        ("/v1/store/secrets", Some("get")),
        ("/v1/acl/policy", Some("list")),
    ] {
        let raw = post_json(&su, path, action, r#"{"path":"a","values":{}}"#).await;
        assert_eq!(raw.status, 400, "{path} {action:?}");
    }
    eventually(5, "keepers seeded", || {
        keepers.iter().all(|k| k.store.has_shard())
    })
    .await;
    nexus.stop().await.unwrap();
    for k in keepers {
        k.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_ready_and_seal_status_lines() {
    let w = World::new().unwrap();
    let sock_path = w.path("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).unwrap();
    let nexus = w
        .start_nexus_with(
            w.config("sqlite", &dead_keepers().unwrap(), &w.path("db"))
                .unwrap(),
            Notifier::with_socket(&sock_path),
        )
        .await
        .unwrap();
    let mut seen: Vec<String> = Vec::new();
    let mut buf = vec![0u8; 4096];
    let recv = |seen: &mut Vec<String>, n: usize, buf: &[u8]| {
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    };
    while !seen.iter().any(|m| m.contains("READY=1")) {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        recv(&mut seen, n, &buf);
    }
    assert!(
        seen.iter()
            .any(|m| m.contains("STATUS=sealed: waiting for bootstrap (0/2 shards)")),
        "{seen:?}"
    );
    // READY=1 is sent while still sealed
    assert!(!nexus.state.is_unsealed());

    let restore = w.client(RESTORE, &nexus).await.unwrap();
    let key = RootKey::generate().unwrap();
    // A database bootstrapped with `key`: restore needs its key check.
    std::fs::create_dir_all(w.path("db")).unwrap();
    drop(spike_nexus::store::SqliteBackend::open(&w.path("db").join("spike.db"), &key).unwrap());
    for s in shamir::split(&key, 3, 2).unwrap().iter().take(2) {
        restore
            .restore(i64::from(s.id()), ShardBytes::new(*s.expose_secret()))
            .await
            .unwrap();
    }
    while !seen.iter().any(|m| m.contains("STATUS=unsealed")) {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        recv(&mut seen, n, &buf);
    }
    nexus.stop().await.unwrap();
}
