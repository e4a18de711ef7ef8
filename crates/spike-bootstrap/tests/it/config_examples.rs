//! Drift test for `config-examples/bootstrap.toml` and `bootstrap-full.toml`: both load
//! through [`BootstrapConfig::load`], the full file names every key of [`ConfigFile`] with its
//! default value, and every SPIKE variable of [`ENV_MAP`] is documented in it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use spike_bootstrap::BootstrapConfig;
use spike_bootstrap::config::{ConfigFile, ENV_MAP};
use spike_daemon::MapEnv;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../config-examples")
        .join(name)
}

/// Keys of a pretty-printed `Debug` of a config struct (`a`, `table.b`) with their
/// `Debug` value text (first line only; nested structs are descended into).
fn debug_keys(debug: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut table: Option<String> = None;
    for line in debug.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        let Some((name, value)) = text.split_once(": ") else {
            if indent == 4 && text.starts_with('}') {
                table = None;
            }
            continue;
        };
        if !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        match (indent, &table) {
            (4, _) if value.ends_with(" {") => table = Some(name.to_owned()),
            (4, _) => {
                out.insert(name.to_owned(), value.trim_end_matches(',').to_owned());
            }
            (8, Some(t)) => {
                out.insert(
                    format!("{t}.{name}"),
                    value.trim_end_matches(',').to_owned(),
                );
            }
            _ => {}
        }
    }
    out
}

/// Keys set (`key = ...`) and keys shown commented out (`# key = ...`) in an example file.
fn example_keys(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut set, mut commented) = (BTreeSet::new(), BTreeSet::new());
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = format!("{name}.");
            continue;
        }
        let (target, rest) = match line.strip_prefix("# ") {
            Some(rest) => (&mut commented, rest),
            None => (&mut set, line),
        };
        if let Some((key, _)) = rest.split_once(" = ")
            && !key.is_empty()
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            target.insert(format!("{table}{key}"));
        }
    }
    (set, commented)
}

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
    let mut raw: ConfigFile = spike_daemon::config::load(Some(&path), &env, ENV_MAP).unwrap();
    let peers = std::mem::take(&mut raw.keeper_peers);
    assert_eq!(
        format!("{raw:#?}"),
        format!("{:#?}", ConfigFile::default()),
        "bootstrap-full.toml differs from ConfigFile::default()"
    );

    // The typed config equals the one from a file that sets only the required keys.
    let list = peers
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let baseline = BootstrapConfig::from_toml(&format!("keeper_peers = [{list}]"), &env).unwrap();
    assert_eq!(format!("{full:#?}"), format!("{baseline:#?}"));

    // Every key appears: set when it has a default, commented out when it is an Option.
    let keys = debug_keys(&format!("{:#?}", ConfigFile::default()));
    assert!(keys.len() > 15, "parsed too few keys: {keys:?}");
    let (set, commented) = example_keys(&text);
    let optional: BTreeSet<String> = keys
        .iter()
        .filter(|(_, v)| *v == "None")
        .map(|(k, _)| k.clone())
        .collect();
    let required: BTreeSet<String> = keys
        .keys()
        .filter(|k| !optional.contains(*k))
        .cloned()
        .collect();
    assert_eq!(set, required, "keys set in bootstrap-full.toml");
    assert_eq!(
        commented, optional,
        "keys commented out in bootstrap-full.toml"
    );

    // Every SPIKE variable that overrides a key is documented.
    for (var, key) in ENV_MAP {
        assert!(
            text.contains(var),
            "{var} ({key}) is not in bootstrap-full.toml"
        );
        assert!(keys.contains_key(*key), "ENV_MAP names unknown key {key}");
    }
}
