//! The `abuse` scenarios: does a superuser `get` keep working while Nexus is attacked?
//!
//! Each scenario starts a fresh Nexus child process ([`crate::nexus_proc`]) on a fresh
//! SQLite database unsealed from the bench's keepers, writes one secret as the Pilot
//! superuser, measures a baseline of superuser gets (a new mTLS connection each, as every
//! `spike secret get` makes), then starts one attack from this process and, once the attack
//! is established (or the ramp time is up), measures the gets again for the run time. The
//! gets run on their own thread and runtime, so the attacker's tasks do not delay them here.
//!
//! A scenario passes when every get under attack succeeded, their p99 is within the bound,
//! Nexus is still running afterwards, and a get after the attack succeeds.
//!
//! The attacks ([`Attack`]):
//! - `idle-tcp`: K TCP connections to the API port that send nothing; closed ones reopen.
//! - `slow-handshake`: K connections sending a TLS ClientHello one byte per interval.
//! - `slow-body`: K mTLS connections of a workload without policy, each sending request
//!   headers with a `Content-Length` and then one body byte per interval.
//! - `no-policy-flood`: K workers without policy sending requests (new connection each)
//!   that Nexus denies.
//! - `health-flood`: K idle connections to the health unix socket.
//! - `big-bodies`: K mTLS connections without policy, each sending a 4 MiB body but its last
//!   byte, then holding it. Meant to run under the unit's memlock limit.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use spike_client::{BaseUrl, ClientError, ClientOptions, NexusClient};
use spike_crypto::RootKey;
use spike_identity::{Identity, MtlsConnector, allow_any};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, SUPERUSER};
use crate::load::{Target, kib_to_mib, secret_values};
use crate::nexus_proc::{NexusLaunch, NexusProcess, ProcessLimits};
use crate::rss;
use crate::stats::Summary;

/// The SPIFFE ID path of the attacker: a workload no policy mentions.
pub const ATTACKER: &str = "/workload/attacker";

/// The secret the superuser reads.
pub const PROBE_SECRET: &str = "bench/abuse";

/// Body size of `big-bodies`: the default `request_body_limit` (4 MiB).
pub const BIG_BODY: usize = 4 * 1024 * 1024;

/// One attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// Idle TCP connections to the API port, no TLS bytes.
    IdleTcp,
    /// A partial TLS ClientHello, one byte per interval.
    SlowHandshake,
    /// mTLS without policy: headers, then one body byte per interval.
    SlowBody,
    /// mTLS without policy: denied requests as fast as possible, a new connection each.
    NoPolicyFlood,
    /// Idle connections to the health unix socket.
    HealthFlood,
    /// mTLS without policy: 4 MiB bodies (but the last byte), held open.
    BigBodies,
}

impl Attack {
    /// Every attack, in the order they run.
    pub const ALL: [Attack; 6] = [
        Attack::IdleTcp,
        Attack::SlowHandshake,
        Attack::SlowBody,
        Attack::NoPolicyFlood,
        Attack::HealthFlood,
        Attack::BigBodies,
    ];

    /// The kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Attack::IdleTcp => "idle-tcp",
            Attack::SlowHandshake => "slow-handshake",
            Attack::SlowBody => "slow-body",
            Attack::NoPolicyFlood => "no-policy-flood",
            Attack::HealthFlood => "health-flood",
            Attack::BigBodies => "big-bodies",
        }
    }
}

/// Smoke (CI) or full (docs/benchmarks.md) sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Small counts against a Nexus with `max_connections = 64`; a few seconds each.
    Smoke,
    /// The review's sizes against a Nexus with default settings.
    Full,
}

impl Profile {
    /// Attack connections (or workers) of `attack`.
    pub fn connections(self, attack: Attack) -> usize {
        match (self, attack) {
            // More than the waiting pool (4 x max_handshakes = 128), so eviction is exercised.
            (Profile::Smoke, Attack::IdleTcp) => 200,
            (Profile::Smoke, Attack::SlowHandshake | Attack::SlowBody) => 96,
            (Profile::Smoke, Attack::NoPolicyFlood) => 16,
            (Profile::Smoke, Attack::HealthFlood) => 1000,
            // Above the cap (1,024) plus the listen backlog (1,024): with fewer, the cap's
            // slots free all at once at the handshake timeout and a get can slip in.
            (Profile::Full, Attack::IdleTcp | Attack::SlowHandshake) => 2200,
            (Profile::Full, Attack::SlowBody) => 1200,
            (Profile::Full, Attack::NoPolicyFlood) => 128,
            (Profile::Full, Attack::HealthFlood) => 11_000,
            (_, Attack::BigBodies) => 100,
        }
    }

    /// Baseline time, measurement time, the longest wait for the attack to establish, and
    /// the timeout of one superuser get.
    pub fn times(self) -> (Duration, Duration, Duration, Duration) {
        match self {
            Profile::Smoke => (
                Duration::from_secs(1),
                Duration::from_secs(3),
                Duration::from_secs(2),
                Duration::from_secs(5),
            ),
            Profile::Full => (
                Duration::from_secs(5),
                Duration::from_secs(20),
                Duration::from_secs(20),
                Duration::from_secs(15),
            ),
        }
    }

    /// Configuration keys the profile sets on the Nexus child (before `--nexus-config`).
    pub fn overrides(self) -> toml::Table {
        let mut t = toml::Table::new();
        if self == Profile::Smoke {
            // Small counts reach the caps only when the caps are small too.
            for (key, value) in [
                ("max_handshakes", 32),
                ("max_handshakes_per_ip", 32),
                ("max_connections", 64),
                ("max_connections_per_peer", 32),
                ("health_max_connections", 16),
            ] {
                t.insert(key.into(), toml::Value::Integer(value));
            }
        }
        t
    }
}

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct AbuseOptions {
    /// Sizes and the default times.
    pub profile: Profile,
    /// The scenarios to run, in order.
    pub attacks: Vec<Attack>,
    /// How to start Nexus (binary, limits, configuration overrides).
    pub launch: NexusLaunch,
    /// Attack connections, replacing the profile's count for every attack.
    pub connections: Option<usize>,
    /// Baseline measurement time.
    pub baseline: Duration,
    /// Measurement time under attack.
    pub duration: Duration,
    /// Longest wait for the attack to establish before measuring.
    pub ramp: Duration,
    /// A scenario fails when the p99 of the superuser gets under attack exceeds this.
    pub p99_bound: Duration,
    /// Pause between two superuser gets.
    pub probe_interval: Duration,
    /// Client timeout of one superuser get (a timeout counts as an error).
    pub probe_timeout: Duration,
    /// Interval between two slow bytes (slow-handshake, slow-body).
    pub byte_interval: Duration,
    /// Progress lines on stderr.
    pub progress: bool,
}

impl AbuseOptions {
    /// The defaults of `profile` with `launch`.
    pub fn new(profile: Profile, launch: NexusLaunch) -> Self {
        let (baseline, duration, ramp, probe_timeout) = profile.times();
        AbuseOptions {
            profile,
            attacks: Attack::ALL.to_vec(),
            launch,
            connections: None,
            baseline,
            duration,
            ramp,
            p99_bound: Duration::from_secs(1),
            probe_interval: Duration::from_millis(100),
            probe_timeout,
            byte_interval: Duration::from_secs(1),
            progress: true,
        }
    }
}

/// Superuser gets over one measurement window.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeSummary {
    /// Successful gets.
    pub requests: u64,
    /// Failed gets (timeouts included).
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// Latency of the successful gets.
    pub latency: Summary,
}

impl ProbeSummary {
    fn line(&self) -> String {
        let l = &self.latency;
        format!(
            "{} ok, {} errors, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.requests,
            self.errors,
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.max_us)
        )
    }
}

fn ms(us: u64) -> f64 {
    #[expect(
        clippy::cast_precision_loss,
        reason = "microsecond latencies are far below 2^52"
    )]
    let v = us as f64;
    v / 1000.0
}

/// What the attacker achieved.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AttackSummary {
    /// Connections (or workers) started.
    pub target: usize,
    /// Open attack connections when the measurement started.
    pub open_at_start: u64,
    /// Most attack connections open at once.
    pub peak_open: u64,
    /// Connections opened in total (reopens included).
    pub opened: u64,
    /// Connects or handshakes that failed.
    pub connect_failures: u64,
    /// Connections the server closed.
    pub server_closes: u64,
    /// Requests answered or failed (no-policy-flood).
    pub requests: u64,
    /// Requests denied as expected (no-policy-flood).
    pub denied: u64,
    /// Most connections holding a complete-but-one-byte body at once (big-bodies).
    pub bodies_held: u64,
    /// Bytes written by the attacker.
    pub bytes_sent: u64,
}

/// The result of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// The attack.
    pub attack: Attack,
    /// Superuser gets without attack.
    pub baseline: ProbeSummary,
    /// Superuser gets under attack.
    pub under_attack: ProbeSummary,
    /// Health socket probes (GET /v1/sys/health) under attack: answered / not.
    pub health_ok: u64,
    /// Health probes that failed or did not answer 200 within 2 s.
    pub health_failed: u64,
    /// The attack.
    pub attacker: AttackSummary,
    /// Nexus RSS before the attack, KiB.
    pub nexus_rss_before_kib: Option<u64>,
    /// Highest Nexus RSS sampled during the attack, KiB.
    pub nexus_rss_peak_kib: Option<u64>,
    /// Nexus's own high-water mark (VmHWM) at the end, KiB.
    pub nexus_hwm_kib: Option<u64>,
    /// Most open file descriptors of Nexus sampled during the attack.
    pub nexus_fds_peak: Option<usize>,
    /// Nexus's limits and capability.
    pub nexus_limits: ProcessLimits,
    /// `None` when Nexus still ran after the attack, else how it ended.
    pub nexus_exit: Option<String>,
    /// Whether a superuser get succeeded after the attack stopped.
    pub recovered: bool,
    /// Why the scenario failed (empty: passed).
    pub failures: Vec<String>,
}

impl ScenarioReport {
    /// Whether the scenario passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// A human-readable summary.
    pub fn human(&self) -> String {
        let mib = |k: Option<u64>| k.map_or("?".to_owned(), |k| format!("{:.0}", kib_to_mib(k)));
        let a = &self.attacker;
        let mut out = format!(
            "{:<16} {}\n  baseline:     {}\n  under attack: {}\n  attacker: target {}, open at start {}, peak {}, opened {}, \
             connect failures {}, server closes {}, requests {}, denied {}, bodies held {}, sent {:.1} MiB\n  \
             Nexus: RSS {} -> peak {} MiB (HWM {} MiB), fds peak {}, {}, health probes {} ok / {} failed, recovered {}\n",
            self.attack.name(),
            if self.passed() { "PASS" } else { "FAIL" },
            self.baseline.line(),
            self.under_attack.line(),
            a.target,
            a.open_at_start,
            a.peak_open,
            a.opened,
            a.connect_failures,
            a.server_closes,
            a.requests,
            a.denied,
            a.bodies_held,
            kib_to_mib(a.bytes_sent / 1024),
            mib(self.nexus_rss_before_kib),
            mib(self.nexus_rss_peak_kib),
            mib(self.nexus_hwm_kib),
            self.nexus_fds_peak
                .map_or("?".to_owned(), |n| n.to_string()),
            self.nexus_exit
                .as_ref()
                .map_or("alive".to_owned(), |e| format!("EXITED ({e})")),
            self.health_ok,
            self.health_failed,
            self.recovered,
        );
        for f in &self.failures {
            out.push_str(&format!("  failure: {f}\n"));
        }
        out
    }
}

/// The result of [`run`].
#[derive(Debug, Clone, Serialize)]
pub struct AbuseReport {
    /// Profile.
    pub profile: Profile,
    /// The Nexus binary.
    pub nexus_bin: PathBuf,
    /// Whether Nexus ran under the unit's limits without CAP_IPC_LOCK.
    pub unit_limits: bool,
    /// The configuration overrides given to Nexus (profile and `--nexus-config`).
    pub nexus_overrides: toml::Table,
    /// The p99 bound, ms.
    pub p99_bound_ms: f64,
    /// Measurement time under attack, s.
    pub duration_secs: f64,
    /// Scenarios.
    pub scenarios: Vec<ScenarioReport>,
}

impl AbuseReport {
    /// Scenarios that failed.
    pub fn failed(&self) -> Vec<Attack> {
        self.scenarios
            .iter()
            .filter(|s| !s.passed())
            .map(|s| s.attack)
            .collect()
    }

    /// A human-readable summary.
    pub fn human(&self) -> String {
        let mut out = format!(
            "abuse ({:?}) against {} | unit limits {} | p99 bound {:.0} ms | {:.0} s under attack\n",
            self.profile,
            self.nexus_bin.display(),
            self.unit_limits,
            self.p99_bound_ms,
            self.duration_secs
        );
        for s in &self.scenarios {
            out.push_str(&s.human());
        }
        out
    }
}

/// Counters shared by the attack tasks.
#[derive(Debug, Default)]
struct Stats {
    open: AtomicU64,
    peak: AtomicU64,
    opened: AtomicU64,
    connect_failures: AtomicU64,
    server_closes: AtomicU64,
    requests: AtomicU64,
    denied: AtomicU64,
    bodies_held: AtomicU64,
    bodies_held_peak: AtomicU64,
    bytes_sent: AtomicU64,
}

impl Stats {
    fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
        let n = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(n, Ordering::Relaxed);
    }

    fn closed(&self, by_server: bool) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if by_server {
            self.server_closes.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn failed(&self) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
    }

    fn sent(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn summary(&self, target: usize, open_at_start: u64) -> AttackSummary {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AttackSummary {
            target,
            open_at_start,
            peak_open: get(&self.peak),
            opened: get(&self.opened),
            connect_failures: get(&self.connect_failures),
            server_closes: get(&self.server_closes),
            requests: get(&self.requests),
            denied: get(&self.denied),
            bodies_held: get(&self.bodies_held_peak),
            bytes_sent: get(&self.bytes_sent),
        }
    }
}

/// What the attack tasks need.
#[derive(Clone)]
struct AttackCtx {
    nexus: std::net::SocketAddr,
    health: PathBuf,
    attacker: Identity,
    connector: MtlsConnector,
    base: BaseUrl,
    roots: spike_proto::TrustRoots,
    byte_interval: Duration,
    stats: Arc<Stats>,
    token: CancellationToken,
}

/// The first bytes of a TLS 1.2/1.3 ClientHello: a handshake record of 512 bytes announced,
/// a ClientHello header, the legacy version and a zero "random"; never completed.
pub fn client_hello_prefix() -> Vec<u8> {
    let mut v = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    v.extend([0u8; 32]);
    v
}

/// Request headers announcing a `len`-byte JSON body for a secret put.
pub fn body_headers(len: usize) -> Vec<u8> {
    format!(
        "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\n\r\n",
        spike_proto::paths::NEXUS_SECRETS
    )
    .into_bytes()
}

/// `len` body bytes: a JSON put request whose value is padding.
pub fn big_body(len: usize) -> Vec<u8> {
    let mut v = br#"{"path":"bench/abuse","values":{"v":""#.to_vec();
    let tail = br#""}}"#;
    v.resize(len.saturating_sub(tail.len()).max(v.len()), b'a');
    v.extend_from_slice(tail);
    v.truncate(len);
    v
}

const RETRY: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

async fn tcp(ctx: &AttackCtx) -> Option<TcpStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(ctx.nexus)).await {
        Ok(Ok(s)) => Some(s),
        _ => {
            ctx.stats.failed();
            tokio::time::sleep(RETRY).await;
            None
        }
    }
}

/// Holds `read` until the server closes it or the attack stops; true when the server did.
async fn hold<R: tokio::io::AsyncRead + Unpin>(ctx: &AttackCtx, read: &mut R) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            () = ctx.token.cancelled() => return false,
            r = read.read(&mut buf) => match r {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            },
        }
    }
}

/// Sends `prefix` then `slow` one byte per interval on `stream`, watching for a close.
async fn trickle<S>(ctx: &AttackCtx, stream: S, prefix: &[u8], slow: &[u8]) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut r, mut w) = tokio::io::split(stream);
    if w.write_all(prefix).await.is_err() {
        return true;
    }
    ctx.stats.sent(prefix.len());
    let mut tick = tokio::time::interval(ctx.byte_interval);
    let mut next = slow.iter();
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            () = ctx.token.cancelled() => return false,
            r = r.read(&mut buf) => match r {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            },
            _ = tick.tick() => {
                // Past the end the connection is just held.
                if let Some(b) = next.next() {
                    if w.write_all(&[*b]).await.is_err() {
                        return true;
                    }
                    ctx.stats.sent(1);
                }
            }
        }
    }
}

async fn attacker_tls(ctx: &AttackCtx) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = tcp(ctx).await?;
    let name = rustls_pki_types::ServerName::IpAddress(ctx.nexus.ip().into());
    if let Ok((tls, _)) = ctx.connector.connect(name, tcp).await {
        Some(tls)
    } else {
        ctx.stats.failed();
        tokio::time::sleep(RETRY).await;
        None
    }
}

/// One attack connection, reopened until the attack stops (connections that complete after
/// the stop are not counted).
async fn one_connection(ctx: AttackCtx, attack: Attack, big: Arc<Vec<u8>>) {
    let hello = client_hello_prefix();
    let slow_body = vec![b' '; 4096];
    while !ctx.token.is_cancelled() {
        let by_server = match attack {
            Attack::IdleTcp => {
                let Some(mut s) = tcp(&ctx).await else {
                    continue;
                };
                if ctx.token.is_cancelled() {
                    break;
                }
                ctx.stats.opened();
                hold(&ctx, &mut s).await
            }
            Attack::SlowHandshake => {
                let Some(s) = tcp(&ctx).await else { continue };
                if ctx.token.is_cancelled() {
                    break;
                }
                ctx.stats.opened();
                trickle(&ctx, s, &[], &hello).await
            }
            Attack::SlowBody => {
                let Some(s) = attacker_tls(&ctx).await else {
                    continue;
                };
                if ctx.token.is_cancelled() {
                    break;
                }
                ctx.stats.opened();
                trickle(&ctx, s, &body_headers(1 << 20), &slow_body).await
            }
            Attack::BigBodies => {
                let Some(s) = attacker_tls(&ctx).await else {
                    continue;
                };
                if ctx.token.is_cancelled() {
                    break;
                }
                ctx.stats.opened();
                let (mut r, mut w) = tokio::io::split(s);
                let mut by_server = true;
                let headers = body_headers(big.len() + 1);
                if w.write_all(&headers).await.is_ok() && w.write_all(&big).await.is_ok() {
                    ctx.stats.sent(headers.len() + big.len());
                    let held = ctx.stats.bodies_held.fetch_add(1, Ordering::Relaxed) + 1;
                    ctx.stats
                        .bodies_held_peak
                        .fetch_max(held, Ordering::Relaxed);
                    by_server = hold(&ctx, &mut r).await;
                    ctx.stats.bodies_held.fetch_sub(1, Ordering::Relaxed);
                }
                by_server
            }
            Attack::HealthFlood => {
                let Ok(mut s) = UnixStream::connect(&ctx.health).await else {
                    ctx.stats.failed();
                    tokio::time::sleep(RETRY).await;
                    continue;
                };
                if ctx.token.is_cancelled() {
                    break;
                }
                ctx.stats.opened();
                hold(&ctx, &mut s).await
            }
            Attack::NoPolicyFlood => return flood_worker(ctx).await,
        };
        ctx.stats.closed(by_server);
    }
}

async fn flood_worker(ctx: AttackCtx) {
    let options = ClientOptions {
        max_idle_connections: 0,
        ..ClientOptions::with_timeout(Duration::from_secs(10))
    };
    let Ok(client) = NexusClient::new(&ctx.attacker, ctx.base.clone(), &ctx.roots, options) else {
        ctx.stats.failed();
        return;
    };
    while !ctx.token.is_cancelled() {
        ctx.stats.opened();
        let result = tokio::select! {
            () = ctx.token.cancelled() => None,
            r = client.get_secret(PROBE_SECRET, 0) => Some(r),
        };
        ctx.stats.closed(false);
        if result.is_some() {
            ctx.stats.requests.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            None => break,
            Some(Err(ClientError::Unauthorized { .. })) => {
                ctx.stats.denied.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) => {
                ctx.stats.failed();
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Superuser gets with a new connection each, for `window`, on this thread's runtime.
async fn probe(
    target: &Target,
    window: Duration,
    interval: Duration,
    timeout: Duration,
) -> Result<ProbeSummary> {
    let options = ClientOptions {
        max_idle_connections: 0,
        ..ClientOptions::with_timeout(timeout)
    };
    let client = NexusClient::new(
        &target.identity,
        target.base.clone(),
        &target.roots,
        options,
    )?;
    let deadline = Instant::now() + window;
    let mut samples = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    while Instant::now() < deadline {
        let t0 = Instant::now();
        match client.get_secret(PROBE_SECRET, 0).await {
            Ok(_) => samples.push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX)),
            Err(e) => {
                errors += 1;
                if first_error.is_none() {
                    first_error = Some(format!("after {:.1} s: {e}", t0.elapsed().as_secs_f64()));
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
    Ok(ProbeSummary {
        requests: samples.len() as u64,
        errors,
        first_error,
        latency: Summary::from_samples(&mut samples),
    })
}

/// [`probe`] on a thread of its own with a current-thread runtime.
async fn probe_apart(
    target: &Target,
    window: Duration,
    options: &AbuseOptions,
) -> Result<ProbeSummary> {
    let target = target.clone();
    let (interval, timeout) = (options.probe_interval, options.probe_timeout);
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("probe runtime")?
            .block_on(probe(&target, window, interval, timeout))
    })
    .await?
}

#[derive(Debug, Default)]
struct Samples {
    rss_peak: Option<u64>,
    fds_peak: Option<usize>,
    health_ok: u64,
    health_failed: u64,
}

/// Samples Nexus's RSS and fds every 200 ms and probes its health socket every 500 ms.
async fn sample(pid: u32, health: PathBuf, token: CancellationToken) -> Samples {
    let mut s = Samples::default();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut n = 0u64;
    loop {
        tokio::select! {
            () = token.cancelled() => return s,
            _ = tick.tick() => {}
        }
        if let Some(r) = rss::rss_kib(pid) {
            s.rss_peak = Some(s.rss_peak.map_or(r, |p| p.max(r)));
        }
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            let c = dir.count();
            s.fds_peak = Some(s.fds_peak.map_or(c, |p| p.max(c)));
        }
        n += 1;
        if n.is_multiple_of(3) {
            match spike_nexus::probe::health(&health, Duration::from_secs(2)).await {
                Ok(a) if a.code == 200 => s.health_ok += 1,
                _ => s.health_failed += 1,
            }
        }
    }
}

/// Raises this process's `RLIMIT_NOFILE` soft limit to its hard limit (and, as root, both to
/// at least `want`); returns the soft limit now in force.
///
/// # Errors
/// When the limit cannot be read.
pub fn raise_nofile(want: u64) -> Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if hard < want && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return Ok(want);
    }
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(getrlimit(Resource::RLIMIT_NOFILE)?.0)
}

/// Runs the scenarios in order and reports each.
///
/// # Errors
/// When the deployment cannot be set up (a failing scenario is a report, not an error).
pub async fn run(options: &AbuseOptions) -> Result<AbuseReport> {
    let mut cluster = Cluster::with_identities(3, &[ATTACKER])?;
    cluster.start_keepers().await?;
    cluster.seed_keepers(&RootKey::generate()?, 2).await?;
    let superuser = cluster.identity(SUPERUSER).await?;
    let attacker = cluster.identity(ATTACKER).await?;
    let mut scenarios = Vec::new();
    for (i, attack) in options.attacks.iter().enumerate() {
        let dir = cluster.dir().join(format!("nexus-{i}-{}", attack.name()));
        if options.progress {
            eprintln!("[abuse] {}: starting Nexus", attack.name());
        }
        let report = scenario(
            &cluster,
            *attack,
            options,
            &dir,
            superuser.clone(),
            attacker.clone(),
        )
        .await?;
        if options.progress {
            eprint!("{}", report.human());
        }
        scenarios.push(report);
    }
    cluster.stop_keepers().await?;
    Ok(AbuseReport {
        profile: options.profile,
        nexus_bin: options.launch.bin.clone(),
        unit_limits: options.launch.unit_limits,
        nexus_overrides: options.launch.overrides.clone(),
        p99_bound_ms: options.p99_bound.as_secs_f64() * 1000.0,
        duration_secs: options.duration.as_secs_f64(),
        scenarios,
    })
}

async fn scenario(
    cluster: &Cluster,
    attack: Attack,
    options: &AbuseOptions,
    dir: &std::path::Path,
    superuser: Identity,
    attacker: Identity,
) -> Result<ScenarioReport> {
    let mut nexus = NexusProcess::start(cluster, &options.launch, dir, Duration::from_secs(60))
        .await
        .with_context(|| format!("{}: starting Nexus", attack.name()))?;
    let base = BaseUrl::parse(&nexus.url())?;
    let roots = spike_testkit::cluster::roots()?;
    let target = Target {
        identity: superuser,
        base: base.clone(),
        roots: roots.clone(),
    };
    target
        .client(false)?
        .put_secret(PROBE_SECRET, secret_values(64, 1))
        .await
        .context("writing the probe secret")?;
    let baseline = probe_apart(&target, options.baseline, options).await?;
    let rss_before = rss::rss_kib(nexus.pid);
    let limits = nexus.limits();

    let count = options
        .connections
        .unwrap_or_else(|| options.profile.connections(attack))
        .max(1);
    let stats = Arc::new(Stats::default());
    let token = CancellationToken::new();
    let ctx = AttackCtx {
        nexus: nexus.addr,
        health: nexus.health_socket.clone(),
        connector: MtlsConnector::new(attacker.client_config(allow_any())?, CONNECT_TIMEOUT),
        attacker,
        base,
        roots,
        byte_interval: options.byte_interval,
        stats: Arc::clone(&stats),
        token: token.clone(),
    };
    let big = Arc::new(if attack == Attack::BigBodies {
        big_body(BIG_BODY - 1)
    } else {
        Vec::new()
    });
    if options.progress {
        eprintln!(
            "[abuse] {}: baseline {}; attacking with {count}",
            attack.name(),
            baseline.line()
        );
    }
    let sampler_token = CancellationToken::new();
    let sampler = tokio::spawn(sample(
        nexus.pid,
        nexus.health_socket.clone(),
        sampler_token.clone(),
    ));
    let mut set = JoinSet::new();
    for _ in 0..count {
        set.spawn(one_connection(ctx.clone(), attack, Arc::clone(&big)));
        // Let the connects spread a little instead of one SYN burst.
        tokio::task::yield_now().await;
    }
    // Ramp: until the attack is established (every connection open; big bodies: held), the
    // ramp time is up, or Nexus died.
    let ramp_end = Instant::now() + options.ramp;
    let established = |s: &Stats| {
        let n = if attack == Attack::BigBodies {
            s.bodies_held.load(Ordering::Relaxed)
        } else {
            s.open.load(Ordering::Relaxed)
        };
        n >= count as u64
    };
    while Instant::now() < ramp_end && !established(&stats) && nexus.exited().is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Idle connections give Nexus nothing to do until the timeout: let it see them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let open_at_start = stats.open.load(Ordering::Relaxed);
    let under_attack = probe_apart(&target, options.duration, options).await?;
    token.cancel();
    while tokio::time::timeout(Duration::from_secs(10), set.join_next())
        .await
        .ok()
        .flatten()
        .is_some()
    {}
    set.abort_all();
    sampler_token.cancel();
    let samples = sampler.await.unwrap_or_default();
    let attacker_summary = stats.summary(count, open_at_start);
    let hwm = rss::peak_rss_kib(nexus.pid);
    let exit = nexus.exited();
    let recovered = exit.is_none()
        && tokio::time::timeout(options.probe_timeout, async {
            target.client(false)?.get_secret(PROBE_SECRET, 0).await
        })
        .await
        .is_ok_and(|r| r.is_ok());
    let log_tail = nexus.log_tail();
    let stopped = nexus.stop(Duration::from_secs(15)).await;
    if options.progress {
        eprintln!("[abuse] {}: Nexus stopped: {stopped}", attack.name());
    }
    let mut failures = Vec::new();
    if let Some(e) = &exit {
        failures.push(format!(
            "Nexus exited during the attack ({e}); log:\n{log_tail}"
        ));
    }
    if under_attack.errors > 0 {
        failures.push(format!(
            "{} of {} superuser gets failed; first: {}",
            under_attack.errors,
            under_attack.errors + under_attack.requests,
            under_attack.first_error.as_deref().unwrap_or("?")
        ));
    }
    if under_attack.requests == 0 {
        failures.push("no superuser get succeeded under attack".to_owned());
    }
    let bound_us = u64::try_from(options.p99_bound.as_micros()).unwrap_or(u64::MAX);
    if under_attack.latency.p99_us > bound_us {
        failures.push(format!(
            "p99 {:.1} ms exceeds the bound {:.1} ms",
            ms(under_attack.latency.p99_us),
            ms(bound_us)
        ));
    }
    if exit.is_none() && !recovered {
        failures.push("a superuser get after the attack failed".to_owned());
    }
    Ok(ScenarioReport {
        attack,
        baseline,
        under_attack,
        health_ok: samples.health_ok,
        health_failed: samples.health_failed,
        attacker: attacker_summary,
        nexus_rss_before_kib: rss_before,
        nexus_rss_peak_kib: samples.rss_peak,
        nexus_hwm_kib: hwm,
        nexus_fds_peak: samples.fds_peak,
        nexus_limits: limits,
        nexus_exit: exit,
        recovered,
        failures,
    })
}

/// The `spike-nexus` binary next to the running executable.
///
/// # Errors
/// When the executable's path is unknown.
pub fn default_nexus_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no directory", exe.display()))?;
    // Test binaries live in target/<profile>/deps, the binaries one level up.
    let candidates = [dir.join("spike-nexus"), dir.join("../spike-nexus")];
    Ok(candidates
        .iter()
        .find(|p| p.is_file())
        .unwrap_or(&candidates[0])
        .clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_announced_size() {
        assert_eq!(big_body(BIG_BODY - 1).len(), BIG_BODY - 1);
        assert!(big_body(BIG_BODY).starts_with(br#"{"path":"#));
        assert!(big_body(BIG_BODY).ends_with(br#""}}"#));
        let h = String::from_utf8(body_headers(42)).unwrap();
        assert!(h.starts_with("POST /v1/store/secrets HTTP/1.1\r\n"));
        assert!(h.ends_with("Content-Length: 42\r\n\r\n"));
    }

    #[test]
    fn client_hello_prefix_is_an_incomplete_handshake_record() {
        let p = client_hello_prefix();
        assert_eq!(p[0], 0x16, "handshake record");
        assert_eq!(p[5], 0x01, "ClientHello");
        let announced = usize::from(u16::from_be_bytes([p[3], p[4]]));
        assert!(p.len() - 5 < announced);
    }

    #[test]
    fn profiles_size_every_attack() {
        for a in Attack::ALL {
            assert!(Profile::Smoke.connections(a) <= Profile::Full.connections(a));
            assert!(Profile::Smoke.connections(a) > 0);
        }
        let smoke = Profile::Smoke.overrides();
        assert_eq!(smoke["max_connections"].as_integer(), Some(64));
        assert_eq!(smoke["max_handshakes"].as_integer(), Some(32));
        assert!(Profile::Full.overrides().is_empty());
    }

    #[test]
    fn stats_track_peak_and_closes() {
        let s = Stats::default();
        s.opened();
        s.opened();
        s.closed(true);
        s.opened();
        let sum = s.summary(3, 2);
        assert_eq!((sum.peak_open, sum.opened, sum.server_closes), (2, 3, 1));
    }
}
