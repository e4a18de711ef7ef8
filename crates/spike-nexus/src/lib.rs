//! SPIKE Nexus: the secret store.
//!
//! # Layout
//!
//! - `lib.rs`: this overview (filled in by later work).
