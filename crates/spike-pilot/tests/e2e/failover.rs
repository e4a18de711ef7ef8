//! Several Nexus URLs (`SPIKE_NEXUS_API_URL=a,b,...`): Pilot, run in-process, against real
//! servers: an in-process Nexus (unsealed, or sealed on keepers that are not running), a
//! keeper (a real mTLS server presenting the wrong SPIFFE ID), a closed port, a TCP server
//! that ends every TLS handshake, and an mTLS server with a Nexus SVID that reads the request
//! and hangs up without answering (the outcome of a write is then unknown).

use std::time::Duration;

use serde_json::Value;
use spike_client::ClientError;
use spike_identity::SpiffeId;
use spike_pilot::{EXIT_CONNECTION, EXIT_OK, EXIT_SEALED, Io, MapEnv};
use spike_testkit::cluster::{NEXUS, dead_keepers};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::world::{Cluster, NexusHandle, SUPERUSER, TRUST_DOMAIN, World};

/// What one in-process run produced.
struct Run {
    code: u8,
    stdout: String,
    stderr: String,
}

/// Runs `spike <args>` in-process as the superuser with `SPIKE_NEXUS_API_URL` = `urls`
/// joined by ", ".
async fn spike(w: &World, urls: &[&str], args: &[&str], stdin: &[u8]) -> Run {
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().to_str().unwrap();
    let mut env = MapEnv::from_pairs([
        ("HOME", home_path),
        ("XDG_CONFIG_HOME", home_path),
        ("SPIFFE_ENDPOINT_SOCKET", w.endpoint().as_str()),
        ("SPIKE_PILOT_SPIFFE_ID", w.id(SUPERUSER).as_str()),
        ("SPIKE_HTTP_CLIENT_TIMEOUT", "5s"),
        ("SPIKE_TRUST_ROOT_NEXUS", TRUST_DOMAIN),
    ]);
    env.insert("SPIKE_NEXUS_API_URL", urls.join(", "));
    let mut input = stdin;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut argv = vec!["spike"];
    argv.extend_from_slice(args);
    let code = {
        let mut io = Io::new(&mut input, &mut stdout, &mut stderr);
        tokio::time::timeout(
            Duration::from_secs(60),
            spike_pilot::run_code(argv, &mut io, &env),
        )
        .await
        .unwrap_or_else(|_| panic!("spike {args:?} did not finish within 60 s"))
    };
    Run {
        code,
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// Runs and requires exit 0; returns stdout.
async fn ok(w: &World, urls: &[&str], args: &[&str]) -> String {
    let run = spike(w, urls, args, b"").await;
    assert_eq!(
        run.code, EXIT_OK,
        "spike {args:?} with {urls:?}: {}",
        run.stderr
    );
    run.stdout
}

/// A URL on which nothing listens (connection refused).
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("https://127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// A TCP server that closes every connection at once: the TLS handshake fails.
async fn hang_up_at_once() -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            drop(tcp);
        }
    });
    (url, task)
}

/// An mTLS server presenting the Nexus SVID that reads the request and closes without an
/// answer: the request may have been carried out.
async fn hang_up_after_request(w: &World) -> (String, JoinHandle<()>) {
    let identity = w.identity(NEXUS).await.unwrap();
    let acceptor = spike_identity::MtlsAcceptor::new(
        identity.server_config(|_: &SpiffeId| true).unwrap(),
        Duration::from_secs(5),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let task = tokio::spawn(async move {
        let _identity = identity;
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok((mut tls, _)) = acceptor.accept(tcp).await {
                let mut buf = [0_u8; 4096];
                let _ = tls.read(&mut buf).await;
            }
        }
    });
    (url, task)
}

/// A Nexus that stays sealed: never bootstrapped, its keepers are not running.
async fn sealed_nexus(w: &World, name: &str) -> NexusHandle {
    w.start_nexus(&dead_keepers().unwrap(), &w.path(name)).await
}

/// The number of versions of `path` in `nexus`, read directly.
async fn versions(w: &World, nexus: &NexusHandle, path: &str) -> usize {
    let client = w.client(SUPERUSER, nexus).await.unwrap();
    client
        .secret_metadata(path, 0)
        .await
        .unwrap()
        .versions
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_first_urls_are_skipped_for_reads_and_writes() {
    let w = World::new();
    let (cluster, _key) = Cluster::bootstrapped(&w, "failover-live").await;
    let live = cluster.nexus.url();
    let closed = closed_port();
    let keeper = cluster.keepers[0].url.clone();
    let (hang_up, hang_up_task) = hang_up_at_once().await;

    // Refused → the second URL; the write happens once.
    let out = ok(&w, &[&closed, &live], &["secret", "put", "apps/a", "k=v1"]).await;
    assert_eq!(out, "OK\n");
    assert_eq!(versions(&w, &cluster.nexus, "apps/a").await, 1);
    let out = ok(&w, &[&closed, &live], &["secret", "get", "apps/a", "k"]).await;
    assert_eq!(out, "v1\n");

    // A real TLS server with the wrong SPIFFE ID (a keeper) → the next URL.
    let out = ok(&w, &[&keeper, &live], &["secret", "get", "apps/a", "k"]).await;
    assert_eq!(out, "v1\n");
    // A failed TLS handshake → the next URL.
    let out = ok(&w, &[&hang_up, &live], &["secret", "list"]).await;
    assert_eq!(out, "- apps/a\n");

    // A write past all three kinds of failure, once.
    let out = ok(
        &w,
        &[&keeper, &hang_up, &closed, &live],
        &["secret", "put", "apps/b", "k=v"],
    )
    .await;
    assert_eq!(out, "OK\n");
    assert_eq!(versions(&w, &cluster.nexus, "apps/b").await, 1);
    // A command with a read then a write (policy create lists first).
    ok(
        &w,
        &[&closed, &live],
        &[
            "policy",
            "create",
            "--name",
            "web",
            "--spiffeid-pattern",
            "^spiffe://spike\\.test/app/web$",
            "--path-pattern",
            "^apps/web/.*$",
            "--permissions",
            "read",
        ],
    )
    .await;
    let out = ok(&w, &[&hang_up, &live], &["policy", "list"]).await;
    assert!(out.contains("web"), "{out}");

    // status names the URL that answered.
    let out = ok(&w, &[&closed, &keeper, &live], &["status", "-f", "json"]).await;
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["nexus_url"], live.as_str());
    let out = ok(&w, &[&closed, &live], &["status"]).await;
    assert!(
        out.contains(&format!("SPIKE Nexus:       {live}\n")),
        "{out}"
    );

    hang_up_task.abort();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_instances_are_skipped() {
    let w = World::new();
    let (cluster, _key) = Cluster::bootstrapped(&w, "failover-unsealed").await;
    let sealed = sealed_nexus(&w, "failover-sealed").await;
    let live = cluster.nexus.url();
    let sealed_url = sealed.url();

    // 503 from the first instance → the second, for writes too; once.
    let out = ok(
        &w,
        &[&sealed_url, &live],
        &["secret", "put", "apps/s", "k=v"],
    )
    .await;
    assert_eq!(out, "OK\n");
    assert_eq!(versions(&w, &cluster.nexus, "apps/s").await, 1);
    let out = ok(&w, &[&sealed_url, &live], &["secret", "get", "apps/s", "k"]).await;
    assert_eq!(out, "v\n");

    // status skips the sealed instance and shows the one that serves.
    let out = ok(&w, &[&sealed_url, &live], &["status", "-f", "json"]).await;
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["nexus_url"], live.as_str());
    assert_eq!(status["sealed"], false);

    // No instance serves: status shows the sealed one (exit 4), as with one URL.
    let closed = closed_port();
    let run = spike(&w, &[&closed, &sealed_url], &["status", "-f", "json"], b"").await;
    assert_eq!(run.code, EXIT_SEALED, "{}", run.stderr);
    let status: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(status["nexus_url"], sealed_url.as_str());
    assert_eq!(status["sealed"], true);

    // Every instance sealed: each URL with the state its health reports, exit 4.
    let other_name = sealed_url.replace("127.0.0.1", "localhost");
    let run = spike(
        &w,
        &[&sealed_url, &other_name],
        &["secret", "get", "apps/s"],
        b"",
    )
    .await;
    assert_eq!(run.code, EXIT_SEALED, "{}", run.stderr);
    assert!(run.stdout.is_empty());
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines[0], "SPIKE is not ready yet. Please wait a moment and try again.",
        "{}",
        run.stderr
    );
    assert_eq!(lines[1], "SPIKE Nexus is sealed at each of its 2 URLs:");
    for (line, url) in lines[2..4].iter().zip([&sealed_url, &other_name]) {
        assert!(
            line.starts_with(&format!("  {url}: sealed: waiting for bootstrap")),
            "{}",
            run.stderr
        );
    }

    sealed.stop().await.unwrap();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_may_have_arrived_is_not_repeated() {
    let w = World::new();
    let (cluster, _key) = Cluster::bootstrapped(&w, "failover-unknown").await;
    let live = cluster.nexus.url();
    let closed = closed_port();
    let (cut, cut_task) = hang_up_after_request(&w).await;

    // The first URL took the request and hung up: the write is not sent to the second.
    let run = spike(
        &w,
        &[&closed, &cut, &live],
        &["secret", "put", "apps/u", "k=v"],
        b"",
    )
    .await;
    assert_eq!(run.code, EXIT_CONNECTION, "{}", run.stderr);
    assert!(run.stdout.is_empty());
    assert!(
        run.stderr.starts_with(&format!(
            "Error: Failed to connect to SPIKE Nexus at {cut}: HTTP request to"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "The request may have reached SPIKE Nexus at {cut}, so its outcome is unknown."
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("Tried before it:\n  {closed}: cannot connect")),
        "{}",
        run.stderr
    );
    let client = w.client(SUPERUSER, &cluster.nexus).await.unwrap();
    let err = client.secret_metadata("apps/u", 0).await.unwrap_err();
    assert!(
        matches!(err, ClientError::NotFound { .. }),
        "the live Nexus must not have seen the write: {err:?}"
    );
    let run = spike(&w, &[&cut, &live], &["secret", "delete", "apps/u"], b"").await;
    assert_eq!(run.code, EXIT_CONNECTION, "{}", run.stderr);
    assert!(run.stderr.contains("outcome is unknown"), "{}", run.stderr);
    // policy delete reads first: that read moves on to the live instance, which answers.
    let run = spike(
        &w,
        &[&cut, &live],
        &["policy", "delete", "nope", "--yes"],
        b"",
    )
    .await;
    assert!(
        run.stderr.contains("Policy 'nope' not found"),
        "{}",
        run.stderr
    );

    // A read is repeated at the next URL.
    client
        .put_secret("apps/u", [("k".to_owned(), "v".to_owned())].into())
        .await
        .unwrap();
    let out = ok(&w, &[&cut, &live], &["secret", "get", "apps/u", "k"]).await;
    assert_eq!(out, "v\n");
    assert_eq!(versions(&w, &cluster.nexus, "apps/u").await, 1);

    cut_task.abort();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_url_fails_each_is_named_with_its_cause() {
    let w = World::new();
    let keepers = w.start_keepers().await;
    let (a, b) = (closed_port(), closed_port());
    let keeper = keepers[0].url.clone();
    let (hang_up, hang_up_task) = hang_up_at_once().await;

    let run = spike(&w, &[&a, &keeper, &hang_up, &b], &["secret", "list"], b"").await;
    assert_eq!(run.code, EXIT_CONNECTION, "{}", run.stderr);
    assert!(run.stdout.is_empty());
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines[0], "Error: Failed to connect to SPIKE Nexus at any of its 4 URLs:",
        "{}",
        run.stderr
    );
    assert!(
        lines[1].starts_with(&format!("  {a}: cannot connect to {a}")),
        "{}",
        run.stderr
    );
    assert!(
        lines[2].starts_with(&format!("  {keeper}: TLS handshake with {keeper} failed"))
            && lines[2].contains("spike/keeper/1"),
        "{}",
        run.stderr
    );
    assert!(
        lines[3].starts_with(&format!("  {hang_up}: TLS handshake with {hang_up} failed")),
        "{}",
        run.stderr
    );
    assert!(
        lines[4].starts_with(&format!("  {b}: cannot connect to {b}")),
        "{}",
        run.stderr
    );
    assert_eq!(lines.len(), 5, "{}", run.stderr);

    // One URL: the message is the one it always was.
    let run = spike(&w, &[&a], &["secret", "list"], b"").await;
    assert_eq!(run.code, EXIT_CONNECTION);
    assert!(
        run.stderr.starts_with(&format!(
            "Error: Failed to connect to SPIKE Nexus at {a}: cannot connect to {a}"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);

    hang_up_task.abort();
    for k in keepers {
        k.stop().await.unwrap();
    }
}
