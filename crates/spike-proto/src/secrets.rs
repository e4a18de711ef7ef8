//! Secret routes (docs/protocol.md#secrets): `/v1/store/secrets` and `/v1/store/secrets/metadata`.
//!
//! Value maps are `BTreeMap`s, so keys are emitted in byte order like Go's sorted map keys.
//! Types carrying secret values have a `Debug` that shows key names only.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::response::impl_api_response;
use crate::serde_helpers::{err_code, int_map, is_zero_i64, null_as_default};
use crate::{ErrorCode, Timestamp};

/// `POST /v1/store/secrets`: `{"path":s,"values":{k:v,...}}`. A `null` `values` reads as an
/// empty map (a version with no data). The SDK's optional `err` field is ignored.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecretPutRequest {
    /// Secret path (opaque; see [`crate::validate::secret_path`]).
    pub path: String,
    /// Key/value data of the new version.
    #[serde(deserialize_with = "null_as_default::deserialize")]
    pub values: BTreeMap<String, String>,
}

impl fmt::Debug for SecretPutRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretPutRequest")
            .field("path", &self.path)
            .field("values", &RedactedValues(&self.values))
            .finish()
    }
}

/// Response to [`SecretPutRequest`]: `{}` on success, `{"err":code}` on error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecretPutResponse {
    /// Error code; omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none", with = "err_code")]
    pub err: Option<ErrorCode>,
}

/// `POST /v1/store/secrets?action=get`: `{"path":s,"version":n}`; `version` 0 (omitted) means
/// the current version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecretGetRequest {
    /// Secret path.
    pub path: String,
    /// Requested version; 0 = current. Omitted from JSON when 0.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub version: i64,
}

/// Response to [`SecretGetRequest`]: `{"data":{...}}`; error body `{"data":null,"err":code}`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecretGetResponse {
    /// The version's data; `None` (`null`) in error bodies.
    pub data: Option<BTreeMap<String, String>>,
    /// Error code; omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none", with = "err_code")]
    pub err: Option<ErrorCode>,
}

impl SecretGetResponse {
    /// A success body carrying `data`.
    pub fn ok(data: BTreeMap<String, String>) -> Self {
        Self {
            data: Some(data),
            err: None,
        }
    }
}

impl fmt::Debug for SecretGetResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretGetResponse")
            .field("data", &self.data.as_ref().map(RedactedValues))
            .field("err", &self.err)
            .finish()
    }
}

/// `POST /v1/store/secrets?action=delete`: `{"path":s,"versions":[n,...]|null}`. Empty or
/// `null` means the current version; a `0` entry also means current.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecretDeleteRequest {
    /// Secret path.
    pub path: String,
    /// Versions to soft-delete (`None` ⇄ `null`).
    pub versions: Option<Vec<i64>>,
}

/// Response to [`SecretDeleteRequest`]: `{}` or `{"err":code}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecretDeleteResponse {
    /// Error code; omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none", with = "err_code")]
    pub err: Option<ErrorCode>,
}

/// `POST /v1/store/secrets?action=undelete`: `{"path":s,"versions":[n,...]|null}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecretUndeleteRequest {
    /// Secret path.
    pub path: String,
    /// Versions to restore (`None` ⇄ `null`; empty = current or highest deleted).
    pub versions: Option<Vec<i64>>,
}

/// Response to [`SecretUndeleteRequest`]: `{}` or `{"err":code}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecretUndeleteResponse {
    /// Error code; omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none", with = "err_code")]
    pub err: Option<ErrorCode>,
}

/// `POST /v1/store/secrets?action=list`: `{}` (or `null`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretListRequest {}

/// Response to [`SecretListRequest`]: `{"keys":[...]}` (sorted; `[]` if none); error body
/// `{"keys":null,"err":code}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecretListResponse {
    /// Secret paths; `None` (`null`) in error bodies.
    pub keys: Option<Vec<String>>,
    /// Error code; omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none", with = "err_code")]
    pub err: Option<ErrorCode>,
}

impl SecretListResponse {
    /// A success body listing `keys` (emit `[]`, not `null`, when there are none).
    pub fn ok(keys: Vec<String>) -> Self {
        Self {
            keys: Some(keys),
            err: None,
        }
    }
}

/// `POST /v1/store/secrets/metadata?action=get`: `{"path":s,"version":n}`; `version` is only
/// used for the existence/deleted check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecretMetadataRequest {
    /// Secret path.
    pub path: String,
    /// Version to check; 0 = current. Omitted from JSON when 0.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub version: i64,
}

/// One entry of [`SecretMetadataResponse::versions`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecretVersionInfo {
    /// When the version was written.
    #[serde(rename = "createdTime")]
    pub created_time: Timestamp,
    /// The version number.
    pub version: i64,
    /// When it was soft-deleted; `None` (`null`) if live.
    #[serde(rename = "deletedTime")]
    pub deleted_time: Option<Timestamp>,
}

/// The `metadata` object of [`SecretMetadataResponse`] (always emitted, zero in errors).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecretMetadataContent {
    /// Current version (0 if every version is deleted).
    #[serde(rename = "currentVersion")]
    pub current_version: i64,
    /// Lowest non-deleted version (0 if none).
    #[serde(rename = "oldestVersion")]
    pub oldest_version: i64,
    /// When the secret was created.
    #[serde(rename = "createdTime")]
    pub created_time: Timestamp,
    /// When the secret was last updated.
    #[serde(rename = "updatedTime")]
    pub updated_time: Timestamp,
    /// Maximum number of versions kept.
    #[serde(rename = "maxVersions")]
    pub max_versions: i64,
}

/// Response to [`SecretMetadataRequest`]:
/// `{"versions":{"1":{...},...},"metadata":{...}}` (`versions` omitted when empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecretMetadataResponse {
    /// Every stored version (including deleted ones), keyed by version number.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", with = "int_map")]
    pub versions: BTreeMap<i64, SecretVersionInfo>,
    /// Secret-level metadata.
    pub metadata: SecretMetadataContent,
    /// Error code; omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none", with = "err_code")]
    pub err: Option<ErrorCode>,
}

impl_api_response!(
    SecretPutResponse,
    SecretGetResponse,
    SecretDeleteResponse,
    SecretUndeleteResponse,
    SecretListResponse,
    SecretMetadataResponse,
);

/// Shows a values map as its keys only.
struct RedactedValues<'a>(&'a BTreeMap<String, String>);

impl fmt::Debug for RedactedValues<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_values() {
        let mut values = BTreeMap::new();
        values.insert("password".to_owned(), "hunter2".to_owned());
        let req = SecretPutRequest {
            path: "db".into(),
            values: values.clone(),
        };
        let dbg = format!("{req:?}");
        assert!(
            dbg.contains("password") && !dbg.contains("hunter2"),
            "{dbg}"
        );
        let dbg = format!("{:?}", SecretGetResponse::ok(values));
        assert!(
            dbg.contains("password") && !dbg.contains("hunter2"),
            "{dbg}"
        );
    }
}
