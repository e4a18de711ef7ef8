//! Keeper routes (docs/protocol.md#bootstrap-and-keepers): `POST /v1/store/contribute` and `POST /v1/store/shard`.
//!
//! [`ShardGetResponse`] is the one body whose error field is the untagged Go name `"Err"`,
//! always present (`""` on success).

use serde::{Deserialize, Serialize};

use crate::response::impl_api_response;
use crate::serde_helpers::{err_code, keeper_err};
use crate::{ErrorCode, ShardBytes};

/// Contribute request: `{"shard":[32 ints]}`; `null` or all-zero is a 400.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ShardPutRequest {
    /// The shard to hold (overwrites any previous one).
    pub shard: Option<ShardBytes>,
}

/// Contribute response: `{}` or `{"err":code}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShardPutResponse {
    /// Error code; omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none", with = "err_code")]
    pub err: Option<ErrorCode>,
}

/// Shard request: `{}` (or `null`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardGetRequest {}

/// Shard response: `{"shard":[32 ints],"Err":""}`; error body `{"shard":null,"Err":code}`.
///
/// A Keeper must never answer 200 with `"shard":null` (the Go Nexus would panic): answer 400
/// with [`crate::ApiResponse::error`] when it holds no shard.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ShardGetResponse {
    /// The held shard; `None` (`null`) in error bodies.
    pub shard: Option<ShardBytes>,
    /// Error code under the key `"Err"`, always written (`""` for `None`). Decoding also
    /// accepts `"err"` (Go matches keys case-insensitively).
    #[serde(rename = "Err", alias = "err", with = "keeper_err")]
    pub err: Option<ErrorCode>,
}

impl ShardGetResponse {
    /// A success body carrying `shard`.
    pub fn ok(shard: ShardBytes) -> Self {
        Self {
            shard: Some(shard),
            err: None,
        }
    }
}

impl_api_response!(ShardPutResponse, ShardGetResponse);
