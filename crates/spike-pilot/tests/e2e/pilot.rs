//! Our `spike` binary end to end: the shared script, the sealed-Nexus behaviour,
//! `--format json` outputs and `spike status`.

use serde_json::{Value, json};

use crate::cli::{Cli, CliKind, script};
use crate::world::{Cluster, RECOVER, SUPERUSER, THRESHOLD, World, eventually};

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_cli_script_against_our_nexus() {
    let w = World::new();
    let (cluster, key) = Cluster::bootstrapped(&w, "ours").await;
    let cli = Cli::new(CliKind::Ours, &w);
    script(&cli, &w, cluster, &key).await.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_nexus_is_not_ready_on_stderr_only() {
    let w = World::new();
    let cluster = Cluster::start(&w, "sealed").await;
    let n = &cluster.nexus;
    let cli = Cli::new(CliKind::Ours, &w);

    let cases: [(&str, &[&str], &[u8]); 6] = [
        (SUPERUSER, &["secret", "get", "a/b"], b""),
        (SUPERUSER, &["secret", "put", "a/b", "k=v"], b""),
        (SUPERUSER, &["secret", "list", "-f", "json"], b""),
        (SUPERUSER, &["policy", "list"], b""),
        (SUPERUSER, &["cipher", "encrypt"], b"data"),
        (RECOVER, &["operator", "recover"], b""),
    ];
    for (role, args, stdin) in cases {
        let run = cli.run(role, n, args, stdin).await;
        assert_eq!(run.code, 4, "spike {args:?}: {}", run.stderr);
        assert!(
            run.stdout.is_empty(),
            "spike {args:?} printed {:?}",
            run.stdout_text()
        );
        assert!(
            run.stderr
                .contains("SPIKE is not ready yet. Please wait a moment and try again."),
            "spike {args:?}: {}",
            run.stderr
        );
        // The health says why: never bootstrapped (and never "not initialized" as a guess).
        assert!(
            run.stderr.contains(&format!(
                "SPIKE Nexus at {} is sealed: waiting for bootstrap (0/{THRESHOLD} shards)",
                n.url()
            )),
            "spike {args:?}: {}",
            run.stderr
        );
    }
    // recover wrote nothing
    let dir = cli.recovery_dir();
    assert!(!dir.exists() || std::fs::read_dir(&dir).unwrap().next().is_none());

    // status answers while sealed: HTTP 501, never bootstrapped
    let run = cli.run(SUPERUSER, n, &["status", "-f", "json"], b"").await;
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    let status = parse(&run.stdout_text());
    assert_eq!(status["http_status"], 501);
    assert_eq!(status["initialized"], false);
    assert_eq!(status["sealed"], true);
    assert_eq!(status["threshold"], THRESHOLD);
    assert_eq!(status["shards_collected"], 0);
    assert_eq!(status["has_data"], false);
    assert_eq!(status["nexus_url"], n.url());
    assert_eq!(status["pilot_version"], env!("CARGO_PKG_VERSION"));
    assert!(status["nexus_version"].is_string());
    let run = cli.run(SUPERUSER, n, &["status"], b"").await;
    assert_eq!(run.code, 4, "{}", run.stderr);
    let human = run.stdout_text();
    assert!(
        human.contains(&format!(
            "State:             sealed: waiting for bootstrap (0/{THRESHOLD} shards)"
        )),
        "{human}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_outputs_and_status_when_ready() {
    let w = World::new();
    let (cluster, _key) = Cluster::bootstrapped(&w, "json").await;
    let n = &cluster.nexus;
    let cli = Cli::new(CliKind::Ours, &w);
    let su = SUPERUSER;

    cli.ok(
        su,
        n,
        &["secret", "put", "apps/web/db", "user=admin", "pass=s3cr=t"],
        b"",
    )
    .await;
    cli.ok(su, n, &["secret", "put", "apps/web/db", "user=root"], b"")
        .await;
    let out = cli
        .ok(
            su,
            n,
            &["secret", "get", "apps/web/db", "-v", "1", "-f", "json"],
            b"",
        )
        .await;
    assert_eq!(parse(&out), json!({"user": "admin", "pass": "s3cr=t"}));
    assert!(out.contains("\n    \""), "4-space indent like SPIKE: {out}");
    let out = cli
        .ok(
            su,
            n,
            &["secret", "get", "apps/web/db", "user", "-f", "json"],
            b"",
        )
        .await;
    assert_eq!(parse(&out), json!("root"));
    let out = cli.ok(su, n, &["secret", "list", "-f", "json"], b"").await;
    assert_eq!(parse(&out), json!(["apps/web/db"]));
    let out = cli
        .ok(
            su,
            n,
            &["secret", "metadata", "get", "apps/web/db", "-f", "json"],
            b"",
        )
        .await;
    let meta = parse(&out);
    assert_eq!(meta["metadata"]["currentVersion"], 2);
    assert_eq!(meta["metadata"]["oldestVersion"], 1);
    assert_eq!(meta["versions"]["1"]["version"], 1);
    assert_eq!(meta["versions"]["2"]["deletedTime"], Value::Null);
    assert!(meta["versions"]["2"]["createdTime"].is_string());

    let out = cli.ok(su, n, &["policy", "list", "-f", "json"], b"").await;
    assert_eq!(parse(&out), json!([]));
    cli.ok(
        su,
        n,
        &[
            "policy",
            "create",
            "--name",
            "web",
            "--path-pattern",
            "^apps/web/.*$",
            "--spiffeid-pattern",
            "^spiffe://spike.test/app/web$",
            "--permissions",
            "read",
        ],
        b"",
    )
    .await;
    let out = cli.ok(su, n, &["policy", "list", "-f", "json"], b"").await;
    assert_eq!(parse(&out), json!([{"id": "", "name": "web"}]));
    let out = cli
        .ok(su, n, &["policy", "get", "web", "-f", "json"], b"")
        .await;
    let policy = parse(&out);
    assert_eq!(policy["name"], "web");
    assert_eq!(policy["spiffiedPattern"], "^spiffe://spike.test/app/web$");
    assert_eq!(policy["pathPattern"], "^apps/web/.*$");
    assert_eq!(policy["permissions"], json!(["read"]));
    assert!(policy.get("err").is_none());

    // YAML too
    let out = cli
        .ok(su, n, &["secret", "get", "apps/web/db", "-f", "yaml"], b"")
        .await;
    assert_eq!(out, "user: root\n");

    // status: ready, with data, keepers probed
    let stores: Vec<_> = cluster.keepers.iter().map(|k| k.store.clone()).collect();
    eventually(20, "keepers hold shards", || {
        stores.iter().all(|s| s.get().is_some())
    })
    .await;
    let mut status = Value::Null;
    for _ in 0..100 {
        let out = cli.ok(su, n, &["status", "--format", "json"], b"").await;
        status = parse(&out);
        if status["keepers_reachable"] == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status["keepers_reachable"], 3, "{status}");
    assert_eq!(status["http_status"], 200);
    assert_eq!(status["initialized"], true);
    assert_eq!(status["sealed"], false);
    assert_eq!(status["has_data"], true);
    assert_eq!(status["threshold"], THRESHOLD);
    let keys: Vec<&str> = status
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "nexus_url",
        "http_status",
        "initialized",
        "sealed",
        "nexus_version",
        "nexus_build",
        "shards_collected",
        "threshold",
        "keepers_reachable",
        "has_data",
        "pilot_version",
    ] {
        assert!(keys.contains(&k), "status JSON lacks {k}: {status}");
    }
    let human = cli.ok(su, n, &["status"], b"").await;
    assert!(human.contains("State:             ready"), "{human}");

    // A bad format is a usage-level failure with nothing on stdout.
    let run = cli.run(su, n, &["secret", "list", "-f", "xml"], b"").await;
    assert_ne!(run.code, 0);
    assert!(run.stdout.is_empty());
    assert!(
        run.stderr.contains("invalid format 'xml'"),
        "{}",
        run.stderr
    );
    cluster.stop().await;
}
