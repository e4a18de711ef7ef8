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
}

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
            ApiError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The SPIKE error code placed in the body.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest(_) => ErrorCode::ApiBadRequest,
            ApiError::Unauthorized => ErrorCode::AccessUnauthorized,
            ApiError::NotFound => ErrorCode::ApiNotFound,
            ApiError::NotReady => ErrorCode::StateNotReady,
            ApiError::Internal(_) => ErrorCode::ApiInternal,
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
        }
    }
}
