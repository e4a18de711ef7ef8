//! The one error type of the API layer and its (HTTP status, [`ErrorCode`]) mapping.

use http::StatusCode;
use spike_proto::ErrorCode;

/// A failed request, translated once at the edge (the dispatcher) into a status and the
/// route's typed error body. Messages are for the log only; bodies carry just the code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Malformed or invalid input (400 `api_bad_request`).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The caller may not do this (401 `access_unauthorized`).
    #[error("unauthorized")]
    Unauthorized,
    /// The resource does not exist (404 `api_not_found`).
    #[error("not found")]
    NotFound,
    /// The root key is not in memory yet (503 `state_not_ready`).
    #[error("not ready: sealed")]
    NotReady,
    /// Something failed on our side (500 `api_internal_error`).
    #[error("internal error: {0}")]
    Internal(String),
    /// A write failed because the storage is full (507 Insufficient Storage, code
    /// `api_internal_error`, plus the non-SPIKE body field `"detail": "storage_full"`).
    /// SPIKE answers 500; Go clients treat every non-200 they do not know as a failure.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// The store's database (PostgreSQL) cannot be reached or did not answer in time (503
    /// `state_not_ready`, plus the non-SPIKE body field `"detail": "backend_unavailable"`).
    /// Nothing was acknowledged; a write's outcome may be unknown (the log says).
    #[error("backend unavailable: {0}")]
    BackendUnavailable(String),
    /// A write reached the database's `COMMIT` but the commit was not confirmed: it may or
    /// may not have been applied (504 Gateway Timeout, code `api_internal_error`, plus
    /// `"detail": "backend_outcome_unknown"`). Not 503: a client must not send the same write
    /// to another instance, it reads back first.
    #[error("write outcome unknown: {0}")]
    OutcomeUnknown(String),
}

/// The value of the `detail` body field of an [`ApiError::OutcomeUnknown`] answer.
pub const DETAIL_OUTCOME_UNKNOWN: &str = "backend_outcome_unknown";

/// The value of the `detail` body field of an [`ApiError::BackendUnavailable`] answer.
pub const DETAIL_BACKEND_UNAVAILABLE: &str = "backend_unavailable";

/// The value of the `detail` body field of a [`ApiError::StorageFull`] answer.
pub const DETAIL_STORAGE_FULL: &str = "storage_full";

impl ApiError {
    /// A 400 with a log message.
    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(msg.into())
    }

    /// A 500 with a log message (never a secret).
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        ApiError::Internal(msg.to_string())
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::NotReady | ApiError::BackendUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::OutcomeUnknown(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The SPIKE error code placed in the body.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest(_) => ErrorCode::ApiBadRequest,
            ApiError::Unauthorized => ErrorCode::AccessUnauthorized,
            ApiError::NotFound => ErrorCode::ApiNotFound,
            ApiError::NotReady | ApiError::BackendUnavailable(_) => ErrorCode::StateNotReady,
            ApiError::Internal(_) | ApiError::StorageFull(_) | ApiError::OutcomeUnknown(_) => {
                ErrorCode::ApiInternal
            }
        }
    }

    /// The non-SPIKE `detail` body field, for the one error that names its cause to the
    /// client (a full disk says nothing about secrets or internals). `None` for every other
    /// error: bodies carry just the SPIKE code.
    pub fn detail(&self) -> Option<&'static str> {
        match self {
            ApiError::StorageFull(_) => Some(DETAIL_STORAGE_FULL),
            ApiError::BackendUnavailable(_) => Some(DETAIL_BACKEND_UNAVAILABLE),
            ApiError::OutcomeUnknown(_) => Some(DETAIL_OUTCOME_UNKNOWN),
            _ => None,
        }
    }
}

/// A route's typed error body plus the optional non-SPIKE `detail` field
/// ([`ApiError::detail`]); Go clients ignore unknown fields.
#[derive(Debug, serde::Serialize)]
pub struct ErrorBody<T> {
    /// The route's SPIKE error body (`{"err": "<code>", ...}`).
    #[serde(flatten)]
    pub body: T,
    /// `storage_full`, or absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'static str>,
}

impl<T: spike_proto::ApiResponse> ErrorBody<T> {
    /// The body for `err`.
    pub fn of(err: &ApiError) -> Self {
        ErrorBody {
            body: T::error(err.code()),
            detail: err.detail(),
        }
    }
}

impl From<crate::authz::AuthzError> for ApiError {
    /// Every refusal is `401 access_unauthorized`; the reason stays server-side.
    fn from(e: crate::authz::AuthzError) -> Self {
        match e {
            crate::authz::AuthzError::Denied { .. } => ApiError::Unauthorized,
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::NotFound
            | StoreError::Invalid(crate::model::ModelError::NothingToUndelete) => {
                ApiError::NotFound
            }
            StoreError::Invalid(m) => ApiError::BadRequest(m.to_string()),
            StoreError::StorageFull(m) => ApiError::StorageFull(m),
            StoreError::Unavailable(m) | StoreError::Busy(m) => ApiError::BackendUnavailable(m),
            StoreError::OutcomeUnknown(m) => ApiError::OutcomeUnknown(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_code_agree_with_the_go_client_mapping() {
        for e in [
            ApiError::bad("x"),
            ApiError::Unauthorized,
            ApiError::NotFound,
            ApiError::NotReady,
            ApiError::internal("x"),
        ] {
            assert_eq!(e.code().http_status(), Some(e.status().as_u16()));
            assert_eq!(e.detail(), None);
        }
        // The one documented exception (docs/compatibility.md): a full disk is 507 with
        // the server-failure code Go clients know, and names itself in `detail`.
        let full = ApiError::StorageFull("database or disk is full".into());
        assert_eq!(full.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(full.code(), ErrorCode::ApiInternal);
        assert_eq!(full.code().http_status(), Some(500));
        assert_eq!(full.detail(), Some("storage_full"));
    }

    #[test]
    fn storage_full_store_errors_become_507_and_others_do_not() {
        use crate::store::StoreError;
        let e = ApiError::from(StoreError::StorageFull("database or disk is full".into()));
        assert_eq!(e.status().as_u16(), 507);
        assert_eq!(e.to_string(), "storage full: database or disk is full");
        let e = ApiError::from(StoreError::Database("disk I/O error".into()));
        assert_eq!(e.status().as_u16(), 500);
        assert_eq!(e.detail(), None);
    }

    #[test]
    fn an_unreachable_database_is_503_backend_unavailable() {
        use crate::store::StoreError;
        let e = ApiError::from(StoreError::Unavailable("connection refused".into()));
        assert_eq!(e.status().as_u16(), 503);
        assert_eq!(e.code(), ErrorCode::StateNotReady);
        assert_eq!(e.code().http_status(), Some(503));
        assert_eq!(e.detail(), Some("backend_unavailable"));
        let e = ApiError::from(StoreError::Busy("lock timeout".into()));
        assert_eq!(e.status().as_u16(), 503);
        let e = ApiError::from(StoreError::OutcomeUnknown("commit not confirmed".into()));
        assert_eq!(
            e.status().as_u16(),
            504,
            "not 503: clients must not fail over a write"
        );
        assert_eq!(e.code(), ErrorCode::ApiInternal);
        assert_eq!(e.detail(), Some("backend_outcome_unknown"));
    }

    #[test]
    fn authz_refusals_are_401_access_unauthorized_without_detail() {
        use crate::authz::{Action, AuthzError};
        let e = ApiError::from(AuthzError::Denied {
            action: Action::SecretGet,
        });
        assert!(matches!(e, ApiError::Unauthorized));
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(e.code(), ErrorCode::AccessUnauthorized);
        assert_eq!(e.detail(), None);
    }

    #[test]
    fn error_bodies_carry_detail_only_for_storage_full() {
        use spike_proto::secrets::SecretPutResponse;
        let full = ApiError::StorageFull("database or disk is full".into());
        let body = serde_json::to_value(ErrorBody::<SecretPutResponse>::of(&full)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"err": "api_internal_error", "detail": "storage_full"})
        );
        let other = ApiError::internal("database error: disk I/O error");
        let body = serde_json::to_value(ErrorBody::<SecretPutResponse>::of(&other)).unwrap();
        assert_eq!(body, serde_json::json!({"err": "api_internal_error"}));
    }
}
