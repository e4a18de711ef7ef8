//! The crate's error type.

/// Errors produced while decoding, validating or configuring SPIKE protocol values.
///
/// Messages never echo the offending input: it may be a secret or attacker-controlled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The request body was empty (or only whitespace); Go answers 400.
    #[error("empty request body")]
    EmptyBody,
    /// The request body was valid JSON but not an object or `null` (e.g. an array).
    #[error("request body is not a JSON object")]
    NotAnObject,
    /// The body was not valid JSON for the expected type (syntax, types, trailing data).
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A value failed validation; `what` names the rule (never the value).
    #[error("invalid {what}")]
    Invalid {
        /// Which rule failed, e.g. `"secret path"`.
        what: &'static str,
    },
    /// A trust-root variable contained an empty element (e.g. a trailing comma).
    #[error("{var} contains an empty trust root")]
    EmptyTrustRoot {
        /// The environment variable name.
        var: &'static str,
    },
    /// A single trust root was empty or contained a comma.
    #[error("invalid trust root")]
    InvalidTrustRoot,
    /// A time value could not be formatted the way Go does (year outside 0..=9999).
    #[error("time value out of range for RFC 3339")]
    TimeOutOfRange,
}
