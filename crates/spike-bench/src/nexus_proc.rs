//! Nexus as a child process, configured like the appliance: the `spike-nexus` binary with a
//! configuration file written here, the bench's Workload API server as its SPIFFE endpoint,
//! the bench's keepers as peers, a health socket and a metrics listener, and (optionally)
//! the unit's resource limits: `LimitMEMLOCK=infinity` and `LimitNOFILE=65536` through
//! `prlimit` (each lowered to this process's hard limit when it cannot be raised), and no
//! `CAP_IPC_LOCK` (dropped from the bounding set through `setpriv`, so that root is held to
//! the memlock limit like the unprivileged unit is).
//!
//! Running Nexus in its own process keeps the attack honest: the attacker's sockets and
//! tasks do not count against Nexus's file descriptors or share its scheduler.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

use crate::cluster::{Cluster, NEXUS, TRUST_DOMAIN};

/// `LimitNOFILE=` of units/spike-nexus.service.
pub const UNIT_NOFILE: u64 = 65536;

/// How a Nexus child is started.
#[derive(Debug, Clone)]
pub struct NexusLaunch {
    /// The `spike-nexus` binary.
    pub bin: PathBuf,
    /// Apply the unit's limits (memlock, nofile) and drop `CAP_IPC_LOCK`.
    pub unit_limits: bool,
    /// TOML keys merged over the generated configuration (top-level keys replace generated
    /// ones; tables are merged key by key).
    pub overrides: toml::Table,
}

/// What the child actually got, read back from `/proc/<pid>`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProcessLimits {
    /// Soft `RLIMIT_MEMLOCK` in bytes (`None`: unlimited or unreadable).
    pub memlock_bytes: Option<u64>,
    /// Soft `RLIMIT_NOFILE`.
    pub nofile: Option<u64>,
    /// Whether `CAP_IPC_LOCK` is in the effective set.
    pub cap_ipc_lock: Option<bool>,
    /// `VmLck` (memory locked by mlockall) in KiB once unsealed.
    pub locked_kib: Option<u64>,
}

/// A running Nexus child process.
#[derive(Debug)]
pub struct NexusProcess {
    child: Child,
    /// Its pid (the exec chain prlimit → setpriv → spike-nexus keeps one pid).
    pub pid: u32,
    /// The mTLS API address.
    pub addr: SocketAddr,
    /// The metrics listener address.
    pub metrics_addr: SocketAddr,
    /// The health unix socket.
    pub health_socket: PathBuf,
    /// The generated configuration file.
    pub config_path: PathBuf,
    /// Nexus's stderr (its log).
    pub log_path: PathBuf,
}

/// The unit's memlock and nofile limits, each lowered to this process's hard limit: raising
/// a hard limit needs `CAP_SYS_RESOURCE`, which containers often lack (the report shows the
/// limits the child actually got).
///
/// # Errors
/// When the limits cannot be read.
pub fn unit_limits_here() -> Result<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit};
    let (_, memlock_hard) = getrlimit(Resource::RLIMIT_MEMLOCK)?;
    let (_, nofile_hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok((
        // The unit's memlock is unlimited: as much as the hard limit allows.
        memlock_hard,
        UNIT_NOFILE.min(nofile_hard),
    ))
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Merges `over` into `base`: tables recursively, everything else replaced.
pub fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The generated configuration of a Nexus child (before the overrides): sqlite in `data`,
/// the cluster's keepers (threshold 2), its Workload API endpoint and Nexus SPIFFE ID, the
/// API on `port`, metrics on `metrics_port`, the health socket `health`, WARN logs on
/// stderr; every other key at its default.
pub fn base_config(
    cluster: &Cluster,
    data: &Path,
    port: u16,
    metrics_port: u16,
    health: &Path,
) -> Result<toml::Table> {
    let keepers = cluster.keeper_urls();
    let shares = i64::try_from(keepers.len())?;
    let mut t = toml::Table::new();
    let s = |v: &str| toml::Value::String(v.to_owned());
    t.insert("listen".into(), s(&format!("127.0.0.1:{port}")));
    t.insert("backend_store".into(), s("sqlite"));
    t.insert(
        "keeper_peers".into(),
        toml::Value::Array(keepers.iter().map(|k| s(k)).collect()),
    );
    t.insert("shamir_shares".into(), toml::Value::Integer(shares));
    t.insert(
        "shamir_threshold".into(),
        toml::Value::Integer(shares.min(2)),
    );
    t.insert("data_dir".into(), s(&data.display().to_string()));
    t.insert(
        "spiffe_endpoint_socket".into(),
        s(&cluster.workload_endpoint()),
    );
    t.insert("spiffe_id".into(), s(&cluster.spiffe_id(NEXUS)));
    t.insert("health_socket".into(), s(&health.display().to_string()));
    t.insert(
        "metrics_listen".into(),
        s(&format!("127.0.0.1:{metrics_port}")),
    );
    t.insert("log_target".into(), s("stderr"));
    t.insert("log_level".into(), s("WARN"));
    let mut roots = toml::Table::new();
    for role in ["nexus", "keeper", "bootstrap", "pilot", "lite_workload"] {
        roots.insert(role.into(), s(TRUST_DOMAIN));
    }
    t.insert("trust_roots".into(), toml::Value::Table(roots));
    Ok(t)
}

impl NexusProcess {
    /// Writes the configuration into `dir` (data below it), starts the child and waits until
    /// its health socket says unsealed (200), at most `limit`.
    ///
    /// # Errors
    /// When the binary does not start, exits, or does not unseal in time (the error carries
    /// the end of its log).
    pub async fn start(
        cluster: &Cluster,
        launch: &NexusLaunch,
        dir: &Path,
        limit: Duration,
    ) -> Result<NexusProcess> {
        std::fs::create_dir_all(dir)?;
        let data = dir.join("data");
        let health_socket = dir.join("health.sock");
        let (port, metrics_port) = (free_port()?, free_port()?);
        let mut config = base_config(cluster, &data, port, metrics_port, &health_socket)?;
        merge(&mut config, &launch.overrides);
        let config_path = dir.join("nexus.toml");
        std::fs::write(&config_path, toml::to_string(&config)?)?;
        let log_path = dir.join("nexus.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = if launch.unit_limits {
            let (memlock, nofile) = unit_limits_here()?;
            let mut c = Command::new("prlimit");
            let memlock = if memlock == nix::libc::RLIM_INFINITY {
                "unlimited".to_owned()
            } else {
                memlock.to_string()
            };
            c.arg(format!("--memlock={memlock}:{memlock}"))
                .arg(format!("--nofile={nofile}:{nofile}"))
                .arg("--");
            // Root has CAP_IPC_LOCK, which bypasses RLIMIT_MEMLOCK; the unit runs without it.
            // Dropping it from the bounding set removes it across the exec. (An unprivileged
            // user has no CAP_IPC_LOCK and cannot change the bounding set.)
            if nix::unistd::geteuid().is_root() {
                c.args(["setpriv", "--bounding-set", "-ipc_lock", "--"]);
            }
            c.arg(&launch.bin);
            c
        } else {
            Command::new(&launch.bin)
        };
        cmd.arg("--config")
            .arg(&config_path)
            .env("SPIFFE_ENDPOINT_SOCKET", cluster.workload_endpoint())
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", launch.bin.display()))?;
        let mut nexus = NexusProcess {
            pid: child.id(),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
            health_socket,
            config_path,
            log_path,
        };
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = nexus.child.try_wait()? {
                return Err(anyhow!(
                    "Nexus exited before unsealing ({status}); log:\n{}",
                    nexus.log_tail()
                ));
            }
            if let Ok(a) =
                spike_nexus::probe::health(&nexus.health_socket, Duration::from_secs(2)).await
                && a.code == 200
            {
                return Ok(nexus);
            }
            if Instant::now() >= deadline {
                let tail = nexus.log_tail();
                nexus.stop(Duration::from_secs(5)).await;
                return Err(anyhow!(
                    "Nexus did not unseal within {limit:?}; log:\n{tail}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// `None` while running, else how it ended.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(status.to_string()),
            Err(e) => Some(format!("unknown: {e}")),
        }
    }

    /// The last 40 lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Open file descriptors (`/proc/<pid>/fd`).
    pub fn open_fds(&self) -> Option<usize> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .ok()
            .map(Iterator::count)
    }

    /// The limits and capability the child runs with.
    pub fn limits(&self) -> ProcessLimits {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid)).ok();
        let soft = |name: &str| {
            limits.as_deref().and_then(|text| {
                let line = text.lines().find(|l| l.starts_with(name))?;
                line[name.len()..].split_whitespace().next()?.parse().ok()
            })
        };
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok();
        let cap_ipc_lock = status.as_deref().and_then(|text| {
            let hex = text.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            let caps = u64::from_str_radix(hex.trim(), 16).ok()?;
            // CAP_IPC_LOCK is capability 14.
            Some(caps & (1 << 14) != 0)
        });
        ProcessLimits {
            memlock_bytes: soft("Max locked memory"),
            nofile: soft("Max open files"),
            cap_ipc_lock,
            locked_kib: status
                .as_deref()
                .and_then(|t| crate::rss::parse_field(t, "VmLck:")),
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns how it ended.
    pub async fn stop(&mut self, grace: Duration) -> String {
        if let Some(status) = self.exited() {
            return status;
        }
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        "killed after the grace period".to_owned()
    }
}

impl Drop for NexusProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_keys_and_merge_tables() {
        let mut base: toml::Table =
            toml::from_str("a = 1\nb = \"x\"\n[t]\nk = 1\nl = 2\n").unwrap();
        let over: toml::Table = toml::from_str("a = 5\nc = true\n[t]\nl = 3\n").unwrap();
        merge(&mut base, &over);
        let expected: toml::Table =
            toml::from_str("a = 5\nb = \"x\"\nc = true\n[t]\nk = 1\nl = 3\n").unwrap();
        assert_eq!(base, expected);
        // Scalars come before tables when written, so the result is valid TOML again.
        let text = toml::to_string(&base).unwrap();
        assert_eq!(toml::from_str::<toml::Table>(&text).unwrap(), expected);
    }
}
