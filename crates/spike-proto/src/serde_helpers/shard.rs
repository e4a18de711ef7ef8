//! `[32]byte` shards as JSON arrays of integers.

use std::fmt;

use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of a Shamir shard value in bytes.
pub const SHARD_LEN: usize = 32;

/// The 32 bytes of a shard as they travel on the wire.
///
/// This is a transport wrapper, not the secret type (that is `spike-crypto`'s `Shard`): it
/// zeroizes on drop, has a redacted `Debug`, and no `Clone` or `Display`.
///
/// JSON form: an array of 32 integers `0..=255`. Decoding mirrors Go's `[32]byte`: a shorter
/// array is zero-padded, extra elements are skipped, `null` elements read as `0`, and a value
/// above 255, a negative or fractional number, a string or any non-array is an error.
#[derive(Zeroize, ZeroizeOnDrop, Default)]
pub struct ShardBytes([u8; SHARD_LEN]);

impl ShardBytes {
    /// Wraps shard bytes.
    pub fn new(bytes: [u8; SHARD_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw shard bytes.
    pub fn as_bytes(&self) -> &[u8; SHARD_LEN] {
        &self.0
    }

    /// True if every byte is zero (Go treats an all-zero shard as "no shard").
    pub fn is_zero(&self) -> bool {
        self.0.iter().fold(0u8, |acc, b| acc | b) == 0
    }
}

impl From<[u8; SHARD_LEN]> for ShardBytes {
    fn from(bytes: [u8; SHARD_LEN]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for ShardBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShardBytes(<redacted>)")
    }
}

impl Serialize for ShardBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(SHARD_LEN))?;
        for b in &self.0 {
            seq.serialize_element(b)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for ShardBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(ShardVisitor)
    }
}

struct ShardVisitor;

impl<'de> Visitor<'de> for ShardVisitor {
    type Value = ShardBytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of up to 32 integers in 0..=255")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut shard = ShardBytes::default();
        for slot in shard.0.iter_mut() {
            match seq.next_element::<Option<u8>>()? {
                Some(b) => *slot = b.unwrap_or(0),
                None => return Ok(shard),
            }
        }
        // Go skips elements past the array length without type-checking them.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(shard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = ShardBytes::new([7; 32]);
        assert_eq!(format!("{s:?}"), "ShardBytes(<redacted>)");
    }

    #[test]
    fn is_zero() {
        assert!(ShardBytes::default().is_zero());
        let mut b = [0; 32];
        b[31] = 1;
        assert!(!ShardBytes::new(b).is_zero());
    }

    #[test]
    fn zeroize_clears() {
        let mut s = ShardBytes::new([9; 32]);
        s.zeroize();
        assert!(s.is_zero());
    }
}
