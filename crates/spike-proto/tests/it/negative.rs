//! Inputs the Go server rejects (400) must be rejected here too, and the lenient cases Go
//! accepts must be accepted.

use spike_proto::cipher::{CipherDecryptRequest, CipherEncryptRequest};
use spike_proto::keeper::ShardPutRequest;
use spike_proto::operator::{RecoverResponse, RestoreRequest};
use spike_proto::secrets::{SecretGetRequest, SecretListRequest, SecretMetadataResponse};
use spike_proto::{ProtoError, decode_request};

fn shard_of(json: &str) -> Result<[u8; 32], ProtoError> {
    let req: ShardPutRequest = decode_request(json.as_bytes())?;
    Ok(*req.shard.unwrap().as_bytes())
}

#[test]
fn shard_value_out_of_range() {
    assert!(shard_of(r#"{"shard":[256]}"#).is_err());
    assert!(shard_of(r#"{"shard":[0,1,1000]}"#).is_err());
    assert!(shard_of(r#"{"shard":[-1]}"#).is_err());
    assert!(shard_of(r#"{"shard":[1.5]}"#).is_err());
    assert!(shard_of(r#"{"shard":[true]}"#).is_err());
}

#[test]
fn shard_as_string_or_object() {
    assert!(shard_of(r#"{"shard":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}"#).is_err());
    assert!(shard_of(r#"{"shard":["1"]}"#).is_err());
    assert!(shard_of(r#"{"shard":{"0":1}}"#).is_err());
    assert!(shard_of(r#"{"shard":7}"#).is_err());
}

#[test]
fn shard_length_handling_like_go() {
    let short = shard_of(r#"{"shard":[1,2,3]}"#).unwrap();
    assert_eq!(&short[..4], &[1, 2, 3, 0]);
    assert!(short[3..].iter().all(|b| *b == 0));
    assert_eq!(shard_of(r#"{"shard":[]}"#).unwrap(), [0; 32]);

    let mut long = (0..32).map(|i| i.to_string()).collect::<Vec<_>>();
    long.extend(["999".into(), "\"x\"".into(), "{}".into()]);
    let got = shard_of(&format!(r#"{{"shard":[{}]}}"#, long.join(","))).unwrap();
    assert_eq!(got, std::array::from_fn(|i| i as u8));

    let with_null = shard_of(r#"{"shard":[null,5]}"#).unwrap();
    assert_eq!(&with_null[..2], &[0, 5]);

    let req: ShardPutRequest = decode_request(br#"{"shard":null}"#).unwrap();
    assert!(req.shard.is_none());
    let req: RestoreRequest = decode_request(br#"{"id":1}"#).unwrap();
    assert!(req.shard.is_none());
}

#[test]
fn base64_must_be_padded_standard() {
    for bad in [
        r#"{"plaintext":"aGk"}"#,
        r#"{"plaintext":"aGVsbG8gd29ybGQ"}"#,
        r#"{"plaintext":"-_8="}"#,
        r#"{"plaintext":"aGk=="}"#,
        r#"{"plaintext":"a Gk="}"#,
        r#"{"plaintext":7}"#,
        r#"{"plaintext":{}}"#,
        r#"{"plaintext":[256]}"#,
    ] {
        assert!(
            decode_request::<CipherEncryptRequest>(bad.as_bytes()).is_err(),
            "{bad}"
        );
    }
    let ok: CipherEncryptRequest = decode_request(br#"{"plaintext":"+/8="}"#).unwrap();
    assert_eq!(ok.plaintext, Some(vec![0xfb, 0xff]));
    // Go skips \r and \n inside base64.
    let ok: CipherEncryptRequest = decode_request(br#"{"plaintext":"aG\r\nk="}"#).unwrap();
    assert_eq!(ok.plaintext, Some(b"hi".to_vec()));
}

#[test]
fn cipher_version_is_a_byte() {
    assert!(decode_request::<CipherDecryptRequest>(br#"{"version":256}"#).is_err());
    assert!(decode_request::<CipherDecryptRequest>(br#"{"version":-1}"#).is_err());
    assert!(decode_request::<CipherDecryptRequest>(br#"{"version":"1"}"#).is_err());
    let r: CipherDecryptRequest = decode_request(br#"{"version":2}"#).unwrap();
    assert_eq!(r.version, 2);
}

#[test]
fn int_map_keys_must_be_integers() {
    for bad in [
        r#"{"shards":{"x":[1]}}"#,
        r#"{"shards":{"1.0":[1]}}"#,
        r#"{"shards":{"":[1]}}"#,
        r#"{"shards":{" 1":[1]}}"#,
        r#"{"shards":{"99999999999999999999":[1]}}"#,
        r#"{"shards":[[1]]}"#,
    ] {
        assert!(
            serde_json::from_str::<RecoverResponse>(bad).is_err(),
            "{bad}"
        );
    }
    assert!(
        serde_json::from_str::<SecretMetadataResponse>(r#"{"versions":{"one":{}},"metadata":{}}"#)
            .is_err()
    );
    // Like Go's strconv.ParseInt: sign and leading zeros are fine; last duplicate wins.
    let r: RecoverResponse =
        serde_json::from_str(r#"{"shards":{"+2":[2],"01":[1],"-3":[3],"1":[9]}}"#).unwrap();
    let shards = r.shards.unwrap();
    assert_eq!(shards.keys().copied().collect::<Vec<_>>(), vec![-3, 1, 2]);
    assert_eq!(shards[&1].as_bytes()[0], 9);
    let r: RecoverResponse = serde_json::from_str(r#"{"shards":null}"#).unwrap();
    assert!(r.shards.is_none());
    let r: SecretMetadataResponse =
        serde_json::from_str(r#"{"versions":null,"metadata":{}}"#).unwrap();
    assert!(r.versions.is_empty());
}

#[test]
fn int_map_output_is_numeric_order() {
    let r: RecoverResponse = serde_json::from_str(r#"{"shards":{"10":[],"2":[],"1":[]}}"#).unwrap();
    let zeros = format!("[{}]", vec!["0"; 32].join(","));
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        format!(r#"{{"shards":{{"1":{zeros},"2":{zeros},"10":{zeros}}}}}"#)
    );
}

#[test]
fn body_framing() {
    assert!(matches!(
        decode_request::<SecretGetRequest>(b""),
        Err(ProtoError::EmptyBody)
    ));
    assert!(matches!(
        decode_request::<SecretGetRequest>(b"\r\n "),
        Err(ProtoError::EmptyBody)
    ));
    assert!(matches!(
        decode_request::<SecretGetRequest>(br#"{"path":"a"} {}"#),
        Err(ProtoError::Json { .. })
    ));
    assert!(decode_request::<SecretGetRequest>(br#"{"path":"a"}x"#).is_err());
    assert!(decode_request::<SecretGetRequest>(br#"{"path":"a""#).is_err());
    assert!(decode_request::<SecretGetRequest>(b"null null").is_err());
    assert!(matches!(
        decode_request::<SecretListRequest>(b"[]"),
        Err(ProtoError::NotAnObject)
    ));
    assert!(matches!(
        decode_request::<SecretGetRequest>(br#"["a",1]"#),
        Err(ProtoError::NotAnObject)
    ));
    assert!(decode_request::<SecretGetRequest>(br#""a""#).is_err());
    assert!(decode_request::<SecretGetRequest>(b"1").is_err());
    assert!(decode_request::<SecretGetRequest>(b"\xef\xbb\xbf{}").is_err());
    let ok: SecretGetRequest = decode_request(b" {\"path\":\"a\"}\n\t ").unwrap();
    assert_eq!(ok.path, "a");
}

#[test]
fn wrong_field_types() {
    assert!(decode_request::<SecretGetRequest>(br#"{"path":1}"#).is_err());
    assert!(decode_request::<SecretGetRequest>(br#"{"version":"2"}"#).is_err());
    assert!(decode_request::<SecretGetRequest>(br#"{"version":1.5}"#).is_err());
    assert!(decode_request::<RestoreRequest>(br#"{"id":"1"}"#).is_err());
}

#[test]
fn bad_times_are_rejected() {
    let bad = r#"{"metadata":{"createdTime":"2026-01-02 15:04:05Z"}}"#;
    assert!(serde_json::from_str::<SecretMetadataResponse>(bad).is_err());
    let bad = r#"{"metadata":{"createdTime":1700000000}}"#;
    assert!(serde_json::from_str::<SecretMetadataResponse>(bad).is_err());
}
