//! Every request/response type against its hand-written fixture.

use std::collections::BTreeMap;

use spike_proto::bootstrap::*;
use spike_proto::cipher::*;
use spike_proto::keeper::*;
use spike_proto::operator::*;
use spike_proto::policy::*;
use spike_proto::secrets::*;
use spike_proto::{ShardBytes, Timestamp, decode_request};
use time::macros::datetime;

use crate::{assert_request_golden, assert_response_golden, fixture};

fn creds() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("username".to_owned(), "admin".to_owned()),
        ("password".to_owned(), "hunter2".to_owned()),
    ])
}

fn shard1() -> ShardBytes {
    ShardBytes::new(std::array::from_fn(|i| i as u8))
}

fn shard2() -> ShardBytes {
    ShardBytes::new(std::array::from_fn(|i| 255 - i as u8))
}

fn shard3() -> ShardBytes {
    let mut b = [7u8; 32];
    b[..3].copy_from_slice(&[12, 0, 255]);
    ShardBytes::new(b)
}

const NONCE: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

fn ciphertext() -> Vec<u8> {
    [0xde, 0xad, 0xbe, 0xef].repeat(5)
}

#[test]
fn secret_put() {
    let req = SecretPutRequest {
        path: "tenants/demo/db/creds".into(),
        values: creds(),
    };
    assert_request_golden(&req, fixture!("secret_put_request"));
    let back: SecretPutRequest = decode_request(fixture!("secret_put_request").as_bytes()).unwrap();
    assert_eq!(back, req);
    assert_response_golden(&SecretPutResponse::default(), fixture!("empty_response"));
}

#[test]
fn secret_get() {
    let req = SecretGetRequest {
        path: "tenants/demo/db/creds".into(),
        version: 2,
    };
    assert_request_golden(&req, fixture!("secret_get_request"));
    let current = SecretGetRequest {
        path: "tenants/demo/db/creds".into(),
        version: 0,
    };
    assert_request_golden(&current, fixture!("secret_get_request_current"));

    let resp = SecretGetResponse::ok(creds());
    assert_response_golden(&resp, fixture!("secret_get_response"));
    let back: SecretGetResponse = serde_json::from_str(fixture!("secret_get_response")).unwrap();
    assert_eq!(back, resp);
    assert_response_golden(
        &SecretGetResponse::ok(BTreeMap::new()),
        fixture!("secret_get_response_empty_data"),
    );
}

#[test]
fn secret_delete_and_undelete() {
    let req = SecretDeleteRequest {
        path: "tenants/demo/db/creds".into(),
        versions: Some(vec![1, 2]),
    };
    assert_request_golden(&req, fixture!("secret_delete_request"));
    let req = SecretDeleteRequest {
        path: "/leading/slash".into(),
        versions: None,
    };
    assert_request_golden(&req, fixture!("secret_delete_request_current"));
    assert_response_golden(&SecretDeleteResponse::default(), fixture!("empty_response"));

    let req = SecretUndeleteRequest {
        path: "tenants/demo/db/creds".into(),
        versions: Some(vec![0, 3]),
    };
    assert_request_golden(&req, fixture!("secret_undelete_request"));
    assert_response_golden(
        &SecretUndeleteResponse::default(),
        fixture!("empty_response"),
    );
}

#[test]
fn secret_list() {
    assert_request_golden(&SecretListRequest {}, fixture!("secret_list_request"));
    let resp = SecretListResponse::ok(vec![
        "/leading/slash".into(),
        "tenants/demo/db/creds".into(),
    ]);
    assert_response_golden(&resp, fixture!("secret_list_response"));
    assert_response_golden(
        &SecretListResponse::ok(vec![]),
        fixture!("secret_list_response_empty"),
    );
}

#[test]
fn secret_metadata() {
    let req = SecretMetadataRequest {
        path: "tenants/demo/db/creds".into(),
        version: 1,
    };
    assert_request_golden(&req, fixture!("secret_metadata_request"));

    let created = Timestamp::new(datetime!(2026-01-02 15:04:05.123456789 UTC));
    let updated = Timestamp::new(datetime!(2026-01-04 00:00:00.1 +5:30));
    let resp = SecretMetadataResponse {
        versions: BTreeMap::from([
            (
                1,
                SecretVersionInfo {
                    created_time: created,
                    version: 1,
                    deleted_time: Some(Timestamp::new(datetime!(2026-01-03 0:00 UTC))),
                },
            ),
            (
                2,
                SecretVersionInfo {
                    created_time: Timestamp::new(datetime!(2026-01-02 16:00 -8)),
                    version: 2,
                    deleted_time: None,
                },
            ),
            (
                10,
                SecretVersionInfo {
                    created_time: updated,
                    version: 10,
                    deleted_time: None,
                },
            ),
        ]),
        metadata: SecretMetadataContent {
            current_version: 10,
            oldest_version: 1,
            created_time: created,
            updated_time: updated,
            max_versions: 10,
        },
        err: None,
    };
    assert_response_golden(&resp, fixture!("secret_metadata_response"));
    let back: SecretMetadataResponse =
        serde_json::from_str(fixture!("secret_metadata_response")).unwrap();
    assert_eq!(back, resp);
    assert_eq!(
        back.versions[&2].created_time.get().offset(),
        time::macros::offset!(-8)
    );

    let t = Timestamp::new(datetime!(2026-01-02 15:04:05 UTC));
    let resp = SecretMetadataResponse {
        versions: BTreeMap::new(),
        metadata: SecretMetadataContent {
            current_version: 1,
            oldest_version: 1,
            created_time: t,
            updated_time: t,
            max_versions: 10,
        },
        err: None,
    };
    assert_response_golden(&resp, fixture!("secret_metadata_response_no_versions"));
}

#[test]
fn policy_put() {
    let req = PolicyPutRequest {
        name: "web-read".into(),
        spiffe_id_pattern: r"^spiffe://example\.org/web$".into(),
        path_pattern: "^tenants/web/.*$".into(),
        permissions: vec!["read".into(), "list".into()],
    };
    assert_request_golden(&req, fixture!("policy_put_request"));
    assert_response_golden(&PolicyPutResponse::default(), fixture!("empty_response"));
}

#[test]
fn policy_read() {
    assert_request_golden(
        &PolicyReadRequest {
            id: "web-read".into(),
        },
        fixture!("policy_read_request"),
    );
    let resp = PolicyReadResponse {
        id: String::new(),
        name: "web-read".into(),
        spiffe_id_pattern: r"^spiffe://example\.org/web$".into(),
        path_pattern: "^tenants/web/.*$".into(),
        permissions: Some(vec![Permission::Read, Permission::List]),
        created_at: Timestamp::new(datetime!(2026-01-02 15:04:05.000000001 UTC)),
        updated_at: Timestamp::new(datetime!(2026-02-01 0:00 +1)),
        err: None,
    };
    assert_response_golden(&resp, fixture!("policy_read_response"));
    let back: PolicyReadResponse = serde_json::from_str(fixture!("policy_read_response")).unwrap();
    assert_eq!(back, resp);
}

#[test]
fn policy_delete_and_list() {
    assert_request_golden(
        &PolicyDeleteRequest {
            id: "web-read".into(),
        },
        fixture!("policy_delete_request"),
    );
    assert_response_golden(&PolicyDeleteResponse::default(), fixture!("empty_response"));
    assert_request_golden(
        &PolicyListRequest::default(),
        fixture!("policy_list_request"),
    );
    let resp = PolicyListResponse::ok(vec![
        PolicyListItem::named("admin"),
        PolicyListItem::named("web-read"),
    ]);
    assert_response_golden(&resp, fixture!("policy_list_response"));
    assert_response_golden(
        &PolicyListResponse::ok(vec![]),
        fixture!("policy_list_response_empty"),
    );
}

#[test]
fn cipher() {
    let req = CipherEncryptRequest {
        plaintext: Some(b"hello world".to_vec()),
        algorithm: String::new(),
    };
    assert_request_golden(&req, fixture!("cipher_encrypt_request"));
    let req = CipherEncryptRequest {
        plaintext: Some(b"hi".to_vec()),
        algorithm: "aes-256-gcm".into(),
    };
    assert_request_golden(&req, fixture!("cipher_encrypt_request_algorithm"));
    let resp = CipherEncryptResponse {
        version: CIPHER_VERSION,
        nonce: Some(NONCE.to_vec()),
        ciphertext: Some(ciphertext()),
        err: None,
    };
    assert_response_golden(&resp, fixture!("cipher_encrypt_response"));

    let req = CipherDecryptRequest {
        version: 1,
        nonce: Some(NONCE.to_vec()),
        ciphertext: Some(ciphertext()),
        algorithm: String::new(),
    };
    assert_request_golden(&req, fixture!("cipher_decrypt_request"));
    let back: CipherDecryptRequest =
        decode_request(fixture!("cipher_decrypt_request").as_bytes()).unwrap();
    assert_eq!(back, req);
    let resp = CipherDecryptResponse {
        plaintext: Some(b"hello world".to_vec()),
        err: None,
    };
    assert_response_golden(&resp, fixture!("cipher_decrypt_response"));
}

#[test]
fn bootstrap_verify() {
    let req = BootstrapVerifyRequest {
        nonce: Some(NONCE.to_vec()),
        ciphertext: Some(ciphertext()),
    };
    assert_request_golden(&req, fixture!("bootstrap_verify_request"));
    let resp = BootstrapVerifyResponse {
        hash: "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9".into(),
        err: None,
    };
    assert_response_golden(&resp, fixture!("bootstrap_verify_response"));
}

#[test]
fn operator_recover_and_restore() {
    assert_request_golden(&RecoverRequest {}, fixture!("recover_request"));
    let resp = RecoverResponse {
        shards: Some(BTreeMap::from([
            (1, shard1()),
            (2, shard2()),
            (3, shard3()),
        ])),
        err: None,
    };
    assert_response_golden(&resp, fixture!("recover_response"));
    let back: RecoverResponse = serde_json::from_str(fixture!("recover_response")).unwrap();
    let shards = back.shards.unwrap();
    assert_eq!(shards.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(shards[&3].as_bytes(), shard3().as_bytes());

    let req = RestoreRequest {
        id: 2,
        shard: Some(shard2()),
    };
    assert_request_golden(&req, fixture!("restore_request"));
    let back: RestoreRequest = decode_request(fixture!("restore_request").as_bytes()).unwrap();
    assert_eq!(back.id, 2);
    assert_eq!(back.shard.unwrap().as_bytes(), shard2().as_bytes());

    let resp = RestoreResponse {
        collected: 1,
        remaining: 1,
        restored: false,
        err: None,
    };
    assert_response_golden(&resp, fixture!("restore_response"));
    let resp = RestoreResponse {
        collected: 2,
        remaining: 0,
        restored: true,
        err: None,
    };
    assert_response_golden(&resp, fixture!("restore_response_restored"));
}

#[test]
fn keeper() {
    let req = ShardPutRequest {
        shard: Some(shard1()),
    };
    assert_request_golden(&req, fixture!("keeper_contribute_request"));
    assert_response_golden(&ShardPutResponse::default(), fixture!("empty_response"));
    assert_request_golden(&ShardGetRequest {}, fixture!("keeper_shard_request"));
    let resp = ShardGetResponse::ok(shard3());
    assert_response_golden(&resp, fixture!("keeper_shard_response"));
    let back: ShardGetResponse = serde_json::from_str(fixture!("keeper_shard_response")).unwrap();
    assert!(back.err.is_none());
    assert_eq!(back.shard.unwrap().as_bytes(), shard3().as_bytes());
}

#[test]
fn null_body_is_the_zero_request() {
    let r: SecretGetRequest = decode_request(b"null").unwrap();
    assert_eq!(r, SecretGetRequest::default());
    let r: SecretListRequest = decode_request(b"null").unwrap();
    assert_eq!(r, SecretListRequest {});
    let r: RestoreRequest = decode_request(b"null").unwrap();
    assert_eq!(r.id, 0);
    assert!(r.shard.is_none());
}

#[test]
fn missing_and_unknown_fields_like_go() {
    let r: SecretPutRequest =
        decode_request(br#"{"path":"a","values":{"k":"v"},"err":"","extra":[1,{"x":null}]}"#)
            .unwrap();
    assert_eq!(r.path, "a");
    assert_eq!(r.values["k"], "v");
    let r: SecretPutRequest = decode_request(br#"{"path":"a","values":null}"#).unwrap();
    assert!(r.values.is_empty());
    let r: PolicyPutRequest = decode_request(br#"{"name":"n","permissions":null}"#).unwrap();
    assert!(r.permissions.is_empty());
    assert_eq!(r.spiffe_id_pattern, "");
    let r: CipherEncryptRequest = decode_request(br#"{"plaintext":""}"#).unwrap();
    assert_eq!(r.plaintext, Some(vec![]));
    let r: CipherEncryptRequest = decode_request(br#"{}"#).unwrap();
    assert_eq!(r.plaintext, None);
    // Go accepts a JSON array of numbers for []byte as well.
    let r: CipherEncryptRequest = decode_request(br#"{"plaintext":[104,null,105]}"#).unwrap();
    assert_eq!(r.plaintext, Some(vec![104, 0, 105]));
}

#[test]
fn client_side_err_decoding() {
    let r: SecretGetResponse = serde_json::from_str(r#"{"data":{"a":"b"},"err":""}"#).unwrap();
    assert!(r.err.is_none());
    let r: ShardGetResponse =
        serde_json::from_str(r#"{"shard":null,"Err":"api_bad_request"}"#).unwrap();
    assert_eq!(r.err, Some(spike_proto::ErrorCode::ApiBadRequest));
    let r: ShardGetResponse =
        serde_json::from_str(r#"{"shard":null,"err":"api_bad_request"}"#).unwrap();
    assert_eq!(r.err, Some(spike_proto::ErrorCode::ApiBadRequest));
}
