//! The process-memory backend of `memory` mode (lost on restart).

use std::collections::HashMap;

use parking_lot::RwLock;

use super::{Backend, BackendKind, StoreError};
use crate::model::{Policy, Secret, Version};

/// Secrets and policies in `HashMap`s behind read/write locks.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    secrets: RwLock<HashMap<String, Secret>>,
    policies: RwLock<HashMap<String, Policy>>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Backend for MemoryBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Memory
    }

    fn load_secret(&self, path: &str) -> Result<Option<Secret>, StoreError> {
        Ok(self.secrets.read().get(path).map(Secret::duplicate))
    }

    fn store_secret(
        &self,
        path: &str,
        secret: &Secret,
        _pruned: &[Version],
    ) -> Result<(), StoreError> {
        // The stored copy replaces the old one, which drops (and zeroizes) pruned versions.
        self.secrets
            .write()
            .insert(path.to_owned(), secret.duplicate());
        Ok(())
    }

    fn list_secret_paths(&self) -> Result<Vec<String>, StoreError> {
        let mut paths: Vec<String> = self.secrets.read().keys().cloned().collect();
        paths.sort();
        Ok(paths)
    }

    fn load_policies(&self) -> Result<Vec<Policy>, StoreError> {
        Ok(self.policies.read().values().cloned().collect())
    }

    fn store_policy(&self, policy: &Policy) -> Result<(), StoreError> {
        self.policies
            .write()
            .insert(policy.name.clone(), policy.clone());
        Ok(())
    }

    fn delete_policy(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.policies.write().remove(name).is_some())
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.secrets.read().is_empty() && self.policies.read().is_empty())
    }
}
