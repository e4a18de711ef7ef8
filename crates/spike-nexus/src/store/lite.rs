//! The no-op backend of `lite` mode: loads return nothing, stores succeed silently.

use super::{Backend, BackendKind, StoreError};
use crate::model::{Policy, Secret, Version};

/// A backend that stores nothing (SPIKE's `lite`/noop store).
#[derive(Debug, Default, Clone, Copy)]
pub struct LiteBackend;

impl LiteBackend {
    /// A new no-op backend.
    pub fn new() -> Self {
        Self
    }
}

impl Backend for LiteBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Lite
    }

    fn load_secret(&self, _path: &str) -> Result<Option<Secret>, StoreError> {
        Ok(None)
    }

    fn store_secret(
        &self,
        _path: &str,
        _secret: &Secret,
        _pruned: &[Version],
    ) -> Result<(), StoreError> {
        Ok(())
    }

    fn list_secret_paths(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    fn load_policies(&self) -> Result<Vec<Policy>, StoreError> {
        Ok(Vec::new())
    }

    fn store_policy(&self, _policy: &Policy) -> Result<(), StoreError> {
        Ok(())
    }

    fn delete_policy(&self, _name: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SecretData;
    use time::OffsetDateTime;

    #[test]
    fn stores_succeed_and_loads_are_empty() {
        let b = LiteBackend::new();
        let s = Secret::new_first(SecretData::new(), 3, OffsetDateTime::UNIX_EPOCH);
        b.store_secret("a", &s, &[]).unwrap();
        assert!(b.load_secret("a").unwrap().is_none());
        assert!(b.list_secret_paths().unwrap().is_empty());
        let now = OffsetDateTime::UNIX_EPOCH;
        let p = Policy::new("p".into(), ".*".into(), "^app/".into(), vec![], now, now).unwrap();
        b.store_policy(&p).unwrap();
        assert!(b.load_policies().unwrap().is_empty());
        assert!(!b.delete_policy("p").unwrap());
        assert!(b.is_empty().unwrap());
        assert_eq!(b.kind(), BackendKind::Lite);
    }
}
