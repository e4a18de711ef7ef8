//! Versioned key/value secrets with soft delete (docs/protocol.md#secrets of the wire spec).
//!
//! The semantics follow SPIKE's `UpsertSecret`, `GetSecret`, `DeleteSecret`,
//! `UndeleteSecret` and `GetRawSecret` exactly, including their edge cases:
//! a put after the current version was deleted reuses `current + 1`, and
//! `oldest_version` only moves on pruning, delete and undelete.

use std::collections::BTreeMap;
use std::fmt;

use time::OffsetDateTime;
use zeroize::Zeroize;

use super::ModelError;

/// A secret version number; versions start at 1, and 0 means "the current version" in requests.
pub type Version = u64;

/// The key/value data of one secret version.
///
/// Zeroizes keys and values on drop, has a redacted `Debug`, and no `Display`,
/// `Serialize` or `Clone`; copies are explicit through [`SecretData::duplicate`].
#[derive(Default, PartialEq, Eq)]
pub struct SecretData(BTreeMap<String, String>);

impl SecretData {
    /// Empty data.
    pub fn new() -> Self {
        Self(BTreeMap::new())
    }

    /// Takes ownership of a map (no copy is made).
    pub fn from_map(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }

    /// Inserts a key/value pair; a replaced value is zeroized.
    pub fn insert(&mut self, key: String, value: String) {
        if let Some(mut old) = self.0.insert(key, value) {
            old.zeroize();
        }
    }

    /// Iterates over the pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The underlying map, for serializing a response. Do not copy it around.
    pub fn expose(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// An explicit deep copy (the copy zeroizes on drop as well).
    pub fn duplicate(&self) -> Self {
        Self(self.0.clone())
    }
}

impl FromIterator<(String, String)> for SecretData {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut data = Self::new();
        for (k, v) in iter {
            data.insert(k, v);
        }
        data
    }
}

impl Drop for SecretData {
    fn drop(&mut self) {
        for (mut k, mut v) in std::mem::take(&mut self.0) {
            k.zeroize();
            v.zeroize();
        }
    }
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretData(<{} redacted entries>)", self.0.len())
    }
}

/// One version of a secret.
#[derive(Debug, PartialEq, Eq)]
pub struct SecretVersion {
    /// Its version number (≥ 1).
    pub version: Version,
    /// The data.
    pub data: SecretData,
    /// When the version was written.
    pub created: OffsetDateTime,
    /// When the version was soft-deleted; `None` while it is live.
    pub deleted: Option<OffsetDateTime>,
}

impl SecretVersion {
    /// True while the version is not soft-deleted.
    pub fn is_live(&self) -> bool {
        self.deleted.is_none()
    }

    /// An explicit deep copy.
    pub fn duplicate(&self) -> Self {
        Self {
            version: self.version,
            data: self.data.duplicate(),
            created: self.created,
            deleted: self.deleted,
        }
    }
}

/// Metadata of a secret (SPIKE's `kv.Metadata`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretMetadata {
    /// The current version, 0 when every version is deleted.
    pub current_version: Version,
    /// The oldest version as SPIKE tracks it (0 when every version is deleted).
    pub oldest_version: Version,
    /// When the secret was first written.
    pub created: OffsetDateTime,
    /// When the secret was last changed.
    pub updated: OffsetDateTime,
    /// How many versions are kept; older ones are pruned on put.
    pub max_versions: u64,
}

/// A versioned secret: all retained versions plus metadata.
#[derive(Debug, PartialEq, Eq)]
pub struct Secret {
    /// Retained versions by number (live and soft-deleted).
    pub versions: BTreeMap<Version, SecretVersion>,
    /// The metadata.
    pub metadata: SecretMetadata,
}

impl Secret {
    /// A new secret holding `data` as version 1.
    pub fn new_first(data: SecretData, max_versions: u64, now: OffsetDateTime) -> Secret {
        let mut versions = BTreeMap::new();
        versions.insert(
            1,
            SecretVersion {
                version: 1,
                data,
                created: now,
                deleted: None,
            },
        );
        Secret {
            versions,
            metadata: SecretMetadata {
                current_version: 1,
                oldest_version: 1,
                created: now,
                updated: now,
                max_versions,
            },
        }
    }

    /// docs/protocol.md#secrets upsert of an existing secret: adds a version and prunes beyond
    /// `metadata.max_versions` (at least one version is always kept).
    ///
    /// Returns the pruned version numbers, which are removed from `versions`.
    pub fn put(&mut self, data: SecretData, now: OffsetDateTime) -> Vec<Version> {
        let new = if self.metadata.current_version == 0 {
            self.versions.keys().next_back().copied().unwrap_or(0) + 1
        } else {
            self.metadata.current_version + 1
        };
        // Like SPIKE, this replaces a (necessarily soft-deleted) version with
        // the same number if one exists above the current version.
        self.versions.insert(
            new,
            SecretVersion {
                version: new,
                data,
                created: now,
                deleted: None,
            },
        );
        self.metadata.current_version = new;
        self.metadata.updated = now;

        let max = usize::try_from(self.metadata.max_versions.max(1)).unwrap_or(usize::MAX);
        let mut pruned = Vec::new();
        if self.versions.len() > max {
            let excess = self.versions.len() - max;
            pruned = self.versions.keys().take(excess).copied().collect();
            for v in &pruned {
                self.versions.remove(v);
            }
            if let Some(&oldest) = self.versions.keys().next() {
                self.metadata.oldest_version = oldest;
            }
        }
        pruned
    }

    /// docs/protocol.md#secrets get: `version` 0 means the current one. `None` when the version is
    /// absent or deleted, or the secret is empty (current version 0).
    pub fn get(&self, version: Version) -> Option<&SecretVersion> {
        let version = if version == 0 {
            self.metadata.current_version
        } else {
            version
        };
        if version == 0 {
            return None;
        }
        self.versions.get(&version).filter(|v| v.is_live())
    }

    /// docs/protocol.md#secrets soft delete. An empty list means the current version, and each 0
    /// means the current version; versions that do not exist are ignored.
    pub fn soft_delete(&mut self, versions: &[Version], now: OffsetDateTime) {
        let current = self.metadata.current_version;
        let targets: Vec<Version> = if versions.is_empty() {
            vec![current]
        } else {
            versions
                .iter()
                .map(|&v| if v == 0 { current } else { v })
                .collect()
        };
        for v in &targets {
            if let Some(version) = self.versions.get_mut(v) {
                version.deleted = Some(now);
            }
        }
        if current != 0 && targets.contains(&current) {
            self.metadata.current_version = self.highest_live().unwrap_or(0);
            self.metadata.updated = now;
        }
        self.metadata.oldest_version = self.lowest_live().unwrap_or(0);
    }

    /// docs/protocol.md#secrets undelete. An empty list means the current version, or the highest
    /// deleted one when every version is deleted; each 0 means the current
    /// version (skipped when it is 0).
    ///
    /// # Errors
    ///
    /// [`ModelError::NothingToUndelete`] when no version was undeleted (HTTP 404).
    pub fn undelete(
        &mut self,
        versions: &[Version],
        now: OffsetDateTime,
    ) -> Result<(), ModelError> {
        let current = self.metadata.current_version;
        let targets: Vec<Version> = if versions.is_empty() {
            if current == 0 {
                let highest_deleted = self
                    .versions
                    .values()
                    .rev()
                    .find(|v| !v.is_live())
                    .map(|v| v.version)
                    .ok_or(ModelError::NothingToUndelete)?;
                vec![highest_deleted]
            } else {
                vec![current]
            }
        } else {
            versions
                .iter()
                .filter_map(|&v| match v {
                    0 if current == 0 => None,
                    0 => Some(current),
                    v => Some(v),
                })
                .collect()
        };

        let mut highest_undeleted: Option<Version> = None;
        for v in &targets {
            if let Some(version) = self.versions.get_mut(v)
                && version.deleted.is_some()
            {
                version.deleted = None;
                highest_undeleted = highest_undeleted.max(Some(*v));
            }
        }
        let Some(highest) = highest_undeleted else {
            return Err(ModelError::NothingToUndelete);
        };
        if highest > self.metadata.current_version {
            self.metadata.current_version = highest;
            self.metadata.updated = now;
        }
        self.metadata.oldest_version = self.lowest_live().unwrap_or(0);
        Ok(())
    }

    /// An explicit deep copy.
    pub fn duplicate(&self) -> Self {
        Self {
            versions: self
                .versions
                .iter()
                .map(|(k, v)| (*k, v.duplicate()))
                .collect(),
            metadata: self.metadata,
        }
    }

    fn highest_live(&self) -> Option<Version> {
        self.versions
            .values()
            .rev()
            .find(|v| v.is_live())
            .map(|v| v.version)
    }

    fn lowest_live(&self) -> Option<Version> {
        self.versions
            .values()
            .find(|v| v.is_live())
            .map(|v| v.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn data(v: &str) -> SecretData {
        [("k".to_owned(), v.to_owned())].into_iter().collect()
    }

    fn t(n: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::seconds(n)
    }

    fn with_puts(n: u64, max: u64) -> Secret {
        let mut s = Secret::new_first(data("v1"), max, t(1));
        for i in 2..=n {
            s.put(data(&format!("v{i}")), t(i64::try_from(i).unwrap()));
        }
        s
    }

    fn value(s: &Secret, v: Version) -> Option<String> {
        s.get(v).map(|v| v.data.get("k").unwrap().to_owned())
    }

    #[test]
    fn new_secret_has_version_one() {
        let s = Secret::new_first(data("a"), 10, t(5));
        assert_eq!(s.metadata.current_version, 1);
        assert_eq!(s.metadata.oldest_version, 1);
        assert_eq!(s.metadata.created, t(5));
        assert_eq!(s.metadata.updated, t(5));
        assert_eq!(s.versions.len(), 1);
        assert_eq!(value(&s, 0).as_deref(), Some("a"));
    }

    #[test]
    fn second_put_keeps_first_version() {
        let s = with_puts(2, 10);
        assert_eq!(s.metadata.current_version, 2);
        assert_eq!(s.metadata.updated, t(2));
        assert_eq!(s.metadata.created, t(1));
        assert_eq!(value(&s, 1).as_deref(), Some("v1"));
        assert_eq!(value(&s, 0).as_deref(), Some("v2"));
    }

    #[test]
    fn pruning_keeps_max_versions() {
        let mut s = with_puts(4, 3);
        let pruned = s.put(data("v5"), t(5));
        assert_eq!(pruned, vec![2]);
        assert_eq!(
            s.versions.keys().copied().collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(s.metadata.oldest_version, 3);
        assert_eq!(s.metadata.current_version, 5);
        assert!(s.get(1).is_none());
        assert!(s.get(2).is_none());
    }

    #[test]
    fn max_versions_zero_keeps_the_new_version() {
        let mut s = Secret::new_first(data("a"), 0, t(1));
        let pruned = s.put(data("b"), t(2));
        assert_eq!(pruned, vec![1]);
        assert_eq!(value(&s, 0).as_deref(), Some("b"));
    }

    #[test]
    fn delete_current_moves_current_back() {
        let mut s = with_puts(3, 10);
        s.soft_delete(&[], t(10));
        assert_eq!(s.metadata.current_version, 2);
        assert_eq!(s.metadata.updated, t(10));
        assert_eq!(value(&s, 0).as_deref(), Some("v2"));
        assert_eq!(s.versions[&3].deleted, Some(t(10)));
    }

    #[test]
    fn delete_non_current_keeps_current() {
        let mut s = with_puts(4, 10);
        s.soft_delete(&[2, 3], t(10));
        assert_eq!(s.metadata.current_version, 4);
        assert_eq!(s.metadata.updated, t(4));
        assert!(!s.versions[&2].is_live());
        assert!(!s.versions[&3].is_live());
        assert_eq!(s.metadata.oldest_version, 1);
    }

    #[test]
    fn delete_all_empties_the_secret() {
        let mut s = with_puts(3, 10);
        s.soft_delete(&[1, 2, 3], t(10));
        assert_eq!(s.metadata.current_version, 0);
        assert_eq!(s.metadata.oldest_version, 0);
        assert!(s.get(0).is_none());
        assert_eq!(s.versions.len(), 3);
        assert!(s.versions.values().all(|v| v.deleted == Some(t(10))));
    }

    #[test]
    fn delete_zero_means_current_and_unknown_is_ignored() {
        let mut s = with_puts(2, 10);
        s.soft_delete(&[0, 99], t(10));
        assert_eq!(s.metadata.current_version, 1);
        assert!(!s.versions[&2].is_live());
        assert!(!s.versions.contains_key(&99));
    }

    #[test]
    fn redelete_overwrites_the_timestamp() {
        let mut s = with_puts(2, 10);
        s.soft_delete(&[1], t(10));
        s.soft_delete(&[1], t(20));
        assert_eq!(s.versions[&1].deleted, Some(t(20)));
    }

    #[test]
    fn oldest_is_lowest_live_after_delete() {
        let mut s = with_puts(3, 10);
        s.soft_delete(&[1], t(10));
        assert_eq!(s.metadata.oldest_version, 2);
    }

    #[test]
    fn undelete_one_of_two_deleted() {
        let mut s = with_puts(3, 10);
        s.soft_delete(&[1, 2], t(10));
        s.undelete(&[1], t(11)).unwrap();
        assert_eq!(value(&s, 1).as_deref(), Some("v1"));
        assert!(s.get(2).is_none());
        assert_eq!(s.metadata.current_version, 3);
        assert_eq!(s.metadata.oldest_version, 1);
    }

    #[test]
    fn undelete_empty_after_deleting_all_restores_highest() {
        let mut s = with_puts(3, 10);
        s.soft_delete(&[1, 2, 3], t(10));
        s.undelete(&[], t(11)).unwrap();
        assert_eq!(s.metadata.current_version, 3);
        assert_eq!(s.metadata.updated, t(11));
        assert_eq!(value(&s, 0).as_deref(), Some("v3"));
        assert_eq!(s.metadata.oldest_version, 3);
        assert!(s.get(2).is_none());
    }

    #[test]
    fn undelete_nothing_is_an_error() {
        let mut s = with_puts(2, 10);
        // Empty list with a live current version: nothing to undelete.
        assert_eq!(s.undelete(&[], t(11)), Err(ModelError::NothingToUndelete));
        // Unknown and live versions do not count.
        assert_eq!(
            s.undelete(&[1, 7], t(11)),
            Err(ModelError::NothingToUndelete)
        );
        // A 0 entry while everything is deleted is skipped.
        s.soft_delete(&[1, 2], t(12));
        assert_eq!(s.undelete(&[0], t(13)), Err(ModelError::NothingToUndelete));
    }

    #[test]
    fn undelete_higher_version_moves_current_up() {
        let mut s = with_puts(3, 10);
        s.soft_delete(&[3], t(10));
        assert_eq!(s.metadata.current_version, 2);
        s.undelete(&[3], t(11)).unwrap();
        assert_eq!(s.metadata.current_version, 3);
        assert_eq!(s.metadata.updated, t(11));
    }

    #[test]
    fn put_after_delete_all_uses_highest_plus_one() {
        let mut s = with_puts(3, 10);
        s.soft_delete(&[1, 2, 3], t(10));
        s.put(data("v4"), t(11));
        assert_eq!(s.metadata.current_version, 4);
        assert_eq!(value(&s, 0).as_deref(), Some("v4"));
        // Like SPIKE, oldest only moves on prune/delete/undelete.
        assert_eq!(s.metadata.oldest_version, 0);
    }

    #[test]
    fn put_after_deleting_current_reuses_the_next_number() {
        let mut s = with_puts(3, 10);
        s.soft_delete(&[3], t(10));
        s.put(data("new"), t(11));
        assert_eq!(s.metadata.current_version, 3);
        assert_eq!(value(&s, 3).as_deref(), Some("new"));
        assert_eq!(s.versions.len(), 3);
    }

    #[test]
    fn get_unknown_or_deleted_version() {
        let mut s = with_puts(2, 10);
        assert!(s.get(3).is_none());
        s.soft_delete(&[1], t(10));
        assert!(s.get(1).is_none());
        assert!(s.get(2).is_some());
    }

    #[test]
    fn secret_data_debug_is_redacted() {
        let d = data("hunter2-value");
        let dbg = format!("{d:?}");
        assert!(!dbg.contains("hunter2"));
        assert!(!dbg.contains('k'.to_string().as_str()) || dbg.contains("redacted"));
        let s = Secret::new_first(d, 3, t(1));
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn insert_replaces_and_duplicate_is_deep() {
        let mut d = SecretData::new();
        d.insert("a".into(), "1".into());
        d.insert("a".into(), "2".into());
        let copy = d.duplicate();
        drop(d);
        assert_eq!(copy.get("a"), Some("2"));
        assert_eq!(copy.len(), 1);
    }
}
