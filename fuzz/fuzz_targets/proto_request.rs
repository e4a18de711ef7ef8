//! Every Nexus and Keeper request body through `spike_proto::decode_request` (the server
//! path), and every response body through `serde_json` (the client path).
//!
//! The first input byte picks the type, the rest is the body. A body that decodes must
//! re-encode, and the re-encoding must decode and re-encode to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use spike_proto::response::{FallbackResponse, SdkErrorBody, encode_response};
use spike_proto::{bootstrap, cipher, decode_request, keeper, operator, policy, secrets};

fn request<T: Serialize + DeserializeOwned + Default>(body: &[u8]) {
    let Ok(value) = decode_request::<T>(body) else {
        return;
    };
    let Ok(json) = encode_response(&value) else {
        return;
    };
    let again: T = match decode_request(&json) {
        Ok(v) => v,
        Err(e) => panic!("re-encoded request does not decode: {e}"),
    };
    assert_eq!(
        encode_response(&again).ok(),
        Some(json),
        "unstable re-encoding"
    );
}

fn response<T: Serialize + DeserializeOwned>(body: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(body) else {
        return;
    };
    let Ok(json) = serde_json::to_vec(&value) else {
        return;
    };
    let again: T = match serde_json::from_slice(&json) {
        Ok(v) => v,
        Err(e) => panic!("re-encoded response does not decode: {e}"),
    };
    assert_eq!(
        serde_json::to_vec(&again).ok(),
        Some(json),
        "unstable re-encoding"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 36 {
        0 => request::<secrets::SecretPutRequest>(body),
        1 => request::<secrets::SecretGetRequest>(body),
        2 => request::<secrets::SecretDeleteRequest>(body),
        3 => request::<secrets::SecretUndeleteRequest>(body),
        4 => request::<secrets::SecretListRequest>(body),
        5 => request::<secrets::SecretMetadataRequest>(body),
        6 => request::<policy::PolicyPutRequest>(body),
        7 => request::<policy::PolicyReadRequest>(body),
        8 => request::<policy::PolicyDeleteRequest>(body),
        9 => request::<policy::PolicyListRequest>(body),
        10 => request::<operator::RecoverRequest>(body),
        11 => request::<operator::RestoreRequest>(body),
        12 => request::<cipher::CipherEncryptRequest>(body),
        13 => request::<cipher::CipherDecryptRequest>(body),
        14 => request::<bootstrap::BootstrapVerifyRequest>(body),
        15 => request::<keeper::ShardPutRequest>(body),
        16 => request::<keeper::ShardGetRequest>(body),
        17 => response::<secrets::SecretPutResponse>(body),
        18 => response::<secrets::SecretGetResponse>(body),
        19 => response::<secrets::SecretDeleteResponse>(body),
        20 => response::<secrets::SecretUndeleteResponse>(body),
        21 => response::<secrets::SecretListResponse>(body),
        22 => response::<secrets::SecretMetadataResponse>(body),
        23 => response::<policy::PolicyPutResponse>(body),
        24 => response::<policy::PolicyReadResponse>(body),
        25 => response::<policy::PolicyDeleteResponse>(body),
        26 => response::<policy::PolicyListResponse>(body),
        27 => response::<operator::RecoverResponse>(body),
        28 => response::<operator::RestoreResponse>(body),
        29 => response::<cipher::CipherEncryptResponse>(body),
        30 => response::<cipher::CipherDecryptResponse>(body),
        31 => response::<bootstrap::BootstrapVerifyResponse>(body),
        32 => response::<keeper::ShardPutResponse>(body),
        33 => response::<keeper::ShardGetResponse>(body),
        34 => response::<FallbackResponse>(body),
        _ => response::<SdkErrorBody>(body),
    }
});
