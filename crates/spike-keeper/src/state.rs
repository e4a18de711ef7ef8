//! [`ShardStore`]: the one shard a keeper holds, in memory, and with shard sealing on also
//! in its sealed file ([`crate::sealing::SealedShardFile`]).

use std::io;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use spike_crypto::ShardValue;

use crate::sealing::{LoadOutcome, SealedShardFile};

/// The keeper's shard: empty until contributed (or restored from its sealed file).
///
/// Cheap to clone (a handle). The value zeroizes when replaced or dropped. No lock is held
/// across an `.await`; [`ShardStore::set`] may block on the disk when sealing is on, so the
/// API calls it from the blocking pool.
#[derive(Clone, Default)]
pub struct ShardStore {
    inner: Arc<RwLock<Option<ShardValue>>>,
    sealed: Option<Arc<Mutex<SealedShardFile>>>,
}

impl std::fmt::Debug for ShardStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardStore")
            .field("has_shard", &self.has_shard())
            .finish()
    }
}

impl ShardStore {
    /// An empty store, RAM only (`shard_sealing = "off"`).
    pub fn new() -> Self {
        Self::default()
    }

    /// A store backed by `file`, holding the shard the file restores if it opens. The
    /// outcome says what was found; on every failure the store starts empty and the file is
    /// left as it is until a new shard replaces it.
    pub fn sealed(file: SealedShardFile) -> (Self, LoadOutcome) {
        let outcome = file.load();
        let held = match &outcome {
            LoadOutcome::Loaded(shard) => Some(shard.duplicate_secret()),
            LoadOutcome::Absent | LoadOutcome::Unusable(_) => None,
        };
        let store = Self {
            inner: Arc::new(RwLock::new(held)),
            sealed: Some(Arc::new(Mutex::new(file))),
        };
        (store, outcome)
    }

    /// Whether the shard is also kept in a sealed file.
    pub fn is_sealed(&self) -> bool {
        self.sealed.is_some()
    }

    /// Stores `value`, replacing (and zeroizing) any previous shard. An all-zero value is
    /// ignored, as Go's `SetShard` does; returns whether the value is now held.
    ///
    /// With sealing on, a new value is first written to the sealed file (atomically); only
    /// then does it replace the shard in memory. The same value again writes nothing.
    ///
    /// # Errors
    /// The sealed file could not be written: the old shard stays, in memory and on disk.
    pub fn set(&self, value: ShardValue) -> io::Result<bool> {
        if value.is_zero() {
            return Ok(false);
        }
        let Some(sealed) = &self.sealed else {
            *self.inner.write() = Some(value);
            return Ok(true);
        };
        // One writer at a time, so the file and memory change together.
        let file = sealed.lock();
        if self.inner.read().as_ref() == Some(&value) {
            return Ok(true);
        }
        file.persist(&value)?;
        *self.inner.write() = Some(value);
        Ok(true)
    }

    /// A copy of the held shard, if any.
    pub fn get(&self) -> Option<ShardValue> {
        self.inner.read().as_ref().map(ShardValue::duplicate_secret)
    }

    /// Whether a shard is held.
    pub fn has_shard(&self) -> bool {
        self.inner.read().is_some()
    }

    /// Drops (and zeroizes) the shard in memory; a sealed file stays.
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
        assert!(!store.set(ShardValue::new([0; 32])).unwrap());
        assert!(!store.has_shard());
        let mut partly = [0u8; 32];
        partly[31] = 1;
        assert!(store.set(ShardValue::new(partly)).unwrap());
        assert_eq!(store.get().unwrap().expose_secret(), &partly);
        assert!(store.set(ShardValue::new([7; 32])).unwrap());
        assert_eq!(store.get().unwrap().expose_secret(), &[7; 32]);
        assert!(!store.set(ShardValue::new([0; 32])).unwrap());
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
                        store.set(ShardValue::new([i; 32])).unwrap();
                        let v = store.get().unwrap();
                        let b = v.expose_secret();
                        assert!(b.iter().all(|x| *x == b[0]), "torn read");
                    }
                });
            }
        });
    }

    #[test]
    fn a_sealed_store_survives_a_restart_and_a_failed_write_changes_nothing() {
        use spike_crypto::shard_seal::SealingKey;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard.sealed");
        let open =
            || SealedShardFile::new(path.clone(), "1", SealingKey::from_slice(&[4; 32]).unwrap());
        let (store, outcome) = ShardStore::sealed(open());
        assert!(matches!(outcome, LoadOutcome::Absent));
        assert!(store.is_sealed() && !store.has_shard());
        assert!(store.set(ShardValue::new([3; 32])).unwrap());
        let written = std::fs::metadata(&path).unwrap().modified().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        // The same shard again writes nothing.
        assert!(store.set(ShardValue::new([3; 32])).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            written
        );
        store.clear();
        drop(store);

        let (store, outcome) = ShardStore::sealed(open());
        assert!(matches!(outcome, LoadOutcome::Loaded(_)));
        assert_eq!(store.get().unwrap().expose_secret(), &[3; 32]);

        // A path the new file cannot be renamed onto: the write fails, nothing changes.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("occupied"), b"").unwrap();
        assert!(store.set(ShardValue::new([9; 32])).is_err());
        assert_eq!(store.get().unwrap().expose_secret(), &[3; 32]);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temporary file left"
        );
    }
}
