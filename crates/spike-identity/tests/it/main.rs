//! Integration tests of spike-identity against the testkit's in-process Workload API.
//!
//! Modules are `#[cfg(test)]` so clippy treats their helper functions as test code.

#[cfg(test)]
mod connect;
#[cfg(test)]
mod http;
#[cfg(test)]
mod mtls;
#[cfg(test)]
mod once;
#[cfg(test)]
mod spire;
#[cfg(test)]
mod support;
