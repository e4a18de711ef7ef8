//! Drift test for `config-examples/keeper.toml` and `keeper-full.toml`: both load through
//! [`KeeperConfig::load`], the full file names every key of [`ConfigFile`] with its default
//! value, and every SPIKE variable of [`ENV_MAP`] is documented in it.

use spike_daemon::MapEnv;
use spike_keeper::KeeperConfig;
use spike_keeper::config::{ConfigFile, ENV_MAP, TRUST_ROLES, TrustRootsFile};

use spike_testkit::config_examples::{assert_documents_keys, debug_keys, example};

#[test]
fn minimal_example_loads() {
    let config = KeeperConfig::load(Some(&example("keeper.toml")), &MapEnv::new()).unwrap();
    assert_eq!(config.listen.port(), 8441);
    assert!(
        config
            .trust_roots
            .is_keeper("spiffe://example.org/spike/keeper/1")
    );
}

#[test]
fn full_example_names_every_key_with_its_default() {
    let path = example("keeper-full.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let env = MapEnv::new();

    // It loads, with no deprecated key, and its raw values are the defaults.
    let full = KeeperConfig::load(Some(&path), &env).unwrap();
    assert!(full.deprecations.is_empty(), "{:?}", full.deprecations);
    let raw: ConfigFile = spike_daemon::config::load(Some(&path), &env, ENV_MAP).unwrap();
    assert_eq!(
        format!("{raw:#?}"),
        format!("{:#?}", ConfigFile::default()),
        "keeper-full.toml differs from ConfigFile::default()"
    );

    // The typed config equals the one from an empty file.
    let empty = KeeperConfig::from_toml("", &env).unwrap();
    assert_eq!(format!("{full:#?}"), format!("{empty:#?}"));

    // Every key appears: set when it has a default, commented out when it is an Option.
    // The shared `[trust_roots]` table also has keys for roles the keeper does not read (and
    // rejects); only the keeper's own are documented.
    let mut keys = debug_keys(&format!("{:#?}", ConfigFile::default()));
    let read = TrustRootsFile::keys_for(TRUST_ROLES);
    keys.retain(|k, _| !k.starts_with("trust_roots.") || read.contains(&k.as_str()));
    assert!(keys.len() > 10, "parsed too few keys: {keys:?}");
    assert_documents_keys("keeper-full.toml", &text, &keys, &[], ENV_MAP);
}
