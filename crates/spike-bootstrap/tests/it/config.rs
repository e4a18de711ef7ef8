//! Configuration validation: each refusal has its exit code; env and file combine.

use std::time::Duration;

use spike_bootstrap::{BootstrapConfig, Outcome};
use spike_daemon::MapEnv;

use crate::support::config_for;

fn env(peers: &str, shares: &str, threshold: &str) -> MapEnv {
    MapEnv::new()
        .with("SPIKE_NEXUS_KEEPER_PEERS", peers)
        .with("SPIKE_NEXUS_SHAMIR_SHARES", shares)
        .with("SPIKE_NEXUS_SHAMIR_THRESHOLD", threshold)
}

fn code(toml: &str, env: &MapEnv) -> u8 {
    BootstrapConfig::from_toml(toml, env)
        .unwrap_err()
        .exit_code()
}

#[test]
fn spike_env_vars_configure_everything() {
    let e = env("https://k1:8443, https://k2:8443,https://k3:8443", "3", "2")
        .with("SPIKE_NEXUS_API_URL", "https://nexus.example:8553")
        .with("SPIKE_BOOTSTRAP_KEEPER_MAX_RETRIES", "7")
        .with("SPIKE_BOOTSTRAP_KEEPER_RETRY_INITIAL_INTERVAL", "1s")
        .with("SPIKE_BOOTSTRAP_INIT_VERIFICATION_TIMEOUT", "5m")
        .with("SPIKE_BOOTSTRAP_TIMEOUT", "10m")
        .with("SPIKE_BOOTSTRAP_FORCE", "true")
        .with("STATE_DIRECTORY", "/run/state/spike-bootstrap:/other");
    let c = BootstrapConfig::from_toml("", &e).unwrap();
    assert_eq!(c.keepers.len(), 3);
    assert_eq!(c.keepers[1].url.host(), "k2");
    // URL-only keepers are pinned by position under the keeper trust root.
    assert_eq!(
        c.keepers[1]
            .spiffe_id
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("spiffe://spike.ist/spike/keeper/2")
    );
    assert_eq!((c.shares, c.threshold), (3, 2));
    assert_eq!(c.nexus_api_url.host(), "nexus.example");
    assert_eq!(c.keeper_retry.max_attempts, 7);
    assert_eq!(c.keeper_retry.initial_interval, Duration::from_secs(1));
    assert_eq!(c.keeper_retry.max_interval, Duration::from_secs(30));
    assert_eq!(c.keeper_retry.overall, Duration::from_secs(30));
    assert_eq!(c.verification_timeout, Duration::from_secs(300));
    assert_eq!(c.timeout, Some(Duration::from_secs(600)));
    assert!(c.force);
    assert_eq!(
        c.marker_path(),
        std::path::Path::new("/run/state/spike-bootstrap/bootstrap.done")
    );

    // Defaults: Go's, plus /var/lib/spike-bootstrap; a list in TOML works as well.
    let c = BootstrapConfig::from_toml(
        "keeper_peers = [\"https://a:1\", \"https://b:1\", \"https://c:1\"]",
        &MapEnv::new(),
    )
    .unwrap();
    assert_eq!(c.nexus_api_url.as_str(), "https://localhost:8553");
    assert_eq!(c.timeout, None);
    assert!(!c.force && !c.memory_backend);
    assert_eq!(c.verification_timeout, Duration::from_secs(1800));
    assert_eq!(
        c.state_dir,
        std::path::Path::new("/var/lib/spike-bootstrap")
    );
    // Only "true" forces (any case, like SPIKE's trimmed comparison).
    let c = BootstrapConfig::from_toml(
        "",
        &env("https://a:1,https://b:1,https://c:1", "3", "2").with("SPIKE_BOOTSTRAP_FORCE", "yes"),
    )
    .unwrap();
    assert!(!c.force);
}

#[test]
fn refusals_have_distinct_exit_codes() {
    let three = "https://a:1,https://b:1,https://c:1";
    // keepers != shares → 3
    assert_eq!(code("", &env(three, "5", "2")), 3);
    assert_eq!(code("", &env("https://a:1", "3", "2")), 3);
    let err = BootstrapConfig::from_toml("", &env(three, "2", "2")).unwrap_err();
    assert!(
        err.to_string().contains("3 keeper(s)") && err.to_string().contains("is 2"),
        "{err}"
    );
    // threshold outside 1..=shares → 4
    assert_eq!(code("", &env(three, "3", "0")), 4);
    assert_eq!(code("", &env(three, "3", "4")), 4);
    assert_eq!(code("", &env(three, "3", "-1")), 4);
    assert_eq!(code("", &env(three, "0", "1")), 4);
    // everything else → 64
    assert_eq!(code("", &MapEnv::new()), 64, "no keepers");
    assert_eq!(
        code("", &env("http://a:1,https://b:1,https://c:1", "3", "2")),
        64
    );
    assert_eq!(
        code("", &env("https://a:1,https://a:1,https://c:1", "3", "2")),
        64
    );
    assert_eq!(
        code("nexus_api_url = \"localhost:8553\"", &env(three, "3", "2")),
        64
    );
    assert_eq!(code("shamir_sharez = 3", &env(three, "3", "2")), 64);
    assert_eq!(code("keeper_timeout = \"soon\"", &env(three, "3", "2")), 64);
    assert_eq!(code("", &env(three, "three", "2")), 64);
    assert_eq!(
        code("[trust_roots]\nkeeper = \",\"", &env(three, "3", "2")),
        64
    );
}

#[tokio::test]
async fn marker_makes_runs_idempotent_without_any_network() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens anywhere and the Workload API endpoint does not exist: the run must
    // not need any of it.
    let keepers = [
        "https://127.0.0.1:1".to_owned(),
        "https://127.0.0.1:2".to_owned(),
    ];
    let config = config_for(
        &keepers,
        "https://127.0.0.1:3",
        dir.path(),
        "unix:/nonexistent/agent.sock",
    );
    spike_bootstrap::marker::write(
        &config.marker_path(),
        &spike_bootstrap::marker::MarkerInfo {
            nexus_api_url: "https://127.0.0.1:3".to_owned(),
            shares: 2,
            threshold: 2,
            reason: "bootstrapped",
        },
    )
    .unwrap();
    let before = std::fs::read(config.marker_path()).unwrap();
    for _ in 0..2 {
        let outcome = spike_bootstrap::run(&config).await.unwrap();
        assert_eq!(
            outcome,
            Outcome::AlreadyBootstrapped {
                marker: config.marker_path()
            }
        );
    }
    assert_eq!(
        std::fs::read(config.marker_path()).unwrap(),
        before,
        "marker untouched"
    );

    // The memory backend needs no bootstrap at all.
    let mut memory = config.clone();
    memory.memory_backend = true;
    memory.state_dir = dir.path().join("empty");
    assert_eq!(
        spike_bootstrap::run(&memory).await.unwrap(),
        Outcome::MemoryBackend
    );
    assert!(!memory.marker_path().exists());
}

#[test]
fn deprecated_spiffe_source_timeout_still_works_with_a_warning() {
    let e = env("https://k1:8443,https://k2:8443,https://k3:8443", "3", "2");
    let config = BootstrapConfig::from_toml("spiffe_source_timeout = \"7s\"\n", &e).unwrap();
    assert_eq!(config.spiffe_timeout, Duration::from_secs(7));
    assert_eq!(config.deprecations.len(), 1);
    let text = config.deprecations[0].to_string();
    assert!(
        text.contains("`spiffe_source_timeout`") && text.contains("`spiffe_timeout`"),
        "{text}"
    );

    let config = BootstrapConfig::from_toml("spiffe_timeout = \"7s\"\n", &e).unwrap();
    assert_eq!(config.spiffe_timeout, Duration::from_secs(7));
    assert!(config.deprecations.is_empty());

    // The environment variable sets the new key and wins over the file.
    let with_env = e.clone().with("SPIKE_SPIFFE_SOURCE_TIMEOUT", "9s");
    let config = BootstrapConfig::from_toml("spiffe_source_timeout = \"7s\"\n", &with_env).unwrap();
    assert_eq!(config.spiffe_timeout, Duration::from_secs(9));
}

#[test]
fn old_and_new_key_together_are_refused_naming_both() {
    let e = env("https://k1:8443,https://k2:8443,https://k3:8443", "3", "2");
    let err = BootstrapConfig::from_toml(
        "spiffe_source_timeout = \"7s\"\nspiffe_timeout = \"8s\"\n",
        &e,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`spiffe_source_timeout`") && err.contains("`spiffe_timeout`"),
        "{err}"
    );
    // Unknown keys are still refused, and so are server-only keys Bootstrap never had.
    for toml in [
        "spiffe_timout = \"7s\"",
        "max_body_bytes = 1",
        "[trust_roots]\npilot = \"a\"",
    ] {
        assert!(BootstrapConfig::from_toml(toml, &e).is_err(), "{toml}");
    }
}

#[test]
fn threshold_one_and_role_only_keepers_are_warned_about_and_pins_must_be_distinct() {
    let peers = "https://k1:8443,https://k2:8443,https://k3:8443";
    let c = BootstrapConfig::from_toml("", &env(peers, "3", "2")).unwrap();
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    let c = BootstrapConfig::from_toml("", &env(peers, "3", "1")).unwrap();
    assert!(
        c.warnings()
            .iter()
            .any(|w| w.contains("shamir_threshold = 1")),
        "{:?}",
        c.warnings()
    );
    let c = BootstrapConfig::from_toml(
        "",
        &env(peers, "3", "2").with("SPIKE_NEXUS_KEEPER_IDENTITY", "role"),
    )
    .unwrap();
    assert!(c.keepers.iter().all(|k| k.spiffe_id.is_none()));
    assert!(c.warnings().iter().any(|w| w.contains("by role alone")));
    // Two URLs pinned to one ID: one keeper could collect both shards.
    let toml = "keeper_peers = [\"https://k1:8443\", \
                { url = \"https://k2:8443\", spiffe_id = \"spiffe://spike.ist/spike/keeper/1\" }]\n\
                shamir_shares = 2\n";
    assert_eq!(code(toml, &MapEnv::new()), 64);
}
