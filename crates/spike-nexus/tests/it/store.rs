//! Store behaviour (docs/protocol.md#secrets, docs/protocol.md#policies, docs/compatibility.md#compatibility-testing of the wire spec) on the memory and SQLite
//! backends, plus SQLite-only persistence, pruning and key checks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use spike_crypto::RootKey;
use spike_nexus::model::{
    ModelError, PatternField, Permission, Policy, RESERVED_ACL, RESERVED_CIPHER, RESERVED_SECRET,
    SecretData,
};
use spike_nexus::store::{
    Backend, BackendKind, LiteBackend, MemoryBackend, SqliteBackend, Store, StoreError,
};
use tempfile::TempDir;
use time::OffsetDateTime;

use Permission::{Execute, List, Read, Super, Write};

/// A store plus whatever keeps its backing files alive.
struct Fixture {
    store: Store,
    _dir: Option<TempDir>,
}

fn memory(max_versions: u64) -> Fixture {
    Fixture {
        store: Store::new(Arc::new(MemoryBackend::new()), max_versions).unwrap(),
        _dir: None,
    }
}

fn sqlite(max_versions: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let backend = SqliteBackend::open(&dir.path().join("spike.db"), &key(1)).unwrap();
    Fixture {
        store: Store::new(Arc::new(backend), max_versions).unwrap(),
        _dir: Some(dir),
    }
}

fn key(byte: u8) -> RootKey {
    RootKey::from_bytes(&[byte; 32]).unwrap()
}

fn data(pairs: &[(&str, &str)]) -> SecretData {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn val(store: &Store, path: &str, version: u64) -> Result<String, StoreError> {
    store
        .get_secret(path, version)
        .map(|d| d.get("v").unwrap().to_owned())
}

fn put_n(store: &Store, path: &str, n: u64) {
    for i in 1..=n {
        store
            .put_secret(path, data(&[("v", &format!("v{i}"))]))
            .unwrap();
    }
}

fn is_not_found<T>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::NotFound))
}

type Mk = fn(u64) -> Fixture;

// ---- secrets -------------------------------------------------------------

fn new_secret_starts_at_version_one(mk: Mk) {
    let f = mk(10);
    f.store.put_secret("a/b", data(&[("v", "x")])).unwrap();
    let s = f.store.secret_metadata("a/b", 0).unwrap();
    assert_eq!(s.metadata.current_version, 1);
    assert_eq!(s.metadata.oldest_version, 1);
    assert_eq!(s.metadata.max_versions, 10);
    assert_eq!(s.versions.len(), 1);
    assert_eq!(val(&f.store, "a/b", 0).unwrap(), "x");
}

fn second_put_keeps_the_first_version(mk: Mk) {
    let f = mk(10);
    put_n(&f.store, "p", 2);
    let s = f.store.secret_metadata("p", 0).unwrap();
    assert_eq!(s.metadata.current_version, 2);
    assert_eq!(val(&f.store, "p", 1).unwrap(), "v1");
    assert_eq!(val(&f.store, "p", 0).unwrap(), "v2");
    assert_eq!(val(&f.store, "p", 2).unwrap(), "v2");
}

fn identical_puts_are_new_versions(mk: Mk) {
    let f = mk(10);
    f.store.put_secret("p", data(&[("v", "same")])).unwrap();
    f.store.put_secret("p", data(&[("v", "same")])).unwrap();
    assert_eq!(
        f.store
            .secret_metadata("p", 0)
            .unwrap()
            .metadata
            .current_version,
        2
    );
}

fn pruning_keeps_max_versions(mk: Mk) {
    let f = mk(3);
    put_n(&f.store, "p", 5);
    let s = f.store.secret_metadata("p", 0).unwrap();
    assert_eq!(
        s.versions.keys().copied().collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(s.metadata.oldest_version, 3);
    assert_eq!(s.metadata.current_version, 5);
    assert!(is_not_found(f.store.get_secret("p", 1)));
    assert!(is_not_found(f.store.get_secret("p", 2)));
    assert_eq!(val(&f.store, "p", 3).unwrap(), "v3");
}

fn deleting_the_current_version_moves_current_back(mk: Mk) {
    let f = mk(10);
    put_n(&f.store, "p", 3);
    f.store.delete_secret("p", &[]).unwrap();
    let s = f.store.secret_metadata("p", 0).unwrap();
    assert_eq!(s.metadata.current_version, 2);
    assert!(s.versions[&3].deleted.is_some());
    assert_eq!(val(&f.store, "p", 0).unwrap(), "v2");
    assert!(is_not_found(f.store.get_secret("p", 3)));
}

fn deleting_older_versions_keeps_current(mk: Mk) {
    let f = mk(10);
    put_n(&f.store, "p", 4);
    f.store.delete_secret("p", &[2, 3]).unwrap();
    let s = f.store.secret_metadata("p", 0).unwrap();
    assert_eq!(s.metadata.current_version, 4);
    assert!(s.versions[&2].deleted.is_some());
    assert!(s.versions[&3].deleted.is_some());
    assert!(s.versions[&1].deleted.is_none());
    assert!(is_not_found(f.store.get_secret("p", 2)));
}

fn deleting_everything_empties_but_keeps_versions(mk: Mk) {
    let f = mk(10);
    put_n(&f.store, "p", 3);
    f.store.delete_secret("p", &[1, 2, 3, 42]).unwrap();
    assert!(is_not_found(f.store.get_secret("p", 0)));
    assert!(is_not_found(f.store.secret_metadata("p", 0)));
    assert!(is_not_found(f.store.secret_metadata("p", 1)));
    // The path is still listed, and the versions are still there to undelete.
    assert_eq!(f.store.list_secrets().unwrap(), vec!["p"]);
    f.store.undelete_secret("p", &[2]).unwrap();
    let s = f.store.secret_metadata("p", 0).unwrap();
    assert_eq!(s.metadata.current_version, 2);
    assert_eq!(s.versions.len(), 3);
    assert!(s.versions[&1].deleted.is_some());
}

fn unknown_paths_are_not_found(mk: Mk) {
    let f = mk(10);
    assert!(is_not_found(f.store.get_secret("nope", 0)));
    assert!(is_not_found(f.store.secret_metadata("nope", 0)));
    assert!(is_not_found(f.store.delete_secret("nope", &[])));
    assert!(is_not_found(f.store.undelete_secret("nope", &[])));
}

fn unknown_and_deleted_versions_are_not_found(mk: Mk) {
    let f = mk(10);
    put_n(&f.store, "p", 2);
    assert!(is_not_found(f.store.get_secret("p", 3)));
    f.store.delete_secret("p", &[1]).unwrap();
    assert!(is_not_found(f.store.get_secret("p", 1)));
    assert!(is_not_found(f.store.secret_metadata("p", 1)));
    assert_eq!(val(&f.store, "p", 2).unwrap(), "v2");
}

fn undelete_one_of_two(mk: Mk) {
    let f = mk(10);
    put_n(&f.store, "p", 3);
    f.store.delete_secret("p", &[1, 2]).unwrap();
    f.store.undelete_secret("p", &[1]).unwrap();
    assert_eq!(val(&f.store, "p", 1).unwrap(), "v1");
    assert!(is_not_found(f.store.get_secret("p", 2)));
    assert_eq!(
        f.store
            .secret_metadata("p", 0)
            .unwrap()
            .metadata
            .current_version,
        3
    );
}

fn undelete_all_with_empty_list_restores_highest(mk: Mk) {
    let f = mk(10);
    put_n(&f.store, "p", 3);
    f.store.delete_secret("p", &[1, 2, 3]).unwrap();
    f.store.undelete_secret("p", &[]).unwrap();
    assert_eq!(val(&f.store, "p", 0).unwrap(), "v3");
    let s = f.store.secret_metadata("p", 0).unwrap();
    assert_eq!(s.metadata.current_version, 3);
    assert_eq!(s.metadata.oldest_version, 3);
}

fn undelete_of_nothing_is_not_found(mk: Mk) {
    let f = mk(10);
    put_n(&f.store, "p", 2);
    assert!(is_not_found(f.store.undelete_secret("p", &[])));
    assert!(is_not_found(f.store.undelete_secret("p", &[1, 9])));
}

fn metadata_returns_every_version(mk: Mk) {
    let f = mk(10);
    put_n(&f.store, "p", 3);
    f.store.delete_secret("p", &[1]).unwrap();
    let s = f.store.secret_metadata("p", 2).unwrap();
    assert_eq!(s.versions.len(), 3);
    assert_eq!(s.versions[&3].data.get("v"), Some("v3"));
    assert!(s.versions[&1].deleted.is_some());
    assert!(s.metadata.created <= s.metadata.updated);
    assert_eq!(s.metadata.oldest_version, 2);
}

fn values_round_trip(mk: Mk) {
    let f = mk(10);
    f.store.put_secret("empty", SecretData::new()).unwrap();
    assert!(f.store.get_secret("empty", 0).unwrap().is_empty());

    let many: SecretData = (0..100)
        .map(|i| (format!("key {i}"), format!("value-{i}")))
        .collect();
    f.store.put_secret("many", many).unwrap();
    let got = f.store.get_secret("many", 0).unwrap();
    assert_eq!(got.len(), 100);
    assert_eq!(got.get("key 42"), Some("value-42"));

    let odd = "ünïcødé 🔑\nline2\ttab \"quoted\" \\ back'slash\u{0}nul";
    f.store.put_secret("odd", data(&[("v", odd)])).unwrap();
    assert_eq!(val(&f.store, "odd", 0).unwrap(), odd);

    f.store
        .put_secret("path with spaces/x", data(&[("v", "s")]))
        .unwrap();
    assert_eq!(val(&f.store, "path with spaces/x", 0).unwrap(), "s");
    // Paths are opaque: no normalization.
    assert!(is_not_found(f.store.get_secret("/path with spaces/x", 0)));
}

fn list_is_sorted_and_complete(mk: Mk) {
    let f = mk(10);
    assert!(f.store.list_secrets().unwrap().is_empty());
    let mut expected: Vec<String> = (0..150).map(|i| format!("batch/{i:03}")).collect();
    expected.extend(
        [
            "z/last",
            "a/b/c/d/e/f/g/deep",
            "special/(x)|[y]{z}+*?.-_",
            "/leading",
            "A/upper",
        ]
        .map(String::from),
    );
    for p in expected.iter().rev() {
        f.store.put_secret(p, data(&[("v", "1")])).unwrap();
    }
    f.store.delete_secret("z/last", &[]).unwrap();
    expected.sort();
    assert_eq!(f.store.list_secrets().unwrap(), expected);
}

fn concurrent_upserts_all_land(mk: Mk) {
    let f = mk(1000);
    std::thread::scope(|s| {
        for t in 0..8 {
            let store = f.store.clone();
            s.spawn(move || {
                for i in 0..10 {
                    store
                        .put_secret("shared", data(&[("v", &format!("{t}-{i}"))]))
                        .unwrap();
                }
            });
        }
    });
    let s = f.store.secret_metadata("shared", 0).unwrap();
    assert_eq!(s.metadata.current_version, 80);
    assert_eq!(s.versions.len(), 80);
    let mut values: Vec<_> = s
        .versions
        .values()
        .map(|v| v.data.get("v").unwrap().to_owned())
        .collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 80);
}

// ---- policies ------------------------------------------------------------

const ADMIN: &str = "spiffe://example.org/admin";
const ANCHORED_ADMIN: &str = r"^spiffe://example\.org/admin$";

fn super_policy_grants_everything(mk: Mk) {
    let f = mk(10);
    f.store.put_policy("root", ".*", ".*", vec![Super]).unwrap();
    for path in [
        "any/path",
        "x",
        RESERVED_ACL,
        RESERVED_SECRET,
        RESERVED_CIPHER,
    ] {
        assert!(
            f.store
                .check_access("spiffe://x/y", path, &[Read, Write, List]),
            "{path}"
        );
    }
}

fn no_policies_deny(mk: Mk) {
    let f = mk(10);
    assert!(!f.store.check_access(ADMIN, "a", &[Read]));
    assert!(f.store.list_policies(None, None).is_empty());
}

fn specific_patterns(mk: Mk) {
    let f = mk(10);
    f.store
        .put_policy(
            "web",
            r"^spiffe://example\.org/web$",
            "^app/web/",
            vec![Read, List],
        )
        .unwrap();
    f.store
        .put_policy("substr", "workload", "app/config", vec![Write])
        .unwrap();
    let table: &[(&str, &str, &[Permission], bool)] = &[
        ("spiffe://example.org/web", "app/web/db", &[Read], true),
        (
            "spiffe://example.org/web",
            "app/web/db",
            &[Read, List],
            true,
        ),
        ("spiffe://example.org/web", "app/web/db", &[Write], false),
        ("spiffe://example.org/web2", "app/web/db", &[Read], false),
        ("spiffe://example.org/web", "x/app/web/db", &[Read], false),
        (
            "spiffe://e.org/my-workload-1",
            "private-app/configs/x",
            &[Write],
            true,
        ),
        ("spiffe://e.org/other", "app/config", &[Write], false),
        ("spiffe://e.org/workload", "app/config", &[Execute], false),
    ];
    for (peer, path, wants, expect) in table {
        assert_eq!(
            f.store.check_access(peer, path, wants),
            *expect,
            "{peer} {path} {wants:?}"
        );
    }
}

fn permissions_do_not_union_across_policies(mk: Mk) {
    let f = mk(10);
    f.store.put_policy("r", ".*", "^data/", vec![Read]).unwrap();
    f.store
        .put_policy("w", ".*", "^data/", vec![Write])
        .unwrap();
    assert!(f.store.check_access(ADMIN, "data/x", &[Read]));
    assert!(f.store.check_access(ADMIN, "data/x", &[Write]));
    assert!(!f.store.check_access(ADMIN, "data/x", &[Read, Write]));
}

fn invalid_policies_are_rejected(mk: Mk) {
    let f = mk(10);
    assert!(matches!(
        f.store.put_policy("", ".*", "^a$", vec![Read]),
        Err(StoreError::Invalid(ModelError::EmptyName))
    ));
    assert!(matches!(
        f.store.put_policy("bad", "(", "^a$", vec![Read]),
        Err(StoreError::Invalid(ModelError::InvalidRegex {
            which: PatternField::SpiffeId,
            ..
        }))
    ));
    assert!(matches!(
        f.store.put_policy("bad", ".*", "a[", vec![Read]),
        Err(StoreError::Invalid(ModelError::InvalidRegex {
            which: PatternField::Path,
            ..
        }))
    ));
    assert!(is_not_found(f.store.get_policy("bad")));
}

fn upsert_keeps_created_at(mk: Mk) {
    let f = mk(10);
    let first = f.store.put_policy("p", ".*", "^a/", vec![Read]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let second = f
        .store
        .put_policy("p", ANCHORED_ADMIN, "^b/", vec![Write])
        .unwrap();
    assert_eq!(second.created_at, first.created_at);
    assert!(second.updated_at > first.updated_at);
    let got = f.store.get_policy("p").unwrap();
    assert_eq!(got, second);
    assert_eq!(got.path_pattern, "^b/");
    assert_eq!(got.permissions, vec![Write]);
    assert_eq!(f.store.list_policies(None, None).len(), 1);
    assert!(!f.store.check_access(ADMIN, "a/x", &[Read]));
    assert!(f.store.check_access(ADMIN, "b/x", &[Write]));
}

fn unknown_policies_are_not_found(mk: Mk) {
    let f = mk(10);
    assert!(is_not_found(f.store.get_policy("ghost")));
    assert!(is_not_found(f.store.delete_policy("ghost")));
    f.store.put_policy("p", ".*", "^a/", vec![Read]).unwrap();
    f.store.delete_policy("p").unwrap();
    assert!(is_not_found(f.store.get_policy("p")));
    assert!(is_not_found(f.store.delete_policy("p")));
    assert!(!f.store.check_access(ADMIN, "a/x", &[Read]));
}

fn list_filters_use_exact_equality(mk: Mk) {
    let f = mk(10);
    f.store.put_policy("b", ".*", "^a/", vec![Read]).unwrap();
    f.store
        .put_policy("a", ANCHORED_ADMIN, "^a/", vec![Read])
        .unwrap();
    f.store.put_policy("c", ".*", "^a/b/", vec![Read]).unwrap();
    let names = |v: Vec<Policy>| v.into_iter().map(|p| p.name).collect::<Vec<_>>();
    assert_eq!(names(f.store.list_policies(None, None)), ["a", "b", "c"]);
    assert_eq!(names(f.store.list_policies(Some(".*"), None)), ["b", "c"]);
    assert_eq!(names(f.store.list_policies(None, Some("^a/"))), ["a", "b"]);
    assert_eq!(names(f.store.list_policies(Some(".*"), Some("^a/"))), ["b"]);
    assert!(f.store.list_policies(Some(".+"), None).is_empty());
    assert!(f.store.list_policies(None, Some("^a")).is_empty());
}

fn reserved_path_rules(mk: Mk) {
    let f = mk(10);
    for (pattern, reached) in [
        ("acl", RESERVED_ACL),
        ("system", RESERVED_ACL),
        ("spike", RESERVED_ACL),
        ("secret", RESERVED_SECRET),
        ("exec", RESERVED_CIPHER),
    ] {
        match f
            .store
            .put_policy("evil", ANCHORED_ADMIN, pattern, vec![Super])
        {
            Err(StoreError::Invalid(ModelError::ReservedPathBySubstring { path })) => {
                assert_eq!(path, reached, "{pattern}");
            }
            other => panic!("{pattern}: {other:?}"),
        }
    }
    assert!(matches!(
        f.store.put_policy(
            "evil",
            r"spiffe://example\.org/admin",
            "^spike/system/acl$",
            vec![Super]
        ),
        Err(StoreError::Invalid(ModelError::ReservedPathBySubstring {
            path: RESERVED_ACL
        }))
    ));
    assert!(is_not_found(f.store.get_policy("evil")));

    f.store
        .put_policy(
            "acl-admin",
            ANCHORED_ADMIN,
            "^spike/system/acl$",
            vec![Write],
        )
        .unwrap();
    assert!(f.store.check_access(ADMIN, RESERVED_ACL, &[Write]));
    assert!(!f.store.check_access(
        "spiffe://example.org/admin-attacker",
        RESERVED_ACL,
        &[Write]
    ));

    f.store
        .put_policy("tenant", ANCHORED_ADMIN, "^tenants/acme/", vec![Read])
        .unwrap();
    assert!(
        f.store
            .check_access(ADMIN, "tenants/acme/db/creds", &[Read])
    );

    // A tenant admin with super on its subtree cannot manage policies.
    f.store
        .put_policy("tenant-admin", ".*", "^tenants/x/.*$", vec![Super])
        .unwrap();
    assert!(
        !f.store
            .check_access("spiffe://example.org/t", RESERVED_ACL, &[Write])
    );
}

fn is_empty_tracks_contents(mk: Mk) {
    let f = mk(10);
    assert!(f.store.is_empty().unwrap());
    f.store.put_policy("p", ".*", "^a/", vec![Read]).unwrap();
    assert!(!f.store.is_empty().unwrap());
    f.store.delete_policy("p").unwrap();
    assert!(f.store.is_empty().unwrap());
    f.store.put_secret("s", SecretData::new()).unwrap();
    assert!(!f.store.is_empty().unwrap());
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory_backend {
            $( #[test] fn $name() { super::$name(super::memory) } )*
        }
        mod sqlite_backend {
            $( #[test] fn $name() { super::$name(super::sqlite) } )*
        }
    };
}

on_both_backends!(
    new_secret_starts_at_version_one,
    second_put_keeps_the_first_version,
    identical_puts_are_new_versions,
    pruning_keeps_max_versions,
    deleting_the_current_version_moves_current_back,
    deleting_older_versions_keeps_current,
    deleting_everything_empties_but_keeps_versions,
    unknown_paths_are_not_found,
    unknown_and_deleted_versions_are_not_found,
    undelete_one_of_two,
    undelete_all_with_empty_list_restores_highest,
    undelete_of_nothing_is_not_found,
    metadata_returns_every_version,
    values_round_trip,
    list_is_sorted_and_complete,
    concurrent_upserts_all_land,
    super_policy_grants_everything,
    no_policies_deny,
    specific_patterns,
    permissions_do_not_union_across_policies,
    invalid_policies_are_rejected,
    upsert_keeps_created_at,
    unknown_policies_are_not_found,
    list_filters_use_exact_equality,
    reserved_path_rules,
    is_empty_tracks_contents,
);

// ---- SQLite persistence --------------------------------------------------

fn open_store(path: &Path, key: &RootKey, max_versions: u64) -> Result<Store, StoreError> {
    Store::new(Arc::new(SqliteBackend::open(path, key)?), max_versions)
}

fn db_files(db: &Path) -> Vec<PathBuf> {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    [db.to_path_buf(), wal]
        .into_iter()
        .filter(|p| p.exists())
        .collect()
}

fn assert_absent(files: &[PathBuf], needles: &[&str]) {
    let contents: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    // The scan reads real database content: the schema text is in plaintext.
    let schema = b"path_ciphertext";
    assert!(
        contents
            .iter()
            .any(|b| b.windows(schema.len()).any(|w| w == schema)),
        "no database content found in {files:?}"
    );
    for (file, bytes) in files.iter().zip(&contents) {
        for needle in needles {
            let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
            assert!(
                !found,
                "{needle:?} found in plaintext in {}",
                file.display()
            );
        }
    }
}

#[test]
fn sqlite_reopen_with_the_same_key_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spike.db");
    let created = {
        let store = open_store(&db, &key(9), 10).unwrap();
        put_n(&store, "app/db", 3);
        store.delete_secret("app/db", &[2]).unwrap();
        store.put_secret("other", data(&[("v", "o")])).unwrap();
        store
            .put_policy("p", ANCHORED_ADMIN, "^app/", vec![Read, List])
            .unwrap()
    };
    let store = open_store(&db, &key(9), 10).unwrap();
    assert_eq!(store.list_secrets().unwrap(), ["app/db", "other"]);
    assert_eq!(val(&store, "app/db", 0).unwrap(), "v3");
    assert_eq!(val(&store, "app/db", 1).unwrap(), "v1");
    assert!(is_not_found(store.get_secret("app/db", 2)));
    let s = store.secret_metadata("app/db", 0).unwrap();
    assert_eq!(s.versions.len(), 3);
    assert_eq!(s.versions.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    let p = store.get_policy("p").unwrap();
    assert_eq!(p, created);
    assert!(store.check_access(ADMIN, "app/x", &[Read, List]));
    assert!(!store.check_access(ADMIN, "app/x", &[Write]));
    assert!(!store.is_empty().unwrap());
}

#[test]
fn sqlite_refuses_another_root_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spike.db");
    {
        let store = open_store(&db, &key(1), 10).unwrap();
        store.put_secret("s", data(&[("v", "x")])).unwrap();
    }
    let err = SqliteBackend::open(&db, &key(2)).unwrap_err();
    assert!(matches!(err, StoreError::WrongRootKey));
    assert_eq!(
        err.to_string(),
        "the root key does not open this database (key check failed): refusing to start with a different key"
    );
    // Even an empty database is bound to its first key.
    let db2 = dir.path().join("empty.db");
    drop(SqliteBackend::open(&db2, &key(1)).unwrap());
    assert!(matches!(
        SqliteBackend::open(&db2, &key(2)),
        Err(StoreError::WrongRootKey)
    ));
    // The right key still works afterwards.
    assert_eq!(
        val(&open_store(&db, &key(1), 10).unwrap(), "s", 0).unwrap(),
        "x"
    );
}

#[test]
fn sqlite_pruning_really_deletes_and_nothing_is_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spike.db");
    let path = "tenants/acme/PLAINTEXT-PATH-MARKER";
    let value = |i: u64| format!("PLAINTEXT-VALUE-MARKER-{i}-9f2c");
    {
        let backend = Arc::new(SqliteBackend::open(&db, &key(3)).unwrap());
        let store = Store::new(backend.clone(), 3).unwrap();
        for i in 1..=5 {
            store
                .put_secret(path, data(&[("KEY-MARKER", &value(i))]))
                .unwrap();
        }
        store
            .put_policy("POLICY-NAME-MARKER", ".*", "^PATTERN-MARKER/", vec![Read])
            .unwrap();
        // Before a checkpoint every write is still in the WAL.
        let all: Vec<String> = (1..=5).map(value).collect();
        let mut needles: Vec<&str> = all.iter().map(String::as_str).collect();
        needles.extend([
            path,
            "PLAINTEXT-PATH-MARKER",
            "KEY-MARKER",
            "POLICY-NAME-MARKER",
            "PATTERN-MARKER",
        ]);
        assert_absent(&db_files(&db), &needles);
        backend.checkpoint().unwrap();
        assert_absent(&db_files(&db), &needles);
    }
    let store = open_store(&db, &key(3), 3).unwrap();
    let s = store.secret_metadata(path, 0).unwrap();
    assert_eq!(s.versions.keys().copied().collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(s.metadata.oldest_version, 3);
    assert!(is_not_found(store.get_secret(path, 1)));
    assert!(is_not_found(store.get_secret(path, 2)));
    assert_eq!(
        store.get_secret(path, 3).unwrap().get("KEY-MARKER"),
        Some(value(3).as_str())
    );
}

#[test]
fn sqlite_store_wide_max_versions_applies_on_put() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spike.db");
    put_n(&open_store(&db, &key(4), 10).unwrap(), "p", 4);
    let store = open_store(&db, &key(4), 2).unwrap();
    assert_eq!(store.secret_metadata("p", 0).unwrap().versions.len(), 4);
    store.put_secret("p", data(&[("v", "v5")])).unwrap();
    let s = store.secret_metadata("p", 0).unwrap();
    assert_eq!(s.versions.keys().copied().collect::<Vec<_>>(), [4, 5]);
    assert_eq!(s.metadata.max_versions, 2);
}

#[test]
fn sqlite_legacy_substring_policy_does_not_reach_reserved_paths() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spike.db");
    {
        // A policy stored before the upsert rule existed.
        let backend = SqliteBackend::open(&db, &key(5)).unwrap();
        let now = OffsetDateTime::now_utc();
        let legacy = Policy::from_stored(
            "legacy".into(),
            "example".into(),
            "acl".into(),
            vec![Super],
            now,
            now,
        )
        .unwrap();
        backend.store_policy(&legacy).unwrap();
    }
    let store = open_store(&db, &key(5), 10).unwrap();
    assert_eq!(store.get_policy("legacy").unwrap().path_pattern, "acl");
    assert!(!store.check_access(ADMIN, RESERVED_ACL, &[Write]));
    assert!(!store.check_access(ADMIN, RESERVED_ACL, &[Read]));
    assert!(store.check_access(ADMIN, "team/acl-list", &[Write]));
}

#[test]
fn sqlite_policies_with_special_characters_and_long_patterns_persist() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spike.db");
    let long = format!("^{}$", "a/".repeat(240));
    let special = r#"^spiffe://example\.org/(web|api)-[0-9]+/"quoted"$"#;
    {
        let store = open_store(&db, &key(6), 10).unwrap();
        store
            .put_policy("name with space", special, &long, vec![Read, Execute])
            .unwrap();
        store.put_policy("other", ".*", "^x/", vec![List]).unwrap();
        store.delete_policy("other").unwrap();
    }
    let store = open_store(&db, &key(6), 10).unwrap();
    let names: Vec<_> = store
        .list_policies(None, None)
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["name with space"]);
    let p = store.get_policy("name with space").unwrap();
    assert_eq!(p.spiffeid_pattern, special);
    assert_eq!(p.path_pattern, long);
    assert_eq!(p.permissions, [Read, Execute]);
    assert!(store.check_access(
        r#"spiffe://example.org/web-12/"quoted""#,
        long.trim_matches(['^', '$']),
        &[Execute]
    ));
}

#[test]
fn lite_store_accepts_writes_and_keeps_nothing() {
    let store = Store::new(Arc::new(LiteBackend::new()), 10).unwrap();
    assert_eq!(store.backend_kind(), BackendKind::Lite);
    store.put_secret("a", data(&[("v", "x")])).unwrap();
    assert!(is_not_found(store.get_secret("a", 0)));
    assert!(store.list_secrets().unwrap().is_empty());
    assert!(store.is_empty().unwrap());
}

#[test]
fn backend_kinds() {
    assert_eq!(memory(1).store.backend_kind(), BackendKind::Memory);
    assert_eq!(sqlite(1).store.backend_kind(), BackendKind::Sqlite);
    let b: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    assert!(b.load_secret("x").unwrap().is_none());
    assert!(!b.delete_policy("x").unwrap());
}

// ---- One process per database (unix-excl VFS) -----------------------------

const LOCK_CHILD_ENV: &str = "SPIKE_NEXUS_TEST_LOCK_CHILD_DB";

/// Another process: reads the database with plain SQLite (default VFS, as a backup tool
/// would), then tries to open it as a second Nexus. Does nothing unless started by
/// [`sqlite_database_is_exclusive_to_one_process`].
#[test]
#[ignore = "child process of sqlite_database_is_exclusive_to_one_process"]
fn sqlite_lock_child() {
    let Some(db) = std::env::var_os(LOCK_CHILD_ENV) else {
        return;
    };
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(std::time::Duration::ZERO).unwrap();
    match conn.query_row("SELECT COUNT(*) FROM secrets", [], |r| r.get::<_, i64>(0)) {
        Ok(n) => println!("READ {n}"),
        Err(e) => println!("READ-ERR {e}"),
    }
    drop(conn);
    match SqliteBackend::open(Path::new(&db), &key(7)) {
        Ok(_) => println!("OPENED"),
        Err(e) => println!("OPEN-ERR {e}"),
    }
}

fn run_lock_child(db: &Path) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::sqlite_lock_child",
            "--nocapture",
            "--ignored",
        ])
        .env(LOCK_CHILD_ENV, db)
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn sqlite_database_is_exclusive_to_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spike.db");
    let store = open_store(&db, &key(7), 3).unwrap();
    store.put_secret("s", data(&[("v", "x")])).unwrap();
    // No mmapped WAL index exists (the cause of SIGBUS on a full disk).
    assert!(!dir.path().join("spike.db-shm").exists());

    let out = run_lock_child(&db);
    assert!(out.contains("READ-ERR database is locked"), "{out}");
    assert!(
        out.contains("OPEN-ERR database error: database is locked"),
        "{out}"
    );
    // Still ours, still working.
    assert_eq!(val(&store, "s", 0).unwrap(), "x");

    // Once this process closes the database, another one can read and open it.
    drop(store);
    let out = run_lock_child(&db);
    assert!(out.contains("READ 1"), "{out}");
    assert!(out.contains("OPENED"), "{out}");
}

// ---- On-disk format golden (rows written by the code of commit 2d5d5f4) -------------

/// The DDL of a database created by the code of commit 2d5d5f4 (`sqlite_master`).
const GOLDEN_DDL: &str = "
CREATE TABLE schema_version (
  id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
CREATE TABLE keycheck (
  id INTEGER PRIMARY KEY CHECK (id = 1), nonce BLOB NOT NULL, ciphertext BLOB NOT NULL);
CREATE TABLE secrets (
  id BLOB PRIMARY KEY, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL,
  path_nonce BLOB NOT NULL, path_ciphertext BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE policies (
  id BLOB PRIMARY KEY, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL) WITHOUT ROWID;
INSERT INTO schema_version (id, version) VALUES (1, 1);
";
const GOLDEN_KEYCHECK_NONCE: &str = "8454dc7791268e4f309a8334";
const GOLDEN_KEYCHECK_CT: &str =
    "3c534c61c38b99631137930e7f720e369fe82e6bd34fbf787d59982875204c706de9bbc809";
/// `HMAC-SHA256(HMAC-SHA256(root, "spike-rs/v1/index"), "secret:app/db")`.
const GOLDEN_SECRET_ID: &str = "8732b69d901bb0724af5b4f5cd10b6fc2493935e3e32b10d4f0ae2c36d44a7db";
const GOLDEN_SECRET_NONCE: &str = "9f95dab4a085824dfef72b46";
const GOLDEN_SECRET_CT: &str = concat!(
    "6fc8df53cea27e813acf0175b76e70f16b721b9aef98e71805d6bdf408d5edcbc535420c517619a829c5b937e5f4477a",
    "fc2f651676beba7efae4dba611799abc5bd178c88b4cb4824907733b4805391b8c3d12f1117666e9a473d5bab6aa9713",
    "bbce305ebfd86e4a01558c6899e4af8aae7ee37ad944bb4f5da6942b67ad0ba05503a32c925c0176b3c36d045820fb2a",
    "e6ddac82dbed10dc72a5c2cfbd55e4cd7f789c47e78993c87d1049326bc62006a7c093f9b772f4d90176a0d25e08b763",
    "d859e7d2ba074cc1e7fd9fb21e5b9b3a7f8dd40c109ce5a17f406f8fb607574b6f5d0e582bf8e6e508473cb45d8d389e",
    "77c2194a3e4edb4a3d3c2fceee8510c9d69b71b3c7fc84747a3f7e5f8d98049538f7022af82e67100e16adaeba76e8af",
    "9968f95111550a968df99e5305c1d25777e81aac1a269a9e44f72c29801506d63b2c5eba18a38ac24785f360d92ad557",
    "5c048edbcc49b09499b33002ae3978c804a1be7a7dd3d198c385f38597b6544e42c7fc629b972ca6e6edd65f391fc100",
    "6f59196205fae3a83b368e715f5119763d589afcb314e16fef16004409e9a17d9cb50b80298d3fe0a544adbe3fbcbbae",
    "e084e8b2d2",
);
const GOLDEN_PATH_NONCE: &str = "7c793980598a44c4059887f8";
const GOLDEN_PATH_CT: &str = "e7473582d37bfa3da4311bcd401173d9f6a8d2f5c002";
/// `HMAC-SHA256(HMAC-SHA256(root, "spike-rs/v1/index"), "policy:golden")`.
const GOLDEN_POLICY_ID: &str = "46e97152cae2320d3a22f48c3db448cc6b9399c8d5988377c90937c0bddc788f";
const GOLDEN_POLICY_NONCE: &str = "d11ac33f51b26ad1f1cbedc3";
const GOLDEN_POLICY_CT: &str = concat!(
    "7b45f9b5030a18ddad71b9fd3ec4d94bdb27ffb2606204da55816c06dbcf9403bd6404f39c71b4e29f8dbf97afd80aac",
    "210f5fe9171851d69c3054efdd601c0f2ef339c7cb201449102ec3fb2e059b1fc360ba72d0b790ad2a5571bf66f8f1c5",
    "55acc58f4ba267288aa17365c7a984ed7e0119e84f30a1352ec1e1e481ad323d02b725f481398e96bb16155fe31a3ffa",
    "f6f2a19bc5fc01689dd25c8687bc97aa92b28405130b3453d2f190f41925c7d54117086e0a40d701c5f1d6b6f2deccef",
    "c80e85d2d1d416c9561e96036da46f806149dd5feedbf914d5269e5716e9b25eb0f7faf6",
);

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn golden_times() -> (OffsetDateTime, OffsetDateTime, OffsetDateTime) {
    let t0 = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
    (
        t0,
        t0 + time::Duration::seconds(60),
        t0 + time::Duration::seconds(120),
    )
}

/// The records the golden rows hold (root key `[0x42; 32]`).
fn golden_records() -> (spike_nexus::model::Secret, Policy) {
    let (t0, t1, t2) = golden_times();
    let mut s = spike_nexus::model::Secret::new_first(data(&[("v", "golden-1")]), 10, t0);
    s.put(data(&[("v", "golden-2"), ("user", "admin")]), t1);
    s.soft_delete(&[1], t2);
    let p = Policy::from_stored(
        "golden".into(),
        r"^spiffe://example\.org/app$".into(),
        "^app/".into(),
        vec![Read, List],
        t0,
        t1,
    )
    .unwrap();
    (s, p)
}

/// Writes the golden database with plain SQLite, as the code of 2d5d5f4 left it.
fn write_golden_db(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(GOLDEN_DDL).unwrap();
    conn.execute(
        "INSERT INTO keycheck (id, nonce, ciphertext) VALUES (1, ?1, ?2)",
        (unhex(GOLDEN_KEYCHECK_NONCE), unhex(GOLDEN_KEYCHECK_CT)),
    )
    .unwrap();
    conn.execute(
        "INSERT INTO secrets (id, nonce, ciphertext, path_nonce, path_ciphertext)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        (
            unhex(GOLDEN_SECRET_ID),
            unhex(GOLDEN_SECRET_NONCE),
            unhex(GOLDEN_SECRET_CT),
            unhex(GOLDEN_PATH_NONCE),
            unhex(GOLDEN_PATH_CT),
        ),
    )
    .unwrap();
    conn.execute(
        "INSERT INTO policies (id, nonce, ciphertext) VALUES (?1, ?2, ?3)",
        (
            unhex(GOLDEN_POLICY_ID),
            unhex(GOLDEN_POLICY_NONCE),
            unhex(GOLDEN_POLICY_CT),
        ),
    )
    .unwrap();
}

/// Every `(id, ciphertext length)` of `sql`, read with plain SQLite.
fn raw_rows(db: &Path, sql: &str) -> Vec<(Vec<u8>, usize)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?.len()))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// The on-disk format does not change: a database written by an earlier build opens, its
/// rows decrypt to the records they were written from (key check, HMAC row ids, AAD
/// `table || 0 || id`, JSON records), and rewriting them lands on the same row ids with
/// ciphertexts of the same length.
#[test]
fn sqlite_golden_database_of_an_earlier_build_opens_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spike.db");
    write_golden_db(&db);
    let (secret, policy) = golden_records();

    assert!(matches!(
        SqliteBackend::open(&db, &key(0x43)),
        Err(StoreError::WrongRootKey)
    ));
    {
        let backend = SqliteBackend::open(&db, &key(0x42)).unwrap();
        assert!(!backend.is_empty().unwrap());
        assert_eq!(backend.list_secret_paths().unwrap(), ["app/db"]);
        assert_eq!(backend.load_secret("app/db").unwrap().unwrap(), secret);
        assert!(backend.load_secret("app/other").unwrap().is_none());
        assert_eq!(
            backend.load_policies().unwrap(),
            std::slice::from_ref(&policy)
        );

        // Rewriting the same records keeps their row ids and sizes.
        backend.store_secret("app/db", &secret, &[]).unwrap();
        backend.store_policy(&policy).unwrap();
    }
    assert_eq!(
        raw_rows(&db, "SELECT id, ciphertext FROM secrets"),
        [(unhex(GOLDEN_SECRET_ID), GOLDEN_SECRET_CT.len() / 2)]
    );
    assert_eq!(
        raw_rows(&db, "SELECT id, path_ciphertext FROM secrets"),
        [(unhex(GOLDEN_SECRET_ID), GOLDEN_PATH_CT.len() / 2)]
    );
    assert_eq!(
        raw_rows(&db, "SELECT id, ciphertext FROM policies"),
        [(unhex(GOLDEN_POLICY_ID), GOLDEN_POLICY_CT.len() / 2)]
    );
    assert_eq!(
        raw_rows(&db, "SELECT nonce, ciphertext FROM keycheck"),
        [(unhex(GOLDEN_KEYCHECK_NONCE), GOLDEN_KEYCHECK_CT.len() / 2)]
    );
    let backend = SqliteBackend::open(&db, &key(0x42)).unwrap();
    assert_eq!(backend.load_secret("app/db").unwrap().unwrap(), secret);
    assert_eq!(backend.load_policies().unwrap(), [policy]);
}
