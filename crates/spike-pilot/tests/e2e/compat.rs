//! Compatibility with SPIKE's Go clients: the Go SDK program (compat/sdk-client on
//! spike-sdk-go) and SPIKE's Go CLI, both built by compat/build.sh and cached outside the
//! repository.
//!
//! They run only when the binaries can be had: `go` on PATH and compat/build.sh succeeding.
//! `SPIKE_REQUIRE_GO_COMPAT=1` (CI) turns a missing Go toolchain or a failed SDK build into a
//! failure. SPIKE's Go CLI is only built when the Go module proxy serves
//! github.com/spiffe/spike; its absence fails only under `SPIKE_REQUIRE_GO_CLI=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::cli::{Cli, CliKind, script};
use crate::world::{Cluster, RECOVER, RESTORE, SUPERUSER, TRUST_DOMAIN, World, shard_texts};

fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Skips (with a note) or, when `required`, fails.
fn unavailable(required: bool, why: &str) -> Option<PathBuf> {
    assert!(!required, "Go compatibility test required but {why}");
    eprintln!("NOTE: skipping a Go compatibility test: {why}");
    None
}

/// Runs a Go build script of this repository (`go` on PATH) and returns its stdout, trimmed:
/// the path it built.
fn go_build(script: &str) -> Result<PathBuf, String> {
    let go = Command::new("go").arg("version").output();
    if !go.is_ok_and(|o| o.status.success()) {
        return Err("`go` is not on PATH".to_owned());
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(script);
    let out = Command::new("bash")
        .arg(&path)
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("{script} failed: {stderr}"));
    }
    eprint!("{stderr}");
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The compat bin directory (built on first use), or `None` to skip.
fn build() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(|| go_build("compat/build.sh")).clone()
}

/// The Go SDK program, or `None` to skip.
pub(crate) fn sdk_client() -> Option<PathBuf> {
    let required = flag("SPIKE_REQUIRE_GO_COMPAT");
    match build() {
        Ok(dir) if dir.join("sdk-client").is_file() => Some(dir.join("sdk-client")),
        Ok(dir) => unavailable(
            required,
            &format!("no sdk-client in {} after compat/build.sh", dir.display()),
        ),
        Err(why) => unavailable(required, &why),
    }
}

/// SPIKE's Go CLI, or `None` to skip.
pub(crate) fn go_cli() -> Option<PathBuf> {
    let required = flag("SPIKE_REQUIRE_GO_CLI");
    match build() {
        Ok(dir) if dir.join("spike").is_file() => Some(dir.join("spike")),
        Ok(dir) => {
            let why = std::fs::read_to_string(dir.join("spike-cli.unavailable"))
                .unwrap_or_else(|_| "compat/build.sh did not build it".to_owned());
            unavailable(required, &format!("SPIKE's Go CLI is not available: {why}"))
        }
        Err(why) => unavailable(required || flag("SPIKE_REQUIRE_GO_COMPAT"), &why),
    }
}

/// Runs one sdk-client subcommand as `role`; requires exit 0 and returns the `ok` lines.
async fn sdk(cli: &Cli<'_>, role: &str, cluster: &Cluster, args: &[&str]) -> Vec<String> {
    let run = cli.run(role, &cluster.nexus, args, b"").await;
    let out = run.stdout_text();
    println!("sdk-client {}:\n{out}", args.join(" "));
    assert_eq!(
        run.code, 0,
        "sdk-client {args:?} failed against our Nexus:\nstdout:\n{out}\nstderr:\n{}",
        run.stderr
    );
    out.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_sdk_against_our_nexus() {
    let Some(program) = sdk_client() else { return };
    let w = World::new();
    let cli = Cli::new(CliKind::Go(program), &w);

    // Sealed and never bootstrapped: the SDK sees state_not_ready.
    let cluster = Cluster::start(&w, "sdk").await;
    sdk(&cli, SUPERUSER, &cluster, &["not-ready"]).await;

    let key = w.bootstrap(&cluster.keepers).await;
    cluster
        .nexus
        .wait_unsealed(Duration::from_secs(30))
        .await
        .unwrap();

    let lines = sdk(&cli, SUPERUSER, &cluster, &["secrets", "compat/sdk/db"]).await;
    assert!(lines.contains(&"ok secret undelete all".to_owned()));
    let lines = sdk(&cli, SUPERUSER, &cluster, &["policies", "compat-sdk"]).await;
    assert!(lines.contains(&"ok policy list after delete".to_owned()));
    let lines = sdk(&cli, SUPERUSER, &cluster, &["cipher"]).await;
    assert!(lines.contains(&"ok cipher encrypt json".to_owned()));

    // Recover writes exactly the shards of the root key.
    let dir = w.path("sdk-recover");
    let dir_text = dir.to_str().unwrap().to_owned();
    sdk(&cli, RECOVER, &cluster, &["recover", &dir_text]).await;
    for (id, text) in shard_texts(&key) {
        let got = std::fs::read_to_string(dir.join(format!("spike.recovery.{id}.txt"))).unwrap();
        assert_eq!(got, text, "shard {id}");
    }

    // Restore on a restarted Nexus with empty keepers: threshold shards unseal it.
    let cluster = cluster.restart_with_empty_keepers(&w).await;
    sdk(&cli, SUPERUSER, &cluster, &["not-ready"]).await;
    let files: Vec<String> = [2, 3]
        .iter()
        .map(|id| {
            dir.join(format!("spike.recovery.{id}.txt"))
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let lines = sdk(&cli, RESTORE, &cluster, &["restore", &files[0], &files[1]]).await;
    assert_eq!(
        lines,
        [
            "ok operator restore collected=1 remaining=1 restored=false",
            "ok operator restore collected=2 remaining=0 restored=true",
        ]
    );
    assert!(cluster.nexus.state.is_unsealed());
    // The restored Nexus serves the SDK again.
    sdk(
        &cli,
        SUPERUSER,
        &cluster,
        &["secrets", "compat/sdk/after-restore"],
    )
    .await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_cli_script_against_our_nexus() {
    let Some(program) = go_cli() else { return };
    let w = World::new();
    let (cluster, key) = Cluster::bootstrapped(&w, "go-cli").await;
    let cli = Cli::new(CliKind::Go(program), &w);
    script(&cli, &w, cluster, &key).await.stop().await;
}

/// tools/go-bench, the neutral Go load generator of the side-by-side (docs/benchmarks.md),
/// built by its build.sh and cached outside the repository; `None` to skip (as for the SDK
/// program, `SPIKE_REQUIRE_GO_COMPAT=1` makes a missing Go or a failed build a failure).
fn go_bench() -> Option<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let required = flag("SPIKE_REQUIRE_GO_COMPAT");
    let built = BUILT.get_or_init(|| go_build("tools/go-bench/build.sh"));
    match built {
        Ok(path) if path.is_file() => Some(path.clone()),
        Ok(path) => unavailable(required, &format!("no go-bench at {}", path.display())),
        Err(why) => unavailable(required, why),
    }
}

/// go-bench drives our Nexus without an error: fresh puts, then gets and new versions of the
/// secrets it wrote, each for a second, as the Pilot superuser; its report counts requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_bench_against_our_nexus() {
    let Some(program) = go_bench() else { return };
    let w = World::new();
    let (cluster, _key) = Cluster::bootstrapped(&w, "gobench").await;
    let cli = Cli::new(CliKind::Go(program), &w);
    let url = cluster.nexus.url();
    let server_id = format!("spiffe://{TRUST_DOMAIN}/spike/nexus");
    for args in [
        &["--workload", "put-fresh"][..],
        &["--workload", "get", "--secrets", "20"],
        &[
            "--workload",
            "put-versions",
            "--secrets",
            "20",
            "--no-populate",
        ],
        &[
            "--workload",
            "get",
            "--secrets",
            "20",
            "--no-populate",
            "--no-keepalive",
        ],
    ] {
        let mut full = vec![
            "--url",
            &url,
            "--server-id",
            &server_id,
            "--connections",
            "2",
            "--duration",
            "1s",
            "--json",
        ];
        full.extend_from_slice(args);
        let run = cli.run(SUPERUSER, &cluster.nexus, &full, b"").await;
        assert_eq!(run.code, 0, "go-bench {args:?}: {}", run.stderr);
        let report: serde_json::Value = serde_json::from_str(&run.stdout_text())
            .unwrap_or_else(|e| panic!("go-bench {args:?} printed no JSON report: {e}"));
        println!("go-bench {args:?}: {report}");
        assert_eq!(report["errors"], 0, "go-bench {args:?}: {report}");
        assert!(
            report["requests"].as_u64().is_some_and(|n| n > 10),
            "go-bench {args:?}: {report}"
        );
    }
    // A server that presents another SPIFFE ID is refused: the Go client authorizes it.
    let run = cli
        .run(
            SUPERUSER,
            &cluster.nexus,
            &[
                "--url",
                &url,
                "--server-id",
                &format!("spiffe://{TRUST_DOMAIN}/not/nexus"),
                "--duration",
                "1s",
                "--json",
            ],
            b"",
        )
        .await;
    assert_ne!(
        run.code,
        0,
        "go-bench accepted a Nexus with the wrong SPIFFE ID: {}",
        run.stdout_text()
    );
}
