//! The two routes, their guards and SPIKE's exact error bodies (docs/protocol.md#bootstrap-and-keepers).

use bytes::Bytes;
use http::Method;
use spike_client::{ClientError, RawResponse};
use spike_proto::ShardBytes;

use crate::support::{Running, client, start_keeper, world};

fn shard_json(byte: u8) -> String {
    format!(r#"{{"shard":[{}]}}"#, vec![byte.to_string(); 32].join(","))
}

async fn post(k: &Running, who: &spike_identity::Identity, path: &str, body: &str) -> RawResponse {
    client(who, &k.url)
        .http()
        .request(
            Method::POST,
            path,
            None,
            Some("application/json"),
            Bytes::from(body.to_owned()),
        )
        .await
        .unwrap()
}

fn text(r: &RawResponse) -> &str {
    std::str::from_utf8(&r.body).unwrap()
}

#[tokio::test]
async fn nexus_contributes_then_reads_the_shard() {
    let w = world().await;
    let k = start_keeper(&w.wl).await;
    let nexus = client(&w.nexus, &k.url);
    nexus.contribute(ShardBytes::new([42; 32])).await.unwrap();
    assert_eq!(nexus.shard().await.unwrap().as_bytes(), &[42; 32]);
    // A later contribution overwrites.
    let mut v = [0u8; 32];
    v[0] = 1;
    nexus.contribute(ShardBytes::new(v)).await.unwrap();
    assert_eq!(nexus.shard().await.unwrap().as_bytes(), &v);
    assert_eq!(k.store.get().unwrap().expose_secret(), &v);

    // Exact success bodies and headers.
    let r = post(&k, &w.nexus, "/v1/store/shard", "{}").await;
    assert_eq!(r.status, 200);
    let expected = format!(r#"{{"shard":[1{}],"Err":""}}"#, ",0".repeat(31));
    assert_eq!(text(&r), expected);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    let r = post(&k, &w.nexus, "/v1/store/contribute", &shard_json(3)).await;
    assert_eq!((r.status, text(&r)), (200, "{}"));
}

#[tokio::test]
async fn bootstrap_may_contribute_but_not_read() {
    let w = world().await;
    let k = start_keeper(&w.wl).await;
    let boot = client(&w.bootstrap, &k.url);
    boot.contribute(ShardBytes::new([7; 32])).await.unwrap();
    let err = boot.shard().await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized { .. }), "{err:?}");
    let r = post(&k, &w.bootstrap, "/v1/store/shard", "{}").await;
    assert_eq!(
        (r.status, text(&r)),
        (401, r#"{"shard":null,"Err":"access_unauthorized"}"#)
    );
    assert!(k.store.has_shard());
}

#[tokio::test]
async fn shard_before_contribute_is_400_with_go_body() {
    let w = world().await;
    let k = start_keeper(&w.wl).await;
    let r = post(&k, &w.nexus, "/v1/store/shard", "{}").await;
    assert_eq!(
        (r.status, text(&r)),
        (400, r#"{"shard":null,"Err":"api_bad_request"}"#)
    );
    let err = client(&w.nexus, &k.url).shard().await.unwrap_err();
    assert!(matches!(err, ClientError::BadRequest { .. }), "{err:?}");
}

#[tokio::test]
async fn bad_contributions_are_400() {
    let w = world().await;
    let k = start_keeper(&w.wl).await;
    for body in [
        shard_json(0).as_str(),
        r#"{"shard":null}"#,
        "{}",
        "null",
        "",
        "not json",
        "[]",
        r#"{"shard":[256]}"#,
        r#"{"shard":"AAAA"}"#,
        "{} trailing",
    ] {
        let r = post(&k, &w.nexus, "/v1/store/contribute", body).await;
        assert_eq!(
            (r.status, text(&r)),
            (400, r#"{"err":"api_bad_request"}"#),
            "body {body:?}"
        );
    }
    assert!(!k.store.has_shard(), "nothing was stored");
    // Bad JSON on the shard route gets the shard-shaped body.
    let r = post(&k, &w.nexus, "/v1/store/shard", "{").await;
    assert_eq!(
        (r.status, text(&r)),
        (400, r#"{"shard":null,"Err":"api_bad_request"}"#)
    );
    // Oversized bodies are refused without being stored.
    let big = format!(r#"{{"shard":[1],"pad":"{}"}}"#, "x".repeat(70 * 1024));
    let r = post(&k, &w.nexus, "/v1/store/contribute", &big).await;
    assert_eq!((r.status, text(&r)), (400, r#"{"err":"api_bad_request"}"#));
    assert!(!k.store.has_shard());
}

#[tokio::test]
async fn other_methods_and_paths_get_the_fallback() {
    let w = world().await;
    let k = start_keeper(&w.wl).await;
    let http = client(&w.nexus, &k.url);
    let http = http.http();
    let cases = [
        (Method::GET, "/v1/store/shard", None),
        (Method::PUT, "/v1/store/contribute", None),
        (Method::POST, "/v1/store/keep", None),
        (Method::POST, "/v1/store/shard/", None),
        (Method::POST, "/", None),
        (Method::POST, "/v1/store/shard", Some("get")),
    ];
    for (method, path, action) in cases {
        let r = http
            .request(
                method.clone(),
                path,
                action,
                Some("application/json"),
                Bytes::from_static(b"{}"),
            )
            .await
            .unwrap();
        assert_eq!(
            (r.status, text(&r)),
            (400, r#"{"err":"api_bad_request"}"#),
            "{method} {path} {action:?}"
        );
    }
}
