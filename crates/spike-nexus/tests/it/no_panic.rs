//! No-panic properties for what a caller controls: policy patterns (compiled and evaluated
//! through `Policy::new`/`grants`) and whole requests through the HTTP dispatcher, built with
//! `api::router` over a memory, lite or sqlite state without TLS (the peer ID is the
//! `PeerId` request extension the mTLS acceptor would insert). Nothing may panic, and no
//! request may produce a 500. The coverage-guided versions live in `fuzz/` (cargo-fuzz).

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use spike_daemon::notify::Notifier;
use spike_identity::{PeerId, SpiffeId};
use spike_nexus::config::{Config, ConfigFile, PeerList, TrustRootsFile};
use spike_nexus::metrics::Metrics;
use spike_nexus::model::policy::{self as pol, Permission, Policy};
use spike_nexus::state::NexusState;
use spike_proto::Route;
use spike_proto::serde_helpers::encode_base64;
use tempfile::TempDir;
use time::OffsetDateTime;
use tower::ServiceExt;

const SUPERUSER: &str = "spiffe://spike.test/spike/pilot/role/superuser";
const PEERS: [&str; 8] = [
    SUPERUSER,
    "spiffe://spike.test/spike/pilot/role/recover",
    "spiffe://spike.test/spike/pilot/role/restore",
    "spiffe://spike.test/spike/bootstrap",
    "spiffe://spike.test/spike/nexus",
    "spiffe://spike.test/spike/workload/role/lite",
    "spiffe://spike.test/app/web",
    "spiffe://other.test/spike/pilot/role/superuser",
];

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig::with_cases(cases)
}

// ---- policies ----

/// Regex-heavy strings: valid patterns, broken groups, huge repetitions, anchors.
fn pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\^$.*+?()\\[\\]{}|\\\\a-z0-9/:,-]{0,24}",
        "\\^?spiffe://[a-z.\\\\*]{1,12}(/[a-z.*+]{0,8}){0,3}\\$?",
        Just("a{1000}{1000}".to_owned()),
        Just("(?x)(?-u)\\xff[^\\x00-\\x{10FFFF}]".to_owned()),
        Just("spike/system/acl".to_owned()),
        Just("^spike/system/(acl|secret|cipher)$".to_owned()),
    ]
}

fn permissions() -> impl Strategy<Value = Vec<Permission>> {
    proptest::collection::vec(proptest::sample::select(Permission::ALL.to_vec()), 0..5)
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn policies_never_panic(
        name in "[a-z]{0,4}",
        id_pattern in pattern(),
        path_pattern in pattern(),
        perms in permissions(),
        wants in permissions(),
        peer in prop_oneof![Just(SUPERUSER.to_owned()), any::<String>()],
        path in prop_oneof![
            proptest::sample::select(pol::RESERVED_PATHS.to_vec()).prop_map(str::to_owned),
            "[a-z/]{0,16}",
            any::<String>(),
        ],
    ) {
        let now = OffsetDateTime::UNIX_EPOCH;
        let _ = pol::pattern_is_precise_identity(&id_pattern);
        let _ = pol::pattern_describes_path(&path_pattern, &path);
        let stored = Policy::from_stored(
            name.clone(), id_pattern.clone(), path_pattern.clone(), perms.clone(), now, now,
        );
        let created = Policy::new(name, id_pattern, path_pattern, perms, now, now);
        if let Ok(policy) = &created {
            prop_assert!(stored.is_ok());
            let _ = policy.grants(&peer, &path, &wants);
        }
        if let Ok(policy) = &stored {
            let granted = policy.grants(&peer, &path, &wants);
            // A grant needs the permissions, whatever the patterns say.
            if granted {
                prop_assert!(pol::permissions_satisfy(&policy.permissions, &wants));
            }
        }
    }
}

// ---- the dispatcher ----

#[derive(Debug, Clone, Copy)]
enum Mode {
    Memory,
    Lite,
    Sqlite,
}

/// A fresh state and router; the temporary directory holds the sqlite database.
fn nexus(mode: Mode) -> (axum::Router, NexusState, Option<TempDir>) {
    let dir = matches!(mode, Mode::Sqlite).then(|| tempfile::tempdir().unwrap());
    let root = Some("spike.test".to_owned());
    let file = ConfigFile {
        listen: "127.0.0.1:0".to_owned(),
        backend_store: match mode {
            Mode::Memory => "memory",
            Mode::Lite => "lite",
            Mode::Sqlite => "sqlite",
        }
        .to_owned(),
        keeper_peers: Some(PeerList::urls(
            &(1..=3)
                .map(|p| format!("https://127.0.0.1:{p}"))
                .collect::<Vec<_>>(),
        )),
        shamir_shares: 3,
        shamir_threshold: 2,
        data_dir: dir.as_ref().map(|d| d.path().to_owned()),
        trust_roots: TrustRootsFile {
            nexus: root.clone(),
            keeper: root.clone(),
            bootstrap: root.clone(),
            pilot: root.clone(),
            lite_workload: root,
        },
        health_socket: Some(PathBuf::new()),
        metrics_listen: String::new(),
        request_body_limit: 16 * 1024,
        ..ConfigFile::default()
    };
    let config = Config::try_from(file).unwrap();
    let state = NexusState::new(Arc::new(config), Notifier::disabled(), Metrics::new()).unwrap();
    (spike_nexus::api::router(state.clone()), state, dir)
}

#[derive(Debug, Clone)]
struct Req {
    method: Method,
    uri: String,
    content_type: Option<String>,
    peer: Option<&'static str>,
    body: Vec<u8>,
}

fn to_request(req: &Req) -> Option<http::Request<Body>> {
    let mut builder = http::Request::builder()
        .method(req.method.clone())
        .uri(req.uri.as_str());
    if let Some(ct) = &req.content_type {
        builder = builder.header(http::header::CONTENT_TYPE, ct.as_str());
    }
    if let Some(peer) = req.peer {
        builder = builder.extension(PeerId::new(peer.parse::<SpiffeId>().unwrap()));
    }
    builder.body(Body::from(req.body.clone())).ok()
}

async fn send(router: &axum::Router, req: &Req) -> Option<(StatusCode, Vec<u8>)> {
    let request = to_request(req)?;
    let Ok(resp) = router.clone().oneshot(request).await;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Some((status, body))
}

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-3i64..5).prop_map(Value::from),
        "[a-z/._-]{0,12}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| Value::from(encode_base64(&b))),
        proptest::collection::vec(-2i64..300, 0..34).prop_map(|v| json!(v)),
        proptest::collection::vec("read|write|list|execute|super|x", 0..3).prop_map(|v| json!(v)),
        proptest::collection::btree_map("[a-z ._]{0,4}", "[a-z]{0,4}", 0..3).prop_map(|m| json!(m)),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let key = "path|values|version|versions|name|id|spiffeidPattern|pathPattern|permissions|plaintext|nonce|ciphertext|algorithm|shard";
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        Just(b"null".to_vec()),
        proptest::collection::vec((key, json_value()), 0..6).prop_map(|fields| {
            let map: Map<String, Value> = fields.into_iter().collect();
            serde_json::to_vec(&Value::Object(map)).unwrap()
        }),
    ]
}

fn request() -> impl Strategy<Value = Req> {
    let path = prop_oneof![
        proptest::sample::select(Route::ALL.to_vec()).prop_map(|r| r.path().to_owned()),
        Just(spike_nexus::api::SYS_HEALTH.to_owned()),
        Just(spike_nexus::api::SYS_SEAL_STATUS.to_owned()),
        "/[a-z/%.]{0,20}",
    ];
    let query = prop_oneof![
        Just(String::new()),
        "\\?action=(get|delete|undelete|list|check|read|)",
        "\\?[a-z=&;%+0-9]{0,16}",
    ];
    let method = proptest::sample::select(vec![
        Method::POST,
        Method::POST,
        Method::POST,
        Method::GET,
        Method::HEAD,
        Method::PUT,
    ]);
    let content_type = proptest::option::of(prop_oneof![
        Just("application/json".to_owned()),
        Just("application/octet-stream".to_owned()),
        "[a-z/;= -]{0,24}",
    ]);
    let peer = proptest::option::weighted(0.9, proptest::sample::select(PEERS.to_vec()));
    (method, path, query, content_type, peer, body()).prop_map(
        |(method, path, query, content_type, peer, body)| Req {
            method,
            uri: format!("{path}{query}"),
            content_type,
            peer,
            body,
        },
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn dispatcher_never_panics_nor_fails_internally(
        mode in proptest::sample::select(vec![Mode::Memory, Mode::Memory, Mode::Lite, Mode::Sqlite]),
        requests in proptest::collection::vec(request(), 1..5),
    ) {
        let rt = runtime();
        let (router, _state, _dir) = nexus(mode);
        for req in &requests {
            if let Some((status, _)) = rt.block_on(send(&router, req)) {
                prop_assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{:?}", req);
            }
        }
    }
}

/// The harness above reaches the handlers: a superuser's put and get succeed, and the same
/// request without a peer ID is refused. Guards the property test against testing only the
/// 400 fallback.
#[test]
fn dispatcher_harness_reaches_the_handlers() {
    let rt = runtime();
    let (router, state, _dir) = nexus(Mode::Memory);
    assert!(state.is_unsealed());
    let post = |uri: &str, peer: Option<&'static str>, body: &str| Req {
        method: Method::POST,
        uri: uri.to_owned(),
        content_type: Some("application/json".to_owned()),
        peer,
        body: body.as_bytes().to_vec(),
    };
    let put = post(
        "/v1/store/secrets",
        Some(SUPERUSER),
        r#"{"path":"tenants/a","values":{"user":"u1"}}"#,
    );
    let (status, _) = rt.block_on(send(&router, &put)).unwrap();
    assert_eq!(status, StatusCode::OK);
    let get = post(
        "/v1/store/secrets?action=get",
        Some(SUPERUSER),
        r#"{"path":"tenants/a"}"#,
    );
    let (status, body) = rt.block_on(send(&router, &get)).unwrap();
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["data"]["user"], "u1");
    let anonymous = post(
        "/v1/store/secrets?action=get",
        None,
        r#"{"path":"tenants/a"}"#,
    );
    let (status, _) = rt.block_on(send(&router, &anonymous)).unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
