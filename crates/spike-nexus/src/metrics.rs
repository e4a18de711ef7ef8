//! Prometheus metrics, hand-rolled text exposition (format 0.0.4).
//!
//! Exposed series:
//! - `spike_nexus_requests_total{route,status}` (counter),
//! - `spike_nexus_request_duration_seconds{route}` (histogram),
//! - `spike_nexus_sealed` (gauge, 1 while sealed), `spike_nexus_initialized` (gauge),
//! - `spike_nexus_shards_collected` (gauge),
//! - `spike_nexus_backend_reachable` (gauge, 1 while the store's database answers; always 1
//!   but for PostgreSQL),
//! - `spike_nexus_keeper_reachable{keeper}` and `spike_nexus_keeper_has_shard{keeper}` (gauges),
//! - `spike_nexus_tls_handshake_failures_total` (counter): failed TLS handshakes on the mTLS
//!   API listener (bad or missing client certificate, rejected SPIFFE ID, timeout, protocol
//!   error), every one counted even when its log line is rate-limited.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Histogram bucket upper bounds in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(&'static str, u16), u64>,
    latency: BTreeMap<&'static str, Histogram>,
}

/// A snapshot of the seal and keeper state for the gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Whether Nexus is sealed.
    pub sealed: bool,
    /// Whether Nexus was ever bootstrapped.
    pub initialized: bool,
    /// Shards collected towards unsealing.
    pub shards_collected: usize,
    /// The store's database answers.
    pub backend_reachable: bool,
    /// Per keeper (shard id): reachable, holds a shard.
    pub keepers: Vec<(u16, bool, bool)>,
}

/// Request counters and latency histograms; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
    handshake_failures: Arc<AtomicU64>,
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one finished request.
    pub fn record(&self, route: &'static str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut inner = self.inner.lock();
        *inner.requests.entry((route, status)).or_default() += 1;
        let h = inner.latency.entry(route).or_default();
        h.count += 1;
        h.sum += secs;
        for (slot, bound) in h.counts.iter_mut().zip(BUCKETS) {
            if secs <= bound {
                *slot += 1;
            }
        }
    }

    /// Counts one failed TLS handshake on the mTLS API listener.
    pub fn record_handshake_failure(&self) {
        self.handshake_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Failed TLS handshakes counted so far.
    pub fn handshake_failures(&self) -> u64 {
        self.handshake_failures.load(Ordering::Relaxed)
    }

    /// The number of requests recorded for `(route, status)`.
    pub fn requests(&self, route: &str, status: u16) -> u64 {
        let inner = self.inner.lock();
        inner
            .requests
            .iter()
            .filter(|((r, s), _)| *r == route && *s == status)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Renders the text exposition with the given gauges.
    pub fn render(&self, gauges: &Gauges) -> String {
        let (requests, latency) = {
            let inner = self.inner.lock();
            (inner.requests.clone(), inner.latency.clone())
        };
        let mut out = String::new();
        out.push_str("# HELP spike_nexus_requests_total API requests by route and status.\n");
        out.push_str("# TYPE spike_nexus_requests_total counter\n");
        for ((route, status), n) in &requests {
            let _ = writeln!(
                out,
                "spike_nexus_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP spike_nexus_request_duration_seconds API request latency.\n");
        out.push_str("# TYPE spike_nexus_request_duration_seconds histogram\n");
        for (route, h) in &latency {
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "spike_nexus_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "spike_nexus_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "spike_nexus_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "spike_nexus_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        out.push_str(
            "# HELP spike_nexus_tls_handshake_failures_total Failed TLS handshakes on the mTLS \
             API listener.\n",
        );
        out.push_str("# TYPE spike_nexus_tls_handshake_failures_total counter\n");
        let _ = writeln!(
            out,
            "spike_nexus_tls_handshake_failures_total {}",
            self.handshake_failures()
        );
        gauge(
            &mut out,
            "spike_nexus_sealed",
            "1 while the root key is not in memory.",
            u64::from(gauges.sealed),
        );
        gauge(
            &mut out,
            "spike_nexus_initialized",
            "1 once Nexus has been bootstrapped.",
            u64::from(gauges.initialized),
        );
        gauge(
            &mut out,
            "spike_nexus_backend_reachable",
            "1 while the store's database answers (PostgreSQL; always 1 otherwise).",
            u64::from(gauges.backend_reachable),
        );
        gauge(
            &mut out,
            "spike_nexus_shards_collected",
            "Shards collected towards unsealing.",
            gauges.shards_collected as u64,
        );
        out.push_str(
            "# HELP spike_nexus_keeper_reachable 1 if the keeper answered the last probe.\n",
        );
        out.push_str("# TYPE spike_nexus_keeper_reachable gauge\n");
        for (id, reachable, _) in &gauges.keepers {
            let _ = writeln!(
                out,
                "spike_nexus_keeper_reachable{{keeper=\"{id}\"}} {}",
                u8::from(*reachable)
            );
        }
        out.push_str(
            "# HELP spike_nexus_keeper_has_shard 1 if the keeper held a shard at the last probe.\n",
        );
        out.push_str("# TYPE spike_nexus_keeper_has_shard gauge\n");
        for (id, _, has) in &gauges.keepers {
            let _ = writeln!(
                out,
                "spike_nexus_keeper_has_shard{{keeper=\"{id}\"}} {}",
                u8::from(*has)
            );
        }
        out
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::new();
        m.record("secret_get", 200, Duration::from_millis(2));
        m.record("secret_get", 200, Duration::from_millis(300));
        m.record("secret_get", 404, Duration::from_millis(1));
        assert_eq!(m.requests("secret_get", 200), 2);
        let text = m.render(&Gauges {
            sealed: false,
            initialized: true,
            shards_collected: 0,
            backend_reachable: false,
            keepers: vec![(1, true, true), (2, false, false)],
        });
        assert!(text.contains("spike_nexus_backend_reachable 0\n"), "{text}");
        assert!(text.contains("spike_nexus_requests_total{route=\"secret_get\",status=\"200\"} 2"));
        assert!(text.contains("spike_nexus_requests_total{route=\"secret_get\",status=\"404\"} 1"));
        assert!(text.contains(
            "spike_nexus_request_duration_seconds_bucket{route=\"secret_get\",le=\"0.0025\"} 2"
        ));
        assert!(text.contains(
            "spike_nexus_request_duration_seconds_bucket{route=\"secret_get\",le=\"+Inf\"} 3"
        ));
        assert!(text.contains("spike_nexus_sealed 0"));
        assert!(text.contains("spike_nexus_tls_handshake_failures_total 0\n"));
        let clone = m.clone();
        clone.record_handshake_failure();
        clone.record_handshake_failure();
        assert_eq!(m.handshake_failures(), 2);
        assert!(
            m.render(&Gauges::default())
                .contains("spike_nexus_tls_handshake_failures_total 2\n")
        );
        assert!(text.contains("spike_nexus_keeper_reachable{keeper=\"2\"} 0"));
        assert!(text.contains("spike_nexus_keeper_has_shard{keeper=\"1\"} 1"));
    }
}
