//! Secret types: the root key and Shamir shards.
//!
//! Every type here zeroizes its bytes on drop, prints as `<redacted>` in
//! `Debug`, and has no `Display`, `Serialize` or `Clone`. Reading the bytes
//! takes an explicit `expose_secret()`; copying takes an explicit
//! `duplicate_secret()`.

use core::fmt;

use p256::Scalar;
use p256::elliptic_curve::ff::PrimeField;
use subtle::{Choice, ConstantTimeEq};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{KeyError, ShardError};

/// Size in bytes of a root key and of a shard value.
pub const KEY_SIZE: usize = 32;

/// A share id: the x coordinate of a Shamir share, `1..=MAX_SHARES`.
///
/// In SPIKE it is the 1-based position of a keeper in the keeper list, the key
/// of the recover map and the `<id>` of a recovery file.
pub type ShardId = u16;

/// Parses 32 big-endian bytes as a P-256 scalar, `None` if the value is `>= n`.
pub(crate) fn scalar_from_bytes(bytes: &[u8; KEY_SIZE]) -> Option<Scalar> {
    Option::from(Scalar::from_repr((*bytes).into()))
}

/// Serializes a scalar as 32 big-endian bytes (circl `MarshalBinary`).
pub(crate) fn scalar_to_bytes(scalar: &Scalar) -> Zeroizing<[u8; KEY_SIZE]> {
    let mut repr = scalar.to_repr();
    let mut out = Zeroizing::new([0u8; KEY_SIZE]);
    out.copy_from_slice(&repr);
    repr.zeroize();
    out
}

/// The SPIKE root key: 32 bytes, a non-zero P-256 scalar (`1 <= k < n`).
///
/// It is the AES-256-GCM key of Nexus and the secret that Shamir splits
/// across keepers. The invariant `1 <= k < n` holds for every value of this
/// type, so splitting never fails on the key itself.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct RootKey([u8; KEY_SIZE]);

impl RootKey {
    /// Samples a key uniformly from `[1, n)` with the OS random number generator.
    ///
    /// Rejection sampling: draws of zero or `>= n` (probability about 2^-32)
    /// are discarded and drawn again.
    pub fn generate() -> Result<Self, KeyError> {
        let mut candidate = Zeroizing::new([0u8; KEY_SIZE]);
        loop {
            getrandom::fill(candidate.as_mut_slice()).map_err(KeyError::Rng)?;
            match Self::from_bytes(&candidate) {
                Ok(key) => return Ok(key),
                Err(KeyError::AllZero | KeyError::OutOfRange) => {}
                Err(other) => return Err(other),
            }
        }
    }

    /// Builds a key from its 32-byte big-endian encoding.
    ///
    /// Rejects the all-zero key ([`KeyError::AllZero`]) and values `>= n`
    /// ([`KeyError::OutOfRange`]), as circl does for Go SPIKE.
    pub fn from_bytes(bytes: &[u8; KEY_SIZE]) -> Result<Self, KeyError> {
        let zero: bool = bytes.ct_eq(&[0u8; KEY_SIZE]).into();
        if zero {
            return Err(KeyError::AllZero);
        }
        if scalar_from_bytes(bytes).is_none() {
            return Err(KeyError::OutOfRange);
        }
        Ok(Self(*bytes))
    }

    /// Like [`RootKey::from_bytes`] for a slice; rejects lengths other than 32.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let array: &[u8; KEY_SIZE] = bytes
            .try_into()
            .map_err(|_| KeyError::InvalidLength { len: bytes.len() })?;
        Self::from_bytes(array)
    }

    /// The raw key bytes. Callers must not copy them into non-zeroizing storage.
    pub fn expose_secret(&self) -> &[u8; KEY_SIZE] {
        &self.0
    }

    /// An independent copy of this key (also zeroized on drop).
    ///
    /// There is deliberately no `Clone`: every copy of the root key should be
    /// visible at the call site.
    pub fn duplicate_secret(&self) -> Self {
        Self(self.0)
    }

    /// The key as a P-256 scalar (valid by construction).
    pub(crate) fn scalar(&self) -> Scalar {
        // The constructor guarantees `1 <= k < n`, so this never falls back.
        scalar_from_bytes(&self.0).unwrap_or(Scalar::ZERO)
    }
}

impl ConstantTimeEq for RootKey {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.0.ct_eq(&other.0)
    }
}

impl PartialEq for RootKey {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for RootKey {}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootKey(<redacted>)")
    }
}

/// The 32-byte value of one Shamir share (a P-256 scalar, big-endian).
///
/// This is what a keeper holds and what travels as `"shard": [32 ints]` on the
/// wire. The value is not validated against the field order here: keepers
/// store opaque bytes, and [`crate::shamir::combine`] rejects values `>= n`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct ShardValue([u8; KEY_SIZE]);

impl ShardValue {
    /// Wraps 32 bytes. The caller should zeroize its own copy of `bytes`.
    pub fn new(bytes: [u8; KEY_SIZE]) -> Self {
        Self(bytes)
    }

    /// Copies a 32-byte slice; rejects other lengths.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ShardError> {
        let array: &[u8; KEY_SIZE] = bytes
            .try_into()
            .map_err(|_| ShardError::InvalidLength { len: bytes.len() })?;
        Ok(Self(*array))
    }

    /// The raw value bytes.
    pub fn expose_secret(&self) -> &[u8; KEY_SIZE] {
        &self.0
    }

    /// Whether all 32 bytes are zero (SPIKE's "no shard"), in constant time.
    pub fn is_zero(&self) -> bool {
        self.0.ct_eq(&[0u8; KEY_SIZE]).into()
    }

    /// An independent copy of this value (also zeroized on drop).
    pub fn duplicate_secret(&self) -> Self {
        Self(self.0)
    }
}

impl ConstantTimeEq for ShardValue {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.0.ct_eq(&other.0)
    }
}

impl PartialEq for ShardValue {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for ShardValue {}

impl fmt::Debug for ShardValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShardValue(<redacted>)")
    }
}

/// One Shamir share: its public id and its secret value.
#[derive(PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Shard {
    id: ShardId,
    value: ShardValue,
}

impl Shard {
    /// Pairs an id with a value. Ids are checked when combining, not here.
    pub fn new(id: ShardId, value: ShardValue) -> Self {
        Self { id, value }
    }

    /// The share id (x coordinate), normally `1..=shares`.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// The secret value of the share.
    pub fn value(&self) -> &ShardValue {
        &self.value
    }

    /// The raw value bytes; shorthand for `value().expose_secret()`.
    pub fn expose_secret(&self) -> &[u8; KEY_SIZE] {
        self.value.expose_secret()
    }

    /// An independent copy of this shard (also zeroized on drop).
    pub fn duplicate_secret(&self) -> Self {
        Self {
            id: self.id,
            value: self.value.duplicate_secret(),
        }
    }
}

impl fmt::Debug for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shard")
            .field("id", &self.id)
            .field("value", &self.value)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// n - 1, the largest valid key.
    const N_MINUS_1: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x50,
    ];

    #[test]
    fn from_bytes_bounds() {
        assert!(matches!(
            RootKey::from_bytes(&[0; 32]),
            Err(KeyError::AllZero)
        ));
        let mut one = [0u8; 32];
        one[31] = 1;
        assert_eq!(RootKey::from_bytes(&one).unwrap().expose_secret(), &one);
        assert!(RootKey::from_bytes(&N_MINUS_1).is_ok());
        let mut n = N_MINUS_1;
        n[31] = 0x51;
        assert!(matches!(RootKey::from_bytes(&n), Err(KeyError::OutOfRange)));
        assert!(matches!(
            RootKey::from_bytes(&[0xff; 32]),
            Err(KeyError::OutOfRange)
        ));
        assert!(matches!(
            RootKey::from_slice(&[1; 31]),
            Err(KeyError::InvalidLength { len: 31 })
        ));
    }

    #[test]
    fn generate_gives_distinct_valid_keys() {
        let a = RootKey::generate().unwrap();
        let b = RootKey::generate().unwrap();
        assert_ne!(a, b);
        assert!(RootKey::from_bytes(a.expose_secret()).is_ok());
    }

    #[test]
    fn debug_is_redacted() {
        let key = RootKey::from_bytes(&N_MINUS_1).unwrap();
        assert_eq!(format!("{key:?}"), "RootKey(<redacted>)");
        let shard = Shard::new(3, ShardValue::new([0xab; 32]));
        let text = format!("{shard:?}");
        assert_eq!(text, "Shard { id: 3, value: ShardValue(<redacted>) }");
        assert!(!text.contains("ab"));
    }

    #[test]
    fn duplicate_and_equality() {
        let key = RootKey::from_bytes(&N_MINUS_1).unwrap();
        assert_eq!(key.duplicate_secret(), key);
        let v = ShardValue::new([7; 32]);
        assert_eq!(v.duplicate_secret(), v);
        assert_ne!(v, ShardValue::new([8; 32]));
        assert!(ShardValue::new([0; 32]).is_zero());
        assert!(!v.is_zero());
        assert_eq!(
            ShardValue::from_slice(&[1; 33]),
            Err(ShardError::InvalidLength { len: 33 })
        );
    }

    #[test]
    fn zeroize_clears_bytes() {
        let mut key = RootKey::from_bytes(&N_MINUS_1).unwrap();
        key.zeroize();
        assert_eq!(key.expose_secret(), &[0u8; 32]);
        let mut shard = Shard::new(1, ShardValue::new([9; 32]));
        shard.zeroize();
        assert!(shard.value().is_zero());
    }
}
