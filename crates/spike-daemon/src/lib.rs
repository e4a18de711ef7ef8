//! Daemon plumbing shared by the long-running SPIKE binaries.
//!
//! # Layout
//!
//! - `lib.rs`: this overview (filled in by later work).

