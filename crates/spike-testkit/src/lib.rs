//! Test CA, in-process SPIFFE Workload API server and harnesses.
//!
//! # Layout
//!
//! - `lib.rs`: this overview (filled in by later work).

