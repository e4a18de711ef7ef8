//! Typed async mTLS client for the SPIKE Nexus and Keeper APIs.
//!
//! # Layout
//!
//! - `lib.rs`: this overview (filled in by later work).
