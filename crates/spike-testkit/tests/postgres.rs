//! Tests of the PostgreSQL harness against a real PostgreSQL server.
//!
//! Needs the server binaries (`scripts/install-deps.sh`). Client connections run `psql` as
//! the test process's own OS user, the way code under test connects.
//!
//! The tests sit in a `#[cfg(test)]` module so clippy treats their helpers as test code.

#[cfg(test)]
mod harness {
    use std::process::{Command, Output};
    use std::time::Duration;

    use spike_testkit::postgres::{PG_ROLE, STANDBY_NAME};
    use spike_testkit::{PgCluster, PgOptions};

    /// `psql -XAt -v ON_ERROR_STOP=1 -c sql <conninfo>` as the test process's user, killed after
    /// 30 s so a hung commit fails the test instead of hanging it.
    fn client_psql(cluster: &PgCluster, conninfo: &str, sql: &str) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", "30"])
            .arg(cluster.bindir().join("psql"))
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql, conninfo]);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        cmd.output().unwrap()
    }

    /// [`client_psql`] that must succeed; returns stdout without the trailing newline.
    fn client_ok(cluster: &PgCluster, conninfo: &str, sql: &str) -> String {
        let out = client_psql(cluster, conninfo, sql);
        assert!(
            out.status.success(),
            "psql {conninfo:?} -c {sql:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
    }

    /// Whether `pid` runs (not a zombie).
    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
        })
    }

    /// Polls `f` every 100 ms for up to 30 s until it returns `want`.
    fn wait_for(what: &str, want: &str, mut f: impl FnMut() -> String) {
        let mut last = String::new();
        for _ in 0..300 {
            last = f();
            if last == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{what}: wanted {want:?}, last saw {last:?}");
    }

    #[test]
    fn start_creates_databases_owned_by_spike() {
        let cluster = PgCluster::start().unwrap();
        let a = cluster.create_database().unwrap();
        let b = cluster.create_database().unwrap();
        assert_ne!(a, b);
        assert_eq!(cluster.psql(&a, "select 1").unwrap(), "1");

        // The test process's OS user logs in as `spike` over the socket, in either database.
        for db in [&a, &b] {
            assert_eq!(
                client_ok(
                    &cluster,
                    &cluster.conninfo(db),
                    "select current_user, current_database()"
                ),
                format!("{PG_ROLE}|{db}")
            );
        }
        let owner = cluster
            .psql(
                "postgres",
                &format!("select pg_get_userbyid(datdba) from pg_database where datname = '{a}'"),
            )
            .unwrap();
        assert_eq!(owner, PG_ROLE);
        // `spike` can create tables in its database.
        client_ok(
            &cluster,
            &cluster.conninfo(&a),
            "create table t (x int); insert into t values (7)",
        );
        assert_eq!(cluster.psql(&a, "select x from t").unwrap(), "7");

        // Other roles are refused; errors come back as errors.
        let other = cluster
            .conninfo(&a)
            .replace("user=spike", "user=nobody_here");
        assert!(!client_psql(&cluster, &other, "select 1").status.success());
        assert!(cluster.psql(&a, "select * from no_such_table").is_err());
        // Unix socket only: no TLS connection string.
        assert!(cluster.tls_conninfo(&a).is_none());
        assert!(cluster.multi_host_conninfo(&a).is_none());

        // Dropping stops the server and removes the directory before it returns.
        let dir = cluster.socket_dir().to_owned();
        let pid = cluster.primary_pid().unwrap();
        assert!(dir.is_dir() && alive(pid));
        drop(cluster);
        assert!(!dir.exists());
        assert!(!alive(pid));
    }

    #[test]
    fn shared_cluster_is_one_per_binary() {
        let first = PgCluster::shared().unwrap();
        let second = PgCluster::shared().unwrap();
        assert!(std::ptr::eq(first, second));
        let db = first.create_database().unwrap();
        assert_eq!(
            client_ok(first, &first.conninfo(&db), "select current_database()"),
            db
        );
    }

    #[test]
    fn tls_mode_verifies_and_needs_the_password() {
        let cluster = PgCluster::start_with(PgOptions::new().tls(true)).unwrap();
        let db = cluster.create_database().unwrap();
        let ca_file = cluster.ca_file().unwrap();
        assert_eq!(
            std::fs::read_to_string(ca_file).unwrap(),
            cluster.ca_pem().unwrap()
        );

        let tls = cluster.tls_conninfo(&db).unwrap();
        assert!(tls.contains("host=127.0.0.1"));
        let verify_full = format!(
            "{} sslrootcert={}",
            tls.replace("sslmode=require", "sslmode=verify-full"),
            ca_file.display()
        );
        assert_eq!(
            client_ok(
                &cluster,
                &verify_full,
                "select ssl, current_user from pg_stat_ssl where pid = pg_backend_pid()"
            ),
            format!("t|{PG_ROLE}")
        );
        // Also by name: the certificate has DNS:localhost.
        let by_name = verify_full.replace("host=127.0.0.1", "host=localhost hostaddr=127.0.0.1");
        assert_eq!(client_ok(&cluster, &by_name, "select 1"), "1");

        // Without TLS the server refuses; with a wrong password too.
        let plain = tls.replace("sslmode=require", "sslmode=disable");
        let out = client_psql(&cluster, &plain, "select 1");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("pg_hba.conf"));
        let password = cluster.password().unwrap();
        let wrong = tls.replace(password, "wrong");
        assert_ne!(wrong, tls);
        let out = client_psql(&cluster, &wrong, "select 1");
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("password authentication failed"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // verify-full rejects a server certificate from a CA we do not trust ...
        let other_ca = cluster.socket_dir().join("other-ca.crt");
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(&other_ca, other.cert.pem()).unwrap();
        let untrusted = verify_full.replace(
            &format!("sslrootcert={}", ca_file.display()),
            &format!("sslrootcert={}", other_ca.display()),
        );
        assert_ne!(untrusted, verify_full);
        let out = client_psql(&cluster, &untrusted, "select 1");
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("certificate verify failed"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // ... and one for another name.
        let wrong_name =
            verify_full.replace("host=127.0.0.1", "host=db.invalid hostaddr=127.0.0.1");
        let out = client_psql(&cluster, &wrong_name, "select 1");
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("does not match host name"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The unix socket still works in TLS mode.
        assert_eq!(client_ok(&cluster, &cluster.conninfo(&db), "select 1"), "1");
    }

    #[test]
    fn standby_is_synchronous_and_takes_over() {
        let cluster = PgCluster::start_with(PgOptions::new().standby(true)).unwrap();
        let standby_port = cluster.standby_port().unwrap();
        assert_ne!(standby_port, cluster.port());
        assert_eq!(
            cluster
                .psql(
                    "postgres",
                    "select application_name, state, sync_state from pg_stat_replication"
                )
                .unwrap(),
            format!("{STANDBY_NAME}|streaming|sync")
        );
        // The standby did not inherit the primary's synchronous_standby_names.
        assert_eq!(
            cluster
                .psql_standby("postgres", "show synchronous_standby_names")
                .unwrap(),
            ""
        );
        assert_eq!(
            cluster
                .psql_standby("postgres", "select pg_is_in_recovery()")
                .unwrap(),
            "t"
        );

        let db = cluster.create_database().unwrap();
        let multi = cluster.multi_host_conninfo(&db).unwrap();
        // Both up: the read-write target is the primary.
        assert_eq!(
            client_ok(&cluster, &multi, "show port"),
            cluster.port().to_string()
        );
        client_ok(
            &cluster,
            &cluster.conninfo(&db),
            "create table t (x int); insert into t values (1)",
        );
        wait_for("row replicated to the standby", "1", || {
            cluster
                .psql_standby(&db, "select count(*) from t")
                .unwrap_or_default()
        });
        // The standby is read-only.
        assert!(
            cluster
                .psql_standby(&db, "insert into t values (9)")
                .is_err()
        );

        cluster.stop_immediate().unwrap();
        assert!(cluster.psql("postgres", "select 1").is_err());
        cluster.promote_standby().unwrap();
        assert_eq!(
            cluster
                .psql_standby("postgres", "select pg_is_in_recovery()")
                .unwrap(),
            "f"
        );

        // Writes through the multi-host conninfo land on the promoted standby and do not hang
        // in SyncRep.
        client_ok(&cluster, &multi, "insert into t values (2)");
        assert_eq!(
            client_ok(
                &cluster,
                &multi,
                "select current_setting('port'), count(*) from t"
            ),
            format!("{standby_port}|2")
        );
    }

    #[test]
    fn start_again_recovers_committed_rows() {
        let cluster = PgCluster::start().unwrap();
        let db = cluster.create_database().unwrap();
        let conninfo = cluster.conninfo(&db);
        client_ok(
            &cluster,
            &conninfo,
            "create table t (x int); insert into t values (1), (2)",
        );
        let port = cluster.port();

        cluster.stop_immediate().unwrap();
        assert!(cluster.primary_pid().is_none());
        assert!(
            !client_psql(&cluster, &conninfo, "select 1")
                .status
                .success()
        );
        assert!(cluster.stop_immediate().is_err());

        cluster.start_again().unwrap();
        assert_eq!(cluster.port(), port);
        assert!(cluster.start_again().is_err());
        assert_eq!(client_ok(&cluster, &conninfo, "select sum(x) from t"), "3");
    }

    /// Env var that turns [`leak_helper`] on in the child process of [`servers_die_with_the_test_process`].
    const LEAK_HELPER_ENV: &str = "SPIKE_PG_LEAK_HELPER";

    /// Not a test on its own: the child process of [`servers_die_with_the_test_process`]. Starts
    /// a cluster with a standby, prints its directory and pids, and waits to be killed.
    #[test]
    #[ignore = "helper process of servers_die_with_the_test_process"]
    fn leak_helper() {
        if std::env::var_os(LEAK_HELPER_ENV).is_none() {
            return;
        }
        let cluster = PgCluster::start_with(PgOptions::new().standby(true)).unwrap();
        println!(
            "LEAK-HELPER {} {} {}",
            cluster.socket_dir().display(),
            cluster.primary_pid().unwrap(),
            cluster.standby_pid().unwrap()
        );
        // Keep the cluster referenced until the parent kills this process.
        loop {
            std::thread::sleep(Duration::from_secs(1));
            assert!(cluster.primary_pid().is_some());
        }
    }

    #[test]
    fn servers_die_with_the_test_process() {
        use std::io::{BufRead, BufReader};

        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "harness::leak_helper",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(LEAK_HELPER_ENV, "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut found = None;
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("LEAK-HELPER ") {
                found = Some(rest.to_owned());
                break;
            }
        }
        let Some(found) = found else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the helper did not print its cluster (see its output above)");
        };
        let mut parts = found.split(' ');
        let dir = std::path::PathBuf::from(parts.next().unwrap());
        let primary_pid: u32 = parts.next().unwrap().parse().unwrap();
        let standby_pid: u32 = parts.next().unwrap().parse().unwrap();
        assert!(dir.is_dir());
        assert!(alive(primary_pid));
        assert!(alive(standby_pid));

        // SIGKILL: no destructor runs in the helper.
        child.kill().unwrap();
        child.wait().unwrap();

        wait_for("postgres processes gone", "gone", || {
            match (alive(primary_pid), alive(standby_pid)) {
                (false, false) => "gone".to_owned(),
                alive => format!("alive (primary, standby): {alive:?}"),
            }
        });
        wait_for("cluster directory removed", "false", || {
            dir.exists().to_string()
        });
    }
}
