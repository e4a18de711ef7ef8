//! Bootstrap verify (docs/protocol.md#bootstrap-and-keepers, docs/protocol.md#root-key-shards-and-recovery-files): proves Nexus holds the root key Bootstrap generated.

use axum::response::Response;
use spike_proto::bootstrap::{BootstrapVerifyRequest, BootstrapVerifyResponse};
use spike_proto::cipher::NONCE_LEN;

use super::{ApiError, Cx, ok_json};
use crate::authz::Action;

/// `POST /v1/bootstrap/verify`: decrypts the probe with the root key and returns the
/// SHA-256 (lowercase hex) of the plaintext.
///
/// # Errors
/// 400 bad JSON/nonce/size, 401 unless the bootstrap role, 500 when the probe does not open.
pub async fn verify(cx: &mut Cx) -> Result<Response, ApiError> {
    let req: BootstrapVerifyRequest = cx.json()?;
    cx.authorize(Action::BootstrapVerify, "")?;
    let nonce = req.nonce.as_deref().unwrap_or_default();
    if nonce.len() != NONCE_LEN {
        return Err(ApiError::bad("nonce must be 12 bytes"));
    }
    let ciphertext = req.ciphertext.as_deref().unwrap_or_default();
    if ciphertext.len() > cx.state.config().max_ciphertext_size {
        return Err(ApiError::bad("ciphertext too large"));
    }
    let unsealed = cx.unsealed()?;
    let plain = unsealed
        .cipher
        .open(nonce, ciphertext)
        .map_err(|_| ApiError::internal("bootstrap probe does not open with the root key"))?;
    Ok(ok_json(&BootstrapVerifyResponse {
        hash: spike_crypto::verify::sha256_hex(&plain),
        err: None,
    }))
}
