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
    ///
    /// Only the category and position are kept: serde_json's own message quotes the
    /// offending value, which may be a secret.
    #[error("invalid JSON ({category} error at line {line}, column {column})")]
    Json {
        /// `syntax`, `data` (wrong type or value), `eof` or `io`.
        category: &'static str,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
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

impl From<serde_json::Error> for ProtoError {
    fn from(e: serde_json::Error) -> Self {
        let category = match e.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        };
        ProtoError::Json {
            category,
            line: e.line(),
            column: e.column(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_never_quote_the_input() {
        let e = serde_json::from_str::<u32>("\"hunter2-secret\"").unwrap_err();
        let msg = ProtoError::from(e).to_string();
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(msg.contains("data error"), "{msg}");
    }
}
