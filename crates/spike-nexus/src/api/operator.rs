//! Operator routes (docs/protocol.md#root-key-shards-and-recovery-files): export recovery shards, restore from them.
//!
//! Differences from Go, invisible to Go clients' success paths: a bad shard (id out of
//! range, zero, value ≥ the group order) is a 400, never a crash (docs/compatibility.md); the
//! restored shards must agree on one key ([`crate::keys::agreement`]) and the key must match an
//! existing key check (the database's; lite: the key-check file) — a wrong key is a 400 and
//! the collected shards are discarded, and with no key check at all (never bootstrapped) the
//! restore is refused, so the restore role cannot choose the root key (docs/compatibility.md);
//! collected shards are wiped after a successful restore, and later calls answer
//! `restored:true` while unsealed, except while keepers disagree: then the shards are
//! collected and, if they give the live key, the operator's confirmation re-seeds every keeper
//! (docs/compatibility.md); recover while sealed is a 503 `state_not_ready` (Go: 500).

use std::collections::BTreeMap;

use axum::response::Response;
use spike_crypto::{Shard, ShardValue, shamir};
use spike_proto::ShardBytes;
use spike_proto::operator::{RecoverRequest, RecoverResponse, RestoreRequest, RestoreResponse};
use spike_proto::validate;

use super::{ApiError, Cx, ok_json};
use crate::authz::Action;
use crate::keys::{Agreement, agreement};
use crate::state::UnsealError;

/// `POST /v1/operator/recover`: all shares of the live root key, keyed by id.
///
/// # Errors
/// 400 in memory mode, 401 unless the recover role, 503 while sealed, 500 split failure.
pub async fn recover(cx: &mut Cx) -> Result<Response, ApiError> {
    if cx.state.is_memory() {
        return Err(ApiError::bad("recover is not available in memory mode"));
    }
    let _req: RecoverRequest = cx.json()?;
    cx.authorize(Action::OperatorRecover, "")?;
    let unsealed = cx.unsealed()?;
    let key = unsealed.root_key.as_ref().ok_or(ApiError::NotReady)?;
    let config = cx.state.config();
    let shards = shamir::split(key, config.shares, config.threshold)
        .map_err(|e| ApiError::internal(format!("split: {e}")))?;
    let map: BTreeMap<i64, ShardBytes> = shards
        .iter()
        .map(|s| (i64::from(s.id()), ShardBytes::new(*s.expose_secret())))
        .collect();
    Ok(ok_json(&RecoverResponse {
        shards: Some(map),
        err: None,
    }))
}

fn status(collected: usize, threshold: u16, restored: bool) -> RestoreResponse {
    let collected = i64::try_from(collected).unwrap_or(i64::MAX);
    let threshold = i64::from(threshold);
    RestoreResponse {
        collected,
        remaining: (threshold - collected).max(0),
        restored,
        err: None,
    }
}

/// Checks one submitted shard: id in range, value present, non-zero and below the group
/// order.
fn parse_shard(req: &RestoreRequest, max_share_count: u32) -> Result<Shard, ApiError> {
    validate::restore_id(req.id, max_share_count).map_err(|e| ApiError::bad(e.to_string()))?;
    let id = u16::try_from(req.id).map_err(|_| ApiError::bad("shard id out of range"))?;
    let bytes = req
        .shard
        .as_ref()
        .filter(|s| !s.is_zero())
        .ok_or_else(|| ApiError::bad("shard missing or all zero"))?;
    let shard = Shard::new(id, ShardValue::new(*bytes.as_bytes()));
    // A one-shard "combination" checks the id range and that the value is a valid scalar.
    shamir::combine(std::slice::from_ref(&shard), 1)
        .map_err(|e| ApiError::bad(format!("invalid shard: {e}")))?;
    Ok(shard)
}

/// `POST /v1/operator/restore`: submit one shard; at the threshold, reconstruct, verify and
/// unseal, then push shards to every keeper.
///
/// # Errors
/// 400 in memory mode, bad shard or wrong key; 401 unless the restore role; 500 store failure.
pub async fn restore(cx: &mut Cx) -> Result<Response, ApiError> {
    if cx.state.is_memory() {
        return Err(ApiError::bad("restore is not available in memory mode"));
    }
    let req: RestoreRequest = cx.json()?;
    cx.authorize(Action::OperatorRestore, "")?;
    let config = cx.state.config().clone();
    let shard = parse_shard(&req, config.max_share_count)?;
    drop(req);
    let threshold = config.threshold;
    let live = cx.state.unsealed();
    if live.is_some() && cx.state.disagreement().is_none() {
        return Ok(ok_json(&status(usize::from(threshold), threshold, true)));
    }
    let ready = {
        let mut shards = cx.state.restore_shards();
        if !shards.iter().any(|s| s.id() == shard.id()) {
            shards.push(shard);
        }
        if shards.len() < usize::from(threshold) {
            return Ok(ok_json(&status(shards.len(), threshold, false)));
        }
        std::mem::take(&mut *shards)
    };
    let refs: Vec<&Shard> = ready.iter().collect();
    let key = match agreement(&refs, config.shares, threshold, 1) {
        Agreement::Agreed(key) => key,
        Agreement::TooFew | Agreement::Disagree { .. } => {
            return Err(ApiError::bad(
                "the submitted shards do not give one root key (a wrong or mixed-up recovery \
                 shard?); shards discarded",
            ));
        }
    };
    drop(refs);
    drop(ready);
    if let Some(live) = live {
        // Keepers disagree: the operator confirms the live key with the recovery shards.
        if live.root_key.as_ref() != Some(&key) {
            return Err(ApiError::bad(
                "the restored root key is not the live one; shards discarded",
            ));
        }
        tracing::warn!("operator restore confirmed the live root key; re-seeding every keeper");
        cx.state.request_operator_push();
        return Ok(ok_json(&status(usize::from(threshold), threshold, true)));
    }
    match cx.state.unseal_checked(key, "operator restore").await {
        Ok(()) => {
            cx.state.request_operator_push();
            Ok(ok_json(&status(usize::from(threshold), threshold, true)))
        }
        Err(UnsealError::WrongKey) => Err(ApiError::bad(
            "the restored root key does not match the key check (database, or lite's key-check \
             file); shards discarded",
        )),
        Err(e @ UnsealError::NoKeyCheck) => Err(ApiError::bad(e.to_string())),
        Err(e) => Err(ApiError::internal(e)),
    }
}
