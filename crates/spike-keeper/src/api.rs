//! The keeper's HTTP API (docs/protocol.md#bootstrap-and-keepers), dispatched like Go's single handler on `/` (docs/protocol.md#conventions).
//!
//! | Request | Guard | Success | Errors |
//! |---|---|---|---|
//! | `POST /v1/store/contribute` `{"shard":[32 ints]}` | Nexus or Bootstrap | `{}` | 400 `{"err":"api_bad_request"}` (bad JSON, null/all-zero shard, body too large); 401 `{"err":"access_unauthorized"}`; 500 `{"err":"api_internal_error"}` (sealing on and the sealed file could not be written) |
//! | `POST /v1/store/shard` `{}` | Nexus | `{"shard":[...],"Err":""}` | 400 `{"shard":null,"Err":"api_bad_request"}` (bad JSON, no shard yet); 401 `{"shard":null,"Err":"access_unauthorized"}` |
//! | anything else | — | — | 400 `{"err":"api_bad_request"}` |
//!
//! Order per route: read body → parse JSON → guard → validate, as in Go.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::Serialize;
use spike_crypto::ShardValue;
use spike_daemon::logging::AUDIT_TARGET;
use spike_identity::PeerId;
use spike_proto::keeper::{ShardGetRequest, ShardGetResponse, ShardPutRequest, ShardPutResponse};
use spike_proto::paths::action_from_query;
use spike_proto::response::{
    FallbackResponse, JSON_RESPONSE_HEADERS, SdkErrorBody, encode_response,
};
use spike_proto::{ApiResponse, ErrorCode, KeeperRoute, ShardBytes, TrustRoots, decode_request};

use crate::state::ShardStore;

/// Told what the keeper holds after each stored contribution (the daemon puts it in its
/// `STATUS=`).
pub type StatusHook = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Clone)]
struct AppState {
    store: ShardStore,
    roots: Arc<TrustRoots>,
    request_body_limit: usize,
    status: Option<StatusHook>,
}

/// The keeper router: every request goes to one dispatcher (no axum routes, so unknown
/// paths and methods get SPIKE's 400 fallback, not axum's 404/405).
pub fn router(
    store: ShardStore,
    roots: Arc<TrustRoots>,
    request_body_limit: usize,
    status: Option<StatusHook>,
) -> Router {
    Router::new().fallback(dispatch).with_state(AppState {
        store,
        roots,
        request_body_limit,
        status,
    })
}

async fn dispatch(State(app): State<AppState>, req: Request) -> Response {
    let peer = req.extensions().get::<PeerId>().map(ToString::to_string);
    let path = req.uri().path().to_owned();
    let route = if req.method() == Method::POST {
        let action = action_from_query(req.uri().query());
        KeeperRoute::parse(&path, action.as_deref())
    } else {
        None
    };
    let response = match route {
        None => json(
            StatusCode::BAD_REQUEST,
            &FallbackResponse::error(ErrorCode::ApiBadRequest),
        ),
        Some(route) => match read_body(req.into_body(), app.request_body_limit).await {
            Err(BodyError::TooLarge) => {
                error_for(route, StatusCode::BAD_REQUEST, ErrorCode::ApiBadRequest)
            }
            Err(BodyError::Read) => json(StatusCode::BAD_REQUEST, &SdkErrorBody::read_failure()),
            Ok(mut body) => {
                let response = match route {
                    KeeperRoute::Contribute => contribute(&app, peer.as_deref(), &body).await,
                    KeeperRoute::Shard => shard(&app, peer.as_deref(), &body),
                };
                wipe(&mut body);
                response
            }
        },
    };
    // Field names as in `spike_daemon::logging::log_keys`.
    tracing::info!(
        target: AUDIT_TARGET,
        peer_spiffe_id = peer.as_deref().unwrap_or(""),
        action = route.map_or("fallback", |r| match r {
            KeeperRoute::Contribute => "contribute",
            KeeperRoute::Shard => "shard",
        }),
        path = path.as_str(),
        status = response.status().as_u16(),
        "keeper request"
    );
    response
}

async fn contribute(app: &AppState, peer: Option<&str>, body: &[u8]) -> Response {
    let Ok(mut req) = decode_request::<ShardPutRequest>(body) else {
        return error_for(
            KeeperRoute::Contribute,
            StatusCode::BAD_REQUEST,
            ErrorCode::ApiBadRequest,
        );
    };
    let allowed = peer.is_some_and(|p| app.roots.is_nexus(p) || app.roots.is_bootstrap(p));
    if !allowed {
        return error_for(
            KeeperRoute::Contribute,
            StatusCode::UNAUTHORIZED,
            ErrorCode::AccessUnauthorized,
        );
    }
    let Some(shard) = req.shard.take().filter(|s| !s.is_zero()) else {
        return error_for(
            KeeperRoute::Contribute,
            StatusCode::BAD_REQUEST,
            ErrorCode::ApiBadRequest,
        );
    };
    let value = ShardValue::new(*shard.as_bytes());
    let store = app.store.clone();
    // With sealing on, the new shard is on disk (synced) before it is acknowledged.
    let stored = if store.is_sealed() {
        tokio::task::spawn_blocking(move || store.set(value))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
    } else {
        store.set(value)
    };
    match stored {
        Ok(_) => {
            tracing::info!(
                peer_spiffe_id = peer.unwrap_or(""),
                sealed = app.store.is_sealed(),
                "shard stored"
            );
            if let Some(status) = &app.status {
                status(if app.store.is_sealed() {
                    "holding a shard (also sealed to this machine)"
                } else {
                    "holding a shard (in RAM only)"
                });
            }
            json(StatusCode::OK, &ShardPutResponse::default())
        }
        Err(e) => {
            tracing::error!(
                peer_spiffe_id = peer.unwrap_or(""),
                error = %e,
                "cannot write the sealed shard file; the new shard is refused and the previous one \
                 is kept (in memory and on disk); the caller retries"
            );
            error_for(
                KeeperRoute::Contribute,
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::ApiInternal,
            )
        }
    }
}

fn shard(app: &AppState, peer: Option<&str>, body: &[u8]) -> Response {
    if decode_request::<ShardGetRequest>(body).is_err() {
        return error_for(
            KeeperRoute::Shard,
            StatusCode::BAD_REQUEST,
            ErrorCode::ApiBadRequest,
        );
    }
    if !peer.is_some_and(|p| app.roots.is_nexus(p)) {
        return error_for(
            KeeperRoute::Shard,
            StatusCode::UNAUTHORIZED,
            ErrorCode::AccessUnauthorized,
        );
    }
    // Never answer 200 with a null shard: the Go Nexus would panic (docs/protocol.md#bootstrap-and-keepers).
    let Some(value) = app.store.get() else {
        return error_for(
            KeeperRoute::Shard,
            StatusCode::BAD_REQUEST,
            ErrorCode::ApiBadRequest,
        );
    };
    json(
        StatusCode::OK,
        &ShardGetResponse::ok(ShardBytes::new(*value.expose_secret())),
    )
}

fn error_for(route: KeeperRoute, status: StatusCode, code: ErrorCode) -> Response {
    match route {
        KeeperRoute::Contribute => json(status, &ShardPutResponse::error(code)),
        KeeperRoute::Shard => json(status, &ShardGetResponse::error(code)),
    }
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let (status, bytes) = match encode_response(body) {
        Ok(bytes) => (status, bytes),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            encode_response(&SdkErrorBody::marshal_failure()).unwrap_or_default(),
        ),
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in JSON_RESPONSE_HEADERS {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            header::HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    response
}

enum BodyError {
    TooLarge,
    Read,
}

async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, BodyError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(Vec::from(collected.to_bytes())),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Read),
    }
}

fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(&*buf);
}
