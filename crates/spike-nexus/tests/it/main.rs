//! spike-nexus integration tests: one binary, one module per area.

#[cfg(test)]
mod abuse;
#[cfg(test)]
mod api;
#[cfg(test)]
mod bootstrap_e2e;
#[cfg(test)]
mod cli;
#[cfg(test)]
mod config_examples;
#[cfg(test)]
mod day_two;
#[cfg(test)]
mod handshake;
#[cfg(test)]
mod harness;
#[cfg(test)]
mod keepers;
#[cfg(test)]
mod keys;
#[cfg(test)]
mod kill9;
#[cfg(test)]
mod modes;
#[cfg(test)]
mod no_panic;
#[cfg(test)]
mod postgres;
#[cfg(test)]
mod seal;
#[cfg(test)]
mod store;
