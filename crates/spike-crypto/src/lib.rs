//! SPIKE-compatible AES-256-GCM and P-256-field Shamir secret sharing.
//!
//! # Layout
//!
//! - `lib.rs`: this overview (filled in by later work).

