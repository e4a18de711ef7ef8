//! Cipher routes (docs/protocol.md#cipher): encrypt/decrypt in JSON mode or stream mode
//! (`Content-Type: application/octet-stream` exactly).
//!
//! Stream-mode crypto errors are Go `http.Error` text bodies; authorization and size errors
//! stay typed JSON, as in Go.

use axum::response::Response;
use http::StatusCode;
use spike_proto::cipher::{
    CIPHER_VERSION, CipherDecryptRequest, CipherDecryptResponse, CipherEncryptRequest,
    CipherEncryptResponse, NONCE_LEN,
};

use super::{ApiError, Cx, octet_stream, ok_json, text_error};
use crate::authz::Action;

const RESOURCE: &str = spike_proto::policy::SYSTEM_CIPHER_EXEC_PATH;

/// `POST /v1/cipher/encrypt`.
///
/// # Errors
/// 400 bad JSON or too large, 401, 500 cipher failure.
pub async fn encrypt(cx: &mut Cx) -> Result<Response, ApiError> {
    cx.resource = RESOURCE.to_owned();
    let max = cx.state.config().max_ciphertext_size;
    if cx.stream {
        cx.authorize(Action::CipherEncrypt, "")?;
        if cx.body.len() > max {
            return Err(ApiError::bad("plaintext too large"));
        }
        let Some(unsealed) = cx.state.unsealed() else {
            return Ok(text_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "crypto_cipher_not_available",
            ));
        };
        return match unsealed.cipher.seal_stream(&cx.body) {
            Ok(out) => Ok(octet_stream(out)),
            Err(_) => Ok(text_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "crypto_nonce_generation_failed",
            )),
        };
    }
    let req: CipherEncryptRequest = cx.json()?;
    cx.authorize(Action::CipherEncrypt, "")?;
    let plaintext = req.plaintext.as_deref().unwrap_or_default();
    if plaintext.len() > max {
        return Err(ApiError::bad("plaintext too large"));
    }
    let unsealed = cx.unsealed()?;
    let (nonce, ciphertext) = unsealed
        .cipher
        .seal(plaintext)
        .map_err(|e| ApiError::internal(format!("encrypt: {e}")))?;
    Ok(ok_json(&CipherEncryptResponse {
        version: CIPHER_VERSION,
        nonce: Some(nonce.to_vec()),
        ciphertext: Some(ciphertext),
        err: None,
    }))
}

/// `POST /v1/cipher/decrypt`.
///
/// # Errors
/// 400 bad input, 401, 500 (JSON mode: authentication failure of the ciphertext).
pub async fn decrypt(cx: &mut Cx) -> Result<Response, ApiError> {
    cx.resource = RESOURCE.to_owned();
    let max = cx.state.config().max_ciphertext_size;
    cx.authorize(Action::CipherDecrypt, "")?;
    if cx.stream {
        let Some(unsealed) = cx.state.unsealed() else {
            return Ok(text_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "crypto_cipher_not_available",
            ));
        };
        let data = &cx.body;
        let Some(&version) = data.first() else {
            return Ok(text_error(
                StatusCode::BAD_REQUEST,
                "crypto_failed_to_read_version",
            ));
        };
        if version != CIPHER_VERSION {
            return Ok(text_error(
                StatusCode::BAD_REQUEST,
                "crypto_unsupported_version",
            ));
        }
        let Some(nonce) = data.get(1..1 + NONCE_LEN) else {
            return Ok(text_error(
                StatusCode::BAD_REQUEST,
                "crypto_failed_to_read_nonce",
            ));
        };
        let ciphertext = data.get(1 + NONCE_LEN..).unwrap_or_default();
        if ciphertext.len() > max {
            return Err(ApiError::bad("ciphertext too large"));
        }
        return match unsealed.cipher.open(nonce, ciphertext) {
            Ok(plain) => Ok(octet_stream(plain.to_vec())),
            Err(_) => Ok(text_error(StatusCode::BAD_REQUEST, "decryption failed")),
        };
    }
    let req: CipherDecryptRequest = cx.json()?;
    if req.version != CIPHER_VERSION {
        return Err(ApiError::bad("unsupported cipher version"));
    }
    let nonce = req.nonce.as_deref().unwrap_or_default();
    if nonce.len() != NONCE_LEN {
        return Err(ApiError::bad("nonce must be 12 bytes"));
    }
    let ciphertext = req.ciphertext.as_deref().unwrap_or_default();
    if ciphertext.len() > max {
        return Err(ApiError::bad("ciphertext too large"));
    }
    let unsealed = cx.unsealed()?;
    let plain = unsealed
        .cipher
        .open(nonce, ciphertext)
        .map_err(|_| ApiError::internal("decryption failed"))?;
    let body = CipherDecryptResponse {
        plaintext: Some(plain.to_vec()),
        err: None,
    };
    let resp = ok_json(&body);
    if let Some(mut p) = body.plaintext {
        zeroize::Zeroize::zeroize(&mut p);
    }
    Ok(resp)
}
