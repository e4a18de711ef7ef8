//! The connection string, its rules, and the TLS configuration that verifies the server.
//!
//! The connection string is libpq's keyword/value form (or a `postgresql://` URL) as
//! tokio-postgres parses it. Nexus reads it from a systemd credential, never from argv or
//! the environment, and never prints it: it may hold a password. The rules:
//!
//! - hosts are either all unix-socket directories (a host starting with `/`, peer
//!   authentication, no TLS: `sslmode=disable` or unset) or all TCP hosts, never mixed;
//! - TCP hosts need TLS: `sslmode=require` (or libpq's `verify-full`, read as `require`),
//!   and Nexus always verifies the server's certificate chain against the configured CA
//!   file and the host name dialled, as libpq's `verify-full` does. `prefer`, `allow` and
//!   `disable` are refused for TCP hosts: they can fall back to plaintext;
//! - Nexus adds its own timeouts: `connect_timeout` (unless given), TCP keepalives and
//!   `tcp_user_timeout`, and server-side `statement_timeout`, `lock_timeout` and
//!   `idle_in_transaction_session_timeout` (appended to any `options`).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_postgres::config::{Host, SslMode};
use zeroize::Zeroizing;

use super::super::StoreError;

/// A parsed, checked connection: the client configuration and how to wrap it in TLS.
pub(super) struct Connection {
    /// The client configuration (its `Debug` redacts the password).
    pub pg: tokio_postgres::Config,
    /// TLS for TCP hosts, verified against the configured CA.
    pub tls: tokio_postgres_rustls::MakeRustlsConnect,
}

/// Parses and checks `conninfo` (from the credential named `credential`) and builds TLS
/// from `ca_file`. Error messages name the rule broken, never the string's content.
pub(super) fn parse(
    credential: &str,
    conninfo: &str,
    ca_file: Option<&Path>,
    timeout: Duration,
) -> Result<Connection, StoreError> {
    let bad = |why: String| {
        StoreError::Config(format!(
            "the PostgreSQL connection string in credential {credential:?} {why}"
        ))
    };
    // libpq's verify-full is what Nexus always does for TCP hosts; tokio-postgres knows
    // only disable/prefer/require, so read it as require (which Nexus then verifies).
    let normalized = Zeroizing::new(verify_full_as_require(conninfo.trim()));
    let mut pg = tokio_postgres::Config::from_str(&normalized).map_err(|e| {
        // tokio-postgres names the option, not its value.
        bad(format!("does not parse: {e}"))
    })?;
    let hosts = pg.get_hosts();
    if hosts.is_empty() {
        return Err(bad(
            "names no host (host=/run/postgresql for a local socket, or host=NAME for TCP)".into(),
        ));
    }
    let unix = hosts.iter().filter(|h| matches!(h, Host::Unix(_))).count();
    if unix != 0 && unix != hosts.len() {
        return Err(bad(
            "mixes unix-socket and TCP hosts: TLS applies to all hosts or none".into(),
        ));
    }
    // hostaddr dials TCP whatever host says (host is then only the name TLS checks).
    if !pg.get_hostaddrs().is_empty() && unix != 0 {
        return Err(bad(
            "combines hostaddr with a unix-socket host: hostaddr connects over TCP; name the \
             server in host= (TLS) or drop hostaddr"
                .into(),
        ));
    }
    let tcp = unix == 0;
    let ssl = pg.get_ssl_mode();
    if tcp {
        if ssl != SslMode::Require {
            return Err(bad(
                "has TCP hosts without sslmode=require (or verify-full): the connection to \
                 PostgreSQL must be TLS, verified against postgres.ca_file"
                    .into(),
            ));
        }
        if ca_file.is_none() {
            return Err(StoreError::Config(
                "postgres.ca_file is not set: it is needed to verify the PostgreSQL server of a \
                 TCP connection"
                    .into(),
            ));
        }
    } else if ssl == SslMode::Require {
        return Err(bad(
            "asks for TLS on a unix socket, which PostgreSQL never offers: use sslmode=disable"
                .into(),
        ));
    } else {
        pg.ssl_mode(SslMode::Disable);
    }
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(timeout);
    }
    pg.keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3)
        .tcp_user_timeout(timeout);
    // Several hosts are a primary and its standbys: only the primary takes writes. With one
    // host, a standby answers "read-only" at once rather than failing writes one by one.
    pg.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
    if pg.get_application_name().is_none() {
        pg.application_name("spike-nexus");
    }
    let ms = timeout.as_millis();
    let ours = format!(
        "-c statement_timeout={ms} -c lock_timeout={ms} -c idle_in_transaction_session_timeout={}",
        ms.saturating_mul(4)
    );
    let options = match pg.get_options() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
        _ => ours,
    };
    pg.options(options);
    let tls = tls_config(ca_file.filter(|_| tcp))?;
    Ok(Connection { pg, tls })
}

/// Rewrites `sslmode=verify-full` to `sslmode=require` where it is an option of the string
/// (a keyword/value token, or a URL query parameter), never inside another value.
fn verify_full_as_require(conninfo: &str) -> String {
    const FROM: &str = "sslmode=verify-full";
    const TO: &str = "sslmode=require";
    if conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://") {
        let Some((base, query)) = conninfo.split_once('?') else {
            return conninfo.to_owned();
        };
        let query: Vec<&str> = query
            .split('&')
            .map(|p| if p == FROM { TO } else { p })
            .collect();
        return format!("{base}?{}", query.join("&"));
    }
    // Keyword/value: a whole option token only, outside quoted values (libpq quotes with
    // '...' and escapes with a backslash).
    let mut out = String::with_capacity(conninfo.len());
    let mut token = String::new();
    let (mut quoted, mut escaped) = (false, false);
    let flush = |token: &mut String, out: &mut String| {
        out.push_str(if token == FROM { TO } else { token });
        token.clear();
    };
    for c in conninfo.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '\'' {
            quoted = !quoted;
        } else if c.is_whitespace() && !quoted {
            flush(&mut token, &mut out);
            out.push(c);
            continue;
        }
        token.push(c);
    }
    flush(&mut token, &mut out);
    out
}

/// The rustls client configuration (ring only, as every other TLS client of Nexus): the
/// roots from `ca_file`, or none at all for unix sockets (never used there).
fn tls_config(
    ca_file: Option<&Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            StoreError::Config(format!(
                "postgres.ca_file {}: cannot read it: {e}",
                path.display()
            ))
        })?;
        let mut count = 0usize;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| {
                StoreError::Config(format!(
                    "postgres.ca_file {}: not a PEM certificate bundle: {e}",
                    path.display()
                ))
            })?;
            roots.add(cert).map_err(|e| {
                StoreError::Config(format!(
                    "postgres.ca_file {}: unusable certificate: {e}",
                    path.display()
                ))
            })?;
            count += 1;
        }
        if count == 0 {
            return Err(StoreError::Config(format!(
                "postgres.ca_file {}: holds no certificate",
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("TLS for PostgreSQL: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    fn err(conninfo: &str, ca: Option<&Path>) -> String {
        match parse("nexus-db", conninfo, ca, T) {
            Ok(_) => panic!("{conninfo:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_unix_socket_needs_no_tls_and_gets_our_timeouts() {
        let c = parse(
            "nexus-db",
            "host=/run/postgresql dbname=spike user=spike-nexus",
            None,
            T,
        )
        .unwrap();
        assert_eq!(c.pg.get_ssl_mode(), SslMode::Disable);
        assert_eq!(c.pg.get_connect_timeout(), Some(&T));
        let options = c.pg.get_options().unwrap();
        assert!(options.contains("statement_timeout=5000"), "{options}");
    }

    #[test]
    fn tcp_without_tls_or_ca_is_refused_and_the_password_never_shows() {
        let e = err("host=db1 user=u password=hunter2 dbname=d", None);
        assert!(e.contains("sslmode=require"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = err("host=db1 user=u password=hunter2 sslmode=prefer", None);
        assert!(e.contains("sslmode=require"), "{e}");
        let e = err("host=db1 user=u password=hunter2 sslmode=require", None);
        assert!(e.contains("postgres.ca_file"), "{e}");
        let e = err("host=db1 password=hunter2 bogus_key=hunter2", None);
        assert!(e.contains("does not parse"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn verify_full_is_rewritten_only_where_it_is_the_option() {
        assert_eq!(
            verify_full_as_require("host=db sslmode=verify-full  dbname=x"),
            "host=db sslmode=require  dbname=x"
        );
        assert_eq!(
            verify_full_as_require("host=db password='a sslmode=verify-full b'"),
            "host=db password='a sslmode=verify-full b'"
        );
        assert_eq!(
            verify_full_as_require("postgresql://u@db/x?sslmode=verify-full&application_name=a"),
            "postgresql://u@db/x?sslmode=require&application_name=a"
        );
    }

    #[test]
    fn hostaddr_counts_as_tcp() {
        let e = err("host=/run/postgresql hostaddr=10.0.5.11 password=pw", None);
        assert!(e.contains("hostaddr"), "{e}");
        let e = err("host=db hostaddr=10.0.5.11 sslmode=disable", None);
        assert!(e.contains("sslmode=require"), "{e}");
    }

    #[test]
    fn mixed_hosts_and_tls_on_sockets_are_refused() {
        let e = err("host=/run/postgresql,db1 sslmode=require", None);
        assert!(e.contains("mixes"), "{e}");
        let e = err("host=/run/postgresql sslmode=require", None);
        assert!(e.contains("unix socket"), "{e}");
        let e = err("dbname=x", None);
        assert!(e.contains("names no host"), "{e}");
    }

    #[test]
    fn verify_full_is_read_as_verified_require_and_options_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["db1".to_owned()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let c = parse(
            "nexus-db",
            "host=db1,db2 port=5432,5433 sslmode=verify-full target_session_attrs=read-write options='-c search_path=x'",
            Some(&ca),
            T,
        )
        .unwrap();
        assert_eq!(c.pg.get_ssl_mode(), SslMode::Require);
        let options = c.pg.get_options().unwrap();
        assert!(options.starts_with("-c search_path=x "), "{options}");
        std::fs::write(&ca, "not pem").unwrap();
        let e = err("host=db1 sslmode=require", Some(&ca));
        assert!(e.contains("holds no certificate"), "{e}");
    }
}
