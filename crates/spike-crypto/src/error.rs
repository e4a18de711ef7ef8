//! Typed errors for every fallible operation in this crate.
//!
//! None of these errors carry secret material: a bad shard or key is described
//! by its position or length, never by its bytes.

use thiserror::Error;

/// Errors from constructing or generating a [`RootKey`](crate::secret::RootKey).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is all zero bytes, which SPIKE treats as "no key".
    #[error("root key is all zero")]
    AllZero,
    /// The key, read as a big-endian integer, is not below the P-256 group order.
    #[error("root key is not below the P-256 group order")]
    OutOfRange,
    /// The key does not have exactly 32 bytes.
    #[error("root key must be 32 bytes, got {len}")]
    InvalidLength {
        /// The length that was given.
        len: usize,
    },
    /// The operating system random number generator failed.
    #[error("random number generator failed: {0}")]
    Rng(getrandom::Error),
}

/// Errors from constructing a shard value.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardError {
    /// The shard value does not have exactly 32 bytes.
    #[error("shard value must be 32 bytes, got {len}")]
    InvalidLength {
        /// The length that was given.
        len: usize,
    },
}

/// Errors from AES-256-GCM sealing and opening.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AeadError {
    /// The nonce does not have exactly 12 bytes.
    #[error("nonce must be 12 bytes, got {len}")]
    InvalidNonceLength {
        /// The length that was given.
        len: usize,
    },
    /// Encryption failed (the plaintext is longer than AES-GCM allows).
    #[error("encryption failed")]
    Encrypt,
    /// Decryption failed: wrong key, wrong nonce, or tampered ciphertext or tag.
    #[error("decryption failed")]
    Decrypt,
    /// The operating system random number generator failed (key or nonce).
    #[error("random number generator failed: {0}")]
    Rng(getrandom::Error),
    /// A stream-format envelope could not be decoded.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// A key-derivation step refused its key (HMAC accepts every length, so
    /// this does not happen in practice).
    #[error("invalid key length {len}")]
    InvalidKeyLength {
        /// The length that was given.
        len: usize,
    },
}

/// Errors from decoding the stream format `0x01 || nonce(12) || ciphertext||tag`.
///
/// The variants mirror the text errors SPIKE Nexus returns in stream mode.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    /// The input is empty, so there is no version byte.
    #[error("failed to read version")]
    MissingVersion,
    /// The version byte is not `0x01`.
    #[error("unsupported version {0:#04x}")]
    UnsupportedVersion(u8),
    /// Fewer than 12 bytes follow the version byte.
    #[error("failed to read nonce: need 12 bytes, got {len}")]
    ShortNonce {
        /// The number of bytes that followed the version byte.
        len: usize,
    },
}

/// Errors from Shamir splitting and combining.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShamirError {
    /// The parameters violate `1 <= threshold <= shares <= MAX_SHARES`.
    #[error("invalid Shamir parameters: shares={shares}, threshold={threshold}")]
    InvalidParameters {
        /// The requested number of shares.
        shares: u16,
        /// The requested threshold.
        threshold: u16,
    },
    /// A share id is zero or above the share count or `MAX_SHARES`.
    #[error("invalid shard id {id}")]
    InvalidShardId {
        /// The offending id.
        id: u16,
    },
    /// A shard value is not below the P-256 group order.
    #[error("shard {id} has a value outside the P-256 scalar field")]
    ValueOutOfRange {
        /// The id of the offending shard.
        id: u16,
    },
    /// Two shards carry the same id.
    #[error("duplicate shard id {id}")]
    DuplicateId {
        /// The repeated id.
        id: u16,
    },
    /// Fewer shards than the threshold were given.
    #[error("need {threshold} shards, got {got}")]
    NotEnoughShards {
        /// How many shards were given.
        got: usize,
        /// How many are needed.
        threshold: u16,
    },
    /// The reconstructed secret is zero, which is never a valid root key.
    #[error("reconstructed root key is zero")]
    ZeroResult,
}

/// Errors from parsing the recovery text format `spike:<id>:<64 hex>`.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardTextError {
    /// The input does not have three `:`-separated parts.
    #[error("shard text must have the form spike:<id>:<hex>")]
    MissingParts,
    /// The id is not a positive integer that fits a shard id.
    #[error("shard id is not a positive integer in range")]
    InvalidId,
    /// The value part is not exactly 64 bytes long.
    #[error("shard value must be 64 hex characters, got {len} bytes")]
    InvalidValueLength {
        /// The length of the value part in bytes.
        len: usize,
    },
    /// The value part contains a character that is not a hex digit.
    #[error("shard value is not valid hex")]
    InvalidHex,
}
