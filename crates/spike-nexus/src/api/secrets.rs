//! Secret routes (docs/protocol.md#secrets): put, get, delete, undelete, list, metadata.

use std::collections::BTreeMap;

use axum::response::Response;
use spike_proto::Timestamp;
use spike_proto::secrets::{
    SecretDeleteRequest, SecretDeleteResponse, SecretGetRequest, SecretGetResponse,
    SecretListRequest, SecretListResponse, SecretMetadataContent, SecretMetadataRequest,
    SecretMetadataResponse, SecretPutRequest, SecretPutResponse, SecretUndeleteRequest,
    SecretUndeleteResponse, SecretVersionInfo,
};
use spike_proto::validate;

use super::{ApiError, Cx, blocking, ok_json, write};
use crate::authz::Action;
use crate::model::{SecretData, Version};
use crate::store::StoreError;

fn valid_path(path: &str) -> Result<(), ApiError> {
    validate::secret_path(path).map_err(|e| ApiError::bad(e.to_string()))
}

fn version(v: i64) -> Result<Version, ApiError> {
    Version::try_from(v).map_err(|_| ApiError::bad("negative version"))
}

fn versions(vs: Option<Vec<i64>>) -> Result<Vec<Version>, ApiError> {
    vs.unwrap_or_default().into_iter().map(version).collect()
}

/// `POST /v1/store/secrets`: upsert.
///
/// # Errors
/// 400 bad JSON/path/key, 401, 500 store failure.
pub async fn put(cx: &mut Cx) -> Result<Response, ApiError> {
    let req: SecretPutRequest = cx.json()?;
    cx.resource = super::audit_resource(validate::secret_path(&req.path).is_ok(), || {
        req.path.clone()
    });
    cx.authorize(Action::SecretPut, &req.path)?;
    valid_path(&req.path)?;
    validate::secret_value_keys(&req.values).map_err(|e| ApiError::bad(e.to_string()))?;
    let store = cx.unsealed()?.store.clone();
    let SecretPutRequest { path, values } = req;
    let data = SecretData::from_map(values);
    write(&store, move |store| store.submit_put_secret(&path, data)).await?;
    Ok(ok_json(&SecretPutResponse::default()))
}

/// `POST /v1/store/secrets?action=get`.
///
/// # Errors
/// 400, 401, 404 missing/deleted version, 500.
pub async fn get(cx: &mut Cx) -> Result<Response, ApiError> {
    let req: SecretGetRequest = cx.json()?;
    cx.resource = super::audit_resource(validate::secret_path(&req.path).is_ok(), || {
        req.path.clone()
    });
    cx.authorize(Action::SecretGet, &req.path)?;
    valid_path(&req.path)?;
    let v = version(req.version)?;
    let store = &cx.unsealed()?.store;
    // Inline, without a hop to the blocking pool: one primary-key lookup
    // (memory, or SQLite's page cache) costs less than the thread hand-off. A read that
    // waits on the network (PostgreSQL) goes to the blocking pool.
    let data = read(store, &req.path, move |store, path| {
        store.get_secret(path, v)
    })
    .await?;
    let body = SecretGetResponse::ok(data.expose().clone());
    drop(data);
    let resp = ok_json(&body);
    drop(zeroize_response(body));
    Ok(resp)
}

/// Runs a single-secret read inline, or on the blocking pool when the backend's reads wait on
/// the network ([`Store::reads_block`](crate::store::Store::reads_block)).
async fn read<T, F>(store: &crate::store::Store, path: &str, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&crate::store::Store, &str) -> Result<T, crate::store::StoreError> + Send + 'static,
{
    if store.reads_block() {
        let store = store.clone();
        let path = path.to_owned();
        blocking(move || Ok(f(&store, &path)?)).await
    } else {
        Ok(f(store, path)?)
    }
}

/// Wipes the values of a response copy after it was serialized.
fn zeroize_response(mut body: SecretGetResponse) -> SecretGetResponse {
    use zeroize::Zeroize;
    if let Some(map) = body.data.as_mut() {
        for value in map.values_mut() {
            value.zeroize();
        }
    }
    body
}

/// `POST /v1/store/secrets?action=delete`: soft-delete versions (empty = current).
///
/// # Errors
/// 400, 401, 404 unknown path, 500.
pub async fn delete(cx: &mut Cx) -> Result<Response, ApiError> {
    let req: SecretDeleteRequest = cx.json()?;
    cx.resource = super::audit_resource(validate::secret_path(&req.path).is_ok(), || {
        req.path.clone()
    });
    cx.authorize(Action::SecretDelete, &req.path)?;
    valid_path(&req.path)?;
    let vs = versions(req.versions)?;
    let store = cx.unsealed()?.store.clone();
    let path = req.path;
    write(&store, move |store| store.submit_delete_secret(&path, &vs)).await?;
    Ok(ok_json(&SecretDeleteResponse::default()))
}

/// `POST /v1/store/secrets?action=undelete`.
///
/// # Errors
/// 400, 401, 404 unknown path or nothing to undelete, 500.
pub async fn undelete(cx: &mut Cx) -> Result<Response, ApiError> {
    let req: SecretUndeleteRequest = cx.json()?;
    cx.resource = super::audit_resource(validate::secret_path(&req.path).is_ok(), || {
        req.path.clone()
    });
    cx.authorize(Action::SecretUndelete, &req.path)?;
    valid_path(&req.path)?;
    let vs = versions(req.versions)?;
    let store = cx.unsealed()?.store.clone();
    let path = req.path;
    write(&store, move |store| {
        store.submit_undelete_secret(&path, &vs)
    })
    .await?;
    Ok(ok_json(&SecretUndeleteResponse::default()))
}

/// `POST /v1/store/secrets?action=list`: every path, sorted (errors give `[]`, as in Go).
///
/// # Errors
/// 400 bad JSON, 401.
pub async fn list(cx: &mut Cx) -> Result<Response, ApiError> {
    let _req: SecretListRequest = cx.json()?;
    cx.resource = spike_proto::policy::SYSTEM_SECRET_PATH.to_owned();
    cx.authorize(Action::SecretList, "")?;
    let store = cx.unsealed()?.store.clone();
    // Listing decrypts every path: off the async workers.
    let keys = blocking(move || match store.list_secrets() {
        Ok(keys) => Ok(keys),
        // A shared database that cannot answer now: 503, so a client tries another instance
        // rather than reading "no secrets".
        Err(e @ (StoreError::Unavailable(_) | StoreError::Busy(_))) => Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, "listing secrets failed; answering an empty list");
            Ok(Vec::new())
        }
    })
    .await?;
    Ok(ok_json(&SecretListResponse::ok(keys)))
}

/// `POST /v1/store/secrets/metadata?action=get`.
///
/// # Errors
/// 400, 401, 404 (as get), 500.
pub async fn metadata(cx: &mut Cx) -> Result<Response, ApiError> {
    let req: SecretMetadataRequest = cx.json()?;
    cx.resource = super::audit_resource(validate::secret_path(&req.path).is_ok(), || {
        req.path.clone()
    });
    cx.authorize(Action::SecretMetadata, &req.path)?;
    valid_path(&req.path)?;
    let v = version(req.version)?;
    let store = &cx.unsealed()?.store;
    // Inline, as in `get`.
    let secret = read(store, &req.path, move |store, path| {
        store.secret_metadata(path, v)
    })
    .await?;
    let to_i64 = |v: Version| i64::try_from(v).unwrap_or(i64::MAX);
    let versions: BTreeMap<i64, SecretVersionInfo> = secret
        .versions
        .values()
        .map(|sv| {
            (
                to_i64(sv.version),
                SecretVersionInfo {
                    created_time: Timestamp::new(sv.created),
                    version: to_i64(sv.version),
                    deleted_time: sv.deleted.map(Timestamp::new),
                },
            )
        })
        .collect();
    let m = &secret.metadata;
    let body = SecretMetadataResponse {
        versions,
        metadata: SecretMetadataContent {
            current_version: to_i64(m.current_version),
            oldest_version: to_i64(m.oldest_version),
            created_time: Timestamp::new(m.created),
            updated_time: Timestamp::new(m.updated),
            max_versions: to_i64(m.max_versions),
        },
        err: None,
    };
    Ok(ok_json(&body))
}
