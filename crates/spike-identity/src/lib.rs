//! SPIFFE identity: Workload API X.509 source, rustls configs, peer SPIFFE IDs.
//!
//! # Layout
//!
//! - `lib.rs`: this overview (filled in by later work).

