//! The Keeper HTTP dispatcher (docs/protocol.md#bootstrap-and-keepers) without TLS: a sequence of requests with arbitrary
//! method, path, query, caller SPIFFE ID and body through `spike_keeper::api::router` over
//! a fresh shard store per input. No request may panic or answer 500.

#![no_main]

use std::sync::{Arc, LazyLock};

use axum::body::Body;
use http_body_util::BodyExt;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use spike_identity::{PeerId, SpiffeId};
use spike_keeper::state::ShardStore;
use spike_proto::paths::{KEEPER_CONTRIBUTE, KEEPER_SHARD};
use spike_proto::spiffe_id::{TrustRoot, TrustRoots};
use tower::ServiceExt;

const PEERS: [&str; 4] = [
    "spiffe://spike.test/spike/nexus",
    "spiffe://spike.test/spike/bootstrap",
    "spiffe://spike.test/spike/pilot/role/superuser",
    "spiffe://other.test/spike/nexus",
];

static RUNTIME: LazyLock<Option<tokio::runtime::Runtime>> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()
});

#[derive(Debug, Arbitrary)]
struct Request {
    /// 0 = POST, else GET.
    method: u8,
    /// 0 = contribute, 1 = shard, else `raw_path`.
    path: u8,
    raw_path: String,
    query: Option<String>,
    /// `< 4`: `PEERS[i]`, otherwise no peer ID.
    peer: u8,
    /// Some: a `{"shard":[...]}` body; None: `raw_body`.
    shard: Option<Vec<u16>>,
    raw_body: Vec<u8>,
}

fn build(req: &Request) -> Option<http::Request<Body>> {
    let method = if req.method == 0 {
        http::Method::POST
    } else {
        http::Method::GET
    };
    let path = match req.path {
        0 => KEEPER_CONTRIBUTE,
        1 => KEEPER_SHARD,
        _ => &req.raw_path,
    };
    let uri = match &req.query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut builder = http::Request::builder().method(method).uri(uri);
    if let Some(id) = PEERS.get(usize::from(req.peer)) {
        let id: SpiffeId = id.parse().ok()?;
        builder = builder.extension(PeerId::new(id));
    }
    let body = match &req.shard {
        Some(values) => {
            format!("{{\"shard\":{}}}", serde_json::to_string(values).ok()?).into_bytes()
        }
        None => req.raw_body.clone(),
    };
    builder.body(Body::from(body)).ok()
}

fuzz_target!(|requests: Vec<Request>| {
    let Some(rt) = RUNTIME.as_ref() else {
        return;
    };
    let Ok(root) = TrustRoot::new("spike.test") else {
        return;
    };
    let router = spike_keeper::api::router(
        ShardStore::new(),
        Arc::new(TrustRoots::uniform(root)),
        64 * 1024,
    );
    rt.block_on(async {
        for req in requests.iter().take(16) {
            let Some(request) = build(req) else {
                continue;
            };
            let Ok(resp) = router.clone().oneshot(request).await;
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            assert_ne!(status, http::StatusCode::INTERNAL_SERVER_ERROR, "{req:?}");
        }
    });
});
