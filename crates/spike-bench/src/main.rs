//! `spike-bench`: load generator and benchmark scenarios for SPIKE Nexus.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use spike_bench::cluster::{self, BackendChoice};
use spike_bench::load::{self, LoadOptions, Target, Workload, kib_to_mib};
use spike_bench::{abuse, nexus_proc, rss, scenarios};
use spike_client::BaseUrl;
use spike_identity::{Identity, IdentityOptions, SpiffeId};
use spike_proto::TrustRoots;

/// Drives a running Nexus (identity from SPIFFE_ENDPOINT_SOCKET, as the Pilot superuser),
/// or runs an in-process scenario.
#[derive(Parser, Debug)]
#[command(name = "spike-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    external: ExternalArgs,
}

#[derive(Args, Debug)]
struct ExternalArgs {
    /// Nexus URL, e.g. https://localhost:8553.
    #[arg(long)]
    url: Option<String>,
    /// Pick this SVID when the Workload API returns several.
    #[arg(long)]
    spiffe_id: Option<String>,
    /// Nexus process id: report its RSS (VmRSS) after the run.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Skip writing the secrets first (they exist already).
    #[arg(long)]
    no_populate: bool,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args, Debug, Clone)]
struct LoadArgs {
    /// Request mix.
    #[arg(long, value_enum, default_value = "get")]
    workload: Workload,
    /// Concurrent connections (one client per connection).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Run time: seconds, or a number with ms/s/m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Reuse connections (the default).
    #[arg(long, overrides_with = "no_keepalive")]
    keepalive: bool,
    /// A new mTLS connection per request.
    #[arg(long, overrides_with = "keepalive")]
    no_keepalive: bool,
    /// Secrets the get/put workloads address (written first).
    #[arg(long, default_value_t = 100)]
    secrets: u64,
    /// Bytes per secret value / encrypt payload.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// No per-second progress lines.
    #[arg(long)]
    quiet: bool,
}

impl LoadArgs {
    fn options(&self) -> LoadOptions {
        LoadOptions {
            workload: self.workload,
            connections: self.connections.max(1),
            duration: self.duration,
            keepalive: !self.no_keepalive,
            secrets: self.secrets,
            value_size: self.value_size,
            progress: !self.quiet,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// In-process Workload API + Nexus (+ keepers for sqlite) and a short load (CI smoke).
    Selftest {
        /// Nexus backend.
        #[arg(long, value_enum, default_value = "memory")]
        backend: BackendChoice,
        /// Nexus instances on one store (`--backend postgres` only); the connections are
        /// split evenly between them.
        #[arg(long, default_value_t = 1)]
        instances: usize,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Write N secrets straight into an encrypted SQLite database (for `scale`).
    Populate {
        /// Data directory (database + benchmark key file).
        #[arg(long)]
        data_dir: PathBuf,
        /// Secrets to write.
        #[arg(long)]
        secrets: u64,
        /// Bytes per value.
        #[arg(long, default_value_t = 64)]
        value_size: usize,
    },
    /// Scale test: sqlite Nexus on a database of N secrets; startup time, get latency, RSS.
    Scale {
        /// Data directory; populated (in a child process) when empty. Default: a temp dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Nexus starts to time (median reported).
        #[arg(long, default_value_t = 3)]
        starts: usize,
        /// Keepers (threshold 2).
        #[arg(long, default_value_t = 3)]
        keepers: usize,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Attack a Nexus child process (idle TCP, slow handshakes, slow bodies, no-policy flood,
    /// health-socket flood, 4 MiB bodies) while a superuser `get` must keep working.
    /// Exits 1 when a scenario fails (unless --report-only).
    Abuse(AbuseArgs),
    /// Where the resident memory of a running process goes (from /proc/PID/smaps), in KiB.
    Rss {
        /// The process (e.g. `$(pidof spike-nexus)`).
        #[arg(long)]
        pid: u32,
    },
    /// Time a Nexus restart to unsealed with real keepers (sqlite).
    RestartTime {
        /// Keepers.
        #[arg(long, default_value_t = 5)]
        keepers: usize,
        /// Shards needed.
        #[arg(long, default_value_t = 3)]
        threshold: u16,
        /// Restarts to time.
        #[arg(long, default_value_t = 5)]
        restarts: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
struct AbuseArgs {
    /// The CI sizes: small counts, `max_connections = 64`, a few seconds each (default:
    /// the full sizes of docs/benchmarks.md).
    #[arg(long)]
    smoke: bool,
    /// Run only these attacks (repeatable; default: all, in the documented order).
    #[arg(long = "attack", value_enum)]
    attacks: Vec<abuse::Attack>,
    /// The spike-nexus binary (default: next to this executable).
    #[arg(long)]
    nexus_bin: Option<PathBuf>,
    /// TOML merged over the generated Nexus configuration (and the profile's keys), e.g.
    /// new connection caps and timeouts.
    #[arg(long)]
    nexus_config: Option<PathBuf>,
    /// Run Nexus without the unit's limits (LimitMEMLOCK=infinity, LimitNOFILE=65536, no
    /// CAP_IPC_LOCK).
    #[arg(long)]
    no_unit_limits: bool,
    /// Attack connections (or workers), replacing the profile's count for every attack.
    #[arg(long)]
    connections: Option<usize>,
    /// Measurement time under attack (default: smoke 3s, full 20s).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Baseline measurement time (default: smoke 1s, full 5s).
    #[arg(long, value_parser = parse_duration)]
    baseline: Option<Duration>,
    /// Longest wait for the attack to establish (default: smoke 2s, full 20s).
    #[arg(long, value_parser = parse_duration)]
    ramp: Option<Duration>,
    /// Bound on the p99 of superuser gets under attack.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    p99_bound: Duration,
    /// Pause between superuser gets.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    probe_interval: Duration,
    /// Timeout of one superuser get, counted as an error (default: smoke 5s, full 15s).
    #[arg(long, value_parser = parse_duration)]
    probe_timeout: Option<Duration>,
    /// Interval between slow bytes (slow-handshake, slow-body).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    byte_interval: Duration,
    /// Exit 0 even when scenarios fail (for recording figures).
    #[arg(long)]
    report_only: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

async fn abuse_command(args: AbuseArgs) -> Result<()> {
    let profile = if args.smoke {
        abuse::Profile::Smoke
    } else {
        abuse::Profile::Full
    };
    let mut overrides = profile.overrides();
    if let Some(path) = &args.nexus_config {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let extra: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        nexus_proc::merge(&mut overrides, &extra);
    }
    let bin = match args.nexus_bin {
        Some(b) => b,
        None => abuse::default_nexus_bin()?,
    };
    if !bin.is_file() {
        return Err(anyhow!(
            "{} not found: build it (cargo build -p spike-nexus) or pass --nexus-bin",
            bin.display()
        ));
    }
    let launch = nexus_proc::NexusLaunch {
        bin,
        unit_limits: !args.no_unit_limits,
        overrides,
    };
    let mut options = abuse::AbuseOptions::new(profile, launch);
    if !args.attacks.is_empty() {
        options.attacks = args.attacks;
    }
    options.connections = args.connections;
    options.duration = args.duration.unwrap_or(options.duration);
    options.baseline = args.baseline.unwrap_or(options.baseline);
    options.ramp = args.ramp.unwrap_or(options.ramp);
    options.p99_bound = args.p99_bound;
    options.probe_interval = args.probe_interval;
    options.probe_timeout = args.probe_timeout.unwrap_or(options.probe_timeout);
    options.byte_interval = args.byte_interval;
    options.progress = !args.quiet;
    // The attacker must not be the bottleneck: the health flood alone holds 11,000 sockets.
    let nofile = abuse::raise_nofile(1 << 18)?;
    if !args.quiet {
        eprintln!("[abuse] RLIMIT_NOFILE of the attacker: {nofile}");
    }
    let report = abuse::run(&options).await?;
    print(args.json, &report, || report.human())?;
    let failed = report.failed();
    if failed.is_empty() || args.report_only {
        Ok(())
    } else {
        let names: Vec<&str> = failed.iter().map(|a| a.name()).collect();
        Err(anyhow!(
            "{} of {} abuse scenarios failed: {}",
            failed.len(),
            report.scenarios.len(),
            names.join(", ")
        ))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?}"))?;
    Duration::try_from_secs_f64(v * scale).map_err(|e| e.to_string())
}

fn fmt_ms(values: &[f64]) -> String {
    let parts: Vec<String> = values.iter().map(|v| format!("{v:.1}")).collect();
    format!("[{}]", parts.join(", "))
}

fn print<T: Serialize>(json: bool, value: &T, human: impl FnOnce() -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", human());
    }
    Ok(())
}

async fn external(args: ExternalArgs) -> Result<()> {
    let url = args
        .url
        .context("--url is required (or use a subcommand)")?;
    let expected_id = match &args.spiffe_id {
        Some(id) => Some(SpiffeId::from_str(id).map_err(|e| anyhow!("{id}: {e}"))?),
        None => None,
    };
    let identity = Identity::connect_with(IdentityOptions {
        expected_id,
        ..IdentityOptions::default()
    })
    .await?;
    let roots = TrustRoots::from_lookup(|var| std::env::var(var).ok())?;
    let target = Target {
        identity,
        base: BaseUrl::parse(&url)?,
        roots,
    };
    let options = args.load.options();
    if !matches!(options.workload, Workload::Encrypt | Workload::PutFresh) && !args.no_populate {
        eprintln!("writing {} secrets", options.secrets);
        load::populate(
            &target,
            options.secrets.max(1),
            options.value_size,
            options.connections,
        )
        .await?;
    }
    let mut report = load::run(&target, &options).await?;
    if let Some(pid) = args.server_pid {
        report.server_rss_kib = rss::rss_kib(pid);
        report.rss_note = Some(format!("VmRSS of pid {pid}"));
    }
    print(args.load.json, &report, || report.human())
}

fn populate_in_child(data_dir: &std::path::Path, secrets: u64, value_size: usize) -> Result<f64> {
    let exe = std::env::current_exe()?;
    let t0 = tokio::time::Instant::now();
    let status = std::process::Command::new(exe)
        .arg("populate")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--secrets")
        .arg(secrets.to_string())
        .arg("--value-size")
        .arg(value_size.to_string())
        .status()?;
    if !status.success() {
        return Err(anyhow!("populate failed: {status}"));
    }
    Ok(t0.elapsed().as_secs_f64())
}

#[derive(Serialize)]
struct ScaleOutput {
    populate_secs: Option<f64>,
    #[serde(flatten)]
    report: scenarios::ScaleReport,
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        None => external(cli.external).await,
        Some(Command::Selftest {
            backend,
            instances,
            load,
        }) => {
            let options = scenarios::SelftestOptions {
                backend,
                instances,
                load: load.options(),
            };
            let report = scenarios::selftest(&options).await?;
            print(load.json, &report, || report.human())
        }
        Some(Command::Populate {
            data_dir,
            secrets,
            value_size,
        }) => {
            let (key, created) = cluster::load_or_create_key(&data_dir)?;
            if !created && cluster::db_path(&data_dir).exists() {
                return Err(anyhow!("{} is already populated", data_dir.display()));
            }
            tokio::task::spawn_blocking(move || {
                cluster::populate_sqlite(&data_dir, &key, secrets, value_size, true)
            })
            .await??;
            Ok(())
        }
        Some(Command::Scale {
            data_dir,
            starts,
            keepers,
            load,
        }) => {
            let temp = tempfile::Builder::new().prefix("spike-scale-").tempdir()?;
            let dir = data_dir.unwrap_or_else(|| temp.path().to_owned());
            let populate_secs = if cluster::db_path(&dir).exists() {
                None
            } else {
                eprintln!("populating {} secrets in {}", load.secrets, dir.display());
                let (d, n, v) = (dir.clone(), load.secrets, load.value_size);
                Some(tokio::task::spawn_blocking(move || populate_in_child(&d, n, v)).await??)
            };
            let options = scenarios::ScaleOptions {
                data_dir: dir,
                secrets: load.secrets,
                keepers,
                starts,
                load: load.options(),
            };
            let report = scenarios::scale(&options).await?;
            let out = ScaleOutput {
                populate_secs,
                report,
            };
            print(load.json, &out, || {
                let r = &out.report;
                format!(
                    "secrets {} | db {:.1} MiB | populate {} | startup (start->unsealed) {:.1} ms median of {} ms\n\
                     RSS unsealed {:.1} MiB, after load {:.1} MiB ({})\n{}",
                    r.secrets,
                    kib_to_mib(r.db_bytes / 1024),
                    out.populate_secs
                        .map_or("reused".to_owned(), |s| format!("{s:.1} s")),
                    r.startup_median_ms,
                    fmt_ms(&r.startup_ms),
                    kib_to_mib(r.rss_unsealed_kib.unwrap_or(0)),
                    kib_to_mib(r.rss_after_load_kib.unwrap_or(0)),
                    r.rss_note,
                    r.load.human()
                )
            })
        }
        Some(Command::Abuse(args)) => abuse_command(args).await,
        Some(Command::Rss { pid }) => {
            let breakdown = spike_bench::rss::breakdown(pid)
                .with_context(|| format!("cannot read /proc/{pid}/status and smaps"))?;
            println!("{}", serde_json::to_string_pretty(&breakdown)?);
            Ok(())
        }
        Some(Command::RestartTime {
            keepers,
            threshold,
            restarts,
            json,
        }) => {
            let options = scenarios::RestartOptions {
                keepers,
                threshold,
                restarts,
            };
            let r = scenarios::restart_time(&options).await?;
            print(json, &r, || {
                format!(
                    "keepers {} threshold {} | restart->unsealed median {:.1} ms, max {:.1} ms\n\
                     each: {} ms\nstart->first secret read: {} ms\n",
                    r.keepers,
                    r.threshold,
                    r.median_ms,
                    r.max_ms,
                    fmt_ms(&r.restart_ms),
                    fmt_ms(&r.first_read_ms)
                )
            })
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spike-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
