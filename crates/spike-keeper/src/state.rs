//! [`ShardStore`]: the one shard a keeper holds, in memory only.

use std::sync::Arc;

use parking_lot::RwLock;
use spike_crypto::ShardValue;

/// The keeper's shard: empty until contributed; never written to disk.
///
/// Cheap to clone (a handle). The value zeroizes when replaced or dropped. No lock is held
/// across an `.await`.
#[derive(Clone, Default)]
pub struct ShardStore {
    inner: Arc<RwLock<Option<ShardValue>>>,
}

impl std::fmt::Debug for ShardStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardStore")
            .field("has_shard", &self.has_shard())
            .finish()
    }
}

impl ShardStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value`, replacing (and zeroizing) any previous shard. An all-zero value is
    /// ignored, as Go's `SetShard` does; returns whether the value was stored.
    pub fn set(&self, value: ShardValue) -> bool {
        if value.is_zero() {
            return false;
        }
        *self.inner.write() = Some(value);
        true
    }

    /// A copy of the held shard, if any.
    pub fn get(&self) -> Option<ShardValue> {
        self.inner.read().as_ref().map(ShardValue::duplicate_secret)
    }

    /// Whether a shard is held.
    pub fn has_shard(&self) -> bool {
        self.inner.read().is_some()
    }

    /// Drops (and zeroizes) the shard.
    pub fn clear(&self) {
        *self.inner.write() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_ignored_and_later_values_overwrite() {
        let store = ShardStore::new();
        assert!(store.get().is_none());
        assert!(!store.set(ShardValue::new([0; 32])));
        assert!(!store.has_shard());
        let mut partly = [0u8; 32];
        partly[31] = 1;
        assert!(store.set(ShardValue::new(partly)));
        assert_eq!(store.get().unwrap().expose_secret(), &partly);
        assert!(store.set(ShardValue::new([7; 32])));
        assert_eq!(store.get().unwrap().expose_secret(), &[7; 32]);
        assert!(!store.set(ShardValue::new([0; 32])));
        assert_eq!(store.get().unwrap().expose_secret(), &[7; 32]);
        store.clear();
        assert!(!store.has_shard());
        assert_eq!(format!("{store:?}"), "ShardStore { has_shard: false }");
    }

    #[test]
    fn concurrent_set_and_get() {
        let store = ShardStore::new();
        std::thread::scope(|s| {
            for i in 1..=8u8 {
                let store = store.clone();
                s.spawn(move || {
                    for _ in 0..200 {
                        store.set(ShardValue::new([i; 32]));
                        let v = store.get().unwrap();
                        let b = v.expose_secret();
                        assert!(b.iter().all(|x| *x == b[0]), "torn read");
                    }
                });
            }
        });
    }
}
