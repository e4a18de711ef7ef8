//! The HTTP API against an in-process memory-mode Nexus over real mTLS.

use spike_client::ClientError;
use spike_proto::policy::PolicyPutRequest;

use crate::harness::*;

fn policy(name: &str, id: &str, path: &str, perms: &[&str]) -> PolicyPutRequest {
    PolicyPutRequest {
        name: name.to_owned(),
        spiffe_id_pattern: id.to_owned(),
        path_pattern: path.to_owned(),
        permissions: perms.iter().map(|p| (*p).to_owned()).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_round_trip_and_versions() {
    let w = World::new().unwrap();
    let nexus = w
        .start_nexus(w.config("memory", &[], &w.path("m")).unwrap())
        .await
        .unwrap();
    let su = w.client(SUPERUSER, &nexus).await.unwrap();

    su.put_secret("tenants/demo/db", values(&[("user", "u1"), ("pass", "p1")]))
        .await
        .unwrap();
    su.put_secret("tenants/demo/db", values(&[("user", "u2")]))
        .await
        .unwrap();
    assert_eq!(
        su.get_secret("tenants/demo/db", 0).await.unwrap(),
        values(&[("user", "u2")])
    );
    assert_eq!(
        su.get_secret("tenants/demo/db", 1).await.unwrap(),
        values(&[("user", "u1"), ("pass", "p1")])
    );
    let meta = su.secret_metadata("tenants/demo/db", 0).await.unwrap();
    assert_eq!(meta.metadata.current_version, 2);
    assert_eq!(meta.versions.len(), 2);
    assert_eq!(su.list_secrets().await.unwrap(), vec!["tenants/demo/db"]);

    // deleting the current version moves current back to v1 (docs/protocol.md#secrets)
    su.delete_secret("tenants/demo/db", &[]).await.unwrap();
    assert_eq!(
        su.get_secret("tenants/demo/db", 0).await.unwrap(),
        values(&[("user", "u1"), ("pass", "p1")])
    );
    su.delete_secret("tenants/demo/db", &[1]).await.unwrap();
    assert!(matches!(
        su.get_secret("tenants/demo/db", 0).await,
        Err(ClientError::NotFound { .. })
    ));
    su.undelete_secret("tenants/demo/db", &[2]).await.unwrap();
    assert_eq!(
        su.get_secret("tenants/demo/db", 0).await.unwrap(),
        values(&[("user", "u2")])
    );
    assert!(matches!(
        su.get_secret("nope", 0).await,
        Err(ClientError::NotFound { .. })
    ));
    assert!(matches!(
        su.undelete_secret("nope", &[1]).await,
        Err(ClientError::NotFound { .. })
    ));
    nexus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_gate_workloads() {
    let w = World::new().unwrap();
    let nexus = w
        .start_nexus(w.config("memory", &[], &w.path("m")).unwrap())
        .await
        .unwrap();
    let su = w.client(SUPERUSER, &nexus).await.unwrap();
    let app = w.client(WORKLOAD, &nexus).await.unwrap();

    su.put_secret("apps/web/key", values(&[("k", "v")]))
        .await
        .unwrap();
    assert!(matches!(
        app.get_secret("apps/web/key", 0).await,
        Err(ClientError::Unauthorized { .. })
    ));

    let app_id = format!("^{}$", w.id(WORKLOAD).replace('.', "\\."));
    su.put_policy(&policy("web-read", &app_id, "^apps/web/", &["read"]))
        .await
        .unwrap();
    assert_eq!(
        app.get_secret("apps/web/key", 0).await.unwrap(),
        values(&[("k", "v")])
    );
    // read does not grant write or list
    assert!(matches!(
        app.put_secret("apps/web/key", values(&[("k", "x")])).await,
        Err(ClientError::Unauthorized { .. })
    ));
    assert!(matches!(
        app.list_policies("", "").await,
        Err(ClientError::Unauthorized { .. })
    ));

    let got = su.get_policy("web-read").await.unwrap();
    assert_eq!(got.name, "web-read");
    assert_eq!(got.spiffe_id_pattern, app_id);
    let list = su.list_policies("", "").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(su.list_policies(&app_id, "").await.unwrap().len(), 1);
    assert_eq!(su.list_policies("x", "").await.unwrap().len(), 0);

    // docs/compatibility.md: missing policy is 404; docs/compatibility.md: bad regex / reserved path by substring is 400.
    assert!(matches!(
        su.get_policy("missing").await,
        Err(ClientError::NotFound { .. })
    ));
    assert!(matches!(
        su.delete_policy("missing").await,
        Err(ClientError::NotFound { .. })
    ));
    assert!(matches!(
        su.put_policy(&policy("bad", &app_id, "^apps/(", &["read"]))
            .await,
        Err(ClientError::BadRequest { .. })
    ));
    assert!(matches!(
        su.put_policy(&policy("sneaky", &app_id, "acl", &["super"]))
            .await,
        Err(ClientError::BadRequest { .. })
    ));

    su.delete_policy("web-read").await.unwrap();
    assert!(matches!(
        app.get_secret("apps/web/key", 0).await,
        Err(ClientError::Unauthorized { .. })
    ));
    nexus.stop().await.unwrap();
}

/// The authorization table over HTTP: (caller, route) -> denied (401) or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authz_table_over_http() {
    let w = World::new().unwrap();
    let nexus = w
        .start_nexus(w.config("memory", &[], &w.path("m")).unwrap())
        .await
        .unwrap();
    let su = w.client(SUPERUSER, &nexus).await.unwrap();
    su.put_secret("a/b", values(&[("k", "v")])).await.unwrap();

    let routes: &[(&str, Option<&str>, &str)] = &[
        (
            "/v1/store/secrets",
            None,
            r#"{"path":"a/b","values":{"k":"v"}}"#,
        ),
        ("/v1/store/secrets", Some("get"), r#"{"path":"a/b"}"#),
        ("/v1/store/secrets", Some("list"), "{}"),
        (
            "/v1/store/secrets/metadata",
            Some("get"),
            r#"{"path":"a/b"}"#,
        ),
        ("/v1/acl/policy", Some("list"), "{}"),
        ("/v1/cipher/encrypt", None, r#"{"plaintext":"aGk="}"#),
        (
            "/v1/bootstrap/verify",
            None,
            r#"{"nonce":"AAAAAAAAAAAAAAAA","ciphertext":"AA=="}"#,
        ),
    ];
    let callers = [
        SUPERUSER, LITE, WORKLOAD, BOOTSTRAP, RECOVER, RESTORE, KEEPERS[0], NEXUS,
    ];
    for caller in callers {
        let client = w.client(caller, &nexus).await.unwrap();
        for (path, action, body) in routes {
            let raw = post_json(&client, path, *action, body).await;
            let denied = raw.status == 401;
            let expect_denied = match (*path, caller) {
                ("/v1/bootstrap/verify", c) => c != BOOTSTRAP,
                (_, c) if c == SUPERUSER => false,
                ("/v1/cipher/encrypt", c) => c != LITE,
                _ => true,
            };
            assert_eq!(
                denied, expect_denied,
                "{caller} {path} {action:?}: {}",
                raw.status
            );
            if denied {
                assert_eq!(body_json(&raw)["err"], "access_unauthorized");
            }
        }
    }
    nexus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_spike_error_codes_and_lose_nothing() {
    let w = World::new().unwrap();
    let nexus = w
        .start_nexus(w.config("memory", &[], &w.path("m")).unwrap())
        .await
        .unwrap();
    let su = w.client(SUPERUSER, &nexus).await.unwrap();
    su.put_secret("keep/me", values(&[("k", "v")]))
        .await
        .unwrap();

    let cases: &[(&str, Option<&str>, &str)] = &[
        // malformed JSON, empty body, arrays, trailing garbage
        ("/v1/store/secrets", None, "{"),
        ("/v1/store/secrets", None, ""),
        ("/v1/store/secrets", None, "[]"),
        ("/v1/store/secrets", None, r#"{"path":"a","values":{}} x"#),
        // wrong types
        ("/v1/store/secrets", None, r#"{"path":1,"values":{}}"#),
        (
            "/v1/store/secrets",
            None,
            r#"{"path":"a","values":{"k":1}}"#,
        ),
        (
            "/v1/store/secrets",
            Some("get"),
            r#"{"path":"a","version":"1"}"#,
        ),
        (
            "/v1/store/secrets",
            Some("delete"),
            r#"{"path":"a","versions":"1"}"#,
        ),
        // invalid paths, keys, versions
        ("/v1/store/secrets", None, r#"{"path":"","values":{}}"#),
        ("/v1/store/secrets", None, r#"{"path":"a b","values":{}}"#),
        (
            "/v1/store/secrets",
            None,
            r#"{"path":"a","values":{"a.b":"v"}}"#,
        ),
        (
            "/v1/store/secrets",
            Some("get"),
            r#"{"path":"keep/me","version":-1}"#,
        ),
        (
            "/v1/store/secrets/metadata",
            Some("get"),
            r#"{"path":"%%"}"#,
        ),
        // policies: bad name, patterns, permissions, regex
        (
            "/v1/acl/policy",
            None,
            r#"{"name":"a.b","spiffeidPattern":"spiffe://x","pathPattern":"a","permissions":["read"]}"#,
        ),
        (
            "/v1/acl/policy",
            None,
            r#"{"name":"n","spiffeidPattern":"x","pathPattern":"a","permissions":["read"]}"#,
        ),
        (
            "/v1/acl/policy",
            None,
            r#"{"name":"n","spiffeidPattern":"spiffe://x","pathPattern":"a","permissions":["own"]}"#,
        ),
        (
            "/v1/acl/policy",
            None,
            r#"{"name":"n","spiffeidPattern":"spiffe://x","pathPattern":"a","permissions":[]}"#,
        ),
        (
            "/v1/acl/policy",
            None,
            r#"{"name":"n","spiffeidPattern":"^spiffe://x$","pathPattern":"a(","permissions":["read"]}"#,
        ),
        ("/v1/acl/policy", Some("get"), r#"{"id":""}"#),
        // cipher
        (
            "/v1/cipher/decrypt",
            None,
            r#"{"version":2,"nonce":"AAAAAAAAAAAAAAAA","ciphertext":"AA=="}"#,
        ),
        (
            "/v1/cipher/decrypt",
            None,
            r#"{"version":1,"nonce":"AAAA","ciphertext":"AA=="}"#,
        ),
        ("/v1/cipher/encrypt", None, r#"{"plaintext":"not base64!"}"#),
        // unknown action, unknown path, unrouted SDK constants
        ("/v1/store/secrets", Some("read"), "{}"),
        ("/v1/store/secrets/", None, "{}"),
        ("/v1/auth/initialization", Some("check"), "{}"),
        ("/v1/acl/policy", Some("undelete"), "{}"),
    ];
    for (path, action, body) in cases {
        let raw = post_json(&su, path, *action, body).await;
        assert_eq!(
            raw.status,
            400,
            "{path} {action:?} {body}: {:?}",
            String::from_utf8_lossy(&raw.body)
        );
        assert_eq!(
            body_json(&raw)["err"],
            "api_bad_request",
            "{path} {action:?} {body}"
        );
    }

    // memory mode: recover/restore are 400 for their roles; any other caller is refused (401)
    // before its body is read
    for (path, body, role) in [
        ("/v1/operator/recover", "{}", RECOVER),
        ("/v1/operator/restore", r#"{"id":1,"shard":[1]}"#, RESTORE),
    ] {
        let raw = post_json(&su, path, None, body).await;
        assert_eq!(raw.status, 401, "{path}");
        let operator = w.client(role, &nexus).await.unwrap();
        let raw = post_json(&operator, path, None, body).await;
        assert_eq!(raw.status, 400, "{path}");
        assert_eq!(body_json(&raw)["err"], "api_bad_request", "{path}");
    }

    // huge body -> 400
    let huge = format!(
        r#"{{"path":"big","values":{{"k":"{}"}}}}"#,
        "x".repeat(300 * 1024)
    );
    let raw = post_json(&su, "/v1/store/secrets", None, &huge).await;
    assert_eq!(raw.status, 400);

    // non-POST -> 400 fallback
    let raw = su
        .http()
        .request(
            http::Method::PUT,
            "/v1/store/secrets",
            None,
            None,
            bytes::Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(raw.status, 400);
    assert_eq!(
        body_json(&raw),
        serde_json::json!({"err":"api_bad_request"})
    );

    // typed error bodies (docs/protocol.md#conventions)
    let raw = post_json(
        &su,
        "/v1/store/secrets",
        Some("get"),
        r#"{"path":"missing"}"#,
    )
    .await;
    assert_eq!(raw.status, 404);
    assert_eq!(
        body_json(&raw),
        serde_json::json!({"data":null,"err":"api_not_found"})
    );
    assert_eq!(raw.content_type.as_deref(), Some("application/json"));

    // nothing was lost, nothing extra was written
    assert_eq!(
        su.get_secret("keep/me", 0).await.unwrap(),
        values(&[("k", "v")])
    );
    assert_eq!(su.list_secrets().await.unwrap(), vec!["keep/me"]);
    assert!(su.list_policies("", "").await.unwrap().is_empty());
    nexus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cipher_json_and_stream_modes() {
    let w = World::new().unwrap();
    let nexus = w
        .start_nexus(w.config("memory", &[], &w.path("m")).unwrap())
        .await
        .unwrap();
    let lite = w.client(LITE, &nexus).await.unwrap();

    let enc = lite.encrypt(b"hello").await.unwrap();
    assert_eq!(enc.version, 1);
    let nonce = enc.nonce.clone().unwrap();
    assert_eq!(nonce.len(), 12);
    let plain = lite
        .decrypt(1, &nonce, enc.ciphertext.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(plain, b"hello");

    let sealed = lite
        .encrypt_stream(bytes::Bytes::from_static(b"stream me"))
        .await
        .unwrap();
    assert_eq!(sealed[0], 1);
    let opened = lite
        .decrypt_stream(bytes::Bytes::from(sealed.clone()))
        .await
        .unwrap();
    assert_eq!(opened, b"stream me");

    // stream-mode errors are text/plain
    let oct = Some("application/octet-stream");
    for (body, msg) in [
        (vec![], "crypto_failed_to_read_version\n"),
        (vec![2u8, 0, 0], "crypto_unsupported_version\n"),
        (vec![1u8, 0, 0], "crypto_failed_to_read_nonce\n"),
    ] {
        let raw = post(&lite, "/v1/cipher/decrypt", None, oct, body).await;
        assert_eq!(raw.status, 400);
        assert_eq!(
            raw.content_type.as_deref(),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(String::from_utf8_lossy(&raw.body), msg);
    }
    let mut tampered = sealed;
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let raw = post(&lite, "/v1/cipher/decrypt", None, oct, tampered).await;
    assert_eq!(raw.status, 400);
    assert_eq!(String::from_utf8_lossy(&raw.body), "decryption failed\n");

    // JSON-mode tamper -> 500 with the typed body
    let mut ct = enc.ciphertext.unwrap();
    ct[0] ^= 1;
    assert!(lite.decrypt(1, &nonce, &ct).await.is_err());

    // too large -> 400
    let raw = post(&lite, "/v1/cipher/encrypt", None, oct, vec![0u8; 65537]).await;
    assert_eq!(raw.status, 400);

    // a plain workload without a policy may not use the cipher
    let app = w.client(WORKLOAD, &nexus).await.unwrap();
    let raw = post(&app, "/v1/cipher/encrypt", None, oct, b"x".to_vec()).await;
    assert_eq!(raw.status, 401);
    assert_eq!(body_json(&raw)["err"], "access_unauthorized");
    nexus.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_socket_and_metrics() {
    let w = World::new().unwrap();
    let nexus = w
        .start_nexus(w.config("memory", &[], &w.path("m")).unwrap())
        .await
        .unwrap();
    let su = w.client(SUPERUSER, &nexus).await.unwrap();
    let h = su.health().await.unwrap();
    assert_eq!(h.status, 200);
    assert_eq!(h.flag("sealed"), Some(false));
    assert_eq!(h.flag("initialized"), Some(true));

    let sock = nexus.health_socket.clone().unwrap();
    let (status, body) = unix_get(&sock, "/v1/sys/health").await;
    assert_eq!(status, 200);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let (status, body) = unix_get(&sock, "/v1/sys/seal-status").await;
    assert_eq!(status, 200);
    assert_eq!(body["t"], 2);
    let (status, _) = unix_get(&sock, "/v1/store/secrets").await;
    assert_eq!(status, 404);

    su.put_secret("m/x", values(&[("k", "v")])).await.unwrap();
    let (status, text) = tcp_get(nexus.metrics_addr.unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        text.contains("spike_nexus_requests_total{route=\"secret_put\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("spike_nexus_sealed 0"));
    nexus.stop().await.unwrap();
}
