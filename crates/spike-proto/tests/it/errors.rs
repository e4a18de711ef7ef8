//! The exact error bodies of docs/protocol.md#conventions.

use spike_proto::bootstrap::*;
use spike_proto::cipher::*;
use spike_proto::keeper::*;
use spike_proto::operator::*;
use spike_proto::policy::*;
use spike_proto::response::FallbackResponse;
use spike_proto::secrets::*;
use spike_proto::{ApiResponse, ErrorCode};

fn body<T: ApiResponse>(code: ErrorCode) -> String {
    let value = T::error(code.clone());
    assert_eq!(value.error_code(), Some(&code));
    let json = serde_json::to_string(&value).unwrap();
    // Decoding the error body gives the code back.
    let back: T = serde_json::from_str(&json).unwrap();
    assert_eq!(back.error_code(), Some(&code));
    json
}

#[test]
fn error_bodies_match_spec_table() {
    let c = || ErrorCode::ApiNotFound;
    let e = r#""err":"api_not_found""#;
    let plain = format!("{{{e}}}");
    assert_eq!(body::<SecretPutResponse>(c()), plain);
    assert_eq!(body::<SecretDeleteResponse>(c()), plain);
    assert_eq!(body::<SecretUndeleteResponse>(c()), plain);
    assert_eq!(body::<PolicyPutResponse>(c()), plain);
    assert_eq!(body::<PolicyDeleteResponse>(c()), plain);
    assert_eq!(body::<ShardPutResponse>(c()), plain);
    assert_eq!(body::<FallbackResponse>(c()), plain);
    assert_eq!(
        body::<SecretGetResponse>(c()),
        format!(r#"{{"data":null,{e}}}"#)
    );
    assert_eq!(
        body::<SecretListResponse>(c()),
        format!(r#"{{"keys":null,{e}}}"#)
    );
    assert_eq!(
        body::<SecretMetadataResponse>(c()),
        format!(
            r#"{{"metadata":{{"currentVersion":0,"oldestVersion":0,"createdTime":"0001-01-01T00:00:00Z","updatedTime":"0001-01-01T00:00:00Z","maxVersions":0}},{e}}}"#
        )
    );
    assert_eq!(
        body::<PolicyReadResponse>(c()),
        format!(
            r#"{{"id":"","name":"","spiffiedPattern":"","pathPattern":"","permissions":null,"createdAt":"0001-01-01T00:00:00Z","updatedAt":"0001-01-01T00:00:00Z",{e}}}"#
        )
    );
    assert_eq!(
        body::<PolicyListResponse>(c()),
        format!(r#"{{"policies":null,{e}}}"#)
    );
    assert_eq!(
        body::<CipherEncryptResponse>(c()),
        format!(r#"{{"version":0,"nonce":null,"ciphertext":null,{e}}}"#)
    );
    assert_eq!(
        body::<CipherDecryptResponse>(c()),
        format!(r#"{{"plaintext":null,{e}}}"#)
    );
    assert_eq!(
        body::<BootstrapVerifyResponse>(c()),
        format!(r#"{{"hash":"",{e}}}"#)
    );
    assert_eq!(
        body::<RecoverResponse>(c()),
        format!(r#"{{"shards":null,{e}}}"#)
    );
    assert_eq!(
        body::<RestoreResponse>(c()),
        format!(r#"{{"collected":0,"remaining":0,"restored":false,{e}}}"#)
    );
    assert_eq!(
        body::<ShardGetResponse>(c()),
        r#"{"shard":null,"Err":"api_not_found"}"#
    );
}

#[test]
fn the_five_server_codes() {
    for (code, s) in [
        (
            ErrorCode::ApiBadRequest,
            r#"{"data":null,"err":"api_bad_request"}"#,
        ),
        (
            ErrorCode::AccessUnauthorized,
            r#"{"data":null,"err":"access_unauthorized"}"#,
        ),
        (
            ErrorCode::ApiInternal,
            r#"{"data":null,"err":"api_internal_error"}"#,
        ),
        (
            ErrorCode::StateNotReady,
            r#"{"data":null,"err":"state_not_ready"}"#,
        ),
    ] {
        assert!(code.http_status().is_some());
        assert_eq!(body::<SecretGetResponse>(code), s);
    }
    assert_eq!(
        body::<ShardGetResponse>(ErrorCode::AccessUnauthorized),
        r#"{"shard":null,"Err":"access_unauthorized"}"#
    );
    assert_eq!(
        body::<CipherDecryptResponse>(ErrorCode::ApiInternal),
        r#"{"plaintext":null,"err":"api_internal_error"}"#
    );
}

#[test]
fn success_bodies_have_no_error_code() {
    let ok: SecretGetResponse = serde_json::from_str(r#"{"data":{}}"#).unwrap();
    assert_eq!(ok.error_code(), None);
    let ok: ShardGetResponse = serde_json::from_str(r#"{"shard":[1],"Err":""}"#).unwrap();
    assert_eq!(ok.error_code(), None);
    assert_eq!(
        serde_json::to_string(&ShardGetResponse::default()).unwrap(),
        r#"{"shard":null,"Err":""}"#
    );
}
