//! Policy routes (docs/protocol.md#policy-routes) and the policy vocabulary (docs/protocol.md#policies).
//!
//! Note the two spellings: requests use `"spiffeidPattern"`, the read response uses the
//! misspelled `"spiffiedPattern"` (Go clients read only that one).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::response::impl_api_response;
use crate::serde_helpers::{err_code, is_empty_str, null_as_default};
use crate::{ErrorCode, Timestamp};

/// Resource path guarded for policy management (`spike/system/acl`).
pub const SYSTEM_ACL_PATH: &str = "spike/system/acl";
/// Resource path guarded for secret listing (`spike/system/secret`).
pub const SYSTEM_SECRET_PATH: &str = "spike/system/secret";
/// Resource path guarded for the cipher routes (`spike/system/cipher/exec`).
pub const SYSTEM_CIPHER_EXEC_PATH: &str = "spike/system/cipher/exec";
/// The reserved system paths, in the order Go's upsert guard checks them (docs/protocol.md#policies).
pub const RESERVED_PATHS: [&str; 3] =
    [SYSTEM_ACL_PATH, SYSTEM_SECRET_PATH, SYSTEM_CIPHER_EXEC_PATH];

/// A policy permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// `read`: read secrets (not listing).
    Read,
    /// `write`: create, update, delete secrets.
    Write,
    /// `list`: list secrets or policies.
    List,
    /// `execute`: run operations such as encrypt/decrypt.
    Execute,
    /// `super`: everything the matching paths allow.
    Super,
}

impl Permission {
    /// All permissions, in Go's order.
    pub const ALL: [Permission; 5] = [
        Permission::Read,
        Permission::Write,
        Permission::List,
        Permission::Execute,
        Permission::Super,
    ];

    /// The wire string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::List => "list",
            Permission::Execute => "execute",
            Permission::Super => "super",
        }
    }

    /// Parses an exact wire string.
    pub fn from_wire(s: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// An unknown permission name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown permission {0:?}")]
pub struct UnknownPermission(pub String);

impl std::str::FromStr for Permission {
    type Err = UnknownPermission;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPermission(s.to_owned()))
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/acl/policy` (create or update by name):
/// `{"name":s,"spiffeidPattern":s,"pathPattern":s,"permissions":[s,...]}`.
///
/// Permissions stay strings so that an unauthorized caller with a bad permission still gets
/// 401 (Go authorizes before validating); validate with [`crate::validate::permissions`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyPutRequest {
    /// Policy name (the unique key).
    pub name: String,
    /// SPIFFE-ID regex (unanchored RE2 semantics).
    #[serde(rename = "spiffeidPattern")]
    pub spiffe_id_pattern: String,
    /// Resource-path regex (unanchored RE2 semantics).
    #[serde(rename = "pathPattern")]
    pub path_pattern: String,
    /// Requested permissions (`null` reads as empty).
    #[serde(deserialize_with = "null_as_default::deserialize")]
    pub permissions: Vec<String>,
}

/// Response to [`PolicyPutRequest`]: `{}` (the `id` is always empty and omitted) or
/// `{"err":code}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyPutResponse {
    /// Legacy policy id; omitted when empty (always, since policies are keyed by name).
    #[serde(skip_serializing_if = "is_empty_str")]
    pub id: String,
    /// Error code; omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none", with = "err_code")]
    pub err: Option<ErrorCode>,
}

/// `POST /v1/acl/policy?action=get`: `{"id":"<name>"}` (the field carries the name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyReadRequest {
    /// The policy *name*.
    pub id: String,
}

/// Response to [`PolicyReadRequest`]:
/// `{"id":"","name":s,"spiffiedPattern":s,"pathPattern":s,"permissions":[...],"createdAt":t,"updatedAt":t}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyReadResponse {
    /// Legacy id, always `""` (always emitted).
    pub id: String,
    /// Policy name.
    pub name: String,
    /// SPIFFE-ID pattern, under the misspelled key `spiffiedPattern`.
    #[serde(rename = "spiffiedPattern")]
    pub spiffe_id_pattern: String,
    /// Path pattern.
    #[serde(rename = "pathPattern")]
    pub path_pattern: String,
    /// Permissions; `None` (`null`) in error bodies.
    pub permissions: Option<Vec<Permission>>,
    /// Creation time (kept across updates).
    #[serde(rename = "createdAt")]
    pub created_at: Timestamp,
    /// Last update time.
    #[serde(rename = "updatedAt")]
    pub updated_at: Timestamp,
    /// Error code; omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none", with = "err_code")]
    pub err: Option<ErrorCode>,
}

/// `POST /v1/acl/policy?action=delete`: `{"id":"<name>"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyDeleteRequest {
    /// The policy *name*.
    pub id: String,
}

/// Response to [`PolicyDeleteRequest`]: `{}` or `{"err":code}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyDeleteResponse {
    /// Error code; omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none", with = "err_code")]
    pub err: Option<ErrorCode>,
}

/// `POST /v1/acl/policy?action=list`: `{"spiffeidPattern":s,"pathPattern":s}`; `""` means no
/// filter; filters are exact string equality and the SPIFFE-ID filter wins if both are set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyListRequest {
    /// Exact SPIFFE-ID pattern to filter on.
    #[serde(rename = "spiffeidPattern")]
    pub spiffe_id_pattern: String,
    /// Exact path pattern to filter on.
    #[serde(rename = "pathPattern")]
    pub path_pattern: String,
}

/// One entry of [`PolicyListResponse::policies`]: `{"id":"","name":s}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyListItem {
    /// Legacy id, always `""`.
    pub id: String,
    /// Policy name.
    pub name: String,
}

impl PolicyListItem {
    /// An item for the policy called `name` (with the empty legacy id).
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            id: String::new(),
            name: name.into(),
        }
    }
}

/// Response to [`PolicyListRequest`]: `{"policies":[...]}` (`[]` if none); error body
/// `{"policies":null,"err":code}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyListResponse {
    /// Matching policies; `None` (`null`) in error bodies.
    pub policies: Option<Vec<PolicyListItem>>,
    /// Error code; omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none", with = "err_code")]
    pub err: Option<ErrorCode>,
}

impl PolicyListResponse {
    /// A success body (emit `[]`, not `null`, when there are none).
    pub fn ok(policies: Vec<PolicyListItem>) -> Self {
        Self {
            policies: Some(policies),
            err: None,
        }
    }
}

impl_api_response!(
    PolicyPutResponse,
    PolicyReadResponse,
    PolicyDeleteResponse,
    PolicyListResponse,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_strings() {
        for p in Permission::ALL {
            assert_eq!(Permission::from_wire(p.as_str()), Some(p));
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert_eq!(Permission::from_wire("READ"), None);
        assert!(serde_json::from_str::<Permission>("\"admin\"").is_err());
    }
}
