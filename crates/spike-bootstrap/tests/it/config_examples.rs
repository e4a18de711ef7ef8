//! Drift test for `config-examples/bootstrap.toml` and `bootstrap-full.toml`: both load
//! through [`BootstrapConfig::load`], the full file names every key of [`ConfigFile`] with its
//! default value, and every SPIKE variable of [`ENV_MAP`] is documented in it.

use spike_bootstrap::BootstrapConfig;
use spike_bootstrap::config::{ConfigFile, ENV_MAP, TRUST_ROLES, TrustRootsFile};
use spike_daemon::MapEnv;

use spike_testkit::config_examples::{assert_documents_keys, debug_keys, example};

#[test]
fn minimal_example_loads() {
    let config = BootstrapConfig::load(Some(&example("bootstrap.toml")), &MapEnv::new()).unwrap();
    assert_eq!(config.keepers.len(), usize::from(config.shares));
    assert!(
        config
            .trust_roots
            .is_bootstrap("spiffe://example.org/spike/bootstrap")
    );
}

#[test]
fn full_example_names_every_key_with_its_default() {
    let path = example("bootstrap-full.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let env = MapEnv::new();

    // It loads, and its raw values are the defaults (keeper_peers has none: it is required).
    let full = BootstrapConfig::load(Some(&path), &env).unwrap();
    assert!(full.deprecations.is_empty(), "{:?}", full.deprecations);
    let mut raw: ConfigFile = spike_daemon::config::load(Some(&path), &env, ENV_MAP).unwrap();
    let Some(spike_bootstrap::config::KeeperPeersFile::List(peers)) = raw.keeper_peers.take()
    else {
        panic!("keeper_peers should be a TOML list in the example");
    };
    assert_eq!(
        format!("{raw:#?}"),
        format!("{:#?}", ConfigFile::default()),
        "bootstrap-full.toml differs from ConfigFile::default()"
    );

    // The typed config equals the one from a file that sets only the required keys.
    let list = peers
        .iter()
        .map(|p| match p {
            spike_bootstrap::config::KeeperPeerEntry::Url(u) => format!("\"{u}\""),
            other => panic!("the example lists plain URLs, not {other:?}"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let baseline = BootstrapConfig::from_toml(&format!("keeper_peers = [{list}]"), &env).unwrap();
    assert_eq!(format!("{full:#?}"), format!("{baseline:#?}"));

    // Every key appears: set when it has a default, commented out when it is an Option.
    // The shared `[trust_roots]` table also has keys for roles Bootstrap does not read (and
    // rejects); only its own are documented.
    let mut keys = debug_keys(&format!("{:#?}", ConfigFile::default()));
    let read = TrustRootsFile::keys_for(TRUST_ROLES);
    keys.retain(|k, _| !k.starts_with("trust_roots.") || read.contains(&k.as_str()));
    assert!(keys.len() > 15, "parsed too few keys: {keys:?}");
    assert_documents_keys(
        "bootstrap-full.toml",
        &text,
        &keys,
        &["keeper_peers"],
        ENV_MAP,
    );
}
