//! spike-bootstrap end to end: `spike_bootstrap::run` against three real in-process keepers
//! (threshold 2) and a real sqlite Nexus, all on 127.0.0.1:0 with one Workload API server.
//! Covers the first bootstrap, idempotent reruns that never re-key, `force`, the early
//! refusals (exit 3 and 6), and the audit stream of the resulting Nexus.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use spike_bootstrap::{BootstrapConfig, Outcome};
use spike_client::ClientError;
use spike_crypto::ShardValue;
use spike_daemon::MapEnv;
use spike_daemon::logging::AUDIT_TARGET;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::{Layer, Registry};

use crate::harness::*;

/// A bootstrap configuration for `keepers` and the Nexus at `nexus_port`, with fast retries,
/// the marker under `state_dir` and the Bootstrap SVID of `w`.
fn bootstrap_config(
    w: &World,
    keepers: &[String],
    nexus_port: u16,
    state_dir: &Path,
    shares: usize,
    force: bool,
) -> Result<BootstrapConfig, spike_bootstrap::BootstrapError> {
    let peers = keepers
        .iter()
        .map(|k| format!("\"{k}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let toml = format!(
        "nexus_api_url = \"https://127.0.0.1:{nexus_port}\"\n\
         keeper_peers = [{peers}]\n\
         shamir_shares = {shares}\n\
         shamir_threshold = 2\n\
         state_dir = \"{state}\"\n\
         spiffe_endpoint_socket = \"{endpoint}\"\n\
         spiffe_id = \"{id}\"\n\
         spiffe_source_timeout = \"5s\"\n\
         keeper_max_retries = 3\n\
         keeper_retry_initial_interval = \"50ms\"\n\
         keeper_retry_max_interval = \"200ms\"\n\
         keeper_timeout = \"10s\"\n\
         verification_timeout = \"20s\"\n\
         timeout = \"60s\"\n\
         http_client_timeout = \"5s\"\n\
         force = {force}\n\
         [trust_roots]\n\
         nexus = \"spike.test\"\n\
         keeper = \"spike.test\"\n\
         bootstrap = \"spike.test\"\n",
        state = state_dir.display(),
        endpoint = w.wl.endpoint(),
        id = w.id(BOOTSTRAP),
    );
    BootstrapConfig::from_toml(&toml, &MapEnv::new())
}

/// The shard each keeper holds right now.
fn keeper_shards(keepers: &[KeeperHandle]) -> Vec<Option<ShardValue>> {
    keepers.iter().map(|k| k.store.get()).collect()
}

/// The recovery shards of `nexus` (recover role), as plain arrays for comparison.
async fn recover_shards(w: &World, nexus: &NexusHandle) -> BTreeMap<i64, [u8; 32]> {
    w.client(RECOVER, nexus)
        .await
        .unwrap()
        .recover()
        .await
        .unwrap()
        .iter()
        .map(|(id, shard)| (*id, *shard.as_bytes()))
        .collect()
}

/// Three keepers, a sqlite Nexus on them, and the bootstrap state directory.
struct Cluster {
    keepers: Vec<KeeperHandle>,
    nexus: NexusHandle,
    state_dir: PathBuf,
}

impl Cluster {
    async fn start(w: &World, name: &str) -> Cluster {
        let keepers = w.start_keepers(KEEPERS.len()).await.unwrap();
        let nexus = w
            .start_nexus(w.config("sqlite", &urls(&keepers), &w.path(name)).unwrap())
            .await
            .unwrap();
        Cluster {
            keepers,
            nexus,
            state_dir: w.path(&format!("{name}-bootstrap-state")),
        }
    }

    fn config(&self, w: &World, force: bool) -> BootstrapConfig {
        bootstrap_config(
            w,
            &urls(&self.keepers),
            self.nexus.addr.port(),
            &self.state_dir,
            3,
            force,
        )
        .unwrap()
    }

    fn marker(&self) -> PathBuf {
        self.state_dir.join(spike_bootstrap::marker::MARKER_NAME)
    }

    async fn stop(self) {
        self.nexus.stop().await.unwrap();
        for k in self.keepers {
            k.stop().await.unwrap();
        }
    }
}

/// Runs bootstrap on a fresh cluster and checks the `Bootstrapped` outcome.
async fn bootstrap_fresh(w: &World, c: &Cluster) {
    let health = unix_get(c.nexus.health_socket.as_ref().unwrap(), "/v1/sys/health").await;
    assert_eq!(health.0, 501, "a fresh Nexus reports 'not bootstrapped'");
    let outcome = spike_bootstrap::run(&c.config(w, false)).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Bootstrapped {
            marker: c.marker(),
            keepers: 3
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_unseals_nexus_and_secrets_round_trip() {
    let w = World::new().unwrap();
    let c = Cluster::start(&w, "a").await;
    assert!(!c.nexus.state.is_unsealed());

    bootstrap_fresh(&w, &c).await;

    // Verification succeeded, so Nexus is unsealed and every keeper holds its shard.
    assert!(c.nexus.state.is_unsealed());
    assert!(c.keepers.iter().all(|k| k.store.has_shard()));
    let marker = std::fs::read_to_string(c.marker()).unwrap();
    assert!(marker.contains("result = \"bootstrapped\""), "{marker}");
    let (status, body) = unix_get(c.nexus.health_socket.as_ref().unwrap(), "/v1/sys/health").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["initialized"], true);

    // The pilot superuser writes and reads back a secret.
    let su = w.client(SUPERUSER, &c.nexus).await.unwrap();
    su.put_secret(
        "apps/db/creds",
        values(&[("user", "app"), ("pass", "pw-1")]),
    )
    .await
    .unwrap();
    su.put_secret(
        "apps/db/creds",
        values(&[("user", "app"), ("pass", "pw-2")]),
    )
    .await
    .unwrap();
    assert_eq!(
        su.get_secret("apps/db/creds", 0).await.unwrap(),
        values(&[("user", "app"), ("pass", "pw-2")])
    );
    assert_eq!(
        su.get_secret("apps/db/creds", 1).await.unwrap()["pass"],
        "pw-1"
    );
    assert_eq!(su.list_secrets().await.unwrap(), vec!["apps/db/creds"]);

    // A Nexus restart unseals from the keepers bootstrap seeded.
    let Cluster {
        keepers,
        nexus,
        state_dir,
    } = c;
    nexus.stop().await.unwrap();
    let nexus = w
        .start_nexus(w.config("sqlite", &urls(&keepers), &w.path("a")).unwrap())
        .await
        .unwrap();
    nexus.wait_unsealed(Duration::from_secs(10)).await.unwrap();
    let su = w.client(SUPERUSER, &nexus).await.unwrap();
    assert_eq!(
        su.get_secret("apps/db/creds", 0).await.unwrap()["pass"],
        "pw-2"
    );
    Cluster {
        keepers,
        nexus,
        state_dir,
    }
    .stop()
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerunning_bootstrap_never_rekeys() {
    let w = World::new().unwrap();
    let c = Cluster::start(&w, "b").await;
    bootstrap_fresh(&w, &c).await;
    let su = w.client(SUPERUSER, &c.nexus).await.unwrap();
    su.put_secret("apps/keep", values(&[("v", "kept")]))
        .await
        .unwrap();
    let recover_before = recover_shards(&w, &c.nexus).await;
    assert_eq!(recover_before.len(), 3);
    let keepers_before = keeper_shards(&c.keepers);
    assert!(keepers_before.iter().all(Option::is_some));

    // 1. The marker exists: nothing is done (not even a network call).
    let outcome = spike_bootstrap::run(&c.config(&w, false)).await.unwrap();
    assert_eq!(outcome, Outcome::AlreadyBootstrapped { marker: c.marker() });

    // 2. Without the marker, Nexus's health says it is initialized: the marker is written
    //    again and no new key is generated.
    std::fs::remove_file(c.marker()).unwrap();
    let outcome = spike_bootstrap::run(&c.config(&w, false)).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::NexusAlreadyInitialized { marker: c.marker() }
    );
    // Checked at once: a re-key would show here before Nexus's next probe re-seeds.
    assert!(
        keeper_shards(&c.keepers) == keepers_before,
        "keepers re-keyed"
    );
    let marker = std::fs::read_to_string(c.marker()).unwrap();
    assert!(
        marker.contains("result = \"nexus already initialized\""),
        "{marker}"
    );

    // The root key did not change: same data, same recovery shards.
    assert_eq!(su.get_secret("apps/keep", 0).await.unwrap()["v"], "kept");
    assert_eq!(recover_shards(&w, &c.nexus).await, recover_before);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_is_refused_with_data_and_rekeys_a_fresh_nexus() {
    let w = World::new().unwrap();
    let c = Cluster::start(&w, "c1").await;
    bootstrap_fresh(&w, &c).await;
    let su = w.client(SUPERUSER, &c.nexus).await.unwrap();
    su.put_secret("apps/precious", values(&[("v", "do-not-orphan")]))
        .await
        .unwrap();
    let keepers_before = keeper_shards(&c.keepers);
    let recover_before = recover_shards(&w, &c.nexus).await;

    // 1. force against a Nexus that holds data: exit 9, nothing re-keyed.
    let err = spike_bootstrap::run(&c.config(&w, true)).await.unwrap_err();
    assert_eq!(err.exit_code(), 9, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{}", c.nexus.addr.port())),
        "{msg}"
    );
    assert!(msg.contains("holds data"), "{msg}");
    assert!(
        keeper_shards(&c.keepers) == keepers_before,
        "keepers re-keyed"
    );
    assert_eq!(recover_shards(&w, &c.nexus).await, recover_before);
    assert_eq!(
        su.get_secret("apps/precious", 0).await.unwrap()["v"],
        "do-not-orphan"
    );
    let state_dir = c.state_dir.clone();
    c.stop().await;

    // 2. A fresh Nexus (new database, new empty keepers) and the old marker: without force
    //    the marker wins; with force bootstrap re-keys, because Nexus holds no data.
    let keepers = w.start_keepers(KEEPERS.len()).await.unwrap();
    let nexus = w
        .start_nexus(w.config("sqlite", &urls(&keepers), &w.path("c2")).unwrap())
        .await
        .unwrap();
    let fresh = Cluster {
        keepers,
        nexus,
        state_dir,
    };
    assert!(fresh.marker().is_file());
    assert_eq!(
        spike_bootstrap::run(&fresh.config(&w, false))
            .await
            .unwrap(),
        Outcome::AlreadyBootstrapped {
            marker: fresh.marker()
        }
    );
    assert!(!fresh.nexus.state.is_unsealed());
    let outcome = spike_bootstrap::run(&fresh.config(&w, true)).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Bootstrapped {
            marker: fresh.marker(),
            keepers: 3
        }
    );
    assert!(fresh.nexus.state.is_unsealed());
    let new_recover = recover_shards(&w, &fresh.nexus).await;
    assert_ne!(new_recover, recover_before, "a new root key was generated");
    let su = w.client(SUPERUSER, &fresh.nexus).await.unwrap();
    assert!(matches!(
        su.get_secret("apps/precious", 0).await,
        Err(ClientError::NotFound { .. })
    ));
    su.put_secret("apps/new", values(&[("v", "fresh")]))
        .await
        .unwrap();
    assert_eq!(su.get_secret("apps/new", 0).await.unwrap()["v"], "fresh");
    fresh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeper_count_mismatch_and_a_non_keeper_url_are_refused() {
    let w = World::new().unwrap();
    let c = Cluster::start(&w, "d").await;
    let peers = urls(&c.keepers);

    // 1. Two keepers for three shares: exit 3 while loading the configuration, so no
    //    network call can happen.
    let err =
        bootstrap_config(&w, &peers[..2], c.nexus.addr.port(), &c.state_dir, 3, false).unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(err.to_string().contains("2 keeper(s)"), "{err}");
    // The same through the SPIKE variables.
    let env = MapEnv::new()
        .with("SPIKE_NEXUS_KEEPER_PEERS", peers.join(","))
        .with("SPIKE_NEXUS_SHAMIR_SHARES", "4");
    let err = BootstrapConfig::from_toml("", &env).unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(c.keepers.iter().all(|k| !k.store.has_shard()));
    assert!(!c.marker().exists());

    // 2. Keeper 3's URL points at the Nexus port: its SVID is not a keeper ID → exit 6,
    //    and the message names the URL.
    let nexus_url = format!("https://127.0.0.1:{}", c.nexus.addr.port());
    let wrong = [peers[0].clone(), peers[1].clone(), nexus_url.clone()];
    let config = bootstrap_config(&w, &wrong, c.nexus.addr.port(), &c.state_dir, 3, false).unwrap();
    let err = spike_bootstrap::run(&config).await.unwrap_err();
    assert_eq!(err.exit_code(), 6, "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&nexus_url), "{msg}");
    assert!(msg.contains("keeper 3"), "{msg}");
    assert!(msg.contains(&w.id(NEXUS)), "{msg}");
    assert!(!c.marker().exists(), "a failed bootstrap writes no marker");
    c.stop().await;
}

// ----- audit

/// One captured tracing event: its target and every field rendered as text.
#[derive(Debug, Clone)]
struct Captured {
    target: String,
    fields: BTreeMap<String, String>,
}

impl Captured {
    fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

struct FieldText<'a>(&'a mut BTreeMap<String, String>);

impl Visit for FieldText<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// A layer that keeps every event of our own crates (targets `spike*`).
struct CaptureLayer(Arc<Mutex<Vec<Captured>>>);

impl<S: tracing::Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let target = event.metadata().target();
        if !target.starts_with("spike") {
            return;
        }
        let mut fields = BTreeMap::new();
        event.record(&mut FieldText(&mut fields));
        self.0.lock().push(Captured {
            target: target.to_owned(),
            fields,
        });
    }
}

/// Installs the capturing subscriber once for the whole test binary (Nexus logs from tokio
/// worker threads, so a thread-scoped default would miss events) and returns its buffer.
fn captured() -> Arc<Mutex<Vec<Captured>>> {
    static EVENTS: OnceLock<Arc<Mutex<Vec<Captured>>>> = OnceLock::new();
    EVENTS
        .get_or_init(|| {
            let events = Arc::new(Mutex::new(Vec::new()));
            let subscriber = Registry::default().with(CaptureLayer(Arc::clone(&events)));
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in this test binary");
            events
        })
        .clone()
}

fn unique(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_have_the_schema_and_never_the_value() {
    let events = captured();
    let w = World::new().unwrap();
    let c = Cluster::start(&w, "e").await;
    bootstrap_fresh(&w, &c).await;

    let path = unique("audit/");
    let secret = unique("VALUE-");
    let su = w.client(SUPERUSER, &c.nexus).await.unwrap();
    let app = w.client(WORKLOAD, &c.nexus).await.unwrap();

    // allowed: the superuser writes
    su.put_secret(&path, values(&[("password", &secret)]))
        .await
        .unwrap();
    // denied: a plain workload without a policy reads
    assert!(matches!(
        app.get_secret(&path, 0).await,
        Err(ClientError::Unauthorized { .. })
    ));
    // bad requests: an unknown route, and malformed puts whose bodies carry the value
    // (truncated JSON; the value where a map belongs, which serde quotes in its error)
    let bad_route = format!("/v1/store/{}", unique("nope-"));
    let raw = post_json(&su, &bad_route, None, "{}").await;
    assert_eq!(raw.status, 400);
    for malformed in [
        format!(r#"{{"path":"{path}","values":{{"password":"{secret}"}}"#),
        format!(r#"{{"path":"{path}","values":"{secret}"}}"#),
    ] {
        let raw = post_json(&su, "/v1/store/secrets", None, &malformed).await;
        assert_eq!(raw.status, 400);
        assert!(!String::from_utf8_lossy(&raw.body).contains(&secret));
    }

    // Stopping Nexus writes the audit events still buffered.
    c.stop().await;
    let audit: Vec<Captured> = events
        .lock()
        .iter()
        .filter(|e| e.target == AUDIT_TARGET)
        .cloned()
        .collect();
    let find = |action: &str, path: &str, peer: &str| -> Captured {
        audit
            .iter()
            .find(|e| {
                e.field("action") == action
                    && e.field("path") == path
                    && e.field("peer_spiffe_id") == peer
            })
            .unwrap_or_else(|| panic!("no audit event for {action} {path} by {peer}: {audit:#?}"))
            .clone()
    };
    let put = find("secret_put", &path, &w.id(SUPERUSER));
    // Refused before its body was read (no policy could allow it): the event names the route.
    let denied = find("secret_get", "/v1/store/secrets", &w.id(WORKLOAD));
    let bad = find("fallback", &bad_route, &w.id(SUPERUSER));
    for (event, status, result) in [
        (&put, "200", "allowed"),
        (&denied, "401", "denied"),
        (&bad, "400", "error"),
    ] {
        for key in [
            "request_id",
            "peer_spiffe_id",
            "action",
            "path",
            "status",
            "result",
            "duration_ms",
        ] {
            assert!(event.fields.contains_key(key), "{key} missing: {event:?}");
        }
        assert_eq!(event.field("status"), status, "{event:?}");
        assert_eq!(event.field("result"), result, "{event:?}");
        assert!(
            event.field("duration_ms").parse::<u64>().is_ok(),
            "{event:?}"
        );
        assert_eq!(event.field("request_id").len(), 16, "{event:?}");
    }
    // The malformed put was audited too (as an error on the route's path).
    assert!(
        audit.iter().any(|e| e.field("action") == "secret_put"
            && e.field("status") == "400"
            && e.field("peer_spiffe_id") == w.id(SUPERUSER)),
        "{audit:#?}"
    );
    // The value appears in no audit event, whatever the outcome.
    for event in &audit {
        for value in event.fields.values() {
            assert!(!value.contains(&secret), "secret value in {event:?}");
        }
    }
}

/// Issue 12 L3: no fragment of a request body reaches a log line (any level, any of our
/// targets) or an error answer, whatever the parser or validator says about it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_fragments_reach_neither_logs_nor_answers() {
    let events = captured();
    let w = World::new().unwrap();
    let c = Cluster::start(&w, "l3").await;
    bootstrap_fresh(&w, &c).await;
    let su = w.client(SUPERUSER, &c.nexus).await.unwrap();

    let canary = unique("CANARY");
    let cases: Vec<(&str, Option<&str>, String)> = vec![
        // Syntax error right after the canary (truncated JSON).
        (
            "/v1/store/secrets",
            None,
            format!(r#"{{"path":"a/b","values":{{"k":"{canary}"}}"#),
        ),
        // Wrong type: serde_json's message would quote the string.
        (
            "/v1/store/secrets",
            None,
            format!(r#"{{"path":"a/b","values":"{canary}"}}"#),
        ),
        // Wrong type in a number field, with the canary as the value.
        (
            "/v1/store/secrets",
            Some("get"),
            format!(r#"{{"path":"a/b","version":"{canary}"}}"#),
        ),
        // Invalid path and invalid key name, both carrying the canary.
        (
            "/v1/store/secrets",
            None,
            format!(r#"{{"path":"bad path {canary}","values":{{"k":"v"}}}}"#),
        ),
        (
            "/v1/store/secrets",
            None,
            format!(r#"{{"path":"a/b","values":{{"bad.key.{canary}":"v"}}}}"#),
        ),
        // An invalid policy pattern: the regex compiler quotes the pattern.
        (
            "/v1/acl/policy",
            None,
            format!(
                r#"{{"name":"p","spiffeidPattern":"^spiffe://[z-a]{canary}","pathPattern":".*","permissions":["read"]}}"#
            ),
        ),
        (
            "/v1/acl/policy",
            None,
            format!(
                r#"{{"name":"p","spiffeidPattern":"^spiffe://.*","pathPattern":"({canary}","permissions":["read"]}}"#
            ),
        ),
        // An unknown permission and a bad shard.
        (
            "/v1/acl/policy",
            None,
            format!(
                r#"{{"name":"p","spiffeidPattern":"^spiffe://.*","pathPattern":".*","permissions":["{canary}"]}}"#
            ),
        ),
        (
            "/v1/operator/restore",
            None,
            format!(r#"{{"id":"{canary}","shard":[1]}}"#),
        ),
    ];
    for (path, action, body) in &cases {
        let raw = post_json(&su, path, *action, body).await;
        assert!(raw.status >= 400, "{path} {body}: {}", raw.status);
        let answer = String::from_utf8_lossy(&raw.body);
        assert!(!answer.contains(&canary), "{path}: {answer}");
        assert!(!answer.contains("CANARY"), "{path}: {answer}");
    }
    // Stopping Nexus writes the audit events still buffered.
    c.stop().await;
    // The requests were seen (and logged) at all.
    let ours: Vec<Captured> = events
        .lock()
        .iter()
        .filter(|e| e.fields.values().any(|v| v.contains("request rejected")))
        .cloned()
        .collect();
    assert!(!ours.is_empty(), "no rejection was logged");
    for event in events.lock().iter() {
        for value in event.fields.values() {
            assert!(!value.contains(&canary), "request fragment in {event:?}");
        }
    }
}

/// A `postgres` Nexus configuration on `keepers`, reading the connection string `conninfo`
/// from a credential directory of its own, as systemd's `LoadCredential=` provides it.
fn postgres_config(
    w: &World,
    keepers: &[KeeperHandle],
    name: &str,
    conninfo: &str,
) -> spike_nexus::config::Config {
    let mut config = w.config("postgres", &urls(keepers), &w.path(name)).unwrap();
    let creds = w.path(&format!("{name}-credentials"));
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("nexus-db"), conninfo).unwrap();
    config.postgres.credentials_directory = Some(creds);
    config.postgres.timeout = Duration::from_secs(3);
    config
}

/// The health answer of the Nexus at `socket` once `done` holds for it, or the last one after
/// 5 s (the caller asserts on it).
async fn health_until(
    socket: &Path,
    done: impl Fn(&(u16, serde_json::Value)) -> bool,
) -> (u16, serde_json::Value) {
    let mut health = unix_get(socket, "/v1/sys/health").await;
    for _ in 0..100 {
        if done(&health) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        health = unix_get(socket, "/v1/sys/health").await;
    }
    health
}

/// A fresh database on the test binary's shared PostgreSQL cluster (its connection string).
async fn shared_postgres() -> String {
    tokio::task::spawn_blocking(|| {
        let cluster = spike_testkit::PgCluster::shared().unwrap();
        cluster.conninfo(&cluster.create_database().unwrap())
    })
    .await
    .unwrap()
}

/// Keepers, one `postgres` Nexus on them named `name`, and a bootstrap through it.
async fn bootstrapped_postgres(
    w: &World,
    conninfo: &str,
    name: &str,
) -> (Vec<KeeperHandle>, NexusHandle) {
    let keepers = w.start_keepers(KEEPERS.len()).await.unwrap();
    let nexus = w
        .start_nexus(postgres_config(w, &keepers, name, conninfo))
        .await
        .unwrap();
    let state = w.path(&format!("{name}-bootstrap-state"));
    spike_bootstrap::run(
        &bootstrap_config(w, &urls(&keepers), nexus.addr.port(), &state, 3, false).unwrap(),
    )
    .await
    .unwrap();
    (keepers, nexus)
}

/// Several Nexus instances on one PostgreSQL store and the same keepers: one bootstrap for
/// the cluster, the other instance unseals from the keepers it seeded, a second bootstrap
/// through either instance never re-keys, and writes through both instances are one store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_instances_share_one_bootstrap_and_one_store() {
    let conninfo = shared_postgres().await;
    let w = World::new().unwrap();
    let keepers = w.start_keepers(KEEPERS.len()).await.unwrap();
    let a = w
        .start_nexus(postgres_config(&w, &keepers, "a", &conninfo))
        .await
        .unwrap();
    let b = w
        .start_nexus(postgres_config(&w, &keepers, "b", &conninfo))
        .await
        .unwrap();
    // Both see an empty store: not bootstrapped (once the first check ran).
    for n in [&a, &b] {
        let socket = n.health_socket.as_ref().unwrap();
        let health = health_until(socket, |h| h.0 == 501).await;
        assert_eq!(health.0, 501, "{}", health.1);
        assert_eq!(health.1["backend_reachable"], true);
    }
    let state_a = w.path("a-bootstrap-state");
    let outcome = spike_bootstrap::run(
        &bootstrap_config(&w, &urls(&keepers), a.addr.port(), &state_a, 3, false).unwrap(),
    )
    .await
    .unwrap();
    assert!(
        matches!(outcome, Outcome::Bootstrapped { .. }),
        "{outcome:?}"
    );
    let shards = keeper_shards(&keepers);
    // The other instance unseals from the keepers bootstrap seeded through the first.
    b.wait_unsealed(Duration::from_secs(20)).await.unwrap();
    // A second bootstrap, through the other instance, finds the cluster initialized.
    let state_b = w.path("b-bootstrap-state");
    let again = spike_bootstrap::run(
        &bootstrap_config(&w, &urls(&keepers), b.addr.port(), &state_b, 3, false).unwrap(),
    )
    .await
    .unwrap();
    assert!(
        matches!(again, Outcome::NexusAlreadyInitialized { .. }),
        "{again:?}"
    );
    assert_eq!(keeper_shards(&keepers), shards, "nothing re-keyed");
    // Writes through both instances are one store; versions never collide.
    let su_a = w.client(SUPERUSER, &a).await.unwrap();
    let su_b = w.client(SUPERUSER, &b).await.unwrap();
    su_a.put_secret("ha/x", values(&[("v", "from-a")]))
        .await
        .unwrap();
    su_b.put_secret("ha/x", values(&[("v", "from-b")]))
        .await
        .unwrap();
    assert_eq!(su_a.get_secret("ha/x", 0).await.unwrap()["v"], "from-b");
    assert_eq!(su_b.get_secret("ha/x", 1).await.unwrap()["v"], "from-a");
    // Both instances hold the same recovery shards (deterministic split): re-seeding from
    // either is idempotent.
    assert_eq!(recover_shards(&w, &a).await, recover_shards(&w, &b).await);
    // A restarted instance unseals from the keepers again.
    b.stop().await.unwrap();
    let b = w
        .start_nexus(postgres_config(&w, &keepers, "b", &conninfo))
        .await
        .unwrap();
    b.wait_unsealed(Duration::from_secs(20)).await.unwrap();
    let su_b = w.client(SUPERUSER, &b).await.unwrap();
    assert_eq!(su_b.get_secret("ha/x", 0).await.unwrap()["v"], "from-b");
    assert_eq!(
        keeper_shards(&keepers),
        shards,
        "re-seeding changed no shard"
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    for k in keepers {
        k.stop().await.unwrap();
    }
}

/// PostgreSQL down: requests answer 503 (`backend_unavailable`), health says
/// `backend_reachable: false` and 503, nothing is acknowledged; back up, the instance
/// recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_answers_503_and_the_instance_recovers_by_itself() {
    let (conninfo, pg) = tokio::task::spawn_blocking(|| {
        let cluster = spike_testkit::PgCluster::start().unwrap();
        let db = cluster.create_database().unwrap();
        (cluster.conninfo(&db), Arc::new(cluster))
    })
    .await
    .unwrap();
    let w = World::new().unwrap();
    let (keepers, n) = bootstrapped_postgres(&w, &conninfo, "n").await;
    let su = w.client(SUPERUSER, &n).await.unwrap();
    su.put_secret("down/x", values(&[("v", "1")]))
        .await
        .unwrap();
    let socket = n.health_socket.clone().unwrap();

    let stopper = Arc::clone(&pg);
    tokio::task::spawn_blocking(move || stopper.stop_immediate().unwrap())
        .await
        .unwrap();
    let put = su.put_secret("down/x", values(&[("v", "2")])).await;
    let err = put.expect_err("a write with PostgreSQL down must not be acknowledged");
    assert!(err.to_string().contains("503"), "{err}");
    assert!(su.get_secret("down/x", 0).await.is_err());
    let health = health_until(&socket, |h| h.1["backend_reachable"] == false).await;
    assert_eq!(health.0, 503, "{}", health.1);
    assert_eq!(health.1["backend_reachable"], false, "{}", health.1);
    assert!(health.1["backend_error"].is_string(), "{}", health.1);
    assert_eq!(health.1["sealed"], false, "the root key stays in memory");

    let starter = Arc::clone(&pg);
    tokio::task::spawn_blocking(move || starter.start_again().unwrap())
        .await
        .unwrap();
    let mut recovered = false;
    for _ in 0..200 {
        if su.put_secret("down/x", values(&[("v", "3")])).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "never recovered after PostgreSQL came back");
    let meta = su.get_secret("down/x", 0).await.unwrap();
    assert_eq!(meta["v"], "3");
    let health = health_until(&socket, |h| h.0 == 200).await;
    assert_eq!(health.0, 200, "{}", health.1);
    n.stop().await.unwrap();
    for k in keepers {
        k.stop().await.unwrap();
    }
}

/// Every keeper lost its shard and both instances restarted sealed with the shared data: an
/// operator restore on one instance re-seeds the keepers, and the other unseals from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restore_on_one_postgres_instance_unseals_the_others() {
    let conninfo = shared_postgres().await;
    let w = World::new().unwrap();
    let (keepers, a) = bootstrapped_postgres(&w, &conninfo, "a").await;
    let su = w.client(SUPERUSER, &a).await.unwrap();
    su.put_secret("ha/restore", values(&[("v", "kept")]))
        .await
        .unwrap();
    let exported = recover_shards(&w, &a).await;
    a.stop().await.unwrap();
    for k in &keepers {
        k.store.clear();
    }
    let a = w
        .start_nexus(postgres_config(&w, &keepers, "a", &conninfo))
        .await
        .unwrap();
    let b = w
        .start_nexus(postgres_config(&w, &keepers, "b", &conninfo))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!a.state.is_unsealed() && !b.state.is_unsealed());
    let (status, body) = unix_get(b.health_socket.as_ref().unwrap(), "/v1/sys/health").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["has_data"], true,
        "the shared store was bootstrapped: {body}"
    );
    let restore = w.client(RESTORE, &a).await.unwrap();
    let mut ids = exported.keys().copied();
    for (n, id) in [ids.next().unwrap(), ids.next().unwrap()]
        .into_iter()
        .enumerate()
    {
        let st = restore
            .restore(id, spike_proto::ShardBytes::new(exported[&id]))
            .await
            .unwrap();
        assert_eq!(st.restored, n == 1);
    }
    assert!(a.state.is_unsealed());
    // The other instance unseals from the keepers the first one re-seeded.
    b.wait_unsealed(Duration::from_secs(30)).await.unwrap();
    let su_b = w.client(SUPERUSER, &b).await.unwrap();
    assert_eq!(su_b.get_secret("ha/restore", 0).await.unwrap()["v"], "kept");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    for k in keepers {
        k.stop().await.unwrap();
    }
}
