//! The HTTP API: one dispatcher for every path (docs/protocol.md#conventions), handlers per area, the health
//! extension routes.
//!
//! Dispatch order (docs/protocol.md#conventions): `GET|HEAD /v1/sys/{health,seal-status}` (extension, no auth) →
//! method ≠ POST → 400 `api_bad_request` → readiness gate (sealed and not memory and path not
//! operator recover/restore → 503 `state_not_ready`, before route lookup) → exact path +
//! `?action=` lookup (lite mode: its subset) → 400 when unknown → pre-body authorization
//! ([`authz::may_be_allowed`]: 401 for a caller no role or policy could allow) → read the body
//! (limit → 400, deadline → 400) → handler. Handlers parse, then authorize, then validate (docs/protocol.md#secrets). Every error goes through
//! [`error::ApiError`] and is rendered once here with the route's typed error body.

pub mod bootstrap;
pub mod cipher;
pub mod error;
pub mod operator;
pub mod policy;
pub mod secrets;
pub mod sys;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde::Serialize;
use spike_identity::PeerId;
use spike_proto::response::{FallbackResponse, SdkErrorBody, encode_response};
use spike_proto::{ApiResponse, ErrorCode, Route};
use tokio::time::Instant;

use crate::audit::{self, AuditEvent};
use crate::authz::{self, Action, NoPolicies};
use crate::state::{NexusState, Unsealed};

pub use error::ApiError;

/// The mTLS API router: every path goes to the dispatcher.
pub fn router(state: NexusState) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

/// The plain (unix socket) health router: only the two health routes.
pub fn health_router(state: NexusState) -> Router {
    Router::new().fallback(health_only).with_state(state)
}

/// One request being handled.
pub struct Cx {
    /// Shared state.
    pub state: NexusState,
    /// The caller's authenticated SPIFFE ID (`None` if the connection carried none).
    pub peer: Option<PeerId>,
    /// The request body.
    pub body: Bytes,
    /// `Content-Type` is exactly `application/octet-stream` (cipher stream mode).
    pub stream: bool,
    /// The resource path for the audit event, set by handlers once known.
    pub resource: String,
}

impl Cx {
    /// Decodes the JSON body (docs/protocol.md#conventions rules); 400 on failure.
    ///
    /// # Errors
    /// [`ApiError::BadRequest`].
    pub fn json<T: serde::de::DeserializeOwned + Default>(&self) -> Result<T, ApiError> {
        spike_proto::decode_request(&self.body).map_err(|e| ApiError::bad(e.to_string()))
    }

    /// The guard: may the caller do `action` on `path`?
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`].
    pub fn authorize(&self, action: Action, path: &str) -> Result<(), ApiError> {
        let roots = &self.state.config().trust_roots;
        let decision = match self.state.unsealed() {
            Some(u) if !u.store.policies_fresh() => {
                // A shared store whose policy changes this instance cannot follow: decide
                // nothing on a cache that may hold revoked grants.
                return Err(ApiError::BackendUnavailable(
                    "the policy cache is stale: the policy listener has not reached PostgreSQL"
                        .into(),
                ));
            }
            Some(u) => authz::require(roots, &u.store, self.peer.as_ref(), action, path),
            None => authz::require(roots, &NoPolicies, self.peer.as_ref(), action, path),
        };
        Ok(decision?)
    }

    /// The unsealed state; 503 if sealed (the gate normally catches this first).
    ///
    /// # Errors
    /// [`ApiError::NotReady`].
    pub fn unsealed(&self) -> Result<Arc<Unsealed>, ApiError> {
        self.state.unsealed().ok_or(ApiError::NotReady)
    }
}

/// Store work queued or running at once, in all. The blocking pool runs 32 at a time and queues
/// the rest without bound; a request whose client disconnects leaves its work (and the body it
/// carries, no longer counted in the request-body budget) in that queue. Taking a permit before
/// queueing bounds it: a request waits for a permit while its client is there, and a queued
/// closure holds its permit until it ran.
pub const MAX_STORE_WORK: usize = 64;

static STORE_WORK: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_STORE_WORK);

/// Runs blocking store work off the async runtime, at most [`MAX_STORE_WORK`] at once.
///
/// # Errors
/// The closure's error, or [`ApiError::Internal`] if the task panicked.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    let permit = STORE_WORK
        .acquire()
        .await
        .map_err(|_| ApiError::internal("store work semaphore closed"))?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await
    .map_err(|_| ApiError::internal("blocking task failed"))?
}

/// Submits a store write and awaits its outcome, counted against [`MAX_STORE_WORK`] like
/// blocking store work. With a backend that queues writes to its writer thread (SQLite), the
/// submission is a channel send and nothing waits in a thread; the permit goes to a task that
/// holds it until the write resolved, so a write whose client went away still counts until
/// the writer answered it. With a backend that writes at once (memory, lite), the whole write
/// runs on the blocking pool, as [`blocking`] does.
///
/// # Errors
/// The write's error, or [`ApiError::Internal`] if the task panicked.
pub async fn write<T, F>(store: &crate::store::Store, submit: F) -> Result<T, ApiError>
where
    T: Unpin + Send + 'static,
    F: FnOnce(&crate::store::Store) -> crate::store::PendingWrite<T> + Send + 'static,
{
    if !store.queues_writes() {
        let store = store.clone();
        return blocking(move || Ok(submit(&store).wait()?)).await;
    }
    let permit = STORE_WORK
        .acquire()
        .await
        .map_err(|_| ApiError::internal("store work semaphore closed"))?;
    let pending = submit(store);
    let outcome = tokio::spawn(async move {
        let outcome = pending.await;
        drop(permit);
        outcome
    })
    .await
    .map_err(|_| ApiError::internal("store write task failed"))?;
    Ok(outcome?)
}

/// A 200 JSON response with SPIKE's headers.
pub fn ok_json<T: Serialize>(body: &T) -> Response {
    json_response(StatusCode::OK, body)
}

/// A JSON response with SPIKE's headers (docs/protocol.md#conventions); a marshal failure becomes the raw 500 body.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match encode_response(body) {
        Ok(bytes) => with_json_headers(status, bytes),
        Err(_) => {
            let fallback = serde_json::to_vec(&SdkErrorBody::marshal_failure()).unwrap_or_default();
            with_json_headers(StatusCode::INTERNAL_SERVER_ERROR, fallback)
        }
    }
}

fn with_json_headers(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    for (name, value) in spike_proto::response::JSON_RESPONSE_HEADERS {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    resp
}

/// A Go `http.Error` style text response (`text/plain; charset=utf-8`, `nosniff`, body =
/// message + newline), used by the cipher stream mode (docs/protocol.md#cipher).
pub fn text_error(status: StatusCode, message: &str) -> Response {
    let mut resp = Response::new(Body::from(format!("{message}\n")));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// A binary (`application/octet-stream`) 200 response.
pub fn octet_stream(bytes: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(bytes));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(spike_proto::cipher::STREAM_CONTENT_TYPE),
    );
    resp
}

fn typed_error<T: ApiResponse>(status: StatusCode, err: &ApiError) -> Response {
    json_response(status, &error::ErrorBody::<T>::of(err))
}

/// The route's typed error body (docs/protocol.md#conventions), plus `detail` for a full disk.
fn error_response(route: Route, err: &ApiError) -> Response {
    use spike_proto::{bootstrap as b, cipher as c, operator as o, policy as p, secrets as s};
    let status = err.status();
    match route {
        Route::SecretPut => typed_error::<s::SecretPutResponse>(status, err),
        Route::SecretGet => typed_error::<s::SecretGetResponse>(status, err),
        Route::SecretDelete => typed_error::<s::SecretDeleteResponse>(status, err),
        Route::SecretUndelete => typed_error::<s::SecretUndeleteResponse>(status, err),
        Route::SecretList => typed_error::<s::SecretListResponse>(status, err),
        Route::SecretMetadataGet => typed_error::<s::SecretMetadataResponse>(status, err),
        Route::PolicyPut => typed_error::<p::PolicyPutResponse>(status, err),
        Route::PolicyGet => typed_error::<p::PolicyReadResponse>(status, err),
        Route::PolicyDelete => typed_error::<p::PolicyDeleteResponse>(status, err),
        Route::PolicyList => typed_error::<p::PolicyListResponse>(status, err),
        Route::OperatorRecover => typed_error::<o::RecoverResponse>(status, err),
        Route::OperatorRestore => typed_error::<o::RestoreResponse>(status, err),
        Route::CipherEncrypt => typed_error::<c::CipherEncryptResponse>(status, err),
        Route::CipherDecrypt => typed_error::<c::CipherDecryptResponse>(status, err),
        Route::BootstrapVerify => typed_error::<b::BootstrapVerifyResponse>(status, err),
    }
}

fn fallback(status: StatusCode, code: ErrorCode) -> Response {
    json_response(status, &FallbackResponse::error(code))
}

/// The audit `path` of a request that names a secret path or policy name: the name once it
/// is valid, else [`INVALID_RESOURCE`], so that no unvalidated request fragment reaches the
/// audit log (docs/security.md#logs).
pub(crate) fn audit_resource(valid: bool, name: impl FnOnce() -> String) -> String {
    if valid {
        name()
    } else {
        INVALID_RESOURCE.to_owned()
    }
}

/// The audit `path` of a request whose path or name is invalid.
pub const INVALID_RESOURCE: &str = "<invalid>";

/// Logs a failed request once, at a level matching its class. Server-side failures carry
/// their cause in the message text (journalctl prints only MESSAGE by default); the causes
/// are store and crypto errors, which never hold secret values.
fn log_error(err: &ApiError, action: &str, peer: &str, request_id: &str) {
    match err {
        ApiError::Internal(msg) => {
            tracing::error!(action, peer_spiffe_id = peer, request_id, error = %msg, "request failed: {msg}");
        }
        ApiError::StorageFull(msg) => {
            tracing::error!(action, peer_spiffe_id = peer, request_id, error = %msg, "request failed: storage full: {msg}");
        }
        ApiError::OutcomeUnknown(msg) => {
            tracing::warn!(action, peer_spiffe_id = peer, request_id, error = %msg, "request failed, outcome unknown: {msg}");
        }
        ApiError::BackendUnavailable(msg) => {
            tracing::info!(action, peer_spiffe_id = peer, request_id, error = %msg, "request failed: database unavailable: {msg}");
        }
        ApiError::Unauthorized => {
            tracing::info!(action, peer_spiffe_id = peer, request_id, "request denied");
        }
        other => {
            tracing::debug!(action, peer_spiffe_id = peer, request_id, error = %other, "request rejected");
        }
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, Response> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(fallback(StatusCode::BAD_REQUEST, ErrorCode::ApiBadRequest))
        }
        Err(_) => Err(json_response(
            StatusCode::BAD_REQUEST,
            &SdkErrorBody::read_failure(),
        )),
    }
}

/// Paths of the health extension.
pub const SYS_HEALTH: &str = "/v1/sys/health";
/// Path of the seal-status extension.
pub const SYS_SEAL_STATUS: &str = "/v1/sys/seal-status";

fn is_sys_read(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && (path == SYS_HEALTH || path == SYS_SEAL_STATUS)
}

async fn health_only(State(state): State<NexusState>, req: Request) -> Response {
    let start = Instant::now();
    let path = req.uri().path().to_owned();
    let resp = if is_sys_read(req.method(), &path) {
        sys::handle(&state, req.method(), &path, req.uri().query())
    } else {
        fallback(StatusCode::NOT_FOUND, ErrorCode::ApiNotFound)
    };
    state
        .metrics()
        .record("sys_health_socket", resp.status().as_u16(), start.elapsed());
    resp
}

/// The single dispatcher of docs/protocol.md#conventions.
pub async fn dispatch(State(state): State<NexusState>, req: Request) -> Response {
    let start = Instant::now();
    let request_id = audit::request_id();
    let (parts, body) = req.into_parts();
    let peer_id = parts.extensions.get::<PeerId>().cloned();
    // The text form, for the audit event and the log only.
    let peer = peer_id
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();

    let finish = |action: &'static str, resource: &str, resp: Response| -> Response {
        let elapsed = start.elapsed();
        let status = resp.status().as_u16();
        state.metrics().record(action, status, elapsed);
        state.audit().emit(&AuditEvent {
            request_id: &request_id,
            peer_spiffe_id: &peer,
            action,
            path: resource,
            status,
            duration: elapsed,
        });
        resp
    };

    if is_sys_read(&parts.method, &path) {
        let resp = sys::handle(&state, &parts.method, &path, parts.uri.query());
        state
            .metrics()
            .record("sys_health", resp.status().as_u16(), start.elapsed());
        return resp;
    }
    if parts.method != Method::POST {
        let resp = fallback(StatusCode::BAD_REQUEST, ErrorCode::ApiBadRequest);
        return finish("fallback", &path, resp);
    }
    if !state.is_memory()
        && !spike_proto::paths::bypasses_readiness_gate(&path)
        && !state.is_unsealed()
    {
        let resp = fallback(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::StateNotReady);
        return finish("not_ready", &path, resp);
    }
    let action_q = spike_proto::paths::action_from_query(parts.uri.query());
    let Some(route) = Route::parse_for(state.is_lite(), &path, action_q.as_deref()) else {
        let resp = fallback(StatusCode::BAD_REQUEST, ErrorCode::ApiBadRequest);
        return finish("fallback", &path, resp);
    };
    let action = Action::from(route);
    // Authorization that does not need the body runs before the body is read: a caller that
    // no policy or role could allow never makes Nexus buffer (or wait for) a body.
    let may = match state.unsealed() {
        Some(u) => authz::may_be_allowed(
            &state.config().trust_roots,
            &u.store,
            peer_id.as_ref(),
            action,
        ),
        None => authz::may_be_allowed(
            &state.config().trust_roots,
            &NoPolicies,
            peer_id.as_ref(),
            action,
        ),
    };
    if !may {
        let err = ApiError::from(authz::AuthzError::Denied { action });
        log_error(&err, action.name(), &peer, &request_id);
        return finish(action.name(), &path, error_response(route, &err));
    }
    let body = match read_body(body, state.config().limits.request_body_limit).await {
        Ok(b) => b,
        Err(resp) => return finish(action.name(), &path, resp),
    };
    let stream = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| spike_proto::cipher::is_stream_mode(Some(v)));
    let mut cx = Cx {
        state: state.clone(),
        peer: peer_id,
        body,
        stream,
        resource: String::new(),
    };
    let result = match route {
        Route::SecretPut => secrets::put(&mut cx).await,
        Route::SecretGet => secrets::get(&mut cx).await,
        Route::SecretDelete => secrets::delete(&mut cx).await,
        Route::SecretUndelete => secrets::undelete(&mut cx).await,
        Route::SecretList => secrets::list(&mut cx).await,
        Route::SecretMetadataGet => secrets::metadata(&mut cx).await,
        Route::PolicyPut => policy::put(&mut cx).await,
        Route::PolicyGet => policy::get(&mut cx).await,
        Route::PolicyDelete => policy::delete(&mut cx).await,
        Route::PolicyList => policy::list(&mut cx).await,
        Route::OperatorRecover => operator::recover(&mut cx).await,
        Route::OperatorRestore => operator::restore(&mut cx).await,
        Route::CipherEncrypt => cipher::encrypt(&mut cx).await,
        Route::CipherDecrypt => cipher::decrypt(&mut cx).await,
        Route::BootstrapVerify => bootstrap::verify(&mut cx).await,
    };
    let resource = if cx.resource.is_empty() {
        path.clone()
    } else {
        std::mem::take(&mut cx.resource)
    };
    let resp = match result {
        Ok(resp) => resp,
        Err(err) => {
            log_error(&err, action.name(), &peer, &request_id);
            error_response(route, &err)
        }
    };
    finish(action.name(), &resource, resp)
}

#[cfg(test)]
mod store_work_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// The tests of the process-wide store-work bound run one at a time.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// A backend that queues writes and answers them when the test says so.
    #[derive(Default)]
    struct HeldWrites {
        replies: parking_lot::Mutex<
            Vec<futures::channel::oneshot::Sender<Result<(), crate::store::StoreError>>>,
        >,
    }

    impl crate::store::Backend for HeldWrites {
        fn kind(&self) -> crate::store::BackendKind {
            crate::store::BackendKind::Sqlite
        }
        fn load_secret(
            &self,
            _: &str,
        ) -> Result<Option<crate::model::Secret>, crate::store::StoreError> {
            Ok(None)
        }
        fn store_secret(
            &self,
            _: &str,
            _: &crate::model::Secret,
            _: &[crate::model::Version],
        ) -> Result<(), crate::store::StoreError> {
            Ok(())
        }
        fn update_secret(
            &self,
            _: &str,
            _: crate::store::SecretUpdate<'static>,
        ) -> crate::store::PendingWrite {
            let (reply, outcome) = futures::channel::oneshot::channel();
            self.replies.lock().push(reply);
            crate::store::PendingWrite::queued(outcome)
        }
        fn queues_writes(&self) -> bool {
            true
        }
        fn list_secret_paths(&self) -> Result<Vec<String>, crate::store::StoreError> {
            Ok(Vec::new())
        }
        fn load_policies(&self) -> Result<Vec<crate::model::Policy>, crate::store::StoreError> {
            Ok(Vec::new())
        }
        fn store_policy(&self, _: &crate::model::Policy) -> Result<(), crate::store::StoreError> {
            Ok(())
        }
        fn delete_policy(&self, _: &str) -> Result<bool, crate::store::StoreError> {
            Ok(false)
        }
        fn is_empty(&self) -> Result<bool, crate::store::StoreError> {
            Ok(true)
        }
    }

    /// A queued write whose request went away (its future dropped, as when a client closes
    /// the connection) keeps its store-work permit until the writer answered it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_queued_write_holds_its_permit_after_its_request_went_away() {
        let _serial = SERIAL.lock().await;
        let backend = Arc::new(HeldWrites::default());
        let store = crate::store::Store::new(backend.clone(), 10).unwrap();
        for i in 0..5 {
            let store = store.clone();
            let request = tokio::spawn(async move {
                write(&store, move |s| {
                    s.submit_put_secret(&format!("p{i}"), crate::model::SecretData::new())
                })
                .await
            });
            while backend.replies.lock().len() < i + 1 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            request.abort();
            assert!(request.await.is_err_and(|e| e.is_cancelled()));
        }
        assert_eq!(STORE_WORK.available_permits(), MAX_STORE_WORK - 5);
        for reply in backend.replies.lock().drain(..) {
            reply.send(Ok(())).unwrap();
        }
        for _ in 0..500 {
            if STORE_WORK.available_permits() == MAX_STORE_WORK {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!(
            "permits not released after the writes resolved: {} of {MAX_STORE_WORK}",
            STORE_WORK.available_permits()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_work_is_bounded_however_many_requests_queue_it() {
        let _serial = SERIAL.lock().await;
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..(MAX_STORE_WORK * 3) {
            let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
            calls.spawn(blocking(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(20));
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }));
        }
        while let Some(done) = calls.join_next().await {
            assert!(done.unwrap().is_ok());
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= MAX_STORE_WORK, "{peak} closures ran at once");
        assert!(peak > 1, "the closures ran one at a time: {peak}");
    }
}
