//! Bootstrap verify (docs/protocol.md#bootstrap-and-keepers): `POST /v1/bootstrap/verify`.

use serde::{Deserialize, Serialize};

use crate::ErrorCode;
use crate::response::impl_api_response;
use crate::serde_helpers::{base64_bytes, err_code};

/// `{"nonce":b64,"ciphertext":b64}`: a random plaintext sealed with the root key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BootstrapVerifyRequest {
    /// The 12-byte AES-GCM nonce.
    #[serde(with = "base64_bytes")]
    pub nonce: Option<Vec<u8>>,
    /// GCM ciphertext with tag.
    #[serde(with = "base64_bytes")]
    pub ciphertext: Option<Vec<u8>>,
}

/// `{"hash":"<lowercase hex SHA-256 of the plaintext>"}`; error body `{"hash":"","err":code}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BootstrapVerifyResponse {
    /// Lowercase hex SHA-256 of the decrypted plaintext (always emitted).
    pub hash: String,
    /// Error code; omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none", with = "err_code")]
    pub err: Option<ErrorCode>,
}

impl_api_response!(BootstrapVerifyResponse);
