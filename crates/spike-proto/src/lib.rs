//! SPIKE 0.8 wire types, API paths, error codes and the SPIFFE-ID scheme.
//!
//! # Layout
//!
//! - `lib.rs`: this overview (filled in by later work).

