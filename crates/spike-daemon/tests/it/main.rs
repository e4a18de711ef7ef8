//! Integration tests of spike-daemon: real sockets, real signals, real config files, and a
//! hardened child process.
//!
//! The modules are `#[cfg(test)]` so that clippy's test allowances (unwrap, expect, panic) cover
//! their helper functions too, not only the `#[test]` functions.

#[cfg(test)]
mod config;
#[cfg(test)]
mod harden;
#[cfg(test)]
mod listen;
#[cfg(test)]
mod logging;
#[cfg(test)]
mod notify;
#[cfg(test)]
mod signals;
