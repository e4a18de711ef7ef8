//! Day-two failures on the appliance: a store that cannot be opened at unseal is named in
//! health and STATUS and retried by Nexus itself; a sealed Nexus with data and empty keepers
//! names the way back (operator restore).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use spike_crypto::{RootKey, ShardValue, shamir};
use spike_daemon::notify::Notifier;
use spike_nexus::model::SecretData;
use spike_nexus::store::{SqliteBackend, Store};

use crate::harness::*;

const RESTORE_LINE: &str = "STATUS=sealed: has data but no keeper holds a shard (0/2); restore from the recovery shards: spike-operator restore DIR (docs/operations.md)";

/// Gives keeper i the shard i+1 of `key`, as bootstrap (or a re-seed) would.
fn seed(keepers: &[KeeperHandle], key: &RootKey) {
    for (shard, keeper) in shamir::split(key, 3, 2).unwrap().iter().zip(keepers) {
        assert!(
            keeper
                .store
                .set(ShardValue::new(*shard.expose_secret()))
                .unwrap()
        );
    }
}

/// The sd_notify messages Nexus sends, one per datagram.
struct NotifySocket {
    sock: tokio::net::UnixDatagram,
    seen: Vec<String>,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        NotifySocket {
            sock: tokio::net::UnixDatagram::bind(path).unwrap(),
            seen: Vec::new(),
        }
    }

    /// Receives until a message starting with `prefix` arrives; returns it (trimmed).
    async fn wait_for(&mut self, prefix: &str) -> String {
        let mut buf = vec![0u8; 4096];
        loop {
            if let Some(m) = self.seen.iter().find(|m| m.starts_with(prefix)) {
                return m.clone();
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.sock.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {prefix:?} in {:?}", self.seen))
                .unwrap();
            let text = String::from_utf8_lossy(&buf[..n]);
            self.seen.push(text.trim_end().to_owned());
        }
    }
}

fn put(store: &Store, path: &str, value: &str) {
    let data: SecretData = [("v".to_owned(), value.to_owned())].into_iter().collect();
    store.put_secret(path, data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_open_failure_is_named_and_retried_until_it_opens() {
    let w = World::new().unwrap();
    let keepers = w.start_keepers(KEEPERS.len()).await.unwrap();
    let key = RootKey::generate().unwrap();
    seed(&keepers, &key);
    // The database path is a directory: SQLite cannot open it (as with a full disk or
    // wrong permissions, which root in a test cannot simulate).
    let data = w.path("db");
    let db = data.join("spike.db");
    std::fs::create_dir_all(&db).unwrap();
    let mut notify = NotifySocket::bind(&w.path("notify.sock"));
    let nexus = w
        .start_nexus_with(
            w.config("sqlite", &urls(&keepers), &data).unwrap(),
            Notifier::with_socket(w.path("notify.sock")),
        )
        .await
        .unwrap();
    let sock = nexus.health_socket.clone().unwrap();

    let line = notify
        .wait_for("STATUS=sealed: cannot open the store: ")
        .await;
    let suffix = format!(
        "(check free space and permissions under {}; Nexus retries by itself)",
        data.display()
    );
    assert!(line.ends_with(&suffix), "{line}");
    assert!(!line.contains("waiting for bootstrap"), "{line}");
    let (status, body) = unix_get(&sock, "/v1/sys/health").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["initialized"], true);
    assert_eq!(body["sealed"], true);
    let store_error = body["store_error"].as_str().unwrap().to_owned();
    assert!(
        store_error.starts_with(&format!("cannot open the store {}: ", db.display())),
        "{store_error}"
    );
    assert_eq!(nexus.state.health().store_error, Some(store_error));

    // Several retries fail meanwhile; the STATUS line is sent once, not per retry.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!nexus.state.is_unsealed());

    // The cause goes away: Nexus unseals by itself with the keepers' shards.
    std::fs::remove_dir(&db).unwrap();
    nexus.wait_unsealed(Duration::from_secs(10)).await.unwrap();
    notify.wait_for("STATUS=unsealed").await;
    let (status, body) = unix_get(&sock, "/v1/sys/health").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("store_error").is_none(), "{body}");
    assert_eq!(nexus.state.health().store_error, None);
    assert_eq!(
        notify.seen.iter().filter(|m| **m == line).count(),
        1,
        "{:?}",
        notify.seen
    );
    let su = w.client(SUPERUSER, &nexus).await.unwrap();
    su.put_secret("after/fix", values(&[("k", "v")]))
        .await
        .unwrap();
    nexus.stop().await.unwrap();
    for k in keepers {
        k.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_without_keeper_shards_names_the_restore_command() {
    let w = World::new().unwrap();
    let data = w.path("db");
    std::fs::create_dir_all(&data).unwrap();
    let key = RootKey::generate().unwrap();
    {
        let backend = SqliteBackend::open(&data.join("spike.db"), &key).unwrap();
        put(&Store::new(Arc::new(backend), 3).unwrap(), "kept", "v1");
    }
    // Keepers answer but hold nothing (after a power cut: shards live in RAM only).
    let keepers = w.start_keepers(KEEPERS.len()).await.unwrap();
    let mut notify = NotifySocket::bind(&w.path("notify.sock"));
    let nexus = w
        .start_nexus_with(
            w.config("sqlite", &urls(&keepers), &data).unwrap(),
            Notifier::with_socket(w.path("notify.sock")),
        )
        .await
        .unwrap();
    // Re-evaluated when keeper health changes, not only when the shard count does.
    assert_eq!(notify.wait_for(RESTORE_LINE).await, RESTORE_LINE);
    for m in &notify.seen {
        assert!(!m.contains("waiting for bootstrap"), "{m}");
        assert!(!m.contains("not initialized"), "{m}");
    }
    let (status, body) = unix_get(&nexus.health_socket.clone().unwrap(), "/v1/sys/health").await;
    assert_eq!(status, 503);
    assert_eq!(body["initialized"], true);
    assert_eq!(body["has_data"], true);
    // The restore line needs enough keepers answering that the rest cannot make up the
    // threshold (2 of 3); the third may not have been probed yet.
    assert!(body["keepers_reachable"].as_u64().unwrap() >= 2, "{body}");
    assert!(body.get("store_error").is_none(), "{body}");

    // One keeper gets its shard back: below the threshold, and no longer "no keeper holds".
    assert!(
        keepers[0]
            .store
            .set(ShardValue::new(
                *shamir::split(&key, 3, 2).unwrap()[0].expose_secret()
            ))
            .unwrap()
    );
    notify
        .wait_for("STATUS=sealed: 1/2 shards from keepers")
        .await;
    // The rest come back: Nexus unseals by itself and the data reads back.
    seed(&keepers, &key);
    nexus.wait_unsealed(Duration::from_secs(10)).await.unwrap();
    let su = w.client(SUPERUSER, &nexus).await.unwrap();
    assert_eq!(su.get_secret("kept", 0).await.unwrap()["v"], "v1");
    nexus.stop().await.unwrap();
    for k in keepers {
        k.stop().await.unwrap();
    }
}
