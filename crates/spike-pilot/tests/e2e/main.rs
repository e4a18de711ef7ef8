//! End-to-end tests of Pilot against an in-process Nexus with real keepers over mTLS, and the
//! compatibility of SPIKE's Go clients (SDK program, Go CLI) with our Nexus.
//!
//! - `world`: PKI, Workload API servers, keepers, Nexus, bootstrap by hand.
//! - `cli`: running a CLI binary and the script every CLI must pass.
//! - `pilot`: our binary: the script, sealed behaviour, JSON outputs, `spike status`.
//! - `failover`: several Nexus URLs: which failures move on to the next URL, against real
//!   servers (our binary's library, in-process).
//! - `compat`: the Go SDK program and SPIKE's Go CLI (built by compat/build.sh when possible).

#[cfg(test)]
mod cli;
#[cfg(test)]
mod compat;
#[cfg(test)]
mod failover;
#[cfg(test)]
mod pilot;
#[cfg(test)]
mod world;
