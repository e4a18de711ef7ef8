//! Injectable environment: the daemons read `SPIKE_*`, `NOTIFY_SOCKET`, `LISTEN_*`, ... through
//! [`EnvSource`], so tests hand in a [`MapEnv`] and never touch the process environment.
//!
//! The types are defined in [`spike_proto::env`], shared with the `spike` CLI (which does not
//! depend on this crate); they are re-exported here unchanged.

pub use spike_proto::env::{EnvSource, MapEnv, ProcessEnv};
