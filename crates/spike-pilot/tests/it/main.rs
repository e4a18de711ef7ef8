//! Integration tests of the `spike` CLI: argument handling in-process, and the built binary's
//! stream discipline and bounded failures.

#[cfg(test)]
mod args;
#[cfg(test)]
mod binary;
#[cfg(test)]
mod no_panic;
#[cfg(test)]
mod support;
