//! Injectable environment: the daemons and Pilot read `SPIKE_*`, `NOTIFY_SOCKET`, `LISTEN_*`,
//! `HOME`, ... through [`EnvSource`], so tests hand in a [`MapEnv`] and never touch the process
//! environment. [`ProcessEnv`] (`std::env::var`) is this crate's only read of the process.
//!
//! It lives here, at the bottom of the crate graph, because both the daemons (through
//! `spike-daemon`) and the `spike` CLI (which must not pull in daemon plumbing) use it.

use std::collections::BTreeMap;

/// A read-only source of environment variables.
pub trait EnvSource: Send + Sync {
    /// The value of `name`, or `None` when it is unset (or, for the process environment, not
    /// valid Unicode).
    fn var(&self, name: &str) -> Option<String>;

    /// The value of `name` if set and not blank.
    fn non_empty(&self, name: &str) -> Option<String> {
        self.var(name).filter(|v| !v.trim().is_empty())
    }
}

/// The real process environment (`std::env::var`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// An environment held in a map, for tests and for callers that assemble one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapEnv {
    vars: BTreeMap<String, String>,
}

impl MapEnv {
    /// An empty environment.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) one variable; builder style.
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// A map from `(name, value)` pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        pairs.into_iter().collect()
    }

    /// Adds (or replaces) one variable.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.vars.insert(name.into(), value.into());
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for MapEnv {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            vars: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

impl<K: Into<String>, V: Into<String>, const N: usize> From<[(K, V); N]> for MapEnv {
    fn from(pairs: [(K, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl EnvSource for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_env_reads_what_was_put_in() {
        let env = MapEnv::from([("A", "1")]).with("B", "2");
        assert_eq!(env.var("A").as_deref(), Some("1"));
        assert_eq!(env.var("B").as_deref(), Some("2"));
        assert_eq!(env.var("C"), None);
        let env = MapEnv::from_pairs([("A", " "), ("B", "x")]);
        assert_eq!(env.non_empty("A"), None);
        assert_eq!(env.non_empty("B").as_deref(), Some("x"));
        assert_eq!(MapEnv::default(), MapEnv::new());
    }

    #[test]
    fn process_env_sees_path() {
        // PATH is set for every test run; this only proves the delegation.
        assert_eq!(ProcessEnv.var("PATH"), std::env::var("PATH").ok());
    }
}
