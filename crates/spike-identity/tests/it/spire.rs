//! Real SPIRE: a SPIRE server and agent (v1.13.3, built by `scripts/build-spire.sh`) issue two
//! workload identities; two spike-identity endpoints complete mutual TLS, each checking the
//! other's SPIFFE ID, and a handshake with an unexpected peer ID fails.
//!
//! Needs `SPIKE_SPIRE_BIN` (the directory with `spire-server` and `spire-agent`). Without it
//! the test is skipped, unless `SPIKE_REQUIRE_SPIRE=1` (set by `scripts/test.sh`), which turns
//! the missing binaries into a failure.

use std::net::TcpListener as StdTcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TRUST_DOMAIN: &str = "spike.test";

/// A running SPIRE server and agent in a temporary directory. Killed on drop.
struct Spire {
    bin: PathBuf,
    dir: tempfile::TempDir,
    server: Child,
    agent: Option<Child>,
    parent_id: String,
}

impl Drop for Spire {
    fn drop(&mut self) {
        if let Some(agent) = self.agent.as_mut() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn spire_bin() -> Option<PathBuf> {
    match std::env::var_os("SPIKE_SPIRE_BIN") {
        Some(dir) => Some(PathBuf::from(dir)),
        None if std::env::var("SPIKE_REQUIRE_SPIRE").as_deref() == Ok("1") => {
            panic!(
                "SPIKE_REQUIRE_SPIRE=1 but SPIKE_SPIRE_BIN is not set (run scripts/build-spire.sh)"
            )
        }
        None => None,
    }
}

fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl Spire {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server_cmd(&self) -> Command {
        let mut c = Command::new(self.bin.join("spire-server"));
        c.stdin(Stdio::null());
        c
    }

    fn server_socket(&self) -> String {
        self.path("server.sock").display().to_string()
    }

    /// The Workload API endpoint of the agent, as a `unix:` URI.
    fn workload_endpoint(&self) -> String {
        format!("unix:{}", self.path("agent.sock").display())
    }

    async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
        for _ in 0..300 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("timed out waiting for {what}");
    }

    async fn start(bin: &Path) -> Spire {
        let dir = tempfile::Builder::new()
            .prefix("spire")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let port = free_port();
        std::fs::write(
            d.join("server.conf"),
            format!(
                r#"server {{
    bind_address = "127.0.0.1"
    bind_port = "{port}"
    socket_path = "{d}/server.sock"
    trust_domain = "{TRUST_DOMAIN}"
    data_dir = "{d}/server-data"
    log_level = "WARN"
    default_x509_svid_ttl = "1h"
}}
plugins {{
    DataStore "sql" {{
        plugin_data {{
            database_type = "sqlite3"
            connection_string = "{d}/server-data/datastore.sqlite3"
        }}
    }}
    KeyManager "memory" {{
        plugin_data {{}}
    }}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
}}
"#,
                d = d.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("agent.conf"),
            format!(
                r#"agent {{
    data_dir = "{d}/agent-data"
    log_level = "WARN"
    server_address = "127.0.0.1"
    server_port = "{port}"
    socket_path = "{d}/agent.sock"
    trust_bundle_path = "{d}/bundle.pem"
    trust_domain = "{TRUST_DOMAIN}"
}}
plugins {{
    KeyManager "memory" {{
        plugin_data {{}}
    }}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    WorkloadAttestor "unix" {{
        plugin_data {{}}
    }}
}}
"#,
                d = d.display()
            ),
        )
        .unwrap();

        let server = Command::new(bin.join("spire-server"))
            .arg("run")
            .arg("-config")
            .arg(d.join("server.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("server.log")).unwrap())
            .spawn()
            .unwrap();
        let mut spire = Spire {
            bin: bin.to_owned(),
            dir,
            server,
            agent: None,
            parent_id: String::new(),
        };

        let sock = spire.server_socket();
        let bin_server = spire.bin.join("spire-server");
        Self::wait_until("spire-server healthcheck", || {
            Command::new(&bin_server)
                .args(["healthcheck", "-socketPath", &sock])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
        .await;

        let bundle = run_ok(
            spire
                .server_cmd()
                .args(["bundle", "show", "-socketPath", &sock]),
        );
        std::fs::write(spire.path("bundle.pem"), bundle).unwrap();
        let token_out = run_ok(spire.server_cmd().args([
            "token",
            "generate",
            "-socketPath",
            &sock,
            "-ttl",
            "600",
        ]));
        // The first line is `Token: <uuid>`; a warning about the missing alias may follow.
        let token = token_out
            .lines()
            .find_map(|line| line.trim().strip_prefix("Token: "))
            .unwrap_or_else(|| panic!("unexpected token output: {token_out}"))
            .to_owned();
        spire.parent_id = format!("spiffe://{TRUST_DOMAIN}/spire/agent/join_token/{token}");

        let agent = Command::new(spire.bin.join("spire-agent"))
            .arg("run")
            .arg("-config")
            .arg(spire.path("agent.conf"))
            .arg("-joinToken")
            .arg(&token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(spire.path("agent.log")).unwrap())
            .spawn()
            .unwrap();
        spire.agent = Some(agent);
        let agent_sock = spire.path("agent.sock").display().to_string();
        let bin_agent = spire.bin.join("spire-agent");
        Self::wait_until("spire-agent healthcheck", || {
            Command::new(&bin_agent)
                .args(["healthcheck", "-socketPath", &agent_sock])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
        .await;
        spire
    }

    /// Register `spiffe://<td>/<path>` for workloads running with this process's uid.
    fn register(&self, path: &str) -> String {
        let id = format!("spiffe://{TRUST_DOMAIN}/{path}");
        let uid = nix::unistd::getuid().as_raw();
        run_ok(self.server_cmd().args([
            "entry",
            "create",
            "-socketPath",
            &self.server_socket(),
            "-parentID",
            &self.parent_id,
            "-spiffeID",
            &id,
            "-selector",
            &format!("unix:uid:{uid}"),
        ]));
        id
    }

    fn logs(&self) -> String {
        let read = |n| std::fs::read_to_string(self.path(n)).unwrap_or_default();
        format!(
            "--- server.log\n{}\n--- agent.log\n{}",
            read("server.log"),
            read("agent.log")
        )
    }
}

use spike_identity::{Identity, IdentityOptions, MtlsAcceptor, MtlsConnector, SpiffeId};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn connect_as(spire: &Spire, id: &str) -> Identity {
    let result = Identity::connect_with(IdentityOptions {
        endpoint: Some(spire.workload_endpoint()),
        // SPIRE's agent syncs new entries every few seconds; allow for it.
        timeout: Duration::from_secs(60),
        expected_id: Some(SpiffeId::new(id).unwrap()),
        ..IdentityOptions::default()
    })
    .await;
    match result {
        Ok(identity) => identity,
        Err(e) => panic!(
            "no SVID for {id} from the real SPIRE agent: {e}\n{}",
            spire.logs()
        ),
    }
}

/// One mutual-TLS exchange over real TCP: the server requires `client_must_be`, the client
/// requires `server_must_be`. Returns what each side saw as its peer (or the error).
async fn exchange(
    server: &Identity,
    client: &Identity,
    client_must_be: &str,
    server_must_be: &str,
) -> (Result<String, String>, Result<String, String>) {
    let want_client = SpiffeId::new(client_must_be).unwrap();
    let want_server = SpiffeId::new(server_must_be).unwrap();
    let server_cfg = server
        .server_config(move |peer: &SpiffeId| *peer == want_client)
        .unwrap();
    let client_cfg = client
        .client_config(move |peer: &SpiffeId| *peer == want_server)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = MtlsAcceptor::new(server_cfg, Duration::from_secs(10));
    let connector = MtlsConnector::new(client_cfg, Duration::from_secs(10));

    let server_side = async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let (mut tls, peer) = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"ping");
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer.to_string())
    };
    let client_side = async move {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let (mut tls, peer) = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"pong");
        Ok::<_, String>(peer.to_string())
    };
    tokio::join!(server_side, client_side)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_spire_issues_identities_for_mutual_tls() {
    let Some(bin) = spire_bin() else {
        eprintln!("skipped: SPIKE_SPIRE_BIN is not set (scripts/build-spire.sh builds SPIRE)");
        return;
    };
    let spire = Spire::start(&bin).await;
    let nexus = spire.register("spike/nexus");
    let pilot = spire.register("spike/pilot/role/superuser");

    // Both identities come from the same agent; each endpoint picks its own SVID by ID.
    let server = connect_as(&spire, &nexus).await;
    let client = connect_as(&spire, &pilot).await;
    assert_eq!(server.own_id().to_string(), nexus);
    assert_eq!(client.own_id().to_string(), pilot);

    // Each side checks the other's SPIFFE ID, and each sees the other's.
    let (seen_by_server, seen_by_client) = exchange(&server, &client, &pilot, &nexus).await;
    assert_eq!(
        seen_by_server.as_deref(),
        Ok(pilot.as_str()),
        "{}",
        spire.logs()
    );
    assert_eq!(seen_by_client.as_deref(), Ok(nexus.as_str()));

    // The client expects a keeper, but the server presents the Nexus SVID: no handshake.
    let keeper = format!("spiffe://{TRUST_DOMAIN}/spike/keeper");
    let (_, seen_by_client) = exchange(&server, &client, &pilot, &keeper).await;
    assert!(
        seen_by_client.is_err(),
        "client accepted an unexpected server ID: {seen_by_client:?}"
    );

    // The server expects a keeper as client, but the pilot SVID arrives: rejected server-side.
    let (seen_by_server, _) = exchange(&server, &client, &keeper, &nexus).await;
    assert!(
        seen_by_server.is_err(),
        "server accepted an unexpected client ID: {seen_by_server:?}"
    );

    server.shutdown().await;
    client.shutdown().await;
}
