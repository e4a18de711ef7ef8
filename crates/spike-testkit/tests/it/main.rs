//! Integration tests of the testkit: the Workload API server against the real `spiffe` client.
//!
//! Modules are `#[cfg(test)]` so clippy treats their helper functions as test code.

#[cfg(test)]
mod ca;
#[cfg(test)]
mod workload_api;
