//! Go `encoding/json`-compatible encodings (docs/protocol.md#conventions).
//!
//! Use the modules with `#[serde(with = "...")]` / `#[serde(deserialize_with = "...")]`;
//! [`ShardBytes`] and [`Timestamp`] carry their own serde implementations.
//!
//! | Go type | Rust type | Helper |
//! |---|---|---|
//! | `[]byte` | `Option<Vec<u8>>` | [`base64_bytes`] |
//! | `*[32]byte` | `Option<ShardBytes>` | built in |
//! | `map[int]X` | `BTreeMap<i64, X>` / `Option<BTreeMap<i64, X>>` | [`int_map`] / [`opt_int_map`] |
//! | `time.Time` / `*time.Time` | `Timestamp` / `Option<Timestamp>` | built in |
//! | `ErrorCode` with `omitempty` | `Option<ErrorCode>` | [`err_code`] |
//! | Keeper `Err` (always present) | `Option<ErrorCode>` | [`keeper_err`] |
//! | `[]T` / `map[string]T` read as empty when `null` | `Vec<T>` / `BTreeMap<..>` | [`null_as_default`] |

mod base64;
mod int_maps;
mod shard;
mod time;

pub use self::base64::{base64_bytes, decode_base64, encode_base64};
pub use self::int_maps::{int_map, opt_int_map};
pub use self::shard::{SHARD_LEN, ShardBytes};
pub use self::time::{Timestamp, format_rfc3339_nano, parse_rfc3339};

/// `err` fields tagged `json:"err,omitempty"`: `None` is omitted on output (pair with
/// `skip_serializing_if = "Option::is_none"`); `null`, `""` and a missing key read as `None`.
pub mod err_code {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::ErrorCode;

    /// Writes the code string (only called for `Some`, given `skip_serializing_if`).
    pub fn serialize<S: Serializer>(
        code: &Option<ErrorCode>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match code {
            Some(code) => code.serialize(serializer),
            None => serializer.serialize_str(""),
        }
    }

    /// Reads a code; `null` and `""` mean "no error".
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<ErrorCode>, D::Error> {
        let code = Option::<ErrorCode>::deserialize(deserializer)?;
        Ok(code.filter(|c| !c.as_str().is_empty()))
    }
}

/// The Keeper's untagged `Err` field: always written, `""` when there is no error.
pub mod keeper_err {
    use serde::{Deserializer, Serializer};

    use crate::ErrorCode;

    /// Writes the code string, or `""` for `None`.
    pub fn serialize<S: Serializer>(
        code: &Option<ErrorCode>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(code.as_ref().map_or("", ErrorCode::as_str))
    }

    /// Reads a code; `null` and `""` mean "no error".
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<ErrorCode>, D::Error> {
        super::err_code::deserialize(deserializer)
    }
}

/// Reads `null` as `T::default()` (Go decodes `null` into a slice or map as nil, which
/// behaves like an empty one). Serialization is unaffected.
pub mod null_as_default {
    use serde::{Deserialize, Deserializer};

    /// Deserializes `T`, mapping `null` to `T::default()`.
    pub fn deserialize<'de, D, T>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default,
    {
        Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
    }
}

/// `skip_serializing_if` predicate for Go `int` fields tagged `omitempty`.
pub(crate) fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// `skip_serializing_if` predicate for Go `string` fields tagged `omitempty`.
pub(crate) fn is_empty_str(s: &str) -> bool {
    s.is_empty()
}
