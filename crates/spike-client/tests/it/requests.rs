//! Request shapes, status mapping and typed decoding (docs/protocol.md#conventions).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use spike_client::{ClientError, KeeperClient, NexusClient};
use spike_identity::SpiffeId;
use spike_proto::{ErrorCode, ShardBytes};

use crate::support::{BOOTSTRAP, NEXUS, TestServer, ids, options, roots};

type IsVariant = fn(&ClientError) -> bool;

#[tokio::test]
async fn requests_are_go_shaped_and_statuses_map_like_go() {
    let ids = ids().await;
    let server = TestServer::start(&ids.nexus, |_: &SpiffeId| true).await;
    let nexus = NexusClient::new(&ids.pilot, server.url(), &roots(), options()).unwrap();

    // 200 {} → Ok, and the request is what a Go client sends.
    let mut values = BTreeMap::new();
    values.insert("k".to_owned(), "v".to_owned());
    nexus.put_secret("a/b", values).await.unwrap();
    let seen = server.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/v1/store/secrets");
    assert_eq!(seen.content_type.as_deref(), Some("application/json"));
    assert_eq!(seen.body, br#"{"path":"a/b","values":{"k":"v"}}"#);
    assert_eq!(seen.peer, crate::support::PILOT);

    server.set(200, r#"{"data":{"x":"1"}}"#);
    let data = nexus.get_secret("a/b", 2).await.unwrap();
    assert_eq!(data.get("x").map(String::as_str), Some("1"));
    let seen = server.last();
    assert_eq!(seen.target, "/v1/store/secrets?action=get");
    assert_eq!(seen.body, br#"{"path":"a/b","version":2}"#);

    // Status mapping by status code alone; the body is ignored.
    let cases: [(u16, IsVariant, ErrorCode); 5] = [
        (
            404,
            |e| matches!(e, ClientError::NotFound { .. }),
            ErrorCode::ApiNotFound,
        ),
        (
            401,
            |e| matches!(e, ClientError::Unauthorized { .. }),
            ErrorCode::AccessUnauthorized,
        ),
        (
            400,
            |e| matches!(e, ClientError::BadRequest { .. }),
            ErrorCode::ApiBadRequest,
        ),
        (
            503,
            |e| matches!(e, ClientError::NotReady { .. }),
            ErrorCode::StateNotReady,
        ),
        (
            500,
            |e| matches!(e, ClientError::Peer { status: 500, .. }),
            ErrorCode::NetPeerConnection,
        ),
    ];
    for (status, is, code) in cases {
        server.set(status, r#"{"data":null,"err":"whatever"}"#);
        let err = nexus.get_secret("a/b", 0).await.unwrap_err();
        assert!(is(&err), "{status}: {err:?}");
        assert_eq!(err.error_code(), code);
        assert_eq!(err.status(), Some(status));
        assert!(
            err.to_string().contains("/v1/store/secrets?action=get"),
            "{err}"
        );
    }

    // 200 with a non-empty err → Api(code); with "" → success.
    server.set(200, r#"{"err":"api_internal_error"}"#);
    let err = nexus.delete_secret("a/b", &[1]).await.unwrap_err();
    assert!(
        matches!(
            &err,
            ClientError::Api {
                code: ErrorCode::ApiInternal,
                ..
            }
        ),
        "{err:?}"
    );
    server.set(200, r#"{"err":""}"#);
    nexus.delete_secret("a/b", &[]).await.unwrap();
    assert_eq!(server.last().body, br#"{"path":"a/b","versions":[]}"#);
    assert_eq!(server.last().target, "/v1/store/secrets?action=delete");

    // 200 with a body that is not the response type → Decode.
    server.set(200, "not json");
    let err = nexus.get_secret("a/b", 0).await.unwrap_err();
    assert!(matches!(err, ClientError::Decode { .. }), "{err:?}");
    assert_eq!(err.error_code(), ErrorCode::DataUnmarshalFailure);

    // List helpers: 404 → empty (as the SDK).
    server.set(404, "");
    assert!(nexus.list_secrets().await.unwrap().is_empty());
    assert!(nexus.list_policies("", "").await.unwrap().is_empty());
    assert_eq!(server.last().target, "/v1/acl/policy?action=list");
    assert_eq!(
        server.last().body,
        br#"{"spiffeidPattern":"","pathPattern":""}"#
    );
    server.set(200, r#"{"keys":["a","b"]}"#);
    assert_eq!(nexus.list_secrets().await.unwrap(), ["a", "b"]);
}

#[tokio::test]
async fn cipher_stream_health_and_operator_routes() {
    let ids = ids().await;
    let server = TestServer::start(&ids.nexus, |_: &SpiffeId| true).await;
    let nexus = NexusClient::new(&ids.pilot, server.url(), &roots(), options()).unwrap();

    *server.answer.lock() = (200, "application/octet-stream", vec![1, 2, 3]);
    let out = nexus
        .encrypt_stream(Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(out, [1, 2, 3]);
    let seen = server.last();
    assert_eq!(seen.target, "/v1/cipher/encrypt");
    assert_eq!(
        seen.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(seen.body, b"hello");
    *server.answer.lock() = (400, "text/plain", b"crypto_unsupported_version\n".to_vec());
    let err = nexus
        .decrypt_stream(Bytes::from_static(&[9]))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::BadRequest { .. }), "{err:?}");

    server.set(
        200,
        r#"{"version":1,"nonce":"AAAAAAAAAAAAAAAA","ciphertext":"AQI="}"#,
    );
    let enc = nexus.encrypt(b"x").await.unwrap();
    assert_eq!(
        (enc.version, enc.ciphertext.as_deref()),
        (1, Some(&[1u8, 2][..]))
    );
    assert_eq!(server.last().body, br#"{"plaintext":"eA=="}"#);

    server.set(501, r#"{"initialized":false,"sealed":true}"#);
    let health = nexus.health().await.unwrap();
    assert_eq!(health.status, 501);
    assert_eq!(health.flag("initialized"), Some(false));
    assert!(health.is_supported());
    assert_eq!(server.last().method, "GET");
    assert_eq!(server.last().target, "/v1/sys/health");
    server.set(400, r#"{"err":"api_bad_request"}"#);
    let health = nexus.health().await.unwrap();
    assert!(!health.is_supported());

    server.set(200, r#"{"hash":"abc"}"#);
    assert_eq!(nexus.bootstrap_verify(&[0; 12], &[1]).await.unwrap(), "abc");
    assert_eq!(
        server.last().body,
        br#"{"nonce":"AAAAAAAAAAAAAAAA","ciphertext":"AQ=="}"#
    );

    let shard: Vec<String> = (0..32).map(|i| i.to_string()).collect();
    server.set(
        200,
        &format!(
            r#"{{"shards":{{"1":[{}],"2":[{}]}}}}"#,
            shard.join(","),
            shard.join(",")
        ),
    );
    let shards = nexus.recover().await.unwrap();
    assert_eq!(shards.len(), 2);
    assert_eq!(shards[&1].as_bytes()[31], 31);
    server.set(200, r#"{"shards":null}"#);
    assert!(matches!(
        nexus.recover().await,
        Err(ClientError::MissingField {
            field: "shards",
            ..
        })
    ));

    server.set(200, r#"{"collected":1,"remaining":1,"restored":false}"#);
    let r = nexus.restore(1, ShardBytes::new([7; 32])).await.unwrap();
    assert_eq!((r.collected, r.remaining, r.restored), (1, 1, false));
    assert_eq!(server.last().target, "/v1/operator/restore");
}

#[tokio::test]
async fn keeper_routes_and_connection_reuse() {
    let ids = ids().await;
    let server = TestServer::start(&ids.keeper, |_: &SpiffeId| true).await;
    let keeper = KeeperClient::new(&ids.nexus, server.url(), &roots(), options()).unwrap();

    keeper.contribute(ShardBytes::new([5; 32])).await.unwrap();
    let seen = server.last();
    assert_eq!(seen.target, "/v1/store/contribute");
    let expected = format!(r#"{{"shard":[{}]}}"#, vec!["5"; 32].join(","));
    assert_eq!(seen.body, expected.as_bytes());
    assert_eq!(seen.peer, NEXUS);

    server.set(
        200,
        &format!(r#"{{"shard":[{}],"Err":""}}"#, vec!["9"; 32].join(",")),
    );
    let shard = keeper.shard().await.unwrap();
    assert_eq!(shard.as_bytes(), &[9; 32]);
    assert_eq!(server.last().target, "/v1/store/shard");
    assert_eq!(server.last().body, b"{}");

    server.set(400, r#"{"shard":null,"Err":"api_bad_request"}"#);
    assert!(matches!(
        keeper.shard().await,
        Err(ClientError::BadRequest { .. })
    ));
    server.set(200, r#"{"shard":null,"Err":"access_unauthorized"}"#);
    let err = keeper.shard().await.unwrap_err();
    assert_eq!(err.error_code(), ErrorCode::AccessUnauthorized);

    // All of the above went over one kept-alive connection.
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    assert_eq!(keeper.http().idle_connections(), 1);

    // A client without pooling opens one connection per request.
    let mut opts = options();
    opts.max_idle_connections = 0;
    let boot = KeeperClient::new(&ids.bootstrap, server.url(), &roots(), opts).unwrap();
    server.set(200, "{}");
    boot.contribute(ShardBytes::new([1; 32])).await.unwrap();
    boot.contribute(ShardBytes::new([1; 32])).await.unwrap();
    assert_eq!(server.last().peer, BOOTSTRAP);
    assert_eq!(server.connections.load(Ordering::SeqCst), 3);
}
