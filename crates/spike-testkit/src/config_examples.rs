//! Helpers for the config-example drift tests of the daemons: where `config-examples/` is, and
//! which keys a config struct (through its pretty `Debug`) and an example file name.

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
