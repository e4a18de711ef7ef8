//! Running a `spike` CLI as a child process, and the script every CLI must pass against our
//! Nexus: our binary, or SPIKE's Go CLI when it could be built.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use spike_crypto::RootKey;
use tokio::io::AsyncWriteExt as _;

use crate::world::{
    Cluster, NexusHandle, RECOVER, RESTORE, SUPERUSER, TRUST_DOMAIN, World, eventually, shard_texts,
};

/// Which CLI runs.
#[derive(Debug, Clone)]
pub(crate) enum CliKind {
    /// Our `spike` binary; picks its SVID from the shared Workload API server with
    /// `SPIKE_PILOT_SPIFFE_ID`.
    Ours,
    /// SPIKE's Go CLI at this path; takes the first SVID, so it gets a Workload API server
    /// serving only the role it runs as.
    Go(PathBuf),
}

/// What one run produced.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// A CLI bound to a world and a private home directory.
pub(crate) struct Cli<'w> {
    pub(crate) kind: CliKind,
    world: &'w World,
    home: tempfile::TempDir,
}

impl<'w> Cli<'w> {
    pub(crate) fn new(kind: CliKind, world: &'w World) -> Self {
        Cli {
            kind,
            world,
            home: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn is_ours(&self) -> bool {
        matches!(self.kind, CliKind::Ours)
    }

    /// `$SPIKE_PILOT_RECOVERY_DIR/recover`.
    pub(crate) fn recovery_dir(&self) -> PathBuf {
        self.home.path().join("recovery").join("recover")
    }

    /// Runs `spike <args>` as `role` against `nexus`, with `stdin`; at most 60 s.
    pub(crate) async fn run(
        &self,
        role: &str,
        nexus: &NexusHandle,
        args: &[&str],
        stdin: &[u8],
    ) -> Run {
        let (program, endpoint) = match &self.kind {
            CliKind::Ours => (
                PathBuf::from(env!("CARGO_BIN_EXE_spike")),
                self.world.endpoint(),
            ),
            CliKind::Go(path) => (path.clone(), self.world.role_endpoint(role)),
        };
        let home = self.home.path();
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home)
            .env("SPIFFE_ENDPOINT_SOCKET", endpoint)
            .env("SPIKE_NEXUS_API_URL", nexus.url())
            .env("SPIKE_SPIFFE_SOURCE_TIMEOUT", "10s")
            .env("SPIKE_PILOT_RECOVERY_DIR", home.join("recovery"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for var in [
            "SPIKE_TRUST_ROOT",
            "SPIKE_TRUST_ROOT_NEXUS",
            "SPIKE_TRUST_ROOT_PILOT",
            "SPIKE_TRUST_ROOT_KEEPER",
            "SPIKE_TRUST_ROOT_BOOTSTRAP",
            "SPIKE_TRUST_ROOT_LITE_WORKLOAD",
        ] {
            cmd.env(var, TRUST_DOMAIN);
        }
        if self.is_ours() {
            cmd.env("SPIKE_PILOT_SPIFFE_ID", self.world.id(role));
        }
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin).await.unwrap();
        drop(input);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("spike {args:?} did not finish within 60 s"))
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and requires success: exit 0 and no `Error` on stderr (SPIKE's Go CLI exits 0
    /// after API errors, so stderr is what tells). Returns stdout as text.
    pub(crate) async fn ok(
        &self,
        role: &str,
        nexus: &NexusHandle,
        args: &[&str],
        stdin: &[u8],
    ) -> String {
        let run = self.run(role, nexus, args, stdin).await;
        assert!(
            run.code == 0 && !run.stderr.contains("Error"),
            "{:?}: spike {args:?} failed: exit {}, stdout {:?}, stderr {:?}",
            self.kind,
            run.code,
            run.stdout_text(),
            run.stderr
        );
        run.stdout_text()
    }

    /// Like [`Self::ok`] and checks that stdout contains every one of `expected`.
    pub(crate) async fn expect(
        &self,
        role: &str,
        nexus: &NexusHandle,
        args: &[&str],
        stdin: &[u8],
        expected: &[&str],
    ) -> String {
        let out = self.ok(role, nexus, args, stdin).await;
        for e in expected {
            assert!(
                out.contains(e),
                "{:?}: spike {args:?}: {e:?} not in stdout {out:?}",
                self.kind
            );
        }
        out
    }
}

const PATH: &str = "compat/cli/db";
const POLICY: &str = "compat-cli";
const ID_PATTERN: &str = "^spiffe://spike.test/app/.*$";
const PATH_PATTERN: &str = "^compat/app/.*$";

/// The shared script: secrets, policies, cipher, then operator recover on `cluster` and a
/// real restore on the same database after a restart with empty keepers. `key` is the root
/// key `cluster` was bootstrapped with. Returns the restored cluster.
pub(crate) async fn script(cli: &Cli<'_>, w: &World, cluster: Cluster, key: &RootKey) -> Cluster {
    let su = SUPERUSER;
    let n = &cluster.nexus;

    // --- secrets
    cli.expect(
        su,
        n,
        &["secret", "put", PATH, "user=u1", "pass=p1"],
        b"",
        &["OK"],
    )
    .await;
    cli.expect(su, n, &["secret", "put", PATH, "user=u2"], b"", &["OK"])
        .await;
    let out = cli.ok(su, n, &["secret", "get", PATH], b"").await;
    assert_eq!(out, "user: u2\n");
    let out = cli
        .ok(su, n, &["secret", "get", PATH, "-v", "1", "pass"], b"")
        .await;
    assert_eq!(out, "p1\n");
    cli.expect(su, n, &["secret", "list"], b"", &[&format!("- {PATH}\n")])
        .await;
    cli.expect(
        su,
        n,
        &["secret", "metadata", "get", PATH],
        b"",
        &[
            "Current Version: 2",
            "Oldest Version: 1",
            "Version 1:",
            "Version 2:",
        ],
    )
    .await;
    // deleting the current version makes version 1 current
    cli.expect(su, n, &["secret", "delete", PATH], b"", &["OK"])
        .await;
    let out = cli.ok(su, n, &["secret", "get", PATH, "user"], b"").await;
    assert_eq!(out, "u1\n");
    let out = cli
        .ok(su, n, &["secret", "metadata", "get", PATH, "-v", "1"], b"")
        .await;
    assert!(out.contains("Deleted:"), "{out}");
    cli.expect(
        su,
        n,
        &["secret", "undelete", PATH, "-v", "2"],
        b"",
        &["OK"],
    )
    .await;
    let out = cli.ok(su, n, &["secret", "get", PATH, "user"], b"").await;
    assert_eq!(out, "u2\n");

    // --- policies
    let create = [
        "policy",
        "create",
        "--name",
        POLICY,
        "--path-pattern",
        PATH_PATTERN,
        "--spiffeid-pattern",
        ID_PATTERN,
        "--permissions",
        "read,list",
    ];
    cli.expect(su, n, &create, b"", &["Policy created successfully."])
        .await;
    cli.expect(
        su,
        n,
        &["policy", "list"],
        b"",
        &[&format!("Name: {POLICY}\n")],
    )
    .await;
    cli.expect(
        su,
        n,
        &["policy", "list", "--spiffeid-pattern", ID_PATTERN],
        b"",
        &[&format!("Name: {POLICY}\n")],
    )
    .await;
    cli.expect(
        su,
        n,
        &["policy", "get", POLICY],
        b"",
        &[
            &format!("Name: {POLICY}\n"),
            &format!("SPIFFE ID Pattern: {ID_PATTERN}\n"),
            &format!("Path Pattern: {PATH_PATTERN}\n"),
            "Permissions: read, list\n",
        ],
    )
    .await;
    cli.expect(
        su,
        n,
        &["policy", "delete", POLICY],
        b"y\n",
        &["Policy deleted successfully."],
    )
    .await;
    let out = cli.ok(su, n, &["policy", "list"], b"").await;
    assert!(!out.contains(POLICY), "{out}");

    // --- cipher: echo data | spike cipher encrypt | spike cipher decrypt
    let data: &[u8] = b"compat data \x00\x01\xfe\xff\nsecond line\n";
    let run = cli.run(su, n, &["cipher", "encrypt"], data).await;
    assert_eq!(
        run.code, 0,
        "{:?}: cipher encrypt: {}",
        cli.kind, run.stderr
    );
    assert_eq!(run.stdout.len(), 1 + 12 + data.len() + 16);
    assert_eq!(run.stdout[0], 1, "cipher version byte");
    let ciphertext = run.stdout;
    let run = cli.run(su, n, &["cipher", "decrypt"], &ciphertext).await;
    assert_eq!(
        run.code, 0,
        "{:?}: cipher decrypt: {}",
        cli.kind, run.stderr
    );
    assert_eq!(run.stdout, data, "decrypt(encrypt(data)) is byte-exact");

    // --- operator recover: one file per shard, exactly the shards of the root key
    // SPIKE's Go CLI needs the directory to exist; ours refuses one open to group or others.
    let dir = cli.recovery_dir();
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .unwrap();
    }
    cli.expect(
        RECOVER,
        n,
        &["operator", "recover"],
        b"",
        // Our guidance names the files; the Go CLI's wording is not checked.
        if cli.is_ours() {
            &["spike.recovery"]
        } else {
            &[]
        },
    )
    .await;
    let expected = shard_texts(key);
    for (id, text) in &expected {
        let file = dir.join(format!("spike.recovery.{id}.txt"));
        let got = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{:?}: {}: {e}", cli.kind, file.display()));
        assert_eq!(&got, text, "{:?}: shard {id}", cli.kind);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&file).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }

    // --- operator restore on a restarted Nexus whose keepers are empty
    let cluster = cluster.restart_with_empty_keepers(w).await;
    let n = &cluster.nexus;
    assert!(!n.state.is_unsealed());
    let run = cli.run(su, n, &["secret", "get", PATH], b"").await;
    assert!(
        run.stdout.is_empty(),
        "{:?}: {}",
        cli.kind,
        run.stdout_text()
    );
    assert!(
        run.stderr.contains("not ready"),
        "{:?}: {}",
        cli.kind,
        run.stderr
    );
    if matches!(cli.kind, CliKind::Ours) {
        // Sealed with data after a "power cut": the way out is named, with exit status 4.
        assert_eq!(run.code, 4, "{}", run.stderr);
        assert!(
            run.stderr
                .contains("Nexus has data but its root key is not in memory")
                && run.stderr.contains("spike-operator restore DIR"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("not initialized"), "{}", run.stderr);
    }
    let shard = |id: u16| std::fs::read(dir.join(format!("spike.recovery.{id}.txt"))).unwrap();
    cli.expect(
        RESTORE,
        n,
        &["operator", "restore"],
        &shard(1),
        &["Shards collected:  1", "Shards remaining:  1"],
    )
    .await;
    cli.expect(
        RESTORE,
        n,
        &["operator", "restore"],
        &shard(3),
        &["SPIKE is now restored and ready to use."],
    )
    .await;
    assert!(n.state.is_unsealed());
    let out = cli.ok(su, n, &["secret", "get", PATH, "user"], b"").await;
    assert_eq!(out, "u2\n", "the data survived the restart");
    // Nexus re-seeds the empty keepers with their shards.
    let stores: Vec<_> = cluster.keepers.iter().map(|k| k.store.clone()).collect();
    eventually(20, "keepers re-seeded after restore", || {
        stores.iter().all(|s| s.get().is_some())
    })
    .await;
    cluster
}
