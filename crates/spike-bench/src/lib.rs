//! Load generator and benchmark harness for SPIKE Nexus.
//!
//! `spike-bench` drives a Nexus over mutual TLS with many concurrent connections (each
//! worker owns one [`spike_client::NexusClient`]; with keep-alive it reuses one connection,
//! without it every request opens a new TLS connection) and reports throughput and latency
//! percentiles. Besides an external Nexus it can build a whole in-process deployment (a test
//! Workload API server, real keepers and a Nexus started through [`spike_nexus::start`]) for
//! the CI smoke test, the scale test and the restart-time measurement.
//!
//! # Layout
//!
//! - [`stats`]: latency samples to percentiles ([`stats::Summary`]).
//! - [`rss`]: resident set size of a process from `/proc/<pid>/status`.
//! - [`load`]: workloads ([`load::Workload`]), pre-population and the load loop
//!   ([`load::run`]) with per-second progress on stderr.
//! - [`cluster`]: the in-process deployment ([`cluster::Cluster`]): Workload API server,
//!   keepers, Nexus, bootstrap by hand, database pre-population.
//! - [`scenarios`]: `selftest`, `scale` and `restart-time`, each returning a serializable
//!   report.
//! - [`nexus_proc`]: Nexus as a child process (the `spike-nexus` binary) with a generated
//!   configuration and the unit's resource limits.
//! - [`abuse`]: the `abuse` scenarios: attacks on a Nexus child while a superuser `get`
//!   must keep working.

pub mod abuse;
pub mod cluster;
pub mod load;
pub mod nexus_proc;
pub mod rss;
pub mod scenarios;
pub mod stats;
