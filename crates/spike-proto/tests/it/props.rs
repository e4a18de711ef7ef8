//! Property tests: shards, base64 and times survive a JSON round trip; Go-invalid base64 is
//! always rejected.

use proptest::prelude::*;
use spike_proto::cipher::CipherDecryptResponse;
use spike_proto::keeper::ShardGetResponse;
use spike_proto::serde_helpers::{decode_base64, encode_base64, format_rfc3339_nano};
use spike_proto::{ShardBytes, Timestamp};
use time::{OffsetDateTime, UtcOffset};

proptest! {
    #[test]
    fn shard_round_trip(bytes in any::<[u8; 32]>()) {
        let resp = ShardGetResponse::ok(ShardBytes::new(bytes));
        let json = serde_json::to_string(&resp).unwrap();
        let expected = format!(
            r#"{{"shard":[{}],"Err":""}}"#,
            bytes.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
        );
        prop_assert_eq!(&json, &expected);
        let back: ShardGetResponse = serde_json::from_str(&json).unwrap();
        let shard = back.shard.unwrap();
        prop_assert_eq!(shard.as_bytes(), &bytes);
    }

    #[test]
    fn shard_prefix_is_zero_padded(bytes in proptest::collection::vec(any::<u8>(), 0..=32)) {
        let json = serde_json::to_string(&bytes).unwrap();
        let shard: ShardBytes = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&shard.as_bytes()[..bytes.len()], &bytes[..]);
        prop_assert!(shard.as_bytes()[bytes.len()..].iter().all(|b| *b == 0));
    }

    #[test]
    fn base64_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let resp = CipherDecryptResponse { plaintext: Some(bytes.clone()), err: None };
        let json = serde_json::to_string(&resp).unwrap();
        let back: CipherDecryptResponse = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back.plaintext, Some(bytes.clone()));
        let encoded = encode_base64(&bytes);
        prop_assert_eq!(encoded.len() % 4, 0);
        prop_assert!(!encoded.contains(['-', '_']));
        prop_assert_eq!(decode_base64(&encoded).unwrap(), bytes);
    }

    #[test]
    fn unpadded_or_url_safe_base64_is_rejected(bytes in proptest::collection::vec(any::<u8>(), 1..256)) {
        let encoded = encode_base64(&bytes);
        let unpadded = encoded.trim_end_matches('=');
        if unpadded.len() != encoded.len() {
            prop_assert!(decode_base64(unpadded).is_err());
        }
        if encoded.contains(['+', '/']) {
            let url_safe = encoded.replace('+', "-").replace('/', "_");
            prop_assert!(decode_base64(&url_safe).is_err());
        }
    }

    #[test]
    fn time_round_trip(
        // 0000-01-01 .. 9999-12-31 in seconds since the epoch.
        secs in -62_167_219_200i64..253_402_300_799,
        nanos in 0u32..1_000_000_000,
        offset_minutes in -1439i32..=1439,
    ) {
        let offset = UtcOffset::from_whole_seconds(offset_minutes * 60).unwrap();
        let t = OffsetDateTime::from_unix_timestamp(secs).unwrap()
            .replace_nanosecond(nanos).unwrap()
            .to_offset(offset);
        prop_assume!((0..=9999).contains(&t.year()));
        let ts = Timestamp::new(t);
        let json = serde_json::to_string(&ts).unwrap();
        let back: Timestamp = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, ts);
        prop_assert_eq!(back.get().offset(), offset);
        prop_assert_eq!(serde_json::to_string(&back).unwrap(), json.clone());
        // Trailing zeros are trimmed from the fraction.
        let s = format_rfc3339_nano(t).unwrap();
        if let Some(frac) = s.split('.').nth(1) {
            let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
            prop_assert!(!digits.ends_with('0'));
        }
    }
}
