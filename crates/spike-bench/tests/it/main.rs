//! spike-bench integration tests: the in-process scenarios end to end.

#[cfg(test)]
mod selftest;
