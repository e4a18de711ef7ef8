//! No-panic properties: arbitrary bytes and strings through every parser an attacker can
//! reach (request decoding, route lookup, validation) return `Ok` or `Err`, never panic.
//! The deeper, coverage-guided versions of these live in `fuzz/` (cargo-fuzz).

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use spike_proto::paths::{self, KeeperRoute, Route};
use spike_proto::response::encode_response;
use spike_proto::serde_helpers::{decode_base64, parse_rfc3339};
use spike_proto::spiffe_id::{TrustRoot, TrustRoots};
use spike_proto::{ErrorCode, bootstrap, cipher, decode_request, keeper, operator, policy};
use spike_proto::{secrets, validate};

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(384)
}

/// Bytes that look like JSON often enough to get past the first token.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..128),
        "[{}\\[\\]\":, 0-9a-zA-Z.\\-+eE\\\\nul]{0,96}".prop_map(String::into_bytes),
        (
            "(path|values|version|versions|name|id|spiffeidPattern|pathPattern|permissions|plaintext|nonce|ciphertext|algorithm|shard)",
            "(null|true|-?[0-9]{1,25}|\"[a-zA-Z0-9+/=]{0,12}\"|\\[[0-9, ]{0,40}\\]|\\{\"[0-9a-z]{0,3}\":\"x\"\\}|1e999|\"\\\\ud800\")",
        )
            .prop_map(|(k, v)| format!("{{\"{k}\":{v}}}").into_bytes()),
    ]
}

/// Decoding must not panic; whatever decodes must re-encode to something that decodes.
fn request<T: Serialize + DeserializeOwned + Default>(body: &[u8]) {
    if let Ok(value) = decode_request::<T>(body)
        && let Ok(json) = encode_response(&value)
    {
        assert!(
            decode_request::<T>(&json).is_ok(),
            "re-encoded body does not decode"
        );
    }
}

/// What a client does with a response body.
fn response<T: Serialize + DeserializeOwned>(body: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<T>(body) {
        let _ = serde_json::to_vec(&value);
    }
}

fn every_body_type(body: &[u8]) {
    request::<secrets::SecretPutRequest>(body);
    request::<secrets::SecretGetRequest>(body);
    request::<secrets::SecretDeleteRequest>(body);
    request::<secrets::SecretUndeleteRequest>(body);
    request::<secrets::SecretListRequest>(body);
    request::<secrets::SecretMetadataRequest>(body);
    request::<policy::PolicyPutRequest>(body);
    request::<policy::PolicyReadRequest>(body);
    request::<policy::PolicyDeleteRequest>(body);
    request::<policy::PolicyListRequest>(body);
    request::<operator::RecoverRequest>(body);
    request::<operator::RestoreRequest>(body);
    request::<cipher::CipherEncryptRequest>(body);
    request::<cipher::CipherDecryptRequest>(body);
    request::<bootstrap::BootstrapVerifyRequest>(body);
    request::<keeper::ShardPutRequest>(body);
    request::<keeper::ShardGetRequest>(body);
    response::<secrets::SecretGetResponse>(body);
    response::<secrets::SecretListResponse>(body);
    response::<secrets::SecretMetadataResponse>(body);
    response::<policy::PolicyReadResponse>(body);
    response::<policy::PolicyListResponse>(body);
    response::<operator::RecoverResponse>(body);
    response::<operator::RestoreResponse>(body);
    response::<cipher::CipherEncryptResponse>(body);
    response::<cipher::CipherDecryptResponse>(body);
    response::<keeper::ShardGetResponse>(body);
    response::<spike_proto::response::FallbackResponse>(body);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn request_and_response_bodies_never_panic(body in jsonish()) {
        every_body_type(&body);
    }

    #[test]
    fn route_lookup_never_panics(
        path in prop_oneof![
            Just(paths::NEXUS_SECRETS.to_owned()),
            Just(paths::NEXUS_POLICY.to_owned()),
            Just(paths::KEEPER_CONTRIBUTE.to_owned()),
            any::<String>(),
        ],
        query in proptest::option::of("[a-z=&;%+0-9A-F]{0,32}|\\PC{0,32}"),
    ) {
        let action = paths::action_from_query(query.as_deref());
        let _ = paths::bypasses_readiness_gate(&path);
        if let Some(route) = Route::parse(&path, action.as_deref()) {
            prop_assert_eq!(route.path(), path.as_str());
            let _ = Route::parse_for(true, &path, action.as_deref());
        }
        if let Some(route) = KeeperRoute::parse(&path, action.as_deref()) {
            prop_assert_eq!(route.path(), path.as_str());
        }
    }

    #[test]
    fn validation_never_panics(s in prop_oneof![
        any::<String>(),
        "\\^?spiffe://[a-z.\\\\*()+?\\[\\]/|{}$^-]{0,40}",
        "[a-zA-Z0-9._/()?+*|\\[\\]{}\\\\^$ -]{0,600}",
    ]) {
        let _ = validate::name(&s);
        let _ = validate::secret_path(&s);
        let _ = validate::spiffe_id_pattern(&s);
        let _ = validate::path_pattern(&s);
        let _ = validate::peer_spiffe_id(&s);
        let perms: Vec<&str> = s.split(',').collect();
        let _ = validate::permissions(&perms);
        let values: BTreeMap<String, String> =
            s.split('/').map(|k| (k.to_owned(), String::new())).collect();
        let _ = validate::secret_value_keys(&values);
        let _ = decode_base64(&s);
        let _ = parse_rfc3339(&s);
        let code = ErrorCode::from_wire(&s);
        prop_assert_eq!(code.as_str(), s.as_str());
        if let Ok(root) = TrustRoot::new(&s) {
            let _ = TrustRoots::uniform(root).role_of(&s);
        }
    }

    #[test]
    fn restore_ids_never_panic(id in any::<i64>(), max in any::<u32>()) {
        let ok = validate::restore_id(id, max).is_ok();
        prop_assert_eq!(ok, id >= 1 && id <= i64::from(max));
    }
}
