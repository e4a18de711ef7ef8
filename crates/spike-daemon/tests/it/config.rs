use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use spike_daemon::MapEnv;
use spike_daemon::config::{ConfigError, GoDuration, go_duration, listen_addr, load, load_str};

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct NexusFile {
    #[serde(default)]
    listen: Listen,
    #[serde(default)]
    shamir: Shamir,
    #[serde(default, with = "go_duration")]
    keeper_update_interval: Duration,
    #[serde(default)]
    grace: Option<GoDuration>,
    #[serde(default)]
    auth: Auth,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Listen {
    #[serde(with = "listen_addr")]
    api: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            api: "0.0.0.0:8553".parse().unwrap(),
        }
    }
}

#[derive(Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
struct Shamir {
    #[serde(default)]
    shares: u8,
    #[serde(default)]
    threshold: u8,
}

#[derive(Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
struct Auth {
    #[serde(default)]
    api_token: Option<u32>,
}

const MAP: &[(&str, &str)] = &[
    ("SPIKE_NEXUS_TLS_PORT", "listen.api"),
    ("SPIKE_NEXUS_SHAMIR_SHARES", "shamir.shares"),
    ("SPIKE_NEXUS_SHAMIR_THRESHOLD", "shamir.threshold"),
    (
        "SPIKE_NEXUS_KEEPER_UPDATE_INTERVAL",
        "keeper_update_interval",
    ),
    ("SPIKE_TEST_API_TOKEN", "auth.api_token"),
];

fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("nexus.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn file_values_and_defaults_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        r#"
keeper_update_interval = "5m"
grace = "1.5s"
[listen]
api = "127.0.0.1:9443"
[shamir]
shares = 3
threshold = 2
"#,
    );
    let cfg: NexusFile = load(Some(&path), &MapEnv::new(), MAP).unwrap();
    assert_eq!(cfg.listen.api, "127.0.0.1:9443".parse().unwrap());
    assert_eq!(
        cfg.shamir,
        Shamir {
            shares: 3,
            threshold: 2
        }
    );
    assert_eq!(cfg.keeper_update_interval, Duration::from_secs(300));
    assert_eq!(cfg.grace, Some(GoDuration(Duration::from_millis(1500))));
}

#[test]
fn spike_env_vars_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "[shamir]\nshares = 3\nthreshold = 2\n");
    let env = MapEnv::from([
        ("SPIKE_NEXUS_TLS_PORT", ":9000"),
        ("SPIKE_NEXUS_SHAMIR_SHARES", "5"),
        ("SPIKE_NEXUS_KEEPER_UPDATE_INTERVAL", "1h30m"),
        ("SPIKE_UNRELATED", "ignored"),
    ]);
    let cfg: NexusFile = load(Some(&path), &env, MAP).unwrap();
    assert_eq!(cfg.listen.api, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(cfg.shamir.shares, 5, "env wins over the file");
    assert_eq!(cfg.shamir.threshold, 2, "file value kept");
    assert_eq!(cfg.keeper_update_interval, Duration::from_secs(5400));
}

#[test]
fn no_file_means_defaults_plus_env() {
    let env = MapEnv::from([("SPIKE_NEXUS_SHAMIR_THRESHOLD", "4")]);
    let cfg: NexusFile = load(None, &env, MAP).unwrap();
    assert_eq!(cfg.shamir.threshold, 4);
    assert_eq!(cfg.listen, Listen::default());
}

#[test]
fn unknown_key_is_rejected_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "[listen]\napi = \":1\"\nbogus = 1\n");
    let err = load::<NexusFile>(Some(&path), &MapEnv::new(), MAP).unwrap_err();
    let ConfigError::Invalid { issues } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].key, "listen.bogus");
    assert_eq!(issues[0].origin, path.display().to_string());
    let msg = err.to_string();
    assert!(msg.contains("listen.bogus"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("unknown key"), "{msg}");

    let err = load::<NexusFile>(Some(&path), &MapEnv::new(), MAP);
    assert!(err.is_err());
    let top = write(&dir, "typo_top_level = true\n");
    let msg = load::<NexusFile>(Some(&top), &MapEnv::new(), MAP)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("`typo_top_level`"), "{msg}");
}

#[test]
fn bad_env_value_names_the_variable_and_the_key() {
    let env = MapEnv::from([("SPIKE_NEXUS_KEEPER_UPDATE_INTERVAL", "5 minutes")]);
    let err = load::<NexusFile>(None, &env, MAP).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("keeper_update_interval"), "{msg}");
    assert!(msg.contains("SPIKE_NEXUS_KEEPER_UPDATE_INTERVAL"), "{msg}");
    assert!(
        msg.contains("5 minutes"),
        "non-secret values are shown: {msg}"
    );

    let env = MapEnv::from([("SPIKE_NEXUS_TLS_PORT", "localhost:8553")]);
    let msg = load::<NexusFile>(None, &env, MAP).unwrap_err().to_string();
    assert!(
        msg.contains("listen.api") && msg.contains("SPIKE_NEXUS_TLS_PORT"),
        "{msg}"
    );
}

#[test]
fn secret_looking_values_are_never_printed() {
    let env = MapEnv::from([("SPIKE_TEST_API_TOKEN", "hunter2-secret-value")]);
    let msg = load::<NexusFile>(None, &env, MAP).unwrap_err().to_string();
    assert!(msg.contains("auth.api_token"), "{msg}");
    assert!(!msg.contains("hunter2"), "secret leaked: {msg}");

    let msg = load_str::<NexusFile>(
        "[auth]\napi_token = \"hunter2\"\n",
        "inline.toml",
        &MapEnv::new(),
        MAP,
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("auth.api_token") && msg.contains("inline.toml"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "secret leaked: {msg}");
}

#[test]
fn a_wrong_type_names_the_key_and_the_value() {
    let msg = load_str::<NexusFile>(
        "[shamir]\nshares = \"three\"\nthreshold = -1\n",
        "multi.toml",
        &MapEnv::new(),
        MAP,
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("shamir.shares"), "{msg}");
}

#[test]
fn missing_file_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let err = load::<NexusFile>(Some(&path), &MapEnv::new(), MAP).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.toml"));
}

#[test]
fn toml_syntax_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "[listen\napi = 1\n");
    let msg = load::<NexusFile>(Some(&path), &MapEnv::new(), MAP)
        .unwrap_err()
        .to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

mod aliases {
    use std::time::Duration;

    use serde::Deserialize;
    use spike_daemon::MapEnv;
    use spike_daemon::common::{IDENTITY_ALIASES, SERVER_ALIASES};
    use spike_daemon::config::{
        Alias, ConfigError, GoDuration, load_str_with_aliases, load_with_aliases,
    };

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct File {
        spiffe_timeout: Option<GoDuration>,
        request_body_limit: Option<usize>,
        shutdown_grace: Option<GoDuration>,
    }

    const ENV: &[(&str, &str)] = &[("SPIKE_SPIFFE_SOURCE_TIMEOUT", "spiffe_timeout")];

    fn aliases() -> Vec<Alias> {
        IDENTITY_ALIASES
            .iter()
            .chain(SERVER_ALIASES)
            .copied()
            .collect()
    }

    #[test]
    fn old_keys_load_under_the_new_name_with_a_deprecation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.toml");
        std::fs::write(
            &path,
            "spiffe_source_timeout = \"5s\"\nmax_body_bytes = 10\nshutdown_grace_period = \"1s\"\n",
        )
        .unwrap();
        let loaded =
            load_with_aliases::<File>(Some(&path), &MapEnv::new(), ENV, &aliases()).unwrap();
        assert_eq!(
            loaded.value.spiffe_timeout,
            Some(GoDuration(Duration::from_secs(5)))
        );
        assert_eq!(loaded.value.request_body_limit, Some(10));
        assert_eq!(
            loaded.value.shutdown_grace,
            Some(GoDuration(Duration::from_secs(1)))
        );
        assert_eq!(loaded.deprecations.len(), 3);
        for d in &loaded.deprecations {
            let text = d.to_string();
            assert!(text.contains(&format!("`{}`", d.new)), "{text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
        }
    }

    #[test]
    fn both_keys_are_an_error_naming_both() {
        let err = load_str_with_aliases::<File>(
            "shutdown_grace_period = \"1s\"\nshutdown_grace = \"2s\"\n",
            "test.toml",
            &MapEnv::new(),
            ENV,
            &aliases(),
        )
        .unwrap_err();
        let ConfigError::Invalid { issues } = &err else {
            panic!("{err}");
        };
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].key, "shutdown_grace");
        assert_eq!(issues[0].origin, "test.toml");
        let text = err.to_string();
        assert!(text.contains("`shutdown_grace_period`"), "{text}");
    }

    #[test]
    fn unknown_keys_and_unlisted_aliases_are_still_rejected() {
        for toml in ["shutdown_grace_perod = \"1s\"", "max_body_bytes = 1"] {
            let only_identity = IDENTITY_ALIASES;
            let err = load_str_with_aliases::<File>(toml, "t", &MapEnv::new(), ENV, only_identity)
                .unwrap_err()
                .to_string();
            assert!(err.contains("unknown key"), "{toml}: {err}");
        }
    }

    #[test]
    fn env_vars_set_the_new_key_and_win_over_an_alias() {
        let env = MapEnv::new().with("SPIKE_SPIFFE_SOURCE_TIMEOUT", "9s");
        let loaded = load_str_with_aliases::<File>(
            "spiffe_source_timeout = \"5s\"",
            "t",
            &env,
            ENV,
            &aliases(),
        )
        .unwrap();
        assert_eq!(
            loaded.value.spiffe_timeout,
            Some(GoDuration(Duration::from_secs(9)))
        );
        let loaded = load_str_with_aliases::<File>("", "t", &env, ENV, &aliases()).unwrap();
        assert_eq!(
            loaded.value.spiffe_timeout,
            Some(GoDuration(Duration::from_secs(9)))
        );
        assert!(loaded.deprecations.is_empty());
    }
}
