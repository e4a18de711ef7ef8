//! Local probes of a running Nexus through its health unix socket (no SVID needed):
//! `spike-nexus health` prints the health answer, `spike-nexus wait-unsealed` blocks until
//! Nexus is unsealed and fails with the last status on timeout, and `spike-nexus watch-ready`
//! is `spike-ready.service`: it reports `READY=1` once Nexus is unsealed and exits as soon as
//! Nexus is sealed, stopped or unreachable, so that `spike.target` (bound to it) is active
//! exactly while Nexus serves secrets. See ARCHITECTURE.md, "Readiness".

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The health socket could not be reached.
    #[error("cannot reach the Nexus health socket {path}: {source}")]
    Connect {
        /// Socket path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The answer was not an HTTP response.
    #[error("unexpected answer from the Nexus health socket {path}")]
    Malformed {
        /// Socket path.
        path: String,
    },
    /// The probe took too long.
    #[error("the Nexus health socket {path} did not answer within {secs} s")]
    Timeout {
        /// Socket path.
        path: String,
        /// Seconds waited.
        secs: u64,
    },
}

/// One health answer: the HTTP status code and the JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthAnswer {
    /// 200 unsealed, 501 never bootstrapped, 503 sealed.
    pub code: u16,
    /// The JSON body as text.
    pub body: String,
}

impl HealthAnswer {
    /// A one-line summary for humans that names the way out of the state.
    pub fn summary(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body).unwrap_or_default();
        let num = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        let (collected, threshold) = (num("shards_collected"), num("threshold"));
        let has_data = v.get("has_data").and_then(serde_json::Value::as_bool) == Some(true);
        let store_error = v.get("store_error").and_then(serde_json::Value::as_str);
        let disagree = v
            .get("keepers_disagree")
            .and_then(serde_json::Value::as_str);
        if v.get("backend_reachable")
            .and_then(serde_json::Value::as_bool)
            == Some(false)
        {
            let sealed = v.get("sealed").and_then(serde_json::Value::as_bool) != Some(false);
            let error = v
                .get("backend_error")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("no answer");
            return format!(
                "{}: PostgreSQL unreachable: {error} (requests answer 503; Nexus reconnects by \
                 itself; docs/ha.md, \"PostgreSQL unreachable\")",
                if sealed {
                    "sealed"
                } else {
                    "unsealed, not serving"
                }
            );
        }
        match (self.code, store_error) {
            (200, _) => match disagree {
                Some(d) => format!("unsealed; shard pushes held: {d}"),
                None => "unsealed".to_owned(),
            },
            (_, None) if disagree.is_some() => {
                format!("sealed: {}", disagree.unwrap_or_default())
            }
            (_, Some(err)) => format!(
                "sealed: Nexus cannot open its store: {err} (it retries by itself; see journalctl -u spike-nexus)"
            ),
            (501, None) => format!(
                "sealed: waiting for bootstrap ({collected}/{threshold} shards); is spike-bootstrap.service masked or failing?"
            ),
            (503, None) if has_data && collected < threshold => format!(
                "sealed: Nexus has data but its root key is not in memory ({collected}/{threshold} shards from keepers); \
                 after a power cut restore it: spike-operator restore DIR (docs/operations.md)"
            ),
            (503, None) => format!("sealed: {collected}/{threshold} shards from keepers"),
            (c, None) => format!("unexpected health status {c}"),
        }
    }
}

/// What `watch-ready` makes of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// Nexus answered 200: unsealed and serving.
    Unsealed,
    /// Nexus answered, but is not unsealed; the summary says why.
    Sealed(String),
    /// Nothing listens on the health socket (Nexus and its sockets are stopped).
    Gone(String),
    /// The socket exists but the probe failed or timed out (Nexus restarting or stuck).
    Unanswered(String),
}

impl Observation {
    /// Classifies one probe result.
    pub fn of(result: &Result<HealthAnswer, ProbeError>) -> Self {
        match result {
            Ok(a) if a.code == 200 => Observation::Unsealed,
            Ok(a) => Observation::Sealed(a.summary()),
            Err(ProbeError::Connect { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Observation::Gone(result_text(result))
            }
            Err(_) => Observation::Unanswered(result_text(result)),
        }
    }
}

fn result_text(result: &Result<HealthAnswer, ProbeError>) -> String {
    match result {
        Ok(a) => a.summary(),
        Err(e) => e.to_string(),
    }
}

/// How many probes in a row may go unanswered while ready before `watch-ready` gives up
/// (a socket that exists but does not answer: Nexus restarting after a crash, or stuck).
pub const UNANSWERED_LIMIT: u32 = 2;

/// Whether a ready watcher must leave the ready state after `obs`; `unanswered` counts the
/// unanswered probes in a row, this one included.
pub fn must_leave_ready(obs: &Observation, unanswered: u32) -> bool {
    match obs {
        Observation::Unsealed => false,
        Observation::Sealed(_) | Observation::Gone(_) => true,
        Observation::Unanswered(_) => unanswered >= UNANSWERED_LIMIT,
    }
}

/// Asks the health socket once.
pub async fn health(path: &Path, timeout: Duration) -> Result<HealthAnswer, ProbeError> {
    let shown = path.display().to_string();
    let fut = async {
        let mut s = UnixStream::connect(path)
            .await
            .map_err(|source| ProbeError::Connect {
                path: shown.clone(),
                source,
            })?;
        let req = b"GET /v1/sys/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        s.write_all(req)
            .await
            .map_err(|source| ProbeError::Connect {
                path: shown.clone(),
                source,
            })?;
        let mut buf = Vec::with_capacity(1024);
        // The health body is small; cap what we read.
        let mut limited = s.take(64 * 1024);
        limited
            .read_to_end(&mut buf)
            .await
            .map_err(|source| ProbeError::Connect {
                path: shown.clone(),
                source,
            })?;
        parse_response(&buf).ok_or(ProbeError::Malformed {
            path: shown.clone(),
        })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ProbeError::Timeout {
            path: path.display().to_string(),
            secs: timeout.as_secs(),
        })?
}

fn parse_response(buf: &[u8]) -> Option<HealthAnswer> {
    let text = std::str::from_utf8(buf).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status_line = head.lines().next()?;
    let code = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Some(HealthAnswer { code, body })
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..n)?);
        body = rest.get(n + 2..)?;
    }
}

/// Polls until Nexus answers 200, printing each change of status to stderr. Returns the last
/// answer (or error) when `timeout` passes first.
pub async fn wait_unsealed(path: &Path, timeout: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let now = match health(path, Duration::from_secs(5)).await {
            Ok(a) if a.code == 200 => {
                eprintln!("spike-nexus: unsealed");
                return Ok(());
            }
            Ok(a) => a.summary(),
            Err(e) => e.to_string(),
        };
        if now != last {
            eprintln!("spike-nexus: {now}");
            last = now;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "Nexus is not unsealed after {} s; last status: {last}",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `spike-ready.service`: waits (unit "activating", `STATUS=` says for what) at most `wait`
/// until Nexus is unsealed, then sends `READY=1`, then probes every `interval` and returns as
/// soon as Nexus is sealed, stopped, or has not answered [`UNANSWERED_LIMIT`] probes in a row.
/// The unit then goes inactive, and `spike.target`, bound to it, with it.
///
/// Connections on `trigger` (`spike-ready.socket`, which `spike-ready-trigger.service` pokes
/// whenever Nexus is unsealed) are accepted and dropped for the whole run, so that the socket
/// never re-activates the unit by itself.
///
/// # Errors
/// Nexus not unsealed within `wait` (the unit's start then fails, and the start job that
/// waited on it ends instead of holding the boot), or `READY=1` could not be sent.
pub async fn watch_ready(
    path: &Path,
    interval: Duration,
    wait: Duration,
    notifier: &spike_daemon::notify::Notifier,
    trigger: Option<tokio::net::UnixListener>,
) -> Result<(), String> {
    let _drain = trigger.map(|listener| {
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                drop(conn);
            }
        })
    });
    let probe_timeout = Duration::from_secs(2);
    let status = |text: &str| {
        if let Err(e) = notifier.status(text) {
            eprintln!("spike-nexus: sd_notify STATUS failed: {e}");
        }
    };
    // Waiting for unsealed, for at most `wait`.
    let deadline = tokio::time::Instant::now() + wait;
    let mut last = String::new();
    loop {
        let result = health(path, probe_timeout).await;
        if Observation::of(&result) == Observation::Unsealed {
            break;
        }
        let now = result_text(&result);
        if now != last {
            eprintln!("spike-nexus: waiting for Nexus: {now}");
            status(&format!("waiting for Nexus: {now}"));
            last = now;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "Nexus is not unsealed after {} s ({last}); spike.target stays inactive, and \
                 spike-ready-trigger.service starts this unit again once Nexus is unsealed",
                wait.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    notifier
        .notify(&[
            spike_daemon::notify::NotifyState::Ready,
            spike_daemon::notify::NotifyState::Status("Nexus is unsealed and serving"),
        ])
        .map_err(|e| format!("sd_notify READY failed: {e}"))?;
    eprintln!("spike-nexus: Nexus is unsealed and serving; spike.target is active");
    // Ready: leave as soon as that stops being true.
    let mut unanswered = 0;
    loop {
        tokio::time::sleep(interval).await;
        let result = health(path, probe_timeout).await;
        let obs = Observation::of(&result);
        unanswered = match obs {
            Observation::Unanswered(_) => unanswered + 1,
            _ => 0,
        };
        if must_leave_ready(&obs, unanswered) {
            let why = result_text(&result);
            eprintln!(
                "spike-nexus: Nexus is no longer serving ({why}); spike.target goes inactive until it is unsealed again"
            );
            status(&format!("left ready: {why}"));
            return Ok(());
        }
    }
}

/// `spike-ready-trigger.service`: probes Nexus every `interval` for as long as Nexus runs
/// (the unit is bound to it), and while Nexus is unsealed connects to `trigger`
/// (`spike-ready.socket`), which starts `spike-ready.service` when it is not running. Waiting
/// for an unseal is thus an active unit, never a start job that would hold the boot.
pub async fn trigger_ready(
    path: &Path,
    trigger: &Path,
    interval: Duration,
    notifier: &spike_daemon::notify::Notifier,
) -> Result<(), String> {
    let mut last = String::new();
    loop {
        let result = health(path, Duration::from_secs(2)).await;
        let unsealed = Observation::of(&result) == Observation::Unsealed;
        let mut now = result_text(&result);
        if unsealed && let Err(e) = tokio::net::UnixStream::connect(trigger).await {
            now = format!("unsealed, but {} is not reachable: {e}", trigger.display());
        }
        if now != last {
            eprintln!("spike-nexus: {now}");
            if let Err(e) = notifier.status(&now) {
                eprintln!("spike-nexus: sd_notify STATUS failed: {e}");
            }
            last = now;
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        let plain = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(
            parse_response(plain).unwrap(),
            HealthAnswer {
                code: 503,
                body: "{}".into()
            }
        );
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap().body, "{}");
        assert!(parse_response(b"garbage").is_none());
    }

    #[test]
    fn summaries_name_the_missing_step() {
        let a = HealthAnswer {
            code: 501,
            body: r#"{"shards_collected":0,"threshold":2}"#.into(),
        };
        assert!(a.summary().contains("waiting for bootstrap (0/2"));
        let b = HealthAnswer {
            code: 503,
            body: r#"{"shards_collected":1,"threshold":2}"#.into(),
        };
        assert_eq!(b.summary(), "sealed: 1/2 shards from keepers");
        let power_cut = HealthAnswer {
            code: 503,
            body: r#"{"initialized":true,"has_data":true,"shards_collected":0,"threshold":2}"#
                .into(),
        };
        let text = power_cut.summary();
        assert!(
            text.contains("has data") && text.contains("spike-operator restore"),
            "{text}"
        );
        assert!(!text.contains("bootstrap"), "{text}");
        let full = HealthAnswer {
            code: 503,
            body: r#"{"has_data":true,"store_error":"database or disk is full"}"#.into(),
        };
        assert!(
            full.summary()
                .contains("cannot open its store: database or disk is full")
        );
        let down = HealthAnswer {
            code: 503,
            body: r#"{"sealed":false,"backend_reachable":false,"backend_error":"database unavailable: connection refused"}"#.into(),
        };
        let text = down.summary();
        assert!(
            text.starts_with("unsealed, not serving: PostgreSQL unreachable: database unavailable"),
            "{text}"
        );
        assert!(text.contains("docs/ha.md"), "{text}");
    }

    #[test]
    fn ready_is_left_on_seal_on_stop_and_after_repeated_silence() {
        let sealed = Observation::of(&Ok(HealthAnswer {
            code: 503,
            body: "{}".into(),
        }));
        assert!(matches!(sealed, Observation::Sealed(_)));
        assert!(must_leave_ready(&sealed, 0));
        let gone = Observation::of(&Err(ProbeError::Connect {
            path: "/run/x".into(),
            source: std::io::ErrorKind::NotFound.into(),
        }));
        assert!(matches!(gone, Observation::Gone(_)));
        assert!(must_leave_ready(&gone, 0));
        let silent = Observation::of(&Err(ProbeError::Timeout {
            path: "/run/x".into(),
            secs: 2,
        }));
        assert!(!must_leave_ready(&silent, 1));
        assert!(must_leave_ready(&silent, UNANSWERED_LIMIT));
        let ok = Observation::of(&Ok(HealthAnswer {
            code: 200,
            body: "{}".into(),
        }));
        assert!(!must_leave_ready(&ok, 0));
    }

    #[tokio::test]
    async fn watcher_reports_ready_then_leaves_when_the_socket_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("health.sock");
        let notify = dir.path().join("notify.sock");
        let manager = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
        manager
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        // A health server that answers 503 once, then 200 twice, then goes away.
        let server = tokio::spawn(async move {
            for code in ["503 Service Unavailable", "200 OK", "200 OK"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await.unwrap();
                let body = "{}";
                let resp = format!(
                    "HTTP/1.1 {code}\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
            }
            drop(listener);
        });
        let notifier = spike_daemon::notify::Notifier::with_socket(&notify);
        let sock2 = sock.clone();
        let watcher = tokio::spawn(async move {
            watch_ready(
                &sock2,
                Duration::from_millis(50),
                Duration::from_secs(30),
                &notifier,
                None,
            )
            .await
        });
        server.await.unwrap();
        std::fs::remove_file(&sock).unwrap();
        tokio::time::timeout(Duration::from_secs(10), watcher)
            .await
            .expect("the watcher leaves ready once the socket is gone")
            .unwrap()
            .unwrap();
        let mut seen = String::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = manager.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains("left ready") {
                break;
            }
        }
        let ready_at = seen.find("READY=1").expect("READY=1 sent");
        assert!(seen[..ready_at].contains("waiting for Nexus"), "{seen}");
        assert!(seen[ready_at..].contains("left ready"), "{seen}");
    }

    #[tokio::test]
    async fn watcher_gives_up_after_its_wait_and_drains_the_trigger() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("absent.sock");
        let trigger_path = dir.path().join("trigger.sock");
        let trigger = tokio::net::UnixListener::bind(&trigger_path).unwrap();
        let notifier = spike_daemon::notify::Notifier::disabled();
        let poke = trigger_path.clone();
        let poker = tokio::spawn(async move {
            for _ in 0..3 {
                let mut s = tokio::net::UnixStream::connect(&poke).await.unwrap();
                // The watcher accepts and drops: the read sees end of file.
                let mut buf = [0u8; 1];
                assert_eq!(s.read(&mut buf).await.unwrap(), 0);
            }
        });
        let err = watch_ready(
            &sock,
            Duration::from_millis(50),
            Duration::from_millis(1200),
            &notifier,
            Some(trigger),
        )
        .await
        .unwrap_err();
        assert!(err.contains("not unsealed after 1 s"), "{err}");
        assert!(
            err.contains("cannot reach the Nexus health socket"),
            "{err}"
        );
        poker.await.unwrap();
    }
}
