//! Policy routes (docs/protocol.md#policy-routes): put (upsert), get, delete, list.
//!
//! Deliberate fixes of Go defects (docs/compatibility.md, #2): a missing policy is 404, an uncompilable
//! regex or a reserved-path violation is 400.

use axum::response::Response;
use spike_proto::Timestamp;
use spike_proto::policy::{
    Permission as WirePermission, PolicyDeleteRequest, PolicyDeleteResponse, PolicyListItem,
    PolicyListRequest, PolicyListResponse, PolicyPutRequest, PolicyPutResponse, PolicyReadRequest,
    PolicyReadResponse, SYSTEM_ACL_PATH,
};
use spike_proto::validate;

use super::{ApiError, Cx, blocking, ok_json};
use crate::authz::Action;
use crate::model::{Permission, Policy};

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad(e.to_string())
}

fn to_model(p: WirePermission) -> Permission {
    match p {
        WirePermission::Read => Permission::Read,
        WirePermission::Write => Permission::Write,
        WirePermission::List => Permission::List,
        WirePermission::Execute => Permission::Execute,
        WirePermission::Super => Permission::Super,
    }
}

fn to_wire(p: Permission) -> Option<WirePermission> {
    WirePermission::from_wire(p.as_str())
}

/// `POST /v1/acl/policy`: create or update by name.
///
/// # Errors
/// 400 invalid name/patterns/permissions/regex/reserved path, 401, 500.
pub async fn put(cx: &mut Cx) -> Result<Response, ApiError> {
    let req: PolicyPutRequest = cx.json()?;
    cx.resource = super::audit_resource(validate::name(&req.name).is_ok(), || {
        format!("{SYSTEM_ACL_PATH}/{}", req.name)
    });
    cx.authorize(Action::PolicyPut, "")?;
    validate::name(&req.name).map_err(bad)?;
    validate::spiffe_id_pattern(&req.spiffe_id_pattern).map_err(bad)?;
    validate::path_pattern(&req.path_pattern).map_err(bad)?;
    let perms: Vec<Permission> = validate::permissions(&req.permissions)
        .map_err(bad)?
        .into_iter()
        .map(to_model)
        .collect();
    let store = cx.unsealed()?.store.clone();
    blocking(move || {
        Ok(store
            .put_policy(&req.name, &req.spiffe_id_pattern, &req.path_pattern, perms)
            .map(drop)?)
    })
    .await?;
    Ok(ok_json(&PolicyPutResponse::default()))
}

fn read_body(p: &Policy) -> PolicyReadResponse {
    PolicyReadResponse {
        id: String::new(),
        name: p.name.clone(),
        spiffe_id_pattern: p.spiffeid_pattern.clone(),
        path_pattern: p.path_pattern.clone(),
        permissions: Some(p.permissions.iter().copied().filter_map(to_wire).collect()),
        created_at: Timestamp::new(p.created_at),
        updated_at: Timestamp::new(p.updated_at),
        err: None,
    }
}

/// `POST /v1/acl/policy?action=get` (`{"id":"<name>"}`).
///
/// # Errors
/// 400 invalid name, 401, 404 unknown.
pub async fn get(cx: &mut Cx) -> Result<Response, ApiError> {
    let req: PolicyReadRequest = cx.json()?;
    cx.resource = super::audit_resource(validate::name(&req.id).is_ok(), || {
        format!("{SYSTEM_ACL_PATH}/{}", req.id)
    });
    cx.authorize(Action::PolicyGet, "")?;
    validate::name(&req.id).map_err(bad)?;
    let store = cx.unsealed()?.store.clone();
    // Policies are served from the store's in-memory cache: no blocking hop.
    let policy = store.get_policy(&req.id)?;
    Ok(ok_json(&read_body(&policy)))
}

/// `POST /v1/acl/policy?action=delete` (`{"id":"<name>"}`).
///
/// # Errors
/// 400 invalid name, 401, 404 unknown, 500.
pub async fn delete(cx: &mut Cx) -> Result<Response, ApiError> {
    let req: PolicyDeleteRequest = cx.json()?;
    cx.resource = super::audit_resource(validate::name(&req.id).is_ok(), || {
        format!("{SYSTEM_ACL_PATH}/{}", req.id)
    });
    cx.authorize(Action::PolicyDelete, "")?;
    validate::name(&req.id).map_err(bad)?;
    let store = cx.unsealed()?.store.clone();
    blocking(move || Ok(store.delete_policy(&req.id)?)).await?;
    Ok(ok_json(&PolicyDeleteResponse::default()))
}

/// `POST /v1/acl/policy?action=list`; filters are exact string matches, the SPIFFE-ID
/// filter wins when both are set.
///
/// # Errors
/// 400 bad JSON, 401.
pub async fn list(cx: &mut Cx) -> Result<Response, ApiError> {
    let req: PolicyListRequest = cx.json()?;
    cx.resource = SYSTEM_ACL_PATH.to_owned();
    cx.authorize(Action::PolicyList, "")?;
    let store = cx.unsealed()?.store.clone();
    let id_filter = Some(req.spiffe_id_pattern).filter(|s| !s.is_empty());
    // Go: when both filters are set, the SPIFFE-ID filter wins.
    let path_filter = Some(req.path_pattern).filter(|s| !s.is_empty() && id_filter.is_none());
    // Served from the store's in-memory policy cache: no blocking hop.
    let items = store
        .list_policies(id_filter.as_deref(), path_filter.as_deref())
        .iter()
        .map(|p| PolicyListItem::named(p.name.clone()))
        .collect::<Vec<_>>();
    Ok(ok_json(&PolicyListResponse::ok(items)))
}
