//! Test CA, in-process SPIFFE Workload API server and harnesses.
//!
//! Used only as a dev-dependency. A test builds a [`TestPki`] (a root for the trust domain
//! under test plus a foreign root), starts one [`WorkloadApiServer`] per workload identity
//! and points `spiffe::X509Source` (or `spike_identity::Identity`) at its
//! [`WorkloadApiServer::endpoint`]. The server speaks the real SPIFFE Workload API gRPC
//! protocol, pushes rotations to connected clients and can serve bad SVIDs on purpose.
//!
//! # Layout
//!
//! - [`ca`][]: [`TestCa`], [`TestPki`], issued [`Svid`]s and the negative fixtures
//!   (expired, foreign trust domain, no URI SAN).
//! - [`proto`][]: hand-written prost messages of the Workload API (X.509 part).
//! - [`workload_api`][]: [`WorkloadApiServer`] and a raw client helper.
//! - `cluster` (feature `cluster`): the in-process SPIKE cluster — a `World` with every role
//!   identity, keepers, Nexus, typed clients and `eventually`.
//! - [`config_examples`][]: helpers of the daemons' config-example drift tests.
//! - [`postgres`][]: [`PgCluster`], throwaway PostgreSQL clusters (`initdb` + `postgres` in a
//!   temporary directory; optional TLS and a synchronous standby) for tests that need a real
//!   server.
//! - [`error`][]: [`TestkitError`].

pub mod ca;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config_examples;
pub mod error;
pub mod postgres;
pub mod proto;
pub mod workload_api;

pub use ca::{
    DEFAULT_TRUST_DOMAIN, FOREIGN_TRUST_DOMAIN, Svid, SvidKind, TestCa, TestPki, foreign_id,
};
pub use error::TestkitError;
pub use postgres::{PgCluster, PgOptions};
pub use workload_api::{ServeMode, WorkloadApiServer, fetch_x509_svid_raw};
