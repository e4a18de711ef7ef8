//! Local probes of a running Nexus through its health unix socket (no SVID needed):
//! `spike-nexus health` prints the health answer, `spike-nexus wait-unsealed` blocks until
//! Nexus is unsealed (used by `spike-ready.service`) and fails with the last status on timeout.

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
    /// A one-line summary for humans.
    pub fn summary(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body).unwrap_or_default();
        let collected = v
            .get("shards_collected")
            .and_then(|x| x.as_u64())
            .unwrap_or(0);
        let threshold = v.get("threshold").and_then(|x| x.as_u64()).unwrap_or(0);
        match self.code {
            200 => "unsealed".to_owned(),
            501 => format!(
                "sealed: waiting for bootstrap ({collected}/{threshold} shards); is spike-bootstrap.service masked or failing?"
            ),
            503 => format!("sealed: {collected}/{threshold} shards from keepers"),
            c => format!("unexpected health status {c}"),
        }
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
    }
}
