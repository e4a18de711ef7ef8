//! Operator routes (docs/protocol.md#root-key-shards-and-recovery-files): `POST /v1/operator/recover` and `POST /v1/operator/restore`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::response::impl_api_response;
use crate::serde_helpers::{err_code, opt_int_map};
use crate::{ErrorCode, ShardBytes};

/// Recover request: `{}` (or `null`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverRequest {}

/// Recover response: `{"shards":{"1":[32 ints],...,"N":[...]}}` keyed by share id 1..N;
/// error body `{"shards":null,"err":code}`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RecoverResponse {
    /// Every share, keyed by its 1-based id; `None` (`null`) in error bodies.
    #[serde(with = "opt_int_map")]
    pub shards: Option<BTreeMap<i64, ShardBytes>>,
    /// Error code; omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none", with = "err_code")]
    pub err: Option<ErrorCode>,
}

/// Restore request: `{"id":n,"shard":[32 ints]}` — one recovery shard and its id.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RestoreRequest {
    /// Share id (valid range `1..=SPIKE_NEXUS_SHAMIR_MAX_SHARE_COUNT`).
    pub id: i64,
    /// The share; `None` (`null`) or all-zero is a 400.
    pub shard: Option<ShardBytes>,
}

/// Restore response: `{"collected":c,"remaining":r,"restored":b}`; error body
/// `{"collected":0,"remaining":0,"restored":false,"err":code}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestoreResponse {
    /// Shards collected so far.
    pub collected: i64,
    /// Shards still needed (`threshold - collected`).
    pub remaining: i64,
    /// Whether the root key has been reconstructed.
    pub restored: bool,
    /// Error code; omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none", with = "err_code")]
    pub err: Option<ErrorCode>,
}

impl_api_response!(RecoverResponse, RestoreResponse);
