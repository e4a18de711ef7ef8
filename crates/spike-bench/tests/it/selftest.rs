//! `selftest` (the CI smoke test) and `restart-time` against in-process deployments.

use std::time::Duration;

use spike_bench::cluster::BackendChoice;
use spike_bench::load::{LoadOptions, LoadReport, Workload};
use spike_bench::scenarios::{self, RestartOptions, SelftestOptions};

fn short(workload: Workload, keepalive: bool) -> LoadOptions {
    LoadOptions {
        workload,
        connections: 4,
        duration: Duration::from_secs(1),
        keepalive,
        secrets: 20,
        value_size: 64,
        progress: false,
    }
}

fn assert_sane(r: &LoadReport) {
    assert_eq!(r.errors, 0, "first error: {:?}", r.first_error);
    assert!(r.requests > 0 && r.throughput_rps > 0.0, "{r:?}");
    let l = &r.latency;
    assert_eq!(l.count, r.requests);
    assert!(l.p50_us > 0, "{l:?}");
    assert!(l.p50_us <= l.p90_us && l.p90_us <= l.p99_us, "{l:?}");
    assert!(l.p99_us <= l.p999_us && l.p999_us <= l.max_us, "{l:?}");
    // One request cannot take longer than the whole run (plus the last request's tail).
    assert!(l.max_us < 11_000_000, "{l:?}");
    assert!(r.server_rss_kib.is_some_and(|k| k > 1024), "{r:?}");
    let json = serde_json::to_value(r).unwrap();
    assert!(json["latency"]["p999_us"].as_u64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selftest_memory_keepalive_mix() {
    let r = scenarios::selftest(&SelftestOptions {
        backend: BackendChoice::Memory,
        instances: 1,
        load: short(Workload::Mix, true),
    })
    .await
    .unwrap();
    assert_sane(&r);
    assert_eq!(r.workload, Workload::Mix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selftest_sqlite_get_without_keepalive() {
    let r = scenarios::selftest(&SelftestOptions {
        backend: BackendChoice::Sqlite,
        instances: 1,
        load: short(Workload::Get, false),
    })
    .await
    .unwrap();
    assert_sane(&r);
    assert!(!r.keepalive);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selftest_postgres_two_instances_mix() {
    let r = scenarios::selftest(&SelftestOptions {
        backend: BackendChoice::Postgres,
        instances: 2,
        load: short(Workload::Mix, true),
    })
    .await
    .unwrap();
    assert_sane(&r);
    assert_eq!(r.errors, 0, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selftest_only_postgres_runs_several_instances() {
    let e = scenarios::selftest(&SelftestOptions {
        backend: BackendChoice::Sqlite,
        instances: 2,
        load: short(Workload::Get, true),
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("--backend postgres"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selftest_memory_encrypt() {
    let r = scenarios::selftest(&SelftestOptions {
        backend: BackendChoice::Memory,
        instances: 1,
        load: short(Workload::Encrypt, true),
    })
    .await
    .unwrap();
    assert_sane(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_time_with_three_keepers_unseals_and_reads_back() {
    let r = scenarios::restart_time(&RestartOptions {
        keepers: 3,
        threshold: 2,
        restarts: 2,
    })
    .await
    .unwrap();
    assert_eq!(r.restart_ms.len(), 2);
    assert_eq!(r.first_read_ms.len(), 2);
    for (unsealed, read) in r.restart_ms.iter().zip(&r.first_read_ms) {
        assert!(*unsealed > 0.0 && unsealed <= read, "{r:?}");
    }
    assert!(r.median_ms <= r.max_ms);
}
