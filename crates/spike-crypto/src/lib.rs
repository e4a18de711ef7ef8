//! SPIKE-compatible AES-256-GCM and P-256-field Shamir secret sharing.
//!
//! Pure functions and zeroizing secret types, byte-compatible with Go SPIKE
//! (spike-sdk-go v0.19.9, cloudflare/circl v1.6.3). No I/O, no async.
//!
//! # Layout
//!
//! - [`secret`]: [`RootKey`], [`ShardValue`] and [`Shard`]; zeroized on drop,
//!   redacted `Debug`, read only through `expose_secret()`.
//! - [`aead`]: [`Cipher`] (AES-256-GCM, 12-byte nonce, appended tag, no AAD),
//!   the `0x01 || nonce || ct` stream envelope and the metadata nonce salts.
//! - [`at_rest`]: [`RecordCipher`], the Nexus store's at-rest record format
//!   (keys derived from the root key, AAD bound to table and row id, HMAC row
//!   ids, key-check record).
//! - [`shamir`]: deterministic `split`/`share_for` and strict `combine`.
//! - [`shard_seal`]: the keeper's sealed-shard file ([`shard_seal::SealingKey`], AES-256-GCM,
//!   AAD bound to the keeper id, key id to tell a replaced key from tampering).
//! - [`shard_text`]: the `spike:<id>:<hex>` recovery format.
//! - [`verify`]: the Bootstrap ↔ Nexus proof helpers (random hex text, SHA-256 hex).
//! - [`error`]: one error enum per area.
#![forbid(unsafe_code)]

pub mod aead;
pub mod at_rest;
pub mod error;
pub mod secret;
pub mod shamir;
pub mod shard_seal;
pub mod shard_text;
pub mod verify;

pub use aead::Cipher;
pub use at_rest::RecordCipher;
pub use error::{AeadError, KeyError, ShamirError, ShardError, ShardTextError, StreamError};
pub use secret::{KEY_SIZE, RootKey, Shard, ShardId, ShardValue};
