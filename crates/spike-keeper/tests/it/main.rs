//! Integration tests of spike-keeper: in-process keepers on 127.0.0.1:0 with testkit
//! identities, called through spike-client.

#[cfg(test)]
mod api;
#[cfg(test)]
mod cli;
#[cfg(test)]
mod config_examples;
#[cfg(test)]
mod sealing;
#[cfg(test)]
mod support;
#[cfg(test)]
mod tls;
