//! Integration tests for spike-crypto: Go interop vectors in both directions
//! and Shamir properties.
//!
//! Modules are `#[cfg(test)]` so clippy's `allow-unwrap-in-tests` also covers
//! their helper functions.

#[cfg(test)]
mod go_interop;
#[cfg(test)]
mod go_vectors;
#[cfg(test)]
mod no_panic;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod vectors;
