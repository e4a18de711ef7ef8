//! SPIKE Keeper: holds one Shamir shard of the root key, in memory only.
//!
//! # Layout
//!
//! - `lib.rs`: this overview (filled in by later work).
