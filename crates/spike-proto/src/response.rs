//! The response envelope (docs/protocol.md#conventions) and request decoding.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{ErrorCode, ProtoError};

/// Headers Go's `net.Respond` sets on every JSON response (with status 200 on success).
pub const JSON_RESPONSE_HEADERS: [(&str, &str); 4] = [
    ("Content-Type", "application/json"),
    (
        "Cache-Control",
        "no-store, no-cache, must-revalidate, private",
    ),
    ("Pragma", "no-cache"),
    ("Expires", "0"),
];

/// A typed JSON response body.
///
/// Go servers answer errors with the *same* struct as the success response, with every other
/// field at its zero value and `err` set (docs/protocol.md#conventions). [`ApiResponse::error`] builds exactly that
/// body, e.g. `SecretGetResponse::error(ErrorCode::ApiNotFound)` serializes to
/// `{"data":null,"err":"api_not_found"}`.
pub trait ApiResponse: Serialize + DeserializeOwned + Default {
    /// The zero-valued body carrying `code` in its `err` (Keeper: `Err`) field.
    fn error(code: ErrorCode) -> Self;

    /// The error code in the body, if any (`None` for success bodies).
    fn error_code(&self) -> Option<&ErrorCode>;
}

/// Implements [`ApiResponse`] for structs with an `err: Option<ErrorCode>` field whose other
/// fields' `Default` is Go's zero value.
macro_rules! impl_api_response {
    ($($ty:ty),* $(,)?) => {
        $(
            impl $crate::response::ApiResponse for $ty {
                fn error(code: $crate::ErrorCode) -> Self {
                    let mut body = Self::default();
                    body.err = Some(code);
                    body
                }

                fn error_code(&self) -> Option<&$crate::ErrorCode> {
                    self.err.as_ref()
                }
            }
        )*
    };
}
pub(crate) use impl_api_response;

/// The body of the fallback (unknown route, non-POST) and not-ready answers:
/// `{"err":"api_bad_request"}` / `{"err":"state_not_ready"}`; success is `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FallbackResponse {
    /// Error code; omitted when `None`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::serde_helpers::err_code"
    )]
    pub err: Option<ErrorCode>,
}

impl_api_response!(FallbackResponse);

/// The raw Go `SDKError` body written when reading the request body fails (400) or the
/// response cannot be marshalled (500):
/// `{"Code":"data_read_failure","Msg":"failed to read request body","Wrapped":null}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SdkErrorBody {
    /// The error code.
    #[serde(rename = "Code")]
    pub code: String,
    /// The human-readable message.
    #[serde(rename = "Msg")]
    pub msg: String,
    /// Always `null` on the wire.
    #[serde(rename = "Wrapped")]
    pub wrapped: Option<()>,
}

impl SdkErrorBody {
    /// The 400 body for a request body that could not be read.
    pub fn read_failure() -> Self {
        Self {
            code: ErrorCode::DataReadFailure.as_str().to_owned(),
            msg: "failed to read request body".to_owned(),
            wrapped: None,
        }
    }

    /// The 500 body for a response that could not be marshalled.
    pub fn marshal_failure() -> Self {
        Self {
            code: ErrorCode::ApiInternal.as_str().to_owned(),
            msg: "problem generating response".to_owned(),
            wrapped: None,
        }
    }
}

/// Decodes a JSON request body like the Go server does (docs/protocol.md#conventions).
///
/// * empty or whitespace-only body → [`ProtoError::EmptyBody`];
/// * `null` → `T::default()` (Go's zero struct);
/// * an array or other non-object → error (serde would otherwise accept arrays for structs);
/// * trailing non-whitespace after the value → error;
/// * unknown fields are ignored; field names must be the exact lowercase names.
pub fn decode_request<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ProtoError> {
    let first = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    match first {
        None => return Err(ProtoError::EmptyBody),
        Some(b'{' | b'n') => {}
        Some(_) => return Err(ProtoError::NotAnObject),
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = Option::<T>::deserialize(&mut de)?;
    de.end()?;
    Ok(value.unwrap_or_default())
}

/// Encodes a response body (compact JSON, as Go's `json.Marshal`).
pub fn encode_response<T: Serialize>(body: &T) -> Result<Vec<u8>, ProtoError> {
    Ok(serde_json::to_vec(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12 L3: a decode error (the only parse step of the Keeper's and Nexus's API
    /// edges) never quotes the body, whatever is wrong with it.
    #[test]
    fn decode_errors_never_quote_the_body() {
        #[derive(Default, serde::Deserialize)]
        #[expect(dead_code, reason = "only decoded")]
        struct Req {
            id: i64,
            shard: Option<Vec<u8>>,
            name: String,
        }
        let canary = "CANARY-8d1f";
        for body in [
            format!(r#"{{"id":"{canary}"}}"#),
            format!(r#"{{"shard":"{canary}"}}"#),
            format!(r#"{{"name":{{"{canary}":1}}}}"#),
            format!(r#"{{"name":"{canary}""#),
            format!(r#"{{"name":"x"}} {canary}"#),
            format!(r#"{{"{canary}"}}"#),
            format!(r#"[{{"name":"{canary}"}}]"#),
            format!(r#"{{"name":"{canary}\u00zz"}}"#),
        ] {
            let Err(e) = decode_request::<Req>(body.as_bytes()) else {
                panic!("accepted {body}");
            };
            let text = format!("{e} {e:?}");
            assert!(!text.contains(canary), "{body}: {text}");
        }
    }

    #[test]
    fn fallback_bodies() {
        let b = FallbackResponse::error(ErrorCode::ApiBadRequest);
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"err":"api_bad_request"}"#
        );
        let b = FallbackResponse::error(ErrorCode::StateNotReady);
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"err":"state_not_ready"}"#
        );
        assert_eq!(
            serde_json::to_string(&FallbackResponse::default()).unwrap(),
            "{}"
        );
    }

    #[test]
    fn raw_sdk_error_bodies() {
        assert_eq!(
            serde_json::to_string(&SdkErrorBody::read_failure()).unwrap(),
            r#"{"Code":"data_read_failure","Msg":"failed to read request body","Wrapped":null}"#
        );
        assert_eq!(
            serde_json::to_string(&SdkErrorBody::marshal_failure()).unwrap(),
            r#"{"Code":"api_internal_error","Msg":"problem generating response","Wrapped":null}"#
        );
    }

    #[test]
    fn decode_request_rules() {
        assert!(matches!(
            decode_request::<FallbackResponse>(b""),
            Err(ProtoError::EmptyBody)
        ));
        assert!(matches!(
            decode_request::<FallbackResponse>(b" \n\t"),
            Err(ProtoError::EmptyBody)
        ));
        assert!(matches!(
            decode_request::<FallbackResponse>(b"[]"),
            Err(ProtoError::NotAnObject)
        ));
        assert!(decode_request::<FallbackResponse>(b"{} x").is_err());
        assert!(decode_request::<FallbackResponse>(b"nul").is_err());
        assert_eq!(
            decode_request::<FallbackResponse>(b" null ").unwrap(),
            FallbackResponse::default()
        );
        assert_eq!(
            decode_request::<FallbackResponse>(b"{\"other\":1}\n").unwrap(),
            FallbackResponse::default()
        );
    }
}
