//! `[]byte` as Go's `base64.StdEncoding` (padded standard alphabet).

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::ProtoError;

/// Go's `base64.StdEncoding`: standard alphabet, `=` padding required on decode, non-zero
/// trailing bits tolerated (Go's decoder is not `Strict`).
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// Encodes bytes the way Go's `encoding/json` writes a `[]byte`.
pub fn encode_base64(bytes: &[u8]) -> String {
    GO_STD.encode(bytes)
}

/// Decodes a string the way Go's `encoding/json` reads a `[]byte`.
///
/// Like Go's `StdEncoding`, `\r` and `\n` anywhere are skipped; padding is mandatory and the
/// URL-safe alphabet is rejected.
pub fn decode_base64(s: &str) -> Result<Vec<u8>, ProtoError> {
    let invalid = || ProtoError::Invalid { what: "base64" };
    if s.contains(['\r', '\n']) {
        let cleaned: String = s.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
        GO_STD.decode(cleaned).map_err(|_| invalid())
    } else {
        GO_STD.decode(s).map_err(|_| invalid())
    }
}

/// `Option<Vec<u8>>` as a Go `[]byte`: `None` ⇄ `null`, bytes ⇄ padded standard base64.
///
/// Decoding also accepts what Go accepts besides a string: a JSON array of integers
/// `0..=255` (`null` elements read as `0`).
pub mod base64_bytes {
    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    use super::{decode_base64, encode_base64, fmt};

    /// Writes `null` or the base64 string.
    pub fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => serializer.serialize_str(&encode_base64(bytes)),
            None => serializer.serialize_none(),
        }
    }

    /// Reads `null`, a base64 string, or an array of byte values.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        deserializer.deserialize_any(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Option<Vec<u8>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("null, a padded standard base64 string or an array of bytes")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            decode_base64(s)
                .map(Some)
                .map_err(|_| E::custom("illegal base64 data"))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element::<Option<u8>>()? {
                out.push(b.unwrap_or(0));
            }
            Ok(Some(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_std_encoding() {
        assert_eq!(encode_base64(b""), "");
        assert_eq!(encode_base64(b"f"), "Zg==");
        assert_eq!(encode_base64(b"fo"), "Zm8=");
        assert_eq!(encode_base64(&[0xfb, 0xff]), "+/8=");
        assert_eq!(decode_base64("Zg==").unwrap(), b"f");
        assert_eq!(decode_base64("Zm\r\n8=").unwrap(), b"fo");
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in [
            "Zg", "Zg=", "Zg===", "-_8=", "Zm8=Zg==", "Z", "Zm8 =", "Zg==\0",
        ] {
            assert!(decode_base64(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn tolerates_non_canonical_trailing_bits_like_go() {
        // "Zh==" has non-zero trailing bits; Go's non-strict StdEncoding accepts it.
        assert_eq!(decode_base64("Zh==").unwrap(), b"f");
    }
}
