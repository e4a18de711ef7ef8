//! Cipher routes (docs/protocol.md#cipher): JSON types and stream-mode framing.
//!
//! Stream mode is selected when the request `Content-Type` is *exactly*
//! [`STREAM_CONTENT_TYPE`]; the stream ciphertext is `0x01 ‖ nonce(12) ‖ ct‖tag`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ErrorCode;
use crate::response::impl_api_response;
use crate::serde_helpers::{base64_bytes, err_code, is_empty_str};

/// The only cipher format version.
pub const CIPHER_VERSION: u8 = 1;
/// AES-GCM nonce length.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// Content type selecting stream mode (exact match only).
pub const STREAM_CONTENT_TYPE: &str = "application/octet-stream";
/// Content type of JSON requests and responses.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// True if a request's `Content-Type` selects stream mode: exact equality with
/// `application/octet-stream` (parameters or different case mean JSON mode, as in Go).
pub fn is_stream_mode(content_type: Option<&str>) -> bool {
    content_type == Some(STREAM_CONTENT_TYPE)
}

/// `POST /v1/cipher/encrypt` (JSON mode): `{"plaintext":b64,"algorithm":s?}`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CipherEncryptRequest {
    /// Data to encrypt (`None` ⇄ `null`).
    #[serde(with = "base64_bytes")]
    pub plaintext: Option<Vec<u8>>,
    /// Accepted and ignored; omitted when empty.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub algorithm: String,
}

impl fmt::Debug for CipherEncryptRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CipherEncryptRequest")
            .field("plaintext_len", &self.plaintext.as_ref().map(Vec::len))
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

/// Response to [`CipherEncryptRequest`]: `{"version":1,"nonce":b64,"ciphertext":b64}`; error
/// body `{"version":0,"nonce":null,"ciphertext":null,"err":code}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CipherEncryptResponse {
    /// Format version ([`CIPHER_VERSION`]).
    pub version: u8,
    /// The 12-byte nonce.
    #[serde(with = "base64_bytes")]
    pub nonce: Option<Vec<u8>>,
    /// GCM ciphertext with the tag appended.
    #[serde(with = "base64_bytes")]
    pub ciphertext: Option<Vec<u8>>,
    /// Error code; omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none", with = "err_code")]
    pub err: Option<ErrorCode>,
}

/// `POST /v1/cipher/decrypt` (JSON mode):
/// `{"version":1,"nonce":b64,"ciphertext":b64,"algorithm":s?}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CipherDecryptRequest {
    /// Format version; must be [`CIPHER_VERSION`].
    pub version: u8,
    /// The nonce; must be [`NONCE_LEN`] bytes.
    #[serde(with = "base64_bytes")]
    pub nonce: Option<Vec<u8>>,
    /// GCM ciphertext with the tag appended.
    #[serde(with = "base64_bytes")]
    pub ciphertext: Option<Vec<u8>>,
    /// Accepted and ignored; omitted when empty.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub algorithm: String,
}

/// Response to [`CipherDecryptRequest`]: `{"plaintext":b64}`; error body
/// `{"plaintext":null,"err":code}`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CipherDecryptResponse {
    /// The decrypted data.
    #[serde(with = "base64_bytes")]
    pub plaintext: Option<Vec<u8>>,
    /// Error code; omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none", with = "err_code")]
    pub err: Option<ErrorCode>,
}

impl fmt::Debug for CipherDecryptResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CipherDecryptResponse")
            .field("plaintext_len", &self.plaintext.as_ref().map(Vec::len))
            .field("err", &self.err)
            .finish()
    }
}

impl_api_response!(CipherEncryptResponse, CipherDecryptResponse);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_mode_is_exact() {
        assert!(is_stream_mode(Some("application/octet-stream")));
        assert!(!is_stream_mode(Some("application/octet-stream; charset=x")));
        assert!(!is_stream_mode(Some("Application/Octet-Stream")));
        assert!(!is_stream_mode(Some("application/json")));
        assert!(!is_stream_mode(None));
    }

    #[test]
    fn debug_hides_plaintext() {
        let r = CipherDecryptResponse {
            plaintext: Some(b"hunter2".to_vec()),
            err: None,
        };
        let dbg = format!("{r:?}");
        assert!(dbg.contains("plaintext_len: Some(7)"), "{dbg}");
    }
}
