//! Integration tests of spike-bootstrap: configuration exit codes, the done-marker, and
//! shard delivery to real in-process spike-keeper instances.

#[cfg(test)]
mod cli;
#[cfg(test)]
mod config;
#[cfg(test)]
mod config_examples;
#[cfg(test)]
mod delivery;
#[cfg(test)]
mod support;
