//! Helpers for the config-example drift tests of the daemons: where `config-examples/` is,
//! which keys a config struct (through its pretty `Debug`) and an example file name, and the
//! shared assertion that a full example documents every key and variable.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The path of `config-examples/<name>` in this repository.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../config-examples")
        .join(name)
}

/// Keys of a pretty-printed `Debug` of a config struct (`a`, `table.b`) with their
/// `Debug` value text (first line only; nested structs are descended into).
pub fn debug_keys(debug: &str) -> BTreeMap<String, String> {
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
pub fn example_keys(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
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

/// The drift assertion every daemon's full example shares: `file` (its text `text`) sets every
/// key of `keys` (from [`debug_keys`]) that has a default, shows every `None` key commented
/// out (except `required_options`: options the daemon requires, which the example sets), and
/// names every SPIKE variable of `env_map`, whose keys are all in `keys`.
///
/// # Panics
/// On any difference (it is a test assertion).
pub fn assert_documents_keys(
    file: &str,
    text: &str,
    keys: &BTreeMap<String, String>,
    required_options: &[&str],
    env_map: &[(&str, &str)],
) {
    let (set, commented) = example_keys(text);
    let optional: BTreeSet<String> = keys
        .iter()
        .filter(|(k, v)| *v == "None" && !required_options.contains(&k.as_str()))
        .map(|(k, _)| k.clone())
        .collect();
    let required: BTreeSet<String> = keys
        .keys()
        .filter(|k| !optional.contains(*k))
        .cloned()
        .collect();
    assert_eq!(set, required, "keys set in {file}");
    assert_eq!(commented, optional, "keys commented out in {file}");

    // Every SPIKE variable that overrides a key is documented.
    for (var, key) in env_map {
        assert!(text.contains(var), "{var} ({key}) is not in {file}");
        assert!(keys.contains_key(*key), "ENV_MAP names unknown key {key}");
    }
}
