//! Integration tests of spike-client against in-test mTLS hyper servers.

#[cfg(test)]
mod requests;
#[cfg(test)]
mod support;
#[cfg(test)]
mod tls;
