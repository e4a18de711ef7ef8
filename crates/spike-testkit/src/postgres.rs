//! Throwaway PostgreSQL clusters for integration tests: `initdb` + `postgres` in a temporary
//! directory, optionally with TLS on 127.0.0.1 and a synchronous streaming standby.
//!
//! # Layout
//!
//! - [`PgCluster`]: one primary (and optionally one standby) in its own temporary directory,
//!   which is also the unix socket directory. [`PgCluster::shared`] is one cluster per test
//!   binary; each test takes its own database with [`PgCluster::create_database`].
//! - [`PgOptions`]: TLS and standby switches for [`PgCluster::start_with`].
//!
//! # How the servers run
//!
//! The binaries come from `SPIKE_PG_BINDIR`, else from the highest
//! `/usr/lib/postgresql/<version>/bin` that has `initdb` (Debian's layout;
//! `scripts/install-deps.sh` installs it). PostgreSQL refuses to run as root, so when the test
//! process is root every PostgreSQL program runs as the system user [`PG_TEST_USER`] (created
//! on first use) through `runuser`; otherwise it runs as the current user.
//!
//! Each server is started in the foreground under a small `sh` wrapper whose stdin is a pipe
//! held by the test process. The wrapper waits for a line on that pipe: end of file (the test
//! process dropped the cluster, or died, even by `SIGKILL`, or a `static` was never dropped)
//! sends `SIGQUIT` (immediate shutdown) to the server and removes the temporary directory, so no
//! server outlives its test process.
//!
//! The servers run with `fsync = off` (fast; [`PgCluster::stop_immediate`] is a process
//! crash, so the page cache survives it) and `shared_buffers = 16MB`.
//!
//! # Authentication
//!
//! Clients connect as the role `spike` (`LOGIN CREATEDB`, owner of every database
//! [`PgCluster::create_database`] makes):
//!
//! - over the unix socket with peer authentication: a `pg_ident.conf` map lets the test
//!   process's OS user (root in CI) log in as `spike` ([`PgCluster::conninfo`]);
//! - with [`PgOptions::tls`], also over TCP on 127.0.0.1 with TLS and SCRAM-SHA-256 using a
//!   generated password ([`PgCluster::tls_conninfo`]); the server certificate is issued by a
//!   fresh CA ([`PgCluster::ca_pem`]) for `IP:127.0.0.1` and `DNS:localhost`. Every other
//!   TCP connection is rejected.
//!
//! # Use from another crate's tests
//!
//! ```no_run
//! use spike_testkit::{PgCluster, PgOptions};
//!
//! // Most tests: the binary's shared cluster and a database of their own.
//! let pg = PgCluster::shared()?;
//! let db = pg.create_database()?;
//! let conninfo = pg.conninfo(&db); // e.g. tokio_postgres::connect(&conninfo, NoTls)
//! assert_eq!(pg.psql(&db, "select 1")?, "1");
//!
//! // Failover tests: a cluster of their own with a synchronous standby.
//! let ha = PgCluster::start_with(PgOptions::new().standby(true))?;
//! let db = ha.create_database()?;
//! let multi = ha.multi_host_conninfo(&db); // Some("host=…,… port=…,… … target_session_attrs=read-write")
//! ha.stop_immediate()?;
//! ha.promote_standby()?;
//! # let _ = (conninfo, multi);
//! # Ok::<(), spike_testkit::TestkitError>(())
//! ```
//!
//! # Blocking
//!
//! The API is synchronous and waits for the servers (starting a cluster takes about a
//! second; a standby a few more). From async tests call it from `spawn_blocking`, or accept
//! that it blocks one runtime thread.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::TestkitError;

/// The system user PostgreSQL runs as when the test process is root.
pub const PG_TEST_USER: &str = "spike-pgtest";
/// The role tests connect as.
pub const PG_ROLE: &str = "spike";
/// The `application_name` (and `synchronous_standby_names` entry) of the standby.
pub const STANDBY_NAME: &str = "standby1";
/// Environment variable naming the directory of `initdb`, `postgres`, `pg_ctl`, ….
pub const BINDIR_ENV: &str = "SPIKE_PG_BINDIR";

/// Debian's layout: `/usr/lib/postgresql/<major>/bin`.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";
const SLOT_NAME: &str = "standby1_slot";
/// Longest unix socket path Linux accepts (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// Poll interval while waiting for a server.
const POLL: Duration = Duration::from_millis(100);
/// Polls before a server start, a promotion or replication counts as failed (60 s).
const WAIT_POLLS: u32 = 600;
/// Seconds before a harness command (`psql`, `pg_ctl`, `initdb`, …) is killed.
const COMMAND_TIMEOUT_SECS: u32 = 120;

/// The wrapper that runs `postgres` in the foreground and ties its life to the pipe on stdin.
///
/// Arguments: postgres binary, data dir, port, log file, directory to remove on EOF. It
/// prints the server's pid, then waits for a line: `keep` (the harness already stopped the
/// server; the data stays), `kill` (immediate shutdown; the data stays) or end of file
/// (immediate shutdown, then the whole cluster directory is removed).
const WRAPPER: &str = r#"bin=$1 data=$2 port=$3 log=$4 root=$5
"$bin" -D "$data" -p "$port" </dev/null >>"$log" 2>&1 &
pid=$!
echo "$pid"
read -r cmd
case $cmd in keep) ;; *) kill -QUIT "$pid" 2>/dev/null ;; esac
wait "$pid"
[ -n "$cmd" ] || rm -rf "$root"
"#;

/// What [`PgCluster::start_with`] sets up besides the unix-socket primary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgOptions {
    /// Also listen on 127.0.0.1 with TLS and SCRAM-SHA-256 (see [`PgCluster::tls_conninfo`]).
    pub tls: bool,
    /// Add a synchronous streaming standby ([`STANDBY_NAME`]) on its own port.
    pub standby: bool,
    /// Keep PostgreSQL's durable defaults (`fsync = on`, `shared_buffers = 128MB`) instead
    /// of the fast test settings: for benchmarks that compare with a durable SQLite.
    pub durable: bool,
}

impl PgOptions {
    /// No TLS, no standby (the same as [`PgOptions::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`PgOptions::durable`].
    #[must_use]
    pub fn durable(mut self, on: bool) -> Self {
        self.durable = on;
        self
    }

    /// Sets [`PgOptions::tls`].
    #[must_use]
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Sets [`PgOptions::standby`].
    #[must_use]
    pub fn standby(mut self, on: bool) -> Self {
        self.standby = on;
        self
    }
}

/// Which server of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Primary,
    Standby,
}

/// Who the PostgreSQL programs run as.
#[derive(Debug, Clone)]
struct RunAs {
    /// OS user (and bootstrap superuser role) of the servers.
    pg_user: String,
    /// OS user of the test process (mapped to the role `spike`).
    test_user: String,
    /// `Some(uid, gid)` when the test process is root and the programs go through `runuser`.
    switch: Option<(u32, u32)>,
}

/// The TLS material and password of a cluster started with [`PgOptions::tls`].
struct Tls {
    ca_pem: String,
    ca_file: PathBuf,
    password: String,
}

/// A running server: the wrapper process and the write end of its stdin pipe.
struct Server {
    wrapper: Child,
    stdin: ChildStdin,
    pid: u32,
}

/// One server of a cluster: data directory, port and (while running) its process.
struct Node {
    role: Role,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    server: Mutex<Option<Server>>,
}

/// A throwaway PostgreSQL cluster: a primary, optionally TLS and a synchronous standby.
///
/// Dropping it stops every server immediately and removes its directory. Methods take `&self`
/// so tests can share a cluster through `Arc` or a `static` ([`PgCluster::shared`]).
pub struct PgCluster {
    bindir: PathBuf,
    run_as: RunAs,
    /// Root of everything: data directories, logs, certificates and the unix sockets.
    dir: tempfile::TempDir,
    primary: Node,
    standby: Option<Node>,
    tls: Option<Tls>,
    next_db: AtomicU64,
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster")
            .field("dir", &self.dir.path())
            .field("port", &self.primary.port)
            .field("standby_port", &self.standby.as_ref().map(|s| s.port))
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl PgCluster {
    /// Starts a cluster with a unix-socket primary only.
    ///
    /// # Errors
    /// [`TestkitError::PostgresNotInstalled`] without PostgreSQL binaries,
    /// [`TestkitError::Postgres`] if a step fails (the message has the server log's tail),
    /// [`TestkitError::Io`] for file errors.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with(PgOptions::default())
    }

    /// Starts a cluster as `options` say.
    ///
    /// # Errors
    /// As [`PgCluster::start`]; also [`TestkitError::Certificate`] with TLS.
    pub fn start_with(options: PgOptions) -> Result<Self, TestkitError> {
        let bindir = find_bindir()?;
        let run_as = run_as()?;
        let dir = tempfile::Builder::new().prefix("spike-pg.").tempdir()?;
        let root = dir.path().to_path_buf();
        let longest = root.join(".s.PGSQL.65535.lock");
        if longest.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(pg_err(format!(
                "socket directory {} is too long for a unix socket; set TMPDIR to a shorter path",
                root.display()
            )));
        }
        let root_str = path_str(&root)?;
        if root_str.contains(['\'', '\\', '\n']) {
            return Err(pg_err(format!("unusable temporary directory {root_str:?}")));
        }
        if let Some((uid, gid)) = run_as.switch {
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))?;
        }

        let mut cluster = Self {
            bindir,
            run_as,
            primary: Node::new(Role::Primary, &root, 0),
            dir,
            standby: None,
            tls: None,
            next_db: AtomicU64::new(1),
        };

        let pg_user = cluster.run_as.pg_user.clone();
        let initdb = cluster.bin("initdb");
        cluster.run(
            cluster.pg_command(&initdb).args([
                "-D".as_ref(),
                cluster.primary.data.as_os_str(),
                "-U".as_ref(),
                pg_user.as_ref(),
                "--auth-local=peer".as_ref(),
                "--auth-host=reject".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
                "--no-instructions".as_ref(),
            ]),
            "initdb",
        )?;

        if options.tls {
            cluster.tls = Some(cluster.write_tls_files()?);
        }
        cluster.write_config(options.tls, options.durable)?;

        let (port, server) = cluster.spawn_with_retry(&cluster.primary)?;
        cluster.primary.port = port;
        *cluster.primary.server.lock() = Some(server);

        let create_role = match &cluster.tls {
            Some(tls) => format!(
                "CREATE ROLE {PG_ROLE} LOGIN CREATEDB PASSWORD '{}'",
                tls.password
            ),
            None => format!("CREATE ROLE {PG_ROLE} LOGIN CREATEDB"),
        };
        cluster.psql("postgres", &create_role)?;

        if options.standby {
            cluster.start_standby()?;
        }
        Ok(cluster)
    }

    /// One unix-socket cluster per test binary, started on first use, for tests that do not
    /// stop or reconfigure the server. Each test should use its own
    /// [`PgCluster::create_database`].
    ///
    /// The cluster is never dropped; its servers stop and its directory is removed when the
    /// test process exits (see the module docs).
    ///
    /// # Errors
    /// [`TestkitError::Postgres`] with the first start's error, on every call.
    pub fn shared() -> Result<&'static PgCluster, TestkitError> {
        static SHARED: OnceLock<Result<PgCluster, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| PgCluster::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| pg_err(format!("shared cluster failed to start: {e}")))
    }

    /// Creates a fresh, uniquely named database owned by `spike` and returns its name.
    ///
    /// # Errors
    /// [`TestkitError::Postgres`] if `CREATE DATABASE` fails.
    pub fn create_database(&self) -> Result<String, TestkitError> {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("spike_test_{n}");
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {name} OWNER {PG_ROLE}"),
        )?;
        Ok(name)
    }

    /// libpq keyword/value connection string for `db` on the primary over the unix socket as
    /// `spike` (peer authentication):
    /// `host=<socket dir> port=<port> user=spike dbname=<db>`.
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host={} port={} user={PG_ROLE} dbname={}",
            conn_value(&self.socket_dir().to_string_lossy()),
            self.primary.port,
            conn_value(db)
        )
    }

    /// libpq connection string for `db` over TCP with TLS and SCRAM-SHA-256:
    /// `host=127.0.0.1 port=<port> user=spike password=<pw> dbname=<db> sslmode=require`.
    ///
    /// Use `sslmode=verify-full` with [`PgCluster::ca_pem`] (or append
    /// `sslrootcert=<`[`PgCluster::ca_file`]`>`) to verify the server. `None` without
    /// [`PgOptions::tls`].
    pub fn tls_conninfo(&self, db: &str) -> Option<String> {
        let tls = self.tls.as_ref()?;
        Some(format!(
            "host=127.0.0.1 port={} user={PG_ROLE} password={} dbname={} sslmode=require",
            self.primary.port,
            tls.password,
            conn_value(db)
        ))
    }

    /// libpq connection string listing the primary then the standby over the unix socket,
    /// with `target_session_attrs=read-write`, so a client lands on whichever is writable.
    /// `None` without [`PgOptions::standby`].
    pub fn multi_host_conninfo(&self, db: &str) -> Option<String> {
        let standby = self.standby.as_ref()?;
        let host = conn_value(&self.socket_dir().to_string_lossy());
        Some(format!(
            "host={host},{host} port={},{} user={PG_ROLE} dbname={} \
             target_session_attrs=read-write",
            self.primary.port,
            standby.port,
            conn_value(db)
        ))
    }

    /// The PEM of the CA that issued the server certificate (TLS mode only).
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// A file holding [`PgCluster::ca_pem`], for libpq's `sslrootcert` (TLS mode only).
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_file.as_path())
    }

    /// The password of `spike` for TCP connections (TLS mode only).
    pub fn password(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.password.as_str())
    }

    /// The unix socket directory (also the cluster's temporary directory).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The primary's port (unix socket and, in TLS mode, TCP on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.primary.port
    }

    /// The standby's port, if there is a standby.
    pub fn standby_port(&self) -> Option<u16> {
        self.standby.as_ref().map(|s| s.port)
    }

    /// The primary's postmaster pid while it runs (for leak checks).
    pub fn primary_pid(&self) -> Option<u32> {
        self.primary.server.lock().as_ref().map(|s| s.pid)
    }

    /// The standby's postmaster pid while it runs (for leak checks).
    pub fn standby_pid(&self) -> Option<u32> {
        self.standby
            .as_ref()
            .and_then(|s| s.server.lock().as_ref().map(|s| s.pid))
    }

    /// The directory of the PostgreSQL programs in use (`psql` there matches the server).
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// Runs `sql` with `psql -X -At -v ON_ERROR_STOP=1 -c` on the primary, as the bootstrap
    /// superuser, and returns its standard output without the trailing newline. Rows are
    /// lines, columns are separated by `|`.
    ///
    /// One `-c` runs as one implicit transaction, so statements that refuse a transaction
    /// block (`ALTER SYSTEM`, `CREATE DATABASE`) must be sent alone; with several statements
    /// psql prints every statement's result (command tags included).
    ///
    /// # Errors
    /// [`TestkitError::Postgres`] with psql's stderr if it fails or times out.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, TestkitError> {
        self.psql_on(&self.primary, db, sql)
    }

    /// [`PgCluster::psql`] against the standby (read-only until promoted).
    ///
    /// # Errors
    /// As [`PgCluster::psql`]; also [`TestkitError::Postgres`] without a standby.
    pub fn psql_standby(&self, db: &str, sql: &str) -> Result<String, TestkitError> {
        self.psql_on(self.standby_node()?, db, sql)
    }

    /// Kills the primary as a crash would (`pg_ctl stop -m immediate`); its data stays for
    /// [`PgCluster::start_again`].
    ///
    /// # Errors
    /// [`TestkitError::Postgres`] if the primary is not running or `pg_ctl` fails.
    pub fn stop_immediate(&self) -> Result<(), TestkitError> {
        let mut guard = self.primary.server.lock();
        let Some(server) = guard.take() else {
            return Err(pg_err("the primary is not running".to_owned()));
        };
        let pg_ctl = self.bin("pg_ctl");
        let stopped = self.run(
            self.pg_command(&pg_ctl)
                .args(["stop", "-m", "immediate", "-w", "-t", "60", "-D"])
                .arg(&self.primary.data),
            "pg_ctl stop -m immediate",
        );
        match stopped {
            Ok(_) => {
                server.release_kept();
                Ok(())
            }
            Err(e) => {
                // Put it back so Drop still stops and removes it.
                *guard = Some(server);
                Err(e)
            }
        }
    }

    /// Starts the primary again on the same data directory and port, after
    /// [`PgCluster::stop_immediate`] (crash recovery runs first).
    ///
    /// # Errors
    /// [`TestkitError::Postgres`] if the primary runs already or does not come up.
    pub fn start_again(&self) -> Result<(), TestkitError> {
        let mut guard = self.primary.server.lock();
        if guard.is_some() {
            return Err(pg_err("the primary is already running".to_owned()));
        }
        *guard = Some(
            self.spawn(&self.primary, self.primary.port)
                .map_err(SpawnError::into_error)?,
        );
        Ok(())
    }

    /// Promotes the standby (`pg_ctl promote`), then clears `synchronous_standby_names` on it
    /// (otherwise every commit on the new primary waits for a standby that does not exist).
    ///
    /// # Errors
    /// [`TestkitError::Postgres`] without a standby or if the promotion fails.
    pub fn promote_standby(&self) -> Result<(), TestkitError> {
        let standby = self.standby_node()?;
        let pg_ctl = self.bin("pg_ctl");
        self.run(
            self.pg_command(&pg_ctl)
                .args(["promote", "-w", "-t", "60", "-D"])
                .arg(&standby.data),
            "pg_ctl promote",
        )?;
        self.psql_on(
            standby,
            "postgres",
            "ALTER SYSTEM SET synchronous_standby_names = ''",
        )?;
        self.psql_on(standby, "postgres", "SELECT pg_reload_conf()")?;
        Ok(())
    }

    // ----- internals -----

    fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    fn standby_node(&self) -> Result<&Node, TestkitError> {
        self.standby
            .as_ref()
            .ok_or_else(|| pg_err("the cluster has no standby".to_owned()))
    }

    /// A command that runs `program` as the PostgreSQL user, killed after
    /// [`COMMAND_TIMEOUT_SECS`], in the cluster directory, without the caller's `PG*`
    /// environment.
    fn pg_command(&self, program: &Path) -> Command {
        let mut cmd = match self.run_as.switch {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", &self.run_as.pg_user, "--"]);
                c
            }
            None => Command::new("env"),
        };
        cmd.args(["timeout", "-k", "5", &COMMAND_TIMEOUT_SECS.to_string()])
            .arg(program)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        scrub_pg_env(&mut cmd);
        cmd
    }

    /// Runs `cmd` to completion; a non-zero exit is an error naming `what` with its stderr.
    fn run(&self, cmd: &mut Command, what: &str) -> Result<Output, TestkitError> {
        let out = cmd.output()?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(pg_err(format!(
                "{what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    fn psql_on(&self, node: &Node, db: &str, sql: &str) -> Result<String, TestkitError> {
        let psql = self.bin("psql");
        let out = self.run(
            self.pg_command(&psql)
                .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
                .arg(self.dir.path())
                .args([
                    "-p",
                    &node.port.to_string(),
                    "-U",
                    &self.run_as.pg_user,
                    "-d",
                    db,
                ])
                .args(["-c", sql]),
            &format!("psql on the {:?} ({sql})", node.role),
        )?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        while text.ends_with('\n') {
            text.pop();
        }
        Ok(text)
    }

    /// Appends the harness settings to `postgresql.conf` and writes `pg_hba.conf` and
    /// `pg_ident.conf` of the primary (a standby copies them).
    fn write_config(&self, tls: bool, durable: bool) -> Result<(), TestkitError> {
        let root = path_str(self.dir.path())?;
        let mut conf = format!(
            "\n# spike-testkit\n\
             unix_socket_directories = '{root}'\n\
             listen_addresses = '{}'\n\
             {}\
             max_connections = 100\n\
             wal_level = replica\n\
             max_wal_senders = 4\n\
             max_replication_slots = 4\n\
             hot_standby = on\n\
             logging_collector = off\n",
            if tls { "127.0.0.1" } else { "" },
            if durable {
                "fsync = on\nsynchronous_commit = on\nshared_buffers = 128MB\n"
            } else {
                "fsync = off\nshared_buffers = 16MB\n"
            }
        );
        if tls {
            let _ = write!(
                conf,
                "ssl = on\nssl_cert_file = '{root}/server.crt'\nssl_key_file = '{root}/server.key'\n\
                 password_encryption = 'scram-sha-256'\n"
            );
        }
        let data = &self.primary.data;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        file.write_all(conf.as_bytes())?;

        let mut hba = String::from(
            "# spike-testkit: unix socket with peer authentication through the map `spike`\n\
             local all all peer map=spike\n\
             local replication all peer map=spike\n",
        );
        if tls {
            let _ = write!(
                hba,
                "hostssl all {PG_ROLE} 127.0.0.1/32 scram-sha-256\n\
                 host all all 0.0.0.0/0 reject\n\
                 host all all ::/0 reject\n"
            );
        }
        // Truncating keeps the files' owner (the PostgreSQL user).
        std::fs::write(data.join("pg_hba.conf"), hba)?;
        let RunAs {
            pg_user, test_user, ..
        } = &self.run_as;
        let ident = format!(
            "# MAPNAME SYSTEM-USERNAME PG-USERNAME\n\
             spike {pg_user} {pg_user}\n\
             spike {test_user} {PG_ROLE}\n"
        );
        std::fs::write(data.join("pg_ident.conf"), ident)?;
        Ok(())
    }

    /// Generates the CA, the server certificate and key and the password, and writes the
    /// files into the cluster directory.
    fn write_tls_files(&self) -> Result<Tls, TestkitError> {
        let (ca_pem, cert_pem, key_pem) = server_certificate()?;
        let root = self.dir.path();
        let ca_file = root.join("ca.crt");
        std::fs::write(&ca_file, &ca_pem)?;
        let cert = root.join("server.crt");
        std::fs::write(&cert, &cert_pem)?;
        let key = root.join("server.key");
        std::fs::write(&key, key_pem)?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = self.run_as.switch {
            std::os::unix::fs::chown(&cert, Some(uid), Some(gid))?;
            std::os::unix::fs::chown(&key, Some(uid), Some(gid))?;
        }
        Ok(Tls {
            ca_pem,
            ca_file,
            password: random_hex(16)?,
        })
    }

    /// `pg_basebackup -R` of the primary, then the standby on its own port, then
    /// `synchronous_standby_names` on the primary only, then waits for `sync`.
    fn start_standby(&mut self) -> Result<(), TestkitError> {
        let root = self.dir.path().to_path_buf();
        let mut standby = Node::new(Role::Standby, &root, 0);
        let basebackup = self.bin("pg_basebackup");
        self.run(
            self.pg_command(&basebackup)
                .arg("-h")
                .arg(&root)
                .args([
                    "-p",
                    &self.primary.port.to_string(),
                    "-U",
                    &self.run_as.pg_user,
                ])
                .arg("-D")
                .arg(&standby.data)
                .args(["-R", "-X", "stream", "-c", "fast", "-C", "-S", SLOT_NAME])
                .arg("--no-sync"),
            "pg_basebackup",
        )?;
        // `-R` wrote primary_conninfo without an application_name; a later line wins.
        let conninfo = format!(
            "\nprimary_conninfo = 'host={} port={} user={} application_name={STANDBY_NAME}'\n",
            path_str(&root)?,
            self.primary.port,
            self.run_as.pg_user
        );
        let mut auto = std::fs::OpenOptions::new()
            .append(true)
            .open(standby.data.join("postgresql.auto.conf"))?;
        auto.write_all(conninfo.as_bytes())?;

        let (port, server) = self.spawn_with_retry(&standby)?;
        standby.port = port;
        *standby.server.lock() = Some(server);
        self.standby = Some(standby);

        // Only now, so the standby's copy of the configuration does not wait for itself.
        self.psql(
            "postgres",
            &format!("ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'"),
        )?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        let query = format!(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = '{STANDBY_NAME}'"
        );
        let mut last = String::new();
        for _ in 0..WAIT_POLLS {
            last = self.psql("postgres", &query)?;
            if last == "sync" {
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
        Err(pg_err(format!(
            "the standby did not become synchronous (sync_state {last:?}); {}",
            log_tail(&self.standby_node()?.log, 0)
        )))
    }

    /// Starts `node` on a free port, and once more on another port if the first clashed.
    fn spawn_with_retry(&self, node: &Node) -> Result<(u16, Server), TestkitError> {
        let avoid = [self.primary.port];
        let port = free_port(&avoid)?;
        match self.spawn(node, port) {
            Ok(server) => Ok((port, server)),
            Err(SpawnError::PortInUse(_)) => {
                let port = free_port(&[self.primary.port, port])?;
                Ok((
                    port,
                    self.spawn(node, port).map_err(SpawnError::into_error)?,
                ))
            }
            Err(e) => Err(e.into_error()),
        }
    }

    /// Starts the wrapper for `node` on `port` and waits until the server accepts
    /// connections (`postmaster.pid` says `ready`).
    fn spawn(&self, node: &Node, port: u16) -> Result<Server, SpawnError> {
        let log_start = std::fs::metadata(&node.log).map_or(0, |m| m.len());
        let mut wrapper = {
            let mut cmd = match self.run_as.switch {
                Some(_) => {
                    let mut c = Command::new("runuser");
                    c.args(["-u", &self.run_as.pg_user, "--", "sh"]);
                    c
                }
                None => Command::new("sh"),
            };
            cmd.args(["-c", WRAPPER, "spike-pg-wrapper"])
                .arg(self.bin("postgres"))
                .arg(&node.data)
                .arg(port.to_string())
                .arg(&node.log)
                .arg(self.dir.path())
                .current_dir(self.dir.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            scrub_pg_env(&mut cmd);
            cmd.spawn().map_err(|e| SpawnError::Other(e.into()))?
        };
        let (Some(stdin), Some(stdout)) = (wrapper.stdin.take(), wrapper.stdout.take()) else {
            // Invariant: both were configured as pipes above.
            return Err(SpawnError::Other(pg_err(
                "wrapper pipes missing".to_owned(),
            )));
        };
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let pid = match (read, line.trim().parse::<u32>()) {
            (Ok(_), Ok(pid)) => pid,
            _ => {
                drop(stdin);
                let _ = wrapper.kill();
                let _ = wrapper.wait();
                return Err(SpawnError::Other(pg_err(format!(
                    "the server wrapper did not start (runuser/sh failed?): {line:?}"
                ))));
            }
        };
        let server = Server {
            wrapper,
            stdin,
            pid,
        };
        // A hot standby reports `ready` too once it accepts read-only connections.
        let want = "ready";
        for _ in 0..WAIT_POLLS {
            if postmaster_status(&node.data, pid).as_deref() == Some(want) {
                return Ok(server);
            }
            if !process_alive(pid) {
                let log = log_tail(&node.log, log_start);
                server.kill_keep();
                let msg = format!("the {:?} did not start on port {port}; {log}", node.role);
                return Err(if port_clash(&log) {
                    SpawnError::PortInUse(pg_err(msg))
                } else {
                    SpawnError::Other(pg_err(msg))
                });
            }
            std::thread::sleep(POLL);
        }
        let log = log_tail(&node.log, log_start);
        server.kill_keep();
        Err(SpawnError::Other(pg_err(format!(
            "the {:?} did not become {want} within {}s; {log}",
            node.role,
            u64::from(WAIT_POLLS) * u64::try_from(POLL.as_millis()).unwrap_or(100) / 1000
        ))))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // End of file on each wrapper's stdin: immediate shutdown, then the directory goes.
        let nodes = std::iter::once(&self.primary).chain(self.standby.as_ref());
        let servers: Vec<Server> = nodes.filter_map(|n| n.server.lock().take()).collect();
        // Close every pipe first so the servers go down together, then reap the wrappers.
        let wrappers: Vec<Child> = servers.into_iter().map(|s| s.wrapper).collect();
        for mut wrapper in wrappers {
            reap(&mut wrapper);
        }
        // TempDir's own Drop removes whatever is left (a stopped node's data).
    }
}

impl Node {
    fn new(role: Role, root: &Path, port: u16) -> Self {
        let name = match role {
            Role::Primary => "primary",
            Role::Standby => "standby",
        };
        Self {
            role,
            data: root.join(name),
            log: root.join(format!("{name}.log")),
            port,
            server: Mutex::new(None),
        }
    }
}

impl Server {
    /// Sends `line` to the wrapper (see [`WRAPPER`]), closes its stdin and reaps it.
    fn finish(self, line: &[u8]) {
        let Server {
            mut wrapper,
            mut stdin,
            ..
        } = self;
        let _ = stdin.write_all(line);
        drop(stdin);
        reap(&mut wrapper);
    }

    /// Immediate shutdown of a server that failed to start; the data stays.
    fn kill_keep(self) {
        self.finish(b"kill\n");
    }

    /// The harness already stopped the server; the wrapper only exits, the data stays.
    fn release_kept(self) {
        self.finish(b"keep\n");
    }
}

/// Waits up to [`WAIT_POLLS`] polls for the wrapper to exit, then kills it.
fn reap(wrapper: &mut Child) {
    for _ in 0..WAIT_POLLS {
        match wrapper.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let _ = wrapper.kill();
    let _ = wrapper.wait();
}

/// Why a server did not start.
enum SpawnError {
    /// The port was taken (worth one retry on another port).
    PortInUse(TestkitError),
    /// Anything else.
    Other(TestkitError),
}

impl SpawnError {
    fn into_error(self) -> TestkitError {
        match self {
            SpawnError::PortInUse(e) | SpawnError::Other(e) => e,
        }
    }
}

fn pg_err(msg: String) -> TestkitError {
    TestkitError::Postgres(msg)
}

fn path_str(path: &Path) -> Result<&str, TestkitError> {
    path.to_str()
        .ok_or_else(|| pg_err(format!("non-UTF-8 path {}", path.display())))
}

/// Quotes a libpq keyword/value value if it needs it.
fn conn_value(v: &str) -> String {
    if !v.is_empty() && !v.contains([' ', '\'', '\\', '\t', '\n']) {
        return v.to_owned();
    }
    let mut out = String::from("'");
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Removes the caller's libpq environment (`PGHOST`, `PGPASSWORD`, …) from `cmd`.
fn scrub_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
}

/// `SPIKE_PG_BINDIR`, else the highest `/usr/lib/postgresql/<major>/bin` with `initdb`.
fn find_bindir() -> Result<PathBuf, TestkitError> {
    if let Some(dir) = std::env::var_os(BINDIR_ENV) {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
            return Ok(dir);
        }
        return Err(TestkitError::PostgresNotInstalled(format!(
            "{BINDIR_ENV}={} has no initdb/postgres",
            dir.display()
        )));
    }
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir(DEBIAN_PG_ROOT) {
        for entry in entries.flatten() {
            let Some(major) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let bin = entry.path().join("bin");
            if bin.join("initdb").is_file() && best.as_ref().is_none_or(|(m, _)| major > *m) {
                best = Some((major, bin));
            }
        }
    }
    best.map(|(_, bin)| bin).ok_or_else(|| {
        TestkitError::PostgresNotInstalled(format!(
            "no {DEBIAN_PG_ROOT}/<version>/bin/initdb and {BINDIR_ENV} is unset"
        ))
    })
}

/// Output of a short command, trimmed; an error unless it succeeds.
fn command_output(program: &str, args: &[&str]) -> Result<String, TestkitError> {
    let out = Command::new(program).args(args).output()?;
    if !out.status.success() {
        return Err(pg_err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn parse_id(s: &str) -> Result<u32, TestkitError> {
    s.parse()
        .map_err(|_| pg_err(format!("unexpected output of id: {s:?}")))
}

/// Who runs the servers: [`PG_TEST_USER`] (created if missing) when the test process is root,
/// else the current user.
fn run_as() -> Result<RunAs, TestkitError> {
    let uid = parse_id(&command_output("id", &["-u"])?)?;
    let test_user = command_output("id", &["-un"])?;
    if uid != 0 {
        return Ok(RunAs {
            pg_user: test_user.clone(),
            test_user,
            switch: None,
        });
    }
    if command_output("id", &["-u", PG_TEST_USER]).is_err() {
        let added = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_TEST_USER,
            ])
            .output()?;
        // Exit code 9: another test binary created it meanwhile; the check below decides.
        if !added.status.success() && command_output("id", &["-u", PG_TEST_USER]).is_err() {
            return Err(pg_err(format!(
                "useradd {PG_TEST_USER} failed: {}",
                String::from_utf8_lossy(&added.stderr).trim()
            )));
        }
    }
    let pg_uid = parse_id(&command_output("id", &["-u", PG_TEST_USER])?)?;
    let pg_gid = parse_id(&command_output("id", &["-g", PG_TEST_USER])?)?;
    Ok(RunAs {
        pg_user: PG_TEST_USER.to_owned(),
        test_user,
        switch: Some((pg_uid, pg_gid)),
    })
}

/// A port that was free on 127.0.0.1 a moment ago, not in `avoid`.
fn free_port(avoid: &[u16]) -> Result<u16, TestkitError> {
    for _ in 0..16 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if !avoid.contains(&port) {
            return Ok(port);
        }
    }
    Err(pg_err("no free TCP port on 127.0.0.1".to_owned()))
}

/// Line 8 of `postmaster.pid` (`starting`, `ready`, `standby`, `stopping`) when line 1 is `pid`.
fn postmaster_status(data: &Path, pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let owner = lines.first()?.trim().parse::<u32>().ok()?;
    (owner == pid).then(|| lines.get(7).map(|s| s.trim().to_owned()))?
}

/// Whether `pid` runs (a zombie, i.e. an exited server its wrapper has not reaped yet, does not).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

fn port_clash(log: &str) -> bool {
    log.contains("Address already in use")
        || log.contains("could not bind")
        || log.contains("could not create any TCP/IP sockets")
        || log.contains("already running on port")
}

/// The last lines of `log` written after byte `from`, for error messages.
fn log_tail(log: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(log) {
        let _ = std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(from));
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    format!("server log {}:\n{tail}", log.display())
}

/// `n` random bytes from the kernel, hex-encoded.
fn random_hex(n: usize) -> Result<String, TestkitError> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let mut out = String::with_capacity(2 * n);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    Ok(out)
}

/// A fresh CA and a server certificate for `IP:127.0.0.1` + `DNS:localhost`:
/// (CA PEM, server certificate PEM, server key PEM).
fn server_certificate() -> Result<(String, String, String), TestkitError> {
    let now = time::OffsetDateTime::now_utc();

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "SPIKE test");
    dn.push(DnType::CommonName, "spike-testkit PostgreSQL test CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + time::Duration::days(30);
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    leaf.distinguished_name = dn;
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.subject_alt_names = vec![
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::DnsName("localhost".try_into()?),
    ];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = now - time::Duration::hours(1);
    leaf.not_after = now + time::Duration::days(30);
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok((ca_pem, cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_values_are_quoted_only_when_needed() {
        assert_eq!(conn_value("/tmp/spike-pg.x1"), "/tmp/spike-pg.x1");
        assert_eq!(conn_value("a b"), "'a b'");
        assert_eq!(conn_value("it's"), r"'it\'s'");
        assert_eq!(conn_value(""), "''");
    }

    #[test]
    fn port_clashes_are_recognized() {
        assert!(port_clash(
            "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use"
        ));
        assert!(!port_clash("FATAL:  data directory has wrong ownership"));
    }

    #[test]
    fn options_builders_set_fields() {
        let o = PgOptions::new().tls(true).standby(true);
        assert!(o.tls && o.standby);
        assert_eq!(PgOptions::new(), PgOptions::default());
    }

    #[test]
    fn server_certificate_is_pem() {
        let (ca, cert, key) = server_certificate().unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(ca, cert);
    }
}
