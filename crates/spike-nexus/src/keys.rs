//! Key checks that do not need the database: whether a set of shards agrees on one root key,
//! and lite mode's key-check file (docs/compatibility.md#root-key-checks).
//!
//! **Agreement.** Splitting is deterministic (`spike_crypto::shamir`): the polynomial's
//! coefficients are derived from the key itself, and Bootstrap, `recover` and Nexus's own
//! pushes all use it. So a key `k` reconstructed from any `threshold` shards can be checked
//! against *every* shard received: shard *i* fits `k` exactly when it equals
//! `share_for(k, i)`. One wrong shard among the ones combined yields a key that fits none of
//! the good shards (the chance of a fit is that of guessing a 256-bit value), so keepers can
//! never talk Nexus into a key they do not all agree on, even with only `threshold` shards.
//!
//! **Lite key check.** Lite mode stores no secrets, but Nexus still has its data directory.
//! The first root key the keepers agree on is recorded there as a key-check record
//! (`lite-keycheck`, the SQLite `keycheck` row's format: nonce ‖ AES-GCM of a known text under
//! a key derived from the root key). Later unseals, from keepers or operator restore, must
//! open it, exactly like SQLite's key check.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use spike_crypto::aead::NONCE_SIZE;
use spike_crypto::{RecordCipher, RootKey, Shard, shamir};

/// Name of lite mode's key-check file inside the data directory.
pub const LITE_KEYCHECK_FILE: &str = "lite-keycheck";

/// What a set of shards says about the root key.
pub enum Agreement {
    /// Fewer shards than the threshold.
    TooFew,
    /// One key fits every shard received.
    Agreed(RootKey),
    /// No key fits every shard.
    Disagree {
        /// Keys that fit at least `threshold` of the shards (each was reconstructed from
        /// shards that fit it), the best-supported first. Empty when no `threshold` shards
        /// agree on anything.
        candidates: Vec<RootKey>,
        /// The keepers (shard ids) whose shard does not fit the best-supported candidate (all
        /// of them when there is none).
        misfits: Vec<u16>,
    },
}

impl std::fmt::Debug for Agreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Agreement::TooFew => f.write_str("TooFew"),
            Agreement::Agreed(_) => f.write_str("Agreed(<redacted>)"),
            Agreement::Disagree {
                candidates,
                misfits,
            } => f
                .debug_struct("Disagree")
                .field("candidates", &candidates.len())
                .field("misfits", misfits)
                .finish(),
        }
    }
}

/// Whether `shard` is the share of `key` for its id (with `shares`/`threshold` splitting).
pub fn fits(key: &RootKey, shard: &Shard, shares: u16, threshold: u16) -> bool {
    shamir::share_for(key, shard.id(), shares, threshold)
        .is_ok_and(|want| want.expose_secret() == shard.expose_secret())
}

/// The ids of `shards` that do not fit `key`.
pub fn misfits(key: &RootKey, shards: &[&Shard], shares: u16, threshold: u16) -> Vec<u16> {
    shards
        .iter()
        .filter(|s| !fits(key, s, shares, threshold))
        .map(|s| s.id())
        .collect()
}

/// Checks whether `shards` (distinct ids) agree on one root key, trying at most `limit`
/// threshold-subsets.
pub fn agreement(shards: &[&Shard], shares: u16, threshold: u16, limit: usize) -> Agreement {
    let k = usize::from(threshold);
    if k == 0 || shards.len() < k {
        return Agreement::TooFew;
    }
    // (key, number of shards that fit it)
    let mut candidates: Vec<(RootKey, usize)> = Vec::new();
    for combo in combinations(shards.len(), k, limit) {
        let subset: Vec<Shard> = combo
            .iter()
            .filter_map(|&i| shards.get(i).map(|s| s.duplicate_secret()))
            .collect();
        let Ok(key) = shamir::combine(&subset, threshold) else {
            continue;
        };
        if candidates.iter().any(|(c, _)| *c == key) {
            continue;
        }
        // A key that does not fit the very shards it came from is noise.
        if subset.iter().any(|s| !fits(&key, s, shares, threshold)) {
            continue;
        }
        let support = shards
            .iter()
            .filter(|s| fits(&key, s, shares, threshold))
            .count();
        if support == shards.len() {
            return Agreement::Agreed(key);
        }
        candidates.push((key, support));
    }
    candidates.sort_by_key(|c| std::cmp::Reverse(c.1));
    let misfits = match candidates.first() {
        Some((best, _)) => misfits(best, shards, shares, threshold),
        None => shards.iter().map(|s| s.id()).collect(),
    };
    Agreement::Disagree {
        candidates: candidates.into_iter().map(|(key, _)| key).collect(),
        misfits,
    }
}

/// The index sets of size `k` out of `n`, in lexicographic order, at most `limit` of them.
pub fn combinations(n: usize, k: usize, limit: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    if k == 0 || k > n {
        return out;
    }
    let mut idx: Vec<usize> = (0..k).collect();
    loop {
        out.push(idx.clone());
        if out.len() >= limit {
            return out;
        }
        let Some(i) = (0..k).rev().find(|&i| idx[i] != i + n - k) else {
            return out;
        };
        idx[i] += 1;
        for j in i + 1..k {
            idx[j] = idx[j - 1] + 1;
        }
    }
}

/// A list of keeper ids for messages: `1`, `1 and 3`, `1, 2 and 3`.
pub fn id_list(ids: &[u16]) -> String {
    let text: Vec<String> = ids.iter().map(u16::to_string).collect();
    match text.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// What the lite key-check file says about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCheck {
    /// There is no key-check file yet.
    Absent,
    /// The key opens it.
    Matches,
    /// The key does not open it.
    Differs,
}

/// Why the lite key-check file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyCheckFileError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is too short to hold a record.
    #[error("{}: not a key-check record (truncated?); move it away only if the keepers' shards are known to be right", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// Sealing the record failed.
    #[error("cannot seal the key-check record")]
    Crypto,
}

/// The lite key-check file of `data_dir`.
pub fn lite_keycheck_path(data_dir: &Path) -> PathBuf {
    data_dir.join(LITE_KEYCHECK_FILE)
}

/// Checks `key` against the key-check file at `path`.
///
/// # Errors
/// [`KeyCheckFileError`] when the file exists but cannot be read or is malformed.
pub fn check_file(path: &Path, key: &RootKey) -> Result<FileCheck, KeyCheckFileError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileCheck::Absent),
        Err(source) => {
            return Err(KeyCheckFileError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    if bytes.len() <= NONCE_SIZE {
        return Err(KeyCheckFileError::Malformed {
            path: path.to_owned(),
        });
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_SIZE);
    let cipher = RecordCipher::derive(key).map_err(|_| KeyCheckFileError::Crypto)?;
    Ok(if cipher.check_key(nonce, ciphertext.to_vec()) {
        FileCheck::Matches
    } else {
        FileCheck::Differs
    })
}

/// Writes a key-check record for `key` to `path` (mode 0600, written to a temporary file,
/// synced, then renamed, so a crash leaves either no file or a whole one).
///
/// # Errors
/// [`KeyCheckFileError`] when sealing or writing fails.
pub fn write_file(path: &Path, key: &RootKey) -> Result<(), KeyCheckFileError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| KeyCheckFileError::Io {
        path: path.to_owned(),
        source,
    };
    let cipher = RecordCipher::derive(key).map_err(|_| KeyCheckFileError::Crypto)?;
    let (nonce, ciphertext) = cipher
        .seal_key_check()
        .map_err(|_| KeyCheckFileError::Crypto)?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(&nonce).map_err(io)?;
    file.write_all(&ciphertext).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use spike_crypto::ShardValue;

    use super::*;

    fn shards(key: &RootKey) -> Vec<Shard> {
        shamir::split(key, 3, 2).unwrap()
    }

    #[test]
    fn combinations_are_complete_and_bounded() {
        assert_eq!(
            combinations(3, 2, 100),
            vec![vec![0, 1], vec![0, 2], vec![1, 2]]
        );
        assert_eq!(combinations(2, 2, 100), vec![vec![0, 1]]);
        assert_eq!(combinations(4, 1, 100).len(), 4);
        assert_eq!(combinations(5, 3, 100).len(), 10);
        assert_eq!(combinations(5, 3, 4).len(), 4);
        assert!(combinations(2, 3, 100).is_empty());
    }

    #[test]
    fn good_shards_agree_with_threshold_and_with_all() {
        let key = RootKey::generate().unwrap();
        let s = shards(&key);
        let all: Vec<&Shard> = s.iter().collect();
        assert!(matches!(agreement(&all, 3, 2, 32), Agreement::Agreed(k) if k == key));
        assert!(matches!(agreement(&all[1..], 3, 2, 32), Agreement::Agreed(k) if k == key));
        assert!(matches!(agreement(&all[..1], 3, 2, 32), Agreement::TooFew));
    }

    #[test]
    fn one_bogus_shard_is_named_and_never_agreed() {
        let key = RootKey::generate().unwrap();
        let s = shards(&key);
        let bogus = Shard::new(1, ShardValue::new([7; 32]));
        let mixed: Vec<&Shard> = vec![&bogus, &s[1], &s[2]];
        match agreement(&mixed, 3, 2, 32) {
            Agreement::Disagree {
                candidates,
                misfits,
            } => {
                assert_eq!(misfits, vec![1]);
                assert_eq!(candidates.len(), 1);
                assert!(candidates[0] == key);
            }
            other => panic!("{other:?}"),
        }
        // Exactly the threshold, one of them bogus: no key at all (the combination does not
        // fit its own shards).
        let two: Vec<&Shard> = vec![&bogus, &s[1]];
        match agreement(&two, 3, 2, 32) {
            Agreement::Disagree {
                candidates,
                misfits,
            } => {
                assert!(candidates.is_empty());
                assert_eq!(misfits, vec![1, 2]);
            }
            other => panic!("{other:?}"),
        }
        // Shards of another key mixed in: disagreement as well.
        let other = shards(&RootKey::generate().unwrap());
        let foreign: Vec<&Shard> = vec![&other[0], &s[1]];
        assert!(matches!(
            agreement(&foreign, 3, 2, 32),
            Agreement::Disagree { .. }
        ));
    }

    #[test]
    fn key_check_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = lite_keycheck_path(dir.path());
        let key = RootKey::generate().unwrap();
        assert_eq!(check_file(&path, &key).unwrap(), FileCheck::Absent);
        write_file(&path, &key).unwrap();
        assert_eq!(check_file(&path, &key).unwrap(), FileCheck::Matches);
        let other = RootKey::generate().unwrap();
        assert_eq!(check_file(&path, &other).unwrap(), FileCheck::Differs);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, b"short").unwrap();
        assert!(check_file(&path, &key).is_err());
    }

    #[test]
    fn id_lists_read_well() {
        assert_eq!(id_list(&[1]), "1");
        assert_eq!(id_list(&[1, 3]), "1 and 3");
        assert_eq!(id_list(&[1, 2, 3]), "1, 2 and 3");
    }
}
