//! Drift test for `config-examples/nexus.toml` and `nexus-full.toml`: both load through
//! [`spike_nexus::config::load`], the full file names every key of [`ConfigFile`] with its
//! default value, and every SPIKE variable of [`ENV_MAP`] is documented in it.

use spike_daemon::MapEnv;
use spike_nexus::config::{ConfigFile, ENV_MAP, load};

use spike_testkit::config_examples::{assert_documents_keys, debug_keys, example};

#[test]
fn minimal_example_loads() {
    let config = load(Some(&example("nexus.toml")), &MapEnv::new()).unwrap();
    assert_eq!(config.keepers.len(), usize::from(config.shares));
    assert!(
        config
            .trust_roots
            .is_nexus("spiffe://example.org/spike/nexus")
    );
}

#[test]
fn full_example_names_every_key_with_its_default() {
    let path = example("nexus-full.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let env = MapEnv::new();

    // It loads, and its raw values are the defaults (keeper_peers has none: it is required).
    let full = load(Some(&path), &env).unwrap();
    assert!(full.deprecations.is_empty(), "{:?}", full.deprecations);
    let mut raw: ConfigFile = spike_daemon::config::load(Some(&path), &env, ENV_MAP).unwrap();
    let peers = raw.keeper_peers.take().unwrap();
    assert_eq!(
        format!("{raw:#?}"),
        format!("{:#?}", ConfigFile::default()),
        "nexus-full.toml differs from ConfigFile::default()"
    );

    // The typed config equals the one from a file that sets only the required keys.
    let dir = tempfile::tempdir().unwrap();
    let minimal = dir.path().join("required.toml");
    let spike_nexus::config::PeerList::List(peers) = peers else {
        panic!("keeper_peers should be a TOML list in the example");
    };
    let list = peers
        .iter()
        .map(|p| match p {
            spike_nexus::config::KeeperPeerEntry::Url(u) => format!("\"{u}\""),
            other => panic!("the example lists plain URLs, not {other:?}"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(&minimal, format!("keeper_peers = [{list}]\n")).unwrap();
    let baseline = load(Some(&minimal), &env).unwrap();
    assert_eq!(format!("{full:#?}"), format!("{baseline:#?}"));

    // Every key appears: set when it has a default, commented out when it is an Option.
    let keys = debug_keys(&format!("{:#?}", ConfigFile::default()));
    assert!(keys.len() > 20, "parsed too few keys: {keys:?}");
    assert_documents_keys("nexus-full.toml", &text, &keys, &["keeper_peers"], ENV_MAP);
}
