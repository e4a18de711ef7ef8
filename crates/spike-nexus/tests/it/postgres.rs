//! The PostgreSQL backend against a real PostgreSQL server (spike-testkit's `PgCluster`:
//! `initdb` + `postgres` in a temporary directory): several instances on one store,
//! cache invalidation, one bootstrap per cluster, a server restart under load, migration
//! locking and bad input.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use spike_crypto::RootKey;
use spike_nexus::model::{Permission, SecretData};
use spike_nexus::store::postgres::{Database, POLICY_POLL, PostgresBackend, Settings};
use spike_nexus::store::{Store, StoreError};
use spike_testkit::{PgCluster, PgOptions};

const TIMEOUT: Duration = Duration::from_secs(3);

fn key(b: u8) -> RootKey {
    RootKey::from_bytes(&[b; 32]).unwrap()
}

fn data(v: &str) -> SecretData {
    [("k".to_owned(), v.to_owned())].into_iter().collect()
}

fn database(conninfo: &str, ca: Option<&std::path::Path>) -> Arc<Database> {
    Arc::new(
        Database::start(&Settings {
            credential: "nexus-db",
            conninfo,
            ca_file: ca,
            pool_size: 4,
            timeout: TIMEOUT,
        })
        .unwrap(),
    )
}

/// One Nexus instance's store on `conninfo`.
fn instance(conninfo: &str, root: u8, max_versions: u64) -> (Arc<Database>, Store) {
    let db = database(conninfo, None);
    let backend = PostgresBackend::open(&db, &key(root)).unwrap();
    let store = Store::new(Arc::new(backend), max_versions).unwrap();
    (db, store)
}

fn shared_db() -> (&'static PgCluster, String) {
    let cluster = PgCluster::shared().unwrap();
    let name = cluster.create_database().unwrap();
    (cluster, cluster.conninfo(&name))
}

/// The database name of a keyword/value connection string.
fn dbname(conninfo: &str) -> String {
    conninfo
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("dbname="))
        .unwrap()
        .to_owned()
}

/// A clock without `std::time::Instant` (disallowed in tests): milliseconds since the epoch.
fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[test]
fn two_instances_writing_one_path_get_distinct_consecutive_versions() {
    let (_cluster, conninfo) = shared_db();
    let (_da, a) = instance(&conninfo, 1, 5);
    let (_db, b) = instance(&conninfo, 1, 5);
    const EACH: usize = 40;
    std::thread::scope(|s| {
        for (who, store) in [("a", &a), ("b", &b)] {
            for t in 0..2 {
                s.spawn(move || {
                    for i in 0..EACH / 2 {
                        store
                            .put_secret("shared/hot", data(&format!("{who}{t}-{i}")))
                            .unwrap();
                        store
                            .put_secret(&format!("own/{who}{t}/{i}"), data("x"))
                            .unwrap();
                    }
                });
            }
        }
    });
    for store in [&a, &b] {
        let secret = store.secret_metadata("shared/hot", 0).unwrap();
        // 4 writers × 20 puts: 80 versions, none lost or duplicated; 5 kept.
        assert_eq!(secret.metadata.current_version, 2 * EACH as u64);
        let kept: Vec<u64> = secret.versions.keys().copied().collect();
        assert_eq!(
            kept,
            (76..=80).collect::<Vec<_>>(),
            "pruning keeps the newest five"
        );
        assert_eq!(store.list_secrets().unwrap().len(), 1 + 2 * EACH);
    }
}

#[test]
fn a_policy_written_on_one_instance_reaches_the_other_and_the_staleness_is_bounded() {
    let (_cluster, conninfo) = shared_db();
    let (_da, a) = instance(&conninfo, 1, 10);
    let (_db, b) = instance(&conninfo, 1, 10);
    let mut delays = Vec::new();
    for i in 0..20 {
        let name = format!("p{i}");
        a.put_policy(&name, "^spiffe://x/.*$", "^app/.*$", vec![Permission::Read])
            .unwrap();
        // Read-your-writes on the writing instance: its cache was refreshed before the put
        // returned.
        assert!(a.get_policy(&name).is_ok());
        let start = now_ms();
        loop {
            if b.get_policy(&name).is_ok() {
                break;
            }
            assert!(
                now_ms() - start < (POLICY_POLL + TIMEOUT).as_millis(),
                "policy {name} never reached the other instance"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        delays.push(now_ms() - start);
        assert!(b.check_access("spiffe://x/w", "app/db", &[Permission::Read]));
    }
    // A delete on the other instance reaches the writer too, and is never undone by the
    // writer's own later view.
    b.delete_policy("p0").unwrap();
    assert!(b.get_policy("p0").is_err());
    let start = now_ms();
    while a.get_policy("p0").is_ok() {
        assert!(now_ms() - start < (POLICY_POLL + TIMEOUT).as_millis());
        std::thread::sleep(Duration::from_millis(1));
    }
    // Deleting a policy the other instance created a moment ago is decided by the store,
    // not by a cache that may not have it yet.
    a.put_policy(
        "fresh",
        "^spiffe://x/.*$",
        "^app/.*$",
        vec![Permission::Read],
    )
    .unwrap();
    b.delete_policy("fresh").unwrap();
    assert!(matches!(
        b.delete_policy("fresh"),
        Err(StoreError::NotFound)
    ));
    delays.sort_unstable();
    println!(
        "STALENESS policy change A→B over {} changes: p50 {} ms, max {} ms (bound {:?} + {:?})",
        delays.len(),
        delays[delays.len() / 2],
        delays[delays.len() - 1],
        POLICY_POLL,
        TIMEOUT
    );
}

#[test]
fn one_bootstrap_per_cluster_the_first_key_wins_and_nothing_re_keys() {
    let (_cluster, conninfo) = shared_db();
    let a = database(&conninfo, None);
    let b = database(&conninfo, None);
    let health = a.check_now();
    assert!(health.reachable, "{health:?}");
    assert!(!health.initialized, "an empty database is not initialized");
    // Two instances unseal with different keys at once: exactly one key is accepted.
    let outcomes: Vec<Result<PostgresBackend, StoreError>> = std::thread::scope(|s| {
        let ha = s.spawn(|| PostgresBackend::open(&a, &key(1)));
        let hb = s.spawn(|| PostgresBackend::open(&b, &key(2)));
        vec![ha.join().unwrap(), hb.join().unwrap()]
    });
    let accepted = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(accepted, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Err(StoreError::WrongRootKey)))
    );
    let winner = if outcomes[0].is_ok() { 1 } else { 2 };
    let loser = 3 - winner;
    // The cluster is initialized for every instance, from the shared store.
    assert!(b.check_now().initialized);
    assert!(a.check_now().initialized);
    assert!(matches!(
        PostgresBackend::open(&b, &key(loser)),
        Err(StoreError::WrongRootKey)
    ));
    assert!(PostgresBackend::open(&b, &key(winner)).is_ok());
}

#[test]
fn migrations_run_once_under_the_lock_and_a_newer_schema_is_refused() {
    let (cluster, conninfo) = shared_db();
    let name = dbname(&conninfo);
    let dbs: Vec<Arc<Database>> = (0..6).map(|_| database(&conninfo, None)).collect();
    let healths: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = dbs.iter().map(|d| s.spawn(|| d.check_now())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for h in &healths {
        assert!(h.reachable && h.error.is_none(), "{h:?}");
    }
    assert_eq!(
        cluster
            .psql(&name, "SELECT version FROM spike.schema_version")
            .unwrap()
            .trim(),
        spike_nexus::store::postgres::SCHEMA_VERSION.to_string()
    );
    assert_eq!(
        cluster
            .psql(&name, "SELECT count(*) FROM spike.changes")
            .unwrap()
            .trim(),
        "1",
        "migration 1 ran once"
    );
    cluster
        .psql(&name, "UPDATE spike.schema_version SET version = 99")
        .unwrap();
    let newer = database(&conninfo, None);
    let health = newer.check_now();
    let error = health.error.unwrap();
    assert!(
        error.contains("version 99, newer than this Nexus"),
        "{error}"
    );
    assert!(matches!(
        PostgresBackend::open(&newer, &key(1)),
        Err(StoreError::UnsupportedSchema(_))
    ));
    assert_eq!(
        cluster
            .psql(&name, "SELECT version FROM spike.schema_version")
            .unwrap()
            .trim(),
        "99",
        "nothing was changed"
    );
}

#[test]
fn tampered_rows_are_refused_not_served_and_nothing_panics() {
    let (cluster, conninfo) = shared_db();
    let name = dbname(&conninfo);
    let (_d, store) = instance(&conninfo, 1, 10);
    store.put_secret("a", data("one")).unwrap();
    store.put_secret("b", data("two")).unwrap();
    // b's row copied over a's: the associated data binds each record to its id.
    cluster
        .psql(
            &name,
            "UPDATE spike.secrets SET nonce = b.nonce, ciphertext = b.ciphertext
             FROM (SELECT nonce, ciphertext FROM spike.secrets ORDER BY id LIMIT 1) b
             WHERE spike.secrets.id = (SELECT id FROM spike.secrets ORDER BY id DESC LIMIT 1)",
        )
        .unwrap();
    let outcomes = [store.get_secret("a", 0), store.get_secret("b", 0)];
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Err(StoreError::Crypto))),
        "a row moved to another id must not open"
    );
    // The database server only ever sees ciphertext.
    let dump = cluster
        .psql(
            &name,
            "SELECT encode(ciphertext, 'escape') FROM spike.secrets",
        )
        .unwrap();
    assert!(!dump.contains("one") || !dump.contains("two"));
    // A wrong key cannot open the store.
    let db = database(&conninfo, None);
    assert!(matches!(
        PostgresBackend::open(&db, &key(9)),
        Err(StoreError::WrongRootKey)
    ));
}

#[test]
fn tls_is_verified_against_the_ca_and_a_wrong_ca_is_unavailable() {
    let cluster = PgCluster::start_with(PgOptions::new().tls(true)).unwrap();
    let name = cluster.create_database().unwrap();
    let conninfo = cluster.tls_conninfo(&name).unwrap();
    let db = database(&conninfo, cluster.ca_file());
    assert!(db.check_now().reachable, "{:?}", db.health());
    let store = Store::new(Arc::new(PostgresBackend::open(&db, &key(1)).unwrap()), 10).unwrap();
    store.put_secret("tls", data("ok")).unwrap();
    // Another CA: the server's certificate does not verify, nothing is sent.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&other, cert.cert.pem()).unwrap();
    let wrong = database(&conninfo, Some(&other));
    let health = wrong.check_now();
    assert!(!health.reachable);
    let error = health.error.unwrap();
    assert!(!error.contains(cluster.password().unwrap()), "{error}");
    // Plaintext TCP is refused before connecting.
    let plain = conninfo.replace("sslmode=require", "sslmode=disable");
    let refused = Database::start(&Settings {
        credential: "nexus-db",
        conninfo: &plain,
        ca_file: cluster.ca_file(),
        pool_size: 1,
        timeout: TIMEOUT,
    });
    assert!(matches!(refused, Err(StoreError::Config(_))));
}

#[test]
fn a_postgres_restart_under_load_loses_no_acknowledged_write_and_recovers_by_itself() {
    let cluster = PgCluster::start().unwrap();
    let name = cluster.create_database().unwrap();
    let conninfo = cluster.conninfo(&name);
    let (db, store) = instance(&conninfo, 1, 1000);
    let stop = AtomicBool::new(false);
    let acked = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let acknowledged = parking_lot::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..3 {
            let (store, stop, acked, failed, acknowledged) =
                (&store, &stop, &acked, &failed, &acknowledged);
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let value = format!("w{w}-{i}");
                    match store.put_secret("load/hot", data(&value)) {
                        Ok(()) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            acknowledged.lock().push(value);
                        }
                        // Nothing written (503), or the server died with the commit in
                        // flight (504: outcome unknown; it may or may not be stored).
                        Err(
                            StoreError::Unavailable(_)
                            | StoreError::Busy(_)
                            | StoreError::OutcomeUnknown(_),
                        ) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => panic!("unexpected error under a restart: {e}"),
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(500));
        cluster.stop_immediate().unwrap();
        // While the server is down, requests fail fast with Unavailable, never hang.
        let start = now_ms();
        assert!(matches!(
            store.get_secret("load/hot", 0),
            Err(StoreError::Unavailable(_))
        ));
        assert!(now_ms() - start <= (TIMEOUT * 2).as_millis());
        std::thread::sleep(Duration::from_millis(500));
        assert!(!db.check_now().reachable);
        cluster.start_again().unwrap();
        let start = now_ms();
        while store.get_secret("load/hot", 0).is_err() {
            assert!(now_ms() - start < 20_000, "never recovered");
            std::thread::sleep(Duration::from_millis(50));
        }
        let before = acked.load(Ordering::Relaxed);
        let start = now_ms();
        while acked.load(Ordering::Relaxed) < before + 20 {
            assert!(now_ms() - start < 20_000, "writes never resumed");
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(
        failed.load(Ordering::Relaxed) > 0,
        "the restart was not seen"
    );
    assert!(db.check_now().reachable);
    let secret = store.secret_metadata("load/hot", 0).unwrap();
    let stored: Vec<String> = secret
        .versions
        .values()
        .map(|v| v.data.expose()["k"].clone())
        .collect();
    // Versions are consecutive, and every acknowledged value is one of them, exactly once.
    let versions: Vec<u64> = secret.versions.keys().copied().collect();
    assert_eq!(
        versions,
        (1..=secret.metadata.current_version).collect::<Vec<_>>()
    );
    let acknowledged = acknowledged.into_inner();
    for value in &acknowledged {
        assert_eq!(
            stored.iter().filter(|s| *s == value).count(),
            1,
            "acknowledged write {value} lost or duplicated"
        );
    }
    // Writes whose outcome was unknown may be there too, never twice.
    let mut unique = stored.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), stored.len());
    println!(
        "RESTART acknowledged {} failed {} stored {} lost 0",
        acknowledged.len(),
        failed.load(Ordering::Relaxed),
        stored.len()
    );
}
