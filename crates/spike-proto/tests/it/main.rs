//! Integration tests for `spike-proto`: golden JSON fixtures (`tests/fixtures/`), the exact
//! error bodies of docs/protocol.md#conventions, inputs Go rejects, property tests and SPIFFE-ID matching.

#![cfg(test)]

mod errors;
mod golden;
mod negative;
mod no_panic;
mod props;
mod spiffe;

/// Loads `tests/fixtures/<name>.json` without its trailing newline.
macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../fixtures/", $name, ".json")).trim_end()
    };
}
pub(crate) use fixture;

/// Asserts that `value` serializes to exactly `fixture`, and that decoding `fixture` as a
/// response and re-encoding it gives `fixture` again.
pub(crate) fn assert_response_golden<T>(value: &T, fixture: &str)
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    assert_eq!(serde_json::to_string(value).unwrap(), fixture, "serialize");
    let back: T = serde_json::from_str(fixture).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), fixture, "round trip");
}

/// Like [`assert_response_golden`], but decodes through `decode_request` (the server path).
pub(crate) fn assert_request_golden<T>(value: &T, fixture: &str)
where
    T: serde::Serialize + serde::de::DeserializeOwned + Default,
{
    assert_eq!(serde_json::to_string(value).unwrap(), fixture, "serialize");
    let back: T = spike_proto::decode_request(fixture.as_bytes()).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), fixture, "round trip");
}
