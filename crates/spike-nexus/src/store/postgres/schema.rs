//! The schema, its versioned migrations, and the key check, each under an advisory lock.
//!
//! Every table lives in the schema `spike` of the database Nexus connects to:
//!
//! ```sql
//! spike.schema_version(id int PRIMARY KEY CHECK (id = 1), version int)
//! spike.keycheck(id int PRIMARY KEY CHECK (id = 1), nonce bytea, ciphertext bytea)
//! spike.secrets(id bytea PRIMARY KEY, nonce bytea, ciphertext bytea,
//!               path_nonce bytea, path_ciphertext bytea, row_version bigint)
//! spike.policies(id bytea PRIMARY KEY, nonce bytea, ciphertext bytea, row_version bigint)
//! spike.changes(id int PRIMARY KEY CHECK (id = 1), policy_epoch bigint)
//! ```
//!
//! The rows are the shared record format's ([`records`](crate::store::records)): the server
//! sees HMAC row ids and AES-GCM ciphertext only. `row_version` counts the writes of a row;
//! `policy_epoch` counts policy changes, so an instance can tell that its policy cache is
//! stale without reading the policies.
//!
//! Migrations run in one transaction that first takes the advisory lock [`MIGRATE_LOCK`]:
//! instances starting together apply each migration once, the others wait and then find
//! it applied. A schema newer than this binary is refused, never touched.

use tokio_postgres::GenericClient;

use super::super::StoreError;
use super::super::records::{RecordCodec, Sealed};
use super::pg_error;

/// The advisory lock (bigint key space) held while migrating: "SPIKEMIG".
pub(super) const MIGRATE_LOCK: i64 = 0x5350_494b_454d_4947;
/// The advisory lock held while checking or writing the key-check row: "SPIKEKEY".
pub(super) const KEY_LOCK: i64 = 0x5350_494b_454b_4559;

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i32 = 1;

/// The migrations, in order: `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the tables of the record format.
    "CREATE TABLE spike.keycheck (
         id int PRIMARY KEY CHECK (id = 1),
         nonce bytea NOT NULL,
         ciphertext bytea NOT NULL);
     CREATE TABLE spike.secrets (
         id bytea PRIMARY KEY CHECK (octet_length(id) = 32),
         nonce bytea NOT NULL,
         ciphertext bytea NOT NULL,
         path_nonce bytea NOT NULL,
         path_ciphertext bytea NOT NULL,
         row_version bigint NOT NULL DEFAULT 1);
     CREATE TABLE spike.policies (
         id bytea PRIMARY KEY CHECK (octet_length(id) = 32),
         nonce bytea NOT NULL,
         ciphertext bytea NOT NULL,
         row_version bigint NOT NULL DEFAULT 1);
     CREATE TABLE spike.changes (
         id int PRIMARY KEY CHECK (id = 1),
         policy_epoch bigint NOT NULL);
     INSERT INTO spike.changes (id, policy_epoch) VALUES (1, 0);",
];

/// Brings the schema to [`SCHEMA_VERSION`], under [`MIGRATE_LOCK`]. Returns the version
/// found before migrating (0 for an empty database).
///
/// # Errors
///
/// [`StoreError::UnsupportedSchema`] when the database's schema is newer than this binary;
/// database errors.
pub(super) async fn migrate(client: &mut tokio_postgres::Client) -> Result<i32, StoreError> {
    migrate_to(client, MIGRATIONS).await
}

async fn migrate_to(
    client: &mut tokio_postgres::Client,
    migrations: &[&str],
) -> Result<i32, StoreError> {
    let latest = i32::try_from(migrations.len()).unwrap_or(i32::MAX);
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .await
        .map_err(pg_error)?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS spike;
         CREATE TABLE IF NOT EXISTS spike.schema_version (
             id int PRIMARY KEY CHECK (id = 1),
             version int NOT NULL);",
    )
    .await
    .map_err(pg_error)?;
    let found: i32 = tx
        .query_opt("SELECT version FROM spike.schema_version WHERE id = 1", &[])
        .await
        .map_err(pg_error)?
        .map_or(Ok(0), |row| row.try_get(0))
        .map_err(pg_error)?;
    if found > latest {
        return Err(StoreError::UnsupportedSchema(format!(
            "the PostgreSQL schema is version {found}, newer than this Nexus binary's \
             ({latest}): another instance runs a newer release; upgrade this one \
             (nothing was changed)"
        )));
    }
    if found < 0 {
        return Err(StoreError::UnsupportedSchema(format!(
            "spike.schema_version holds {found}, which no release writes"
        )));
    }
    for (index, sql) in migrations
        .iter()
        .enumerate()
        .skip(found.unsigned_abs() as usize)
    {
        tx.batch_execute(sql).await.map_err(pg_error)?;
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO spike.schema_version (id, version) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            &[&version],
        )
        .await
        .map_err(pg_error)?;
        tracing::info!(version, "PostgreSQL schema migrated");
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(found)
}

/// Whether the key-check row exists: the cluster-wide "initialized" (bootstrapped) flag,
/// readable without the root key. False before the first migration.
pub(super) async fn has_key_check(client: &impl GenericClient) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            "SELECT to_regclass('spike.keycheck') IS NOT NULL
                AND EXISTS (SELECT 1 FROM spike.keycheck)",
            &[],
        )
        .await;
    // to_regclass() is NULL before migration 1, and EXISTS is never evaluated then.
    match row {
        Ok(row) => row
            .try_get::<_, Option<bool>>(0)
            .map(|v| v.unwrap_or(false))
            .map_err(pg_error),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(false),
        Err(e) => Err(pg_error(e)),
    }
}

/// Checks the root key against the key-check row, under [`KEY_LOCK`]; writes the row when
/// the store is empty (the first key wins, cluster-wide). A different key is
/// [`StoreError::WrongRootKey`]; records without a key-check row are
/// [`StoreError::Integrity`].
pub(super) async fn check_key(
    client: &mut tokio_postgres::Client,
    records: &RecordCodec,
) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&KEY_LOCK])
        .await
        .map_err(pg_error)?;
    let row = tx
        .query_opt(
            "SELECT nonce, ciphertext FROM spike.keycheck WHERE id = 1",
            &[],
        )
        .await
        .map_err(pg_error)?;
    if let Some(row) = row {
        let nonce: Vec<u8> = row.try_get(0).map_err(pg_error)?;
        let ciphertext: Vec<u8> = row.try_get(1).map_err(pg_error)?;
        records.check_key(&nonce, ciphertext)?;
        tx.commit().await.map_err(pg_error)?;
        return Ok(());
    }
    let records_exist: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM spike.secrets) OR EXISTS (SELECT 1 FROM spike.policies)",
            &[],
        )
        .await
        .map_err(pg_error)?
        .try_get(0)
        .map_err(pg_error)?;
    if records_exist {
        return Err(StoreError::Integrity {
            path: "spike.keycheck".to_owned(),
        });
    }
    let Sealed { nonce, ciphertext } = records.seal_key_check()?;
    tx.execute(
        "INSERT INTO spike.keycheck (id, nonce, ciphertext) VALUES (1, $1, $2)",
        &[&nonce.as_slice(), &ciphertext],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    tracing::info!("PostgreSQL store initialized: key-check row written");
    Ok(())
}
