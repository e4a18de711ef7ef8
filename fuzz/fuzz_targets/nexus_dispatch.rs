//! The Nexus HTTP dispatcher (docs/protocol.md#conventions) without TLS: a sequence of requests with arbitrary
//! method, path, query, `Content-Type`, caller SPIFFE ID and body, sent through
//! `spike_nexus::api::router` over a fresh state per input.
//!
//! Modes: `memory` (unsealed at once), `lite` (sealed; operator restore can unseal it with
//! no I/O) and `sqlite` (sealed; its database lives in a per-input temporary directory).
//! Bodies are either raw bytes or a JSON object carrying every request field, so the
//! handlers behind the JSON decode are reached too. No request may panic or answer 500.

#![no_main]

use std::sync::{Arc, LazyLock};

use axum::body::Body;
use http_body_util::BodyExt;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use spike_daemon::notify::Notifier;
use spike_identity::{PeerId, SpiffeId};
use spike_nexus::config::{Config, ConfigFile, PeerList, TrustRootsFile};
use spike_nexus::metrics::Metrics;
use spike_nexus::state::NexusState;
use spike_proto::Route;
use spike_proto::serde_helpers::encode_base64;
use tower::ServiceExt;

const PEERS: [&str; 8] = [
    "spiffe://spike.test/spike/pilot/role/superuser",
    "spiffe://spike.test/spike/pilot/role/recover",
    "spiffe://spike.test/spike/pilot/role/restore",
    "spiffe://spike.test/spike/bootstrap",
    "spiffe://spike.test/spike/nexus",
    "spiffe://spike.test/spike/workload/role/lite",
    "spiffe://spike.test/app/web",
    "spiffe://other.test/spike/pilot/role/superuser",
];

const ACTIONS: [&str; 7] = ["", "get", "delete", "undelete", "list", "check", "read"];

static RUNTIME: LazyLock<Option<tokio::runtime::Runtime>> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()
});

fn config(backend: &str) -> Option<Config> {
    let root = Some("spike.test".to_owned());
    let file = ConfigFile {
        listen: "127.0.0.1:0".to_owned(),
        backend_store: backend.to_owned(),
        keeper_peers: Some(PeerList::List(vec![
            "https://127.0.0.1:1".to_owned(),
            "https://127.0.0.1:2".to_owned(),
            "https://127.0.0.1:3".to_owned(),
        ])),
        shamir_shares: 3,
        shamir_threshold: 2,
        trust_roots: TrustRootsFile {
            nexus: root.clone(),
            keeper: root.clone(),
            bootstrap: root.clone(),
            pilot: root.clone(),
            lite_workload: root,
        },
        health_socket: Some(std::path::PathBuf::new()),
        metrics_listen: String::new(),
        request_body_limit: 64 * 1024,
        ..ConfigFile::default()
    };
    Config::try_from(file).ok()
}

static CONFIGS: LazyLock<[Option<Config>; 3]> =
    LazyLock::new(|| [config("memory"), config("lite"), config("sqlite")]);

#[derive(Debug, Arbitrary)]
struct Fields {
    path: Option<String>,
    values: Option<Vec<(String, String)>>,
    version: Option<i64>,
    versions: Option<Vec<i64>>,
    name: Option<String>,
    id_text: Option<String>,
    id_number: Option<i64>,
    spiffeid_pattern: Option<String>,
    path_pattern: Option<String>,
    permissions: Option<Vec<String>>,
    plaintext: Option<Vec<u8>>,
    nonce: Option<Vec<u8>>,
    ciphertext: Option<Vec<u8>>,
    algorithm: Option<String>,
    shard: Option<[u8; 32]>,
}

impl Fields {
    fn to_json(&self) -> Vec<u8> {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_owned(), v);
        };
        if let Some(v) = &self.path {
            put("path", json!(v));
        }
        if let Some(v) = &self.values {
            put(
                "values",
                Value::Object(v.iter().map(|(k, v)| (k.clone(), json!(v))).collect()),
            );
        }
        if let Some(v) = self.version {
            put("version", json!(v));
        }
        if let Some(v) = &self.versions {
            put("versions", json!(v));
        }
        if let Some(v) = &self.name {
            put("name", json!(v));
        }
        if let Some(v) = &self.id_text {
            put("id", json!(v));
        }
        if let Some(v) = self.id_number {
            put("id", json!(v));
        }
        if let Some(v) = &self.spiffeid_pattern {
            put("spiffeidPattern", json!(v));
        }
        if let Some(v) = &self.path_pattern {
            put("pathPattern", json!(v));
        }
        if let Some(v) = &self.permissions {
            put("permissions", json!(v));
        }
        for (key, bytes) in [
            ("plaintext", &self.plaintext),
            ("nonce", &self.nonce),
            ("ciphertext", &self.ciphertext),
        ] {
            if let Some(v) = bytes {
                put(key, json!(encode_base64(v)));
            }
        }
        if let Some(v) = &self.algorithm {
            put("algorithm", json!(v));
        }
        if let Some(v) = &self.shard {
            put("shard", json!(v));
        }
        serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
    }
}

#[derive(Debug, Arbitrary)]
enum RequestBody {
    Raw(Vec<u8>),
    Fields(Box<Fields>),
}

#[derive(Debug, Arbitrary)]
struct Request {
    /// 0 = POST, 1 = GET, 2 = HEAD, else PUT.
    method: u8,
    /// `< 15`: a route's path; 15/16: the sys health paths; otherwise `raw_path`.
    path: u8,
    raw_path: String,
    /// `< 7`: `action=<ACTIONS[i]>`; 7: no query; otherwise `raw_query`.
    query: u8,
    raw_query: String,
    /// 0 = none, 1 = JSON, 2 = octet-stream, else `raw_content_type`.
    content_type: u8,
    raw_content_type: String,
    /// `< 8`: `PEERS[i]`, otherwise no peer ID.
    peer: u8,
    body: RequestBody,
}

#[derive(Debug, Arbitrary)]
struct Input {
    mode: u8,
    requests: Vec<Request>,
}

fn build(req: &Request) -> Option<http::Request<Body>> {
    let method = match req.method {
        0 => http::Method::POST,
        1 => http::Method::GET,
        2 => http::Method::HEAD,
        _ => http::Method::PUT,
    };
    let path = match req.path {
        p @ 0..15 => Route::ALL[usize::from(p)].path(),
        15 => spike_nexus::api::SYS_HEALTH,
        16 => spike_nexus::api::SYS_SEAL_STATUS,
        _ => &req.raw_path,
    };
    let uri = match req.query {
        q @ 0..7 => format!("{path}?action={}", ACTIONS[usize::from(q)]),
        7 => path.to_owned(),
        _ => format!("{path}?{}", req.raw_query),
    };
    let mut builder = http::Request::builder().method(method).uri(uri);
    builder = match req.content_type {
        0 => builder,
        1 => builder.header(http::header::CONTENT_TYPE, "application/json"),
        2 => builder.header(http::header::CONTENT_TYPE, "application/octet-stream"),
        _ => builder.header(http::header::CONTENT_TYPE, req.raw_content_type.as_str()),
    };
    if let Some(id) = PEERS.get(usize::from(req.peer)) {
        let id: SpiffeId = id.parse().ok()?;
        builder = builder.extension(PeerId::new(id));
    }
    let body = match &req.body {
        RequestBody::Raw(bytes) => bytes.clone(),
        RequestBody::Fields(fields) => fields.to_json(),
    };
    builder.body(Body::from(body)).ok()
}

fuzz_target!(|input: Input| {
    let Some(rt) = RUNTIME.as_ref() else {
        return;
    };
    let mode = usize::from(input.mode % 3);
    let Some(base) = CONFIGS[mode].as_ref() else {
        return;
    };
    let mut config = base.clone();
    let dir = if mode == 2 {
        let Ok(dir) = tempfile::tempdir() else {
            return;
        };
        config.data_dir = dir.path().to_owned();
        Some(dir)
    } else {
        None
    };
    let Ok(state) = NexusState::new(Arc::new(config), Notifier::disabled(), Metrics::new()) else {
        return;
    };
    let router = spike_nexus::api::router(state);
    rt.block_on(async {
        for req in input.requests.iter().take(16) {
            let Some(request) = build(req) else {
                continue;
            };
            let Ok(resp) = router.clone().oneshot(request).await;
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            assert_ne!(status, http::StatusCode::INTERNAL_SERVER_ERROR, "{req:?}");
        }
    });
    drop(dir);
});
