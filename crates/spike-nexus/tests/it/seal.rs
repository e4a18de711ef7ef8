//! Sealed behaviour, operator restore/recover and key verification on SQLite, without
//! keepers (they are configured but not running).

use spike_client::ClientError;
use spike_crypto::{RootKey, shamir};
use spike_proto::ShardBytes;

use crate::harness::*;

fn shards_of(key: &RootKey) -> Vec<(i64, ShardBytes)> {
    shamir::split(key, 3, 2)
        .unwrap()
        .iter()
        .map(|s| (i64::from(s.id()), ShardBytes::new(*s.expose_secret())))
        .collect()
}

fn dup(s: &(i64, ShardBytes)) -> ShardBytes {
    ShardBytes::new(*s.1.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_restore_recover_and_restart() {
    let w = World::new().unwrap();
    let data = w.path("db");
    let keepers = dead_keepers().unwrap();
    let nexus = w
        .start_nexus(w.config("sqlite", &keepers, &data).unwrap())
        .await
        .unwrap();
    let su = w.client(SUPERUSER, &nexus).await.unwrap();
    let restore = w.client(RESTORE, &nexus).await.unwrap();
    let recover = w.client(RECOVER, &nexus).await.unwrap();

    // Sealed and never bootstrapped: 503 on routes (even unknown ones), 501 on health.
    for (path, action) in [
        ("/v1/store/secrets", Some("get")),
        ("/v1/cipher/encrypt", None),
        ("/v1/no/such/route", None),
    ] {
        let raw = post_json(&su, path, action, "{}").await;
        assert_eq!(raw.status, 503, "{path}");
        assert_eq!(
            body_json(&raw),
            serde_json::json!({"err":"state_not_ready"})
        );
    }
    let sock = nexus.health_socket.clone().unwrap();
    let (status, body) = unix_get(&sock, "/v1/sys/health").await;
    assert_eq!(status, 501);
    assert_eq!(body["initialized"], false);
    assert_eq!(body["sealed"], true);
    assert_eq!(
        unix_get(&sock, "/v1/sys/health?uninitcode=299").await.0,
        299
    );
    assert!(matches!(
        recover.recover().await,
        Err(ClientError::NotReady { .. })
    ));

    // Restore: bad shards are 400, never a crash.
    let bad: &[&str] = &[
        r#"{"id":0,"shard":[1]}"#,
        r#"{"id":1001,"shard":[1]}"#,
        r#"{"id":-1,"shard":[1]}"#,
        r#"{"id":1,"shard":null}"#,
        r#"{"id":1,"shard":[0,0,0]}"#,
        r#"{"id":1,"shard":[256]}"#,
        r#"{"id":1,"shard":"AAAA"}"#,
        r#"{"id":1}"#,
        "{",
    ];
    for body in bad {
        let raw = post_json(&restore, "/v1/operator/restore", None, body).await;
        assert_eq!(raw.status, 400, "{body}");
    }
    let over_order = format!(r#"{{"id":1,"shard":[{}]}}"#, vec!["255"; 32].join(","));
    assert_eq!(
        post_json(&restore, "/v1/operator/restore", None, &over_order)
            .await
            .status,
        400
    );
    // Only the restore role may restore; the superuser may not.
    let raw = post_json(&su, "/v1/operator/restore", None, r#"{"id":1,"shard":[1]}"#).await;
    assert_eq!(raw.status, 401);

    let key = RootKey::generate().unwrap();
    let shards = shards_of(&key);
    // Never bootstrapped: there is no key check, so restore cannot choose the root key (the
    // shards are discarded and nothing is created).
    restore.restore(shards[0].0, dup(&shards[0])).await.unwrap();
    assert!(matches!(
        restore.restore(shards[1].0, dup(&shards[1])).await,
        Err(ClientError::BadRequest { .. })
    ));
    assert!(!nexus.state.is_unsealed());
    assert!(!data.join("spike.db").exists());
    // The database of an install that was bootstrapped with `key` (its key check).
    std::fs::create_dir_all(&data).unwrap();
    drop(spike_nexus::store::SqliteBackend::open(&data.join("spike.db"), &key).unwrap());

    let st = restore.restore(shards[0].0, dup(&shards[0])).await.unwrap();
    assert_eq!((st.collected, st.remaining, st.restored), (1, 1, false));
    let st = restore.restore(shards[0].0, dup(&shards[0])).await.unwrap();
    assert_eq!((st.collected, st.remaining, st.restored), (1, 1, false));
    let st = restore.restore(shards[2].0, dup(&shards[2])).await.unwrap();
    assert_eq!((st.collected, st.remaining, st.restored), (2, 0, true));
    assert!(nexus.state.is_unsealed());

    su.put_secret("old/data", values(&[("k", "v1")]))
        .await
        .unwrap();
    let exported = recover.recover().await.unwrap();
    assert_eq!(exported.len(), 3);
    for (id, s) in &shards {
        assert_eq!(exported[id].as_bytes(), s.as_bytes());
    }
    // recover is the recover role only
    assert!(matches!(
        su.recover().await,
        Err(ClientError::Unauthorized { .. })
    ));
    let (status, body) = unix_get(&sock, "/v1/sys/health").await;
    assert_eq!(status, 200);
    assert_eq!(body["has_data"], true);
    nexus.stop().await.unwrap();

    // Restart on the same database: initialized but sealed (503); a wrong key is refused
    // with 400 and discarded; the right shards unseal and the old data reads back.
    let nexus = w
        .start_nexus(w.config("sqlite", &keepers, &data).unwrap())
        .await
        .unwrap();
    let su = w.client(SUPERUSER, &nexus).await.unwrap();
    let restore = w.client(RESTORE, &nexus).await.unwrap();
    let sock = nexus.health_socket.clone().unwrap();
    let (status, body) = unix_get(&sock, "/v1/sys/health").await;
    assert_eq!(status, 503);
    assert_eq!(body["initialized"], true);

    let wrong = shards_of(&RootKey::generate().unwrap());
    let st = restore.restore(wrong[0].0, dup(&wrong[0])).await.unwrap();
    assert!(!st.restored);
    assert!(matches!(
        restore.restore(wrong[1].0, dup(&wrong[1])).await,
        Err(ClientError::BadRequest { .. })
    ));
    assert!(!nexus.state.is_unsealed());
    let st = restore.restore(shards[1].0, dup(&shards[1])).await.unwrap();
    assert_eq!(
        (st.collected, st.restored),
        (1, false),
        "wrong shards were discarded"
    );
    let st = restore.restore(shards[2].0, dup(&shards[2])).await.unwrap();
    assert!(st.restored);
    assert_eq!(
        su.get_secret("old/data", 0).await.unwrap(),
        values(&[("k", "v1")])
    );
    // further restores answer restored:true without changing anything
    let st = restore.restore(wrong[2].0, dup(&wrong[2])).await.unwrap();
    assert!(st.restored);
    nexus.stop().await.unwrap();
}
