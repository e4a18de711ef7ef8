//! The pure secret and policy model (no I/O).
//!
//! - [`secret`]: versioned key/value secrets with soft delete (docs/protocol.md#secrets of the wire spec).
//! - [`policy`]: regex policies, the access check and the reserved `spike/system/*` rule (docs/protocol.md#policies).

pub mod policy;
pub mod secret;

pub use policy::{
    Permission, Policy, RESERVED_ACL, RESERVED_CIPHER, RESERVED_PATHS, RESERVED_SECRET,
};
pub use secret::{Secret, SecretData, SecretMetadata, SecretVersion, Version};

use thiserror::Error;

/// Which pattern of a policy an error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PatternField {
    /// The SPIFFE-ID pattern (`spiffeidPattern`).
    SpiffeId,
    /// The resource path pattern (`pathPattern`).
    Path,
}

impl core::fmt::Display for PatternField {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::SpiffeId => "spiffeid pattern",
            Self::Path => "path pattern",
        })
    }
}

/// Errors of the secret and policy model. None of them carries a secret value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A policy pattern is not a valid (RE2-compatible) regular expression, or is too large.
    #[error("invalid {which}: {msg}")]
    InvalidRegex {
        /// The pattern that failed.
        which: PatternField,
        /// The compiler's message.
        msg: String,
    },
    /// The path pattern reaches a reserved system path only by an unanchored substring match (docs/protocol.md#policies).
    #[error(
        "the policy reaches the reserved system path {path} only by substring match; anchor both patterns with ^ and $"
    )]
    ReservedPathBySubstring {
        /// The reserved path that was reached.
        path: &'static str,
    },
    /// A policy name is empty.
    #[error("policy name must not be empty")]
    EmptyName,
    /// An undelete request did not undelete any version.
    #[error("could not find any secret to undelete")]
    NothingToUndelete,
}
