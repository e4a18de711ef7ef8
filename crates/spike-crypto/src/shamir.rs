//! Shamir secret sharing over the P-256 scalar field, byte-compatible with
//! cloudflare/circl v1.6.3 `secretsharing` as used by spike-sdk-go v0.19.9
//! (`crypto.ComputeShares`, `crypto.ComputeRootKeyFromShards`), docs/protocol.md#root-key-shards-and-recovery-files.
//!
//! Splitting is deterministic: the polynomial `f(x) = k + c1·x + … + ct·x^t`
//! (degree `t = threshold − 1`) takes its coefficients from the stream
//! `H1 ‖ H2 ‖ …`, `H1 = SHA-256(k)`, `H(i+1) = SHA-256(Hi)`. Each coefficient
//! is Go's `crypto/rand.Int(stream, n)`: read the next 32-byte block as a
//! big-endian integer and accept it if it is `< n`, else read the next block.
//! Share `x` is `f(x) mod n` as 32 big-endian bytes, for `x = 1..=shares`.
//!
//! Combining interpolates at 0 over the first `threshold` shards, like circl,
//! but returns errors where Go would exit the process.

use p256::Scalar;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::ShamirError;
use crate::secret::{
    KEY_SIZE, RootKey, Shard, ShardId, ShardValue, scalar_from_bytes, scalar_to_bytes,
};

/// The largest share count (and share id) accepted, as SPIKE's default
/// `SPIKE_NEXUS_SHAMIR_MAX_SHARE_COUNT`.
pub const MAX_SHARES: u16 = 1000;

/// spike-sdk-go's `DeterministicReader`, consumed in whole 32-byte blocks.
struct DeterministicStream {
    block: Zeroizing<[u8; KEY_SIZE]>,
    started: bool,
}

impl DeterministicStream {
    fn new(seed: &[u8; KEY_SIZE]) -> Self {
        let mut block = Zeroizing::new([0u8; KEY_SIZE]);
        block.copy_from_slice(&Sha256::digest(seed));
        Self {
            block,
            started: false,
        }
    }

    /// The next 32 bytes of the stream: H1 first, then H(i+1) = SHA-256(Hi).
    fn next_block(&mut self) -> &[u8; KEY_SIZE] {
        if self.started {
            let next = Sha256::digest(self.block.as_slice());
            self.block.copy_from_slice(&next);
        }
        self.started = true;
        &self.block
    }

    /// Go `crypto/rand.Int(stream, n)` for the 256-bit order `n`: no bit
    /// masking is needed (the top byte of n−1 is 0xff), so a block is accepted
    /// if it is below n and otherwise the next block is tried.
    fn next_scalar(&mut self) -> Scalar {
        loop {
            if let Some(scalar) = scalar_from_bytes(self.next_block()) {
                return scalar;
            }
        }
    }
}

/// The polynomial coefficients `[k, c1, …, ct]` for this key and threshold.
fn coefficients(key: &RootKey, threshold: u16) -> Zeroizing<Vec<Scalar>> {
    let mut stream = DeterministicStream::new(key.expose_secret());
    let mut coeffs = Zeroizing::new(Vec::with_capacity(usize::from(threshold)));
    coeffs.push(key.scalar());
    for _ in 1..threshold {
        coeffs.push(stream.next_scalar());
    }
    coeffs
}

/// Horner evaluation of the polynomial at `x`.
fn evaluate(coeffs: &[Scalar], x: ShardId) -> Zeroizing<Scalar> {
    let x = Scalar::from(u64::from(x));
    let mut acc = Zeroizing::new(Scalar::ZERO);
    for c in coeffs.iter().rev() {
        *acc = *acc * x + c;
    }
    acc
}

fn check_parameters(shares: u16, threshold: u16) -> Result<(), ShamirError> {
    if threshold == 0 || threshold > shares || shares > MAX_SHARES {
        return Err(ShamirError::InvalidParameters { shares, threshold });
    }
    Ok(())
}

fn make_shard(coeffs: &[Scalar], id: ShardId) -> Shard {
    let value = evaluate(coeffs, id);
    let bytes = scalar_to_bytes(&value);
    Shard::new(id, ShardValue::new(*bytes))
}

/// Splits the root key into `shares` shards with ids `1..=shares`, any
/// `threshold` of which reconstruct it. Identical output to Go SPIKE.
///
/// Requires `1 <= threshold <= shares <= MAX_SHARES`. Threshold 1 makes every
/// shard equal to the key (legal, as in Go, but pointless).
pub fn split(key: &RootKey, shares: u16, threshold: u16) -> Result<Vec<Shard>, ShamirError> {
    check_parameters(shares, threshold)?;
    let coeffs = coefficients(key, threshold);
    Ok((1..=shares).map(|id| make_shard(&coeffs, id)).collect())
}

/// The single shard with this id, as [`split`] would produce it (what Nexus
/// pushes to the keeper at position `id`).
pub fn share_for(
    key: &RootKey,
    id: ShardId,
    shares: u16,
    threshold: u16,
) -> Result<Shard, ShamirError> {
    check_parameters(shares, threshold)?;
    if id == 0 || id > shares {
        return Err(ShamirError::InvalidShardId { id });
    }
    let coeffs = coefficients(key, threshold);
    Ok(make_shard(&coeffs, id))
}

/// Reconstructs the root key from at least `threshold` shards.
///
/// All given shards are validated (id in `1..=MAX_SHARES`, value `< n`, no
/// duplicate ids); the first `threshold` are interpolated, as circl does,
/// and the rest are not cross-checked. A wrong but valid shard yields a
/// different key, not an error; a zero result is [`ShamirError::ZeroResult`].
pub fn combine(shards: &[Shard], threshold: u16) -> Result<RootKey, ShamirError> {
    if threshold == 0 || threshold > MAX_SHARES {
        let shares = u16::try_from(shards.len()).unwrap_or(u16::MAX);
        return Err(ShamirError::InvalidParameters { shares, threshold });
    }
    if shards.len() < usize::from(threshold) {
        return Err(ShamirError::NotEnoughShards {
            got: shards.len(),
            threshold,
        });
    }

    let mut seen = vec![false; usize::from(MAX_SHARES) + 1];
    let mut xs = Vec::with_capacity(usize::from(threshold));
    let mut ys = Zeroizing::new(Vec::with_capacity(usize::from(threshold)));
    for (index, shard) in shards.iter().enumerate() {
        let id = shard.id();
        let slot = seen
            .get_mut(usize::from(id))
            .filter(|_| id != 0)
            .ok_or(ShamirError::InvalidShardId { id })?;
        if *slot {
            return Err(ShamirError::DuplicateId { id });
        }
        *slot = true;
        let value =
            scalar_from_bytes(shard.expose_secret()).ok_or(ShamirError::ValueOutOfRange { id })?;
        if index < usize::from(threshold) {
            xs.push(Scalar::from(u64::from(id)));
            ys.push(value);
        }
    }

    let secret = interpolate_at_zero(&xs, &ys);
    let bytes = scalar_to_bytes(&secret);
    RootKey::from_bytes(&bytes).map_err(|_| ShamirError::ZeroResult)
}

/// Lagrange interpolation at 0: `Σ y_j · Π_{i≠j} (0 − x_i) / (x_j − x_i)`.
///
/// The x values are distinct and non-zero, so every denominator is invertible.
fn interpolate_at_zero(xs: &[Scalar], ys: &[Scalar]) -> Zeroizing<Scalar> {
    let mut acc = Zeroizing::new(Scalar::ZERO);
    for (j, (xj, yj)) in xs.iter().zip(ys).enumerate() {
        let mut num = Scalar::ONE;
        let mut den = Scalar::ONE;
        for (i, xi) in xs.iter().enumerate() {
            if i != j {
                num *= Scalar::ZERO - xi;
                den *= *xj - xi;
            }
        }
        // Distinct non-zero ids below n make `den` non-zero; a zero would
        // come out as a zero term, never a panic.
        let inv = Option::<Scalar>::from(den.invert()).unwrap_or(Scalar::ZERO);
        *acc += *yj * num * inv;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> RootKey {
        RootKey::from_bytes(&[byte; 32]).unwrap()
    }

    #[test]
    fn stream_matches_hash_chain() {
        let seed = [5u8; 32];
        let mut s = DeterministicStream::new(&seed);
        let h1: [u8; 32] = Sha256::digest(seed).into();
        let h2: [u8; 32] = Sha256::digest(h1).into();
        assert_eq!(s.next_block(), &h1);
        assert_eq!(s.next_block(), &h2);
    }

    #[test]
    fn threshold_one_shares_equal_key() {
        let k = key(3);
        for shard in split(&k, 4, 1).unwrap() {
            assert_eq!(shard.expose_secret(), k.expose_secret());
        }
    }

    #[test]
    fn split_is_deterministic_and_share_for_agrees() {
        let k = key(9);
        let a = split(&k, 5, 3).unwrap();
        let b = split(&k, 5, 3).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.iter().map(Shard::id).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        for shard in &a {
            assert_eq!(&share_for(&k, shard.id(), 5, 3).unwrap(), shard);
        }
        // Shares depend on the threshold but not on the share count.
        assert_eq!(split(&k, 7, 3).unwrap()[..5], a[..]);
        assert_ne!(split(&k, 5, 2).unwrap()[0], a[0]);
    }

    #[test]
    fn parameter_validation() {
        let k = key(1);
        for (n, t) in [(3, 0), (2, 3), (1001, 2), (0, 0)] {
            assert_eq!(
                split(&k, n, t),
                Err(ShamirError::InvalidParameters {
                    shares: n,
                    threshold: t
                })
            );
        }
        assert!(split(&k, 1000, 2).is_ok());
        assert_eq!(
            share_for(&k, 0, 3, 2),
            Err(ShamirError::InvalidShardId { id: 0 })
        );
        assert_eq!(
            share_for(&k, 4, 3, 2),
            Err(ShamirError::InvalidShardId { id: 4 })
        );
    }

    #[test]
    fn combine_rejects_bad_input() {
        let k = key(7);
        let shards = split(&k, 3, 2).unwrap();
        let dup = |s: &Shard| s.duplicate_secret();

        assert_eq!(
            combine(&shards[..1], 2),
            Err(ShamirError::NotEnoughShards {
                got: 1,
                threshold: 2
            })
        );
        assert!(matches!(
            combine(&shards, 0),
            Err(ShamirError::InvalidParameters { threshold: 0, .. })
        ));
        assert_eq!(
            combine(&[dup(&shards[0]), dup(&shards[0])], 2),
            Err(ShamirError::DuplicateId { id: 1 })
        );
        let zero_id = Shard::new(0, shards[1].value().duplicate_secret());
        assert_eq!(
            combine(&[dup(&shards[0]), zero_id], 2),
            Err(ShamirError::InvalidShardId { id: 0 })
        );
        let big_id = Shard::new(1001, shards[1].value().duplicate_secret());
        assert_eq!(
            combine(&[dup(&shards[0]), big_id], 2),
            Err(ShamirError::InvalidShardId { id: 1001 })
        );
        let too_big = Shard::new(2, ShardValue::new([0xff; 32]));
        assert_eq!(
            combine(&[dup(&shards[0]), too_big], 2),
            Err(ShamirError::ValueOutOfRange { id: 2 })
        );
        // Zero shards interpolate to zero, which is not a key.
        let zeros = [
            Shard::new(1, ShardValue::new([0; 32])),
            Shard::new(2, ShardValue::new([0; 32])),
        ];
        assert_eq!(combine(&zeros, 2), Err(ShamirError::ZeroResult));
    }

    #[test]
    fn combine_uses_first_threshold_shards_in_any_order() {
        let k = key(0x42);
        let shards = split(&k, 5, 3).unwrap();
        let picked: Vec<Shard> = [4, 0, 2]
            .iter()
            .map(|&i| shards[i].duplicate_secret())
            .collect();
        assert_eq!(combine(&picked, 3).unwrap(), k);
        // Extra shards after the first `threshold` are ignored...
        let mut extra: Vec<Shard> = shards.iter().map(Shard::duplicate_secret).collect();
        extra.push(Shard::new(6, ShardValue::new([1; 32])));
        assert_eq!(combine(&extra, 3).unwrap(), k);
        // ...but a wrong shard among the first ones gives a different key.
        let mut wrong: Vec<Shard> = shards[..3].iter().map(Shard::duplicate_secret).collect();
        wrong[1] = Shard::new(2, ShardValue::new([1; 32]));
        assert_ne!(combine(&wrong, 3).unwrap(), k);
    }
}
