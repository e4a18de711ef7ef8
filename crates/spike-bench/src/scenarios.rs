//! The in-process scenarios: `selftest`, `scale` and `restart-time`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow};
use serde::Serialize;
use spike_crypto::RootKey;
use tokio::time::Instant;

use crate::cluster::{
    BackendChoice, Cluster, NEXUS, STOP_LIMIT, SUPERUSER, millis_since, target_for,
};
use crate::load::{self, LoadOptions, LoadReport};
use crate::rss;
use crate::stats::median;

const RSS_NOTE: &str = "whole process: Nexus, keepers and the load generator share it";

/// Options of [`selftest`].
#[derive(Debug, Clone)]
pub struct SelftestOptions {
    /// Nexus backend.
    pub backend: BackendChoice,
    /// Nexus instances sharing the store (`postgres` only; the load is split evenly
    /// between them).
    pub instances: usize,
    /// The load to run (`secrets` are written through the API first).
    pub load: LoadOptions,
}

/// Starts an in-process Nexus (memory: alone; sqlite: with 3 keepers, bootstrapped by
/// hand), pre-populates `load.secrets` secrets through the API and runs the load.
///
/// # Errors
/// When any part of the deployment fails to start.
pub async fn selftest(options: &SelftestOptions) -> Result<LoadReport> {
    let keepers = match options.backend {
        BackendChoice::Memory => 0,
        BackendChoice::Sqlite | BackendChoice::Postgres => 3,
    };
    let instances = match options.backend {
        BackendChoice::Postgres => options.instances.clamp(1, 8),
        _ if options.instances > 1 => {
            return Err(anyhow!("--instances above 1 needs --backend postgres"));
        }
        _ => 1,
    };
    let mut cluster = Cluster::new(keepers)?;
    cluster.start_keepers().await?;
    if options.backend != BackendChoice::Memory {
        cluster.seed_keepers(&RootKey::generate()?, 2).await?;
    }
    // PostgreSQL: a durable throwaway cluster (fsync on, as SQLite's synchronous=FULL).
    let postgres = if options.backend == BackendChoice::Postgres {
        Some(
            tokio::task::spawn_blocking(|| -> Result<(spike_testkit::PgCluster, String)> {
                let pg = spike_testkit::PgCluster::start_with(
                    spike_testkit::PgOptions::new().durable(true),
                )?;
                let db = pg.create_database()?;
                let conninfo = pg.conninfo(&db);
                Ok((pg, conninfo))
            })
            .await??,
        )
    } else {
        None
    };
    let mut nexuses = Vec::with_capacity(instances);
    for i in 0..instances {
        let data = cluster.dir().join(format!("data-{i}"));
        let mut config = cluster.nexus_config(options.backend, 2, &data)?;
        if let Some((_, conninfo)) = &postgres {
            let creds = cluster.dir().join(format!("credentials-{i}"));
            std::fs::create_dir_all(&creds)?;
            std::fs::write(creds.join(&config.postgres.credential), conninfo)?;
            config.postgres.credentials_directory = Some(creds);
        }
        let nexus = cluster.start_nexus(config).await?;
        nexus.wait_unsealed(Duration::from_secs(30)).await?;
        nexuses.push(nexus);
    }
    let mut targets = Vec::with_capacity(instances);
    for nexus in &nexuses {
        targets.push(cluster.superuser_target(nexus).await?);
    }
    if options.load.workload != load::Workload::Encrypt {
        load::populate(
            &targets[0],
            options.load.secrets.max(1),
            options.load.value_size,
            options.load.connections,
        )
        .await?;
    }
    let mut report = if instances == 1 {
        load::run(&targets[0], &options.load).await?
    } else {
        // The connections split evenly; every instance runs the same mix at once.
        let mut per = options.load.clone();
        per.connections = options.load.connections.div_ceil(instances).max(1);
        let mut runs = tokio::task::JoinSet::new();
        for target in targets {
            let per = per.clone();
            runs.spawn(async move { load::run(&target, &per).await });
        }
        let mut reports = Vec::with_capacity(instances);
        while let Some(report) = runs.join_next().await {
            reports.push(report??);
        }
        load::merge(reports)
    };
    report.server_rss_kib = rss::own_rss_kib();
    report.rss_note = Some(RSS_NOTE.to_owned());
    for nexus in nexuses {
        nexus.stop_within(STOP_LIMIT).await?;
    }
    cluster.stop_keepers().await?;
    drop(postgres);
    Ok(report)
}

/// Options of [`scale`].
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// Data directory holding a database populated by [`crate::cluster::populate_sqlite`]
    /// and its benchmark key.
    pub data_dir: PathBuf,
    /// Number of secrets in the database (for addressing them).
    pub secrets: u64,
    /// Keeper count (threshold 2).
    pub keepers: usize,
    /// Nexus starts to measure (the median is reported).
    pub starts: usize,
    /// The get load run after the last start.
    pub load: LoadOptions,
}

/// Result of [`scale`].
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// Secrets in the database.
    pub secrets: u64,
    /// Size of the database file (plus WAL) in bytes.
    pub db_bytes: u64,
    /// Each start's time from `spike_nexus::start` to unsealed (keepers already seeded), ms.
    pub startup_ms: Vec<f64>,
    /// Median of `startup_ms`.
    pub startup_median_ms: f64,
    /// Process RSS right after the last unseal, KiB.
    pub rss_unsealed_kib: Option<u64>,
    /// Process RSS after the load, KiB.
    pub rss_after_load_kib: Option<u64>,
    /// What the RSS numbers cover.
    pub rss_note: String,
    /// The get load.
    pub load: LoadReport,
}

/// Starts keepers seeded with the database's key, then starts Nexus on the populated
/// database `starts` times (timing start→unsealed), and runs a get load on the last one.
///
/// # Errors
/// When the database or key is missing or a component fails.
pub async fn scale(options: &ScaleOptions) -> Result<ScaleReport> {
    let db = crate::cluster::db_path(&options.data_dir);
    if !db.exists() || !crate::cluster::key_path(&options.data_dir).exists() {
        return Err(anyhow!(
            "{} is not populated; run `spike-bench populate` first",
            options.data_dir.display()
        ));
    }
    let (key, _) = crate::cluster::load_or_create_key(&options.data_dir)?;
    let mut cluster = Cluster::new(options.keepers)?;
    cluster.start_keepers().await?;
    cluster.seed_keepers(&key, 2).await?;
    let mut startup_ms = Vec::new();
    let mut nexus = None;
    for _ in 0..options.starts.max(1) {
        if let Some(n) = nexus.take() {
            crate::cluster::NexusHandle::stop_within(n, STOP_LIMIT).await?;
        }
        let config = cluster.nexus_config(BackendChoice::Sqlite, 2, &options.data_dir)?;
        let identity = cluster.identity(NEXUS).await?;
        let t0 = Instant::now();
        let n = cluster.start_nexus_with(config, identity).await?;
        n.wait_unsealed(Duration::from_secs(120)).await?;
        startup_ms.push(millis_since(t0));
        nexus = Some(n);
    }
    let nexus = nexus.ok_or_else(|| anyhow!("Nexus did not start"))?;
    let rss_unsealed_kib = rss::own_rss_kib();
    let target = cluster.superuser_target(&nexus).await?;
    let mut load_options = options.load.clone();
    load_options.secrets = options.secrets;
    let load = load::run(&target, &load_options).await?;
    let rss_after_load_kib = rss::own_rss_kib();
    nexus.stop_within(STOP_LIMIT).await?;
    cluster.stop_keepers().await?;
    let db_bytes = [db.clone(), db.with_extension("db-wal")]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    Ok(ScaleReport {
        secrets: options.secrets,
        db_bytes,
        startup_median_ms: median(&startup_ms).unwrap_or(0.0),
        startup_ms,
        rss_unsealed_kib,
        rss_after_load_kib,
        rss_note: RSS_NOTE.to_owned(),
        load,
    })
}

/// Options of [`restart_time`].
#[derive(Debug, Clone)]
pub struct RestartOptions {
    /// Keepers (each holds one shard).
    pub keepers: usize,
    /// Shards needed.
    pub threshold: u16,
    /// Restarts to time.
    pub restarts: usize,
}

/// Result of [`restart_time`].
#[derive(Debug, Clone, Serialize)]
pub struct RestartReport {
    /// Keepers.
    pub keepers: usize,
    /// Threshold.
    pub threshold: u16,
    /// Time from `spike_nexus::start` to unsealed for each restart, ms.
    pub restart_ms: Vec<f64>,
    /// Median.
    pub median_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Time from the same start to the first successful secret read (superuser, new mTLS
    /// connection) for each restart, ms.
    pub first_read_ms: Vec<f64>,
}

/// Starts `keepers` real keepers and a sqlite Nexus, bootstraps by hand, writes a secret,
/// then restarts Nexus `restarts` times and times start→unsealed (and start→first read).
///
/// # Errors
/// When a component fails or Nexus does not unseal within 30 s.
pub async fn restart_time(options: &RestartOptions) -> Result<RestartReport> {
    let mut cluster = Cluster::new(options.keepers)?;
    cluster.start_keepers().await?;
    cluster
        .seed_keepers(&RootKey::generate()?, options.threshold)
        .await?;
    let data = cluster.dir().join("data");
    let config = cluster.nexus_config(BackendChoice::Sqlite, options.threshold, &data)?;
    let mut nexus = cluster.start_nexus(config).await?;
    nexus.wait_unsealed(Duration::from_secs(30)).await?;
    let superuser = cluster.identity(SUPERUSER).await?;
    target_for(superuser.clone(), &nexus)?
        .client(false)?
        .put_secret("bench/restart", load::secret_values(32, 1))
        .await?;
    let mut restart_ms = Vec::new();
    let mut first_read_ms = Vec::new();
    for _ in 0..options.restarts.max(1) {
        nexus.stop_within(STOP_LIMIT).await?;
        let config = cluster.nexus_config(BackendChoice::Sqlite, options.threshold, &data)?;
        let identity = cluster.identity(NEXUS).await?;
        let t0 = Instant::now();
        nexus = cluster.start_nexus_with(config, identity).await?;
        nexus.wait_unsealed(Duration::from_secs(30)).await?;
        restart_ms.push(millis_since(t0));
        let client = target_for(superuser.clone(), &nexus)?.client(false)?;
        let data = client.get_secret("bench/restart", 0).await?;
        first_read_ms.push(millis_since(t0));
        if data.get("value").map(String::len) != Some(32) {
            return Err(anyhow!("the secret did not read back after a restart"));
        }
    }
    nexus.stop_within(STOP_LIMIT).await?;
    cluster.stop_keepers().await?;
    Ok(RestartReport {
        keepers: options.keepers,
        threshold: options.threshold,
        median_ms: median(&restart_ms).unwrap_or(0.0),
        max_ms: restart_ms.iter().copied().fold(0.0, f64::max),
        restart_ms,
        first_read_ms,
    })
}
