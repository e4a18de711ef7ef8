//! spike-bench integration tests: the in-process scenarios end to end, and the abuse
//! harness against a Nexus child process.

#[cfg(test)]
mod abuse;
#[cfg(test)]
mod selftest;
