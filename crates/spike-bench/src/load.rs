//! Workloads, pre-population and the load loop.
//!
//! Each of the `connections` workers owns one [`NexusClient`]. With keep-alive its pool
//! keeps one idle connection, so a worker is one long-lived mTLS connection; without it
//! (`max_idle_connections = 0`) every request pays a TCP connect and a TLS handshake, as
//! SPIKE's Go clients effectively do. Latency is measured per request around the client
//! call (request encoding, round trip, response decoding).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;
use spike_client::{BaseUrl, ClientError, ClientOptions, NexusClient};
use spike_identity::Identity;
use spike_proto::TrustRoots;
use tokio::time::Instant;

use crate::stats::Summary;

/// What each request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// `secret get` of a random pre-populated secret.
    Get,
    /// `secret put` (a new version) of a random pre-populated secret.
    Put,
    /// `secret put` to a path never written before (unique to the run).
    #[serde(rename = "put-fresh")]
    PutFresh,
    /// 90 % get, 10 % put.
    Mix,
    /// `cipher encrypt` (JSON mode) of a `value_size`-byte payload.
    Encrypt,
}

impl Workload {
    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Get => "get",
            Workload::Put => "put",
            Workload::PutFresh => "put-fresh",
            Workload::Mix => "mix",
            Workload::Encrypt => "encrypt",
        }
    }
}

/// Parameters of one load run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The request mix.
    pub workload: Workload,
    /// Concurrent workers (one client, hence one connection with keep-alive, each).
    pub connections: usize,
    /// How long to run.
    pub duration: Duration,
    /// Reuse connections (`true`) or open one per request.
    pub keepalive: bool,
    /// Number of secrets the get/put workloads address (`bench/secret-<i>`).
    pub secrets: u64,
    /// Size of each secret value and of each encrypt payload, in bytes.
    pub value_size: usize,
    /// Print a progress line per second on stderr.
    pub progress: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            workload: Workload::Get,
            connections: 16,
            duration: Duration::from_secs(10),
            keepalive: true,
            secrets: 100,
            value_size: 64,
            progress: true,
        }
    }
}

/// The result of one load run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// The request mix.
    pub workload: Workload,
    /// Concurrent workers.
    pub connections: usize,
    /// Whether connections were reused.
    pub keepalive: bool,
    /// Secrets addressed.
    pub secrets: u64,
    /// Value / payload size in bytes.
    pub value_size: usize,
    /// Measured wall time in seconds.
    pub elapsed_secs: f64,
    /// Successful requests.
    pub requests: u64,
    /// Failed requests (not included in the latencies).
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Successful requests per second.
    pub throughput_rps: f64,
    /// Latency of successful requests.
    pub latency: Summary,
    /// Server RSS in KiB after the run, when known.
    pub server_rss_kib: Option<u64>,
    /// What `server_rss_kib` measures.
    pub rss_note: Option<String>,
}

/// Several concurrent runs (one per Nexus instance) as one report: requests, errors and
/// throughput add up; the elapsed time is the longest run's; each latency percentile is
/// the highest of the runs' (an upper bound of the combined percentile), the mean is
/// weighted by request count.
pub fn merge(reports: Vec<LoadReport>) -> LoadReport {
    let mut iter = reports.into_iter();
    let Some(mut out) = iter.next() else {
        return LoadReport {
            workload: Workload::Get,
            connections: 0,
            keepalive: true,
            secrets: 0,
            value_size: 0,
            elapsed_secs: 0.0,
            requests: 0,
            errors: 0,
            first_error: None,
            throughput_rps: 0.0,
            latency: Summary::default(),
            server_rss_kib: None,
            rss_note: None,
        };
    };
    for r in iter {
        let (a, b) = (out.latency.count as f64, r.latency.count as f64);
        if a + b > 0.0 {
            out.latency.mean_us = (out.latency.mean_us * a + r.latency.mean_us * b) / (a + b);
        }
        out.latency.count += r.latency.count;
        out.latency.p50_us = out.latency.p50_us.max(r.latency.p50_us);
        out.latency.p90_us = out.latency.p90_us.max(r.latency.p90_us);
        out.latency.p99_us = out.latency.p99_us.max(r.latency.p99_us);
        out.latency.p999_us = out.latency.p999_us.max(r.latency.p999_us);
        out.latency.max_us = out.latency.max_us.max(r.latency.max_us);
        out.connections += r.connections;
        out.requests += r.requests;
        out.errors += r.errors;
        out.first_error = out.first_error.or(r.first_error);
        out.throughput_rps += r.throughput_rps;
        out.elapsed_secs = out.elapsed_secs.max(r.elapsed_secs);
    }
    out
}

/// Where the load goes: a Nexus URL plus the caller's identity and trust roots.
#[derive(Debug, Clone)]
pub struct Target {
    /// The caller's identity (the Pilot superuser for the built-in workloads).
    pub identity: Identity,
    /// The Nexus base URL.
    pub base: BaseUrl,
    /// Trust roots; the server must be a Nexus under them.
    pub roots: TrustRoots,
}

impl Target {
    /// A fresh client: one pooled keep-alive connection, or none (`keepalive = false`).
    ///
    /// # Errors
    /// [`ClientError::Identity`] when the TLS configuration cannot be built.
    pub fn client(&self, keepalive: bool) -> Result<NexusClient, ClientError> {
        let options = ClientOptions {
            max_idle_connections: usize::from(keepalive),
            ..ClientOptions::with_timeout(Duration::from_secs(30))
        };
        NexusClient::new(&self.identity, self.base.clone(), &self.roots, options)
    }
}

/// The path of pre-populated secret `i`.
pub fn secret_path(i: u64) -> String {
    format!("bench/secret-{i}")
}

/// A deterministic printable value of `size` bytes.
pub fn value_of_size(size: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = XorShift::new(seed);
    (0..size)
        .map(|_| {
            #[expect(
                clippy::cast_possible_truncation,
                reason = "the modulus keeps the index below the alphabet length"
            )]
            let i = (rng.next() % ALPHABET.len() as u64) as usize;
            char::from(ALPHABET[i])
        })
        .collect()
}

/// The data map of a benchmark secret.
pub fn secret_values(value_size: usize, seed: u64) -> BTreeMap<String, String> {
    BTreeMap::from([("value".to_owned(), value_of_size(value_size, seed))])
}

/// A tiny xorshift64* generator: enough to spread requests, no dependency.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// Seeded generator (a zero seed is replaced).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next value.
    #[expect(
        clippy::should_implement_trait,
        reason = "an infinite generator, not an iterator"
    )]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Writes secrets `0..secrets` through the API with `connections` concurrent clients.
///
/// # Errors
/// The first failed put.
pub async fn populate(
    target: &Target,
    secrets: u64,
    value_size: usize,
    connections: usize,
) -> Result<(), ClientError> {
    let workers = connections.clamp(1, 64) as u64;
    let mut set = tokio::task::JoinSet::new();
    for w in 0..workers {
        let client = target.client(true)?;
        set.spawn(async move {
            let mut i = w;
            while i < secrets {
                client
                    .put_secret(&secret_path(i), secret_values(value_size, i))
                    .await?;
                i += workers;
            }
            Ok::<(), ClientError>(())
        });
    }
    while let Some(joined) = set.join_next().await {
        if let Ok(result) = joined {
            result?;
        }
    }
    Ok(())
}

struct Shared {
    done: AtomicU64,
    errors: AtomicU64,
    first_error: OnceLock<String>,
}

/// Runs `options.workload` against `target` for `options.duration`; the secrets must exist
/// already (see [`populate`]) for get, put and mix.
///
/// # Errors
/// [`ClientError::Identity`] when a client cannot be built. Failed requests are counted,
/// not returned.
pub async fn run(target: &Target, options: &LoadOptions) -> Result<LoadReport, ClientError> {
    let shared = Arc::new(Shared {
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: OnceLock::new(),
    });
    let start = Instant::now();
    let deadline = start + options.duration;
    let payload = Arc::new(value_of_size(options.value_size, 7).into_bytes());
    // put-fresh paths are unique to this run: never written before.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut set = tokio::task::JoinSet::new();
    for w in 0..options.connections.max(1) {
        let client = target.client(options.keepalive)?;
        let shared = Arc::clone(&shared);
        let payload = Arc::clone(&payload);
        let workload = options.workload;
        let secrets = options.secrets.max(1);
        let value_size = options.value_size;
        set.spawn(async move {
            let mut rng = XorShift::new(w as u64 + 1);
            let mut samples: Vec<u64> = Vec::with_capacity(4096);
            let mut fresh = 0u64;
            while Instant::now() < deadline {
                let i = rng.below(secrets);
                let put = match workload {
                    Workload::Put | Workload::PutFresh => true,
                    Workload::Mix => rng.below(10) == 0,
                    Workload::Get | Workload::Encrypt => false,
                };
                let t0 = Instant::now();
                let result = match workload {
                    Workload::Encrypt => client.encrypt(&payload).await.map(drop),
                    Workload::PutFresh => {
                        fresh += 1;
                        let path = format!("bench/fresh-{nonce:x}-{w}-{fresh}");
                        client.put_secret(&path, secret_values(value_size, i)).await
                    }
                    _ if put => {
                        client
                            .put_secret(&secret_path(i), secret_values(value_size, i))
                            .await
                    }
                    _ => client.get_secret(&secret_path(i), 0).await.map(drop),
                };
                let micros = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                match result {
                    Ok(()) => {
                        samples.push(micros);
                        shared.done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        if shared.first_error.get().is_none() {
                            let _ = shared.first_error.set(e.to_string());
                        }
                    }
                }
            }
            samples
        });
    }
    let progress = options.progress.then(|| {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                Instant::now() + Duration::from_secs(1),
                Duration::from_secs(1),
            );
            let mut last = 0;
            let mut second = 0u64;
            loop {
                tick.tick().await;
                second += 1;
                let done = shared.done.load(Ordering::Relaxed);
                let errors = shared.errors.load(Ordering::Relaxed);
                eprintln!(
                    "[{second:>4}s] {:>8} req/s  total {done:>10}  errors {errors}",
                    done - last
                );
                last = done;
            }
        })
    });
    let mut samples = Vec::new();
    while let Some(joined) = set.join_next().await {
        if let Ok(mut s) = joined {
            samples.append(&mut s);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(p) = progress {
        p.abort();
    }
    let latency = Summary::from_samples(&mut samples);
    let (errors, first_error) = match Arc::try_unwrap(shared) {
        Ok(shared) => (shared.errors.into_inner(), shared.first_error.into_inner()),
        Err(shared) => (
            shared.errors.load(Ordering::Relaxed),
            shared.first_error.get().cloned(),
        ),
    };
    #[expect(
        clippy::cast_precision_loss,
        reason = "request counts are far below 2^52"
    )]
    let throughput_rps = if elapsed > 0.0 {
        latency.count as f64 / elapsed
    } else {
        0.0
    };
    Ok(LoadReport {
        workload: options.workload,
        connections: options.connections.max(1),
        keepalive: options.keepalive,
        secrets: options.secrets,
        value_size: options.value_size,
        elapsed_secs: elapsed,
        requests: latency.count,
        errors,
        first_error,
        throughput_rps,
        latency,
        server_rss_kib: None,
        rss_note: None,
    })
}

impl LoadReport {
    /// A human-readable multi-line summary.
    pub fn human(&self) -> String {
        let l = &self.latency;
        let mut out = format!(
            "workload {} | connections {} | keepalive {} | secrets {} | value {} B\n\
             requests {} in {:.2}s, errors {}\n\
             throughput {:.0} req/s\n\
             latency  p50 {} us  p90 {} us  p99 {} us  p99.9 {} us  max {} us  mean {:.0} us\n",
            self.workload.name(),
            self.connections,
            self.keepalive,
            self.secrets,
            self.value_size,
            self.requests,
            self.elapsed_secs,
            self.errors,
            self.throughput_rps,
            l.p50_us,
            l.p90_us,
            l.p99_us,
            l.p999_us,
            l.max_us,
            l.mean_us,
        );
        if let Some(rss) = self.server_rss_kib {
            out.push_str(&format!("server RSS {:.1} MiB", kib_to_mib(rss)));
            if let Some(note) = &self.rss_note {
                out.push_str(&format!(" ({note})"));
            }
            out.push('\n');
        }
        if let Some(e) = &self.first_error {
            out.push_str(&format!("first error: {e}\n"));
        }
        out
    }
}

/// KiB to MiB.
pub fn kib_to_mib(kib: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "RSS in KiB is far below 2^52")]
    let k = kib as f64;
    k / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_requested_size_and_are_deterministic() {
        assert_eq!(value_of_size(4096, 1).len(), 4096);
        assert_eq!(value_of_size(64, 3), value_of_size(64, 3));
        assert_ne!(value_of_size(64, 3), value_of_size(64, 4));
        assert!(value_of_size(0, 1).is_empty());
    }

    #[test]
    fn xorshift_spreads_over_the_range() {
        let mut rng = XorShift::new(0);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let i = usize::try_from(rng.below(10)).unwrap();
            seen[i] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800 && c < 1200), "{seen:?}");
    }
}
