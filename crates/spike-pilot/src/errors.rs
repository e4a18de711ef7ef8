//! [`PilotError`], exit codes, and SPIKE's error-to-message mapping (docs/compatibility.md#pilot-spike
//! `stdout.HandleAPIError`).

use spike_client::ClientError;
use spike_proto::ErrorCode;

/// Success.
pub const EXIT_OK: u8 = 0;
/// An API error (Nexus answered with an error) or a validation error.
pub const EXIT_FAILURE: u8 = 1;
/// A usage error (clap) or a configuration error.
pub const EXIT_USAGE: u8 = 2;
/// Nexus or the SPIFFE Workload API could not be reached, or a TLS identity check failed.
pub const EXIT_CONNECTION: u8 = 3;
/// Nexus answered but is sealed: not bootstrapped yet, waiting for its keepers, holding data
/// without its root key (after a power cut), or unable to open its store.
pub const EXIT_SEALED: u8 = 4;

/// The first line SPIKE prints when Nexus answers 503 (`state_not_ready`).
pub const NOT_READY_MESSAGE: &str = "SPIKE is not ready yet. Please wait a moment and try again.";

/// The follow-up to [`NOT_READY_MESSAGE`] when Nexus's health could not be read to say more.
/// It states only what a 503 proves (no root key in memory) and names both ways out.
pub const SEALED_FALLBACK_MESSAGE: &str = "SPIKE Nexus is sealed (its root key is not in \
memory); its health could not be read to say why. If it was just started or bootstrapped, wait \
for SPIKE Bootstrap and the keepers and try again (spike status shows the progress). After a \
power cut, restore the root key from the recovery shards: spike-operator restore DIR (as root; \
see docs/operations.md).";

/// The sentence for HTTP 507 (`detail: storage_full`): Nexus's disk is full.
pub const STORAGE_FULL_HINT: &str = "Reads still work; writes resume by themselves once space \
is freed under /var/lib/spike-nexus.";

/// Where the cause of an HTTP 5xx answer is logged.
pub const NEXUS_JOURNAL_HINT: &str = "journalctl -u spike-nexus";

/// The prefix of every Nexus connection failure message (scripts match on it).
pub const CONNECT_FAILED: &str = "Failed to connect to SPIKE Nexus";

/// Why a command failed. [`PilotError::message`] is what goes to standard error and
/// [`PilotError::exit_code`] the process status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PilotError {
    /// A usage error found after argument parsing (missing flags, bad format value).
    #[error("{0}")]
    Usage(String),
    /// The configuration (file or environment) is missing or invalid.
    #[error("Error: invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// No SPIFFE identity could be obtained from the Workload API.
    #[error("No SPIFFE identity: the Workload API at {endpoint} {reason}")]
    Identity {
        /// The Workload API endpoint that was tried.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// A request to Nexus failed.
    #[error("{}", api_message(source, nexus_url, own_id.as_deref()))]
    Api {
        /// The Nexus base URL.
        nexus_url: String,
        /// This workload's SPIFFE ID, for hints.
        own_id: Option<String>,
        /// The client error (boxed: it is large).
        source: Box<ClientError>,
    },
    /// Several Nexus URLs are configured and none served the request: each failed before
    /// the request reached it, or answered 503 ([`crate::failover`]).
    #[error("{}", no_instance_message(failures))]
    NoInstance {
        /// Each URL with its failure, in the order tried.
        failures: Vec<UrlFailure>,
    },
    /// Several Nexus URLs are configured and a write may have reached the instance at
    /// `nexus_url` before its connection failed; it was not repeated at another instance.
    #[error("{}", outcome_unknown_message(nexus_url, source, earlier))]
    OutcomeUnknown {
        /// The URL the write may have reached.
        nexus_url: String,
        /// The failure (boxed: it is large).
        source: Box<ClientError>,
        /// The URLs tried before it, each with its failure.
        earlier: Vec<UrlFailure>,
    },
    /// Nexus answered that it is sealed (`state_not_ready`) and its health said why.
    #[error("{NOT_READY_MESSAGE}\nSPIKE Nexus at {nexus_url} is {state}")]
    Sealed {
        /// The Nexus base URL.
        nexus_url: String,
        /// The state from the health answer, e.g. `sealed: waiting for bootstrap (0/2
        /// shards)...` ([`crate::output::StatusReport::sealed_state`]).
        state: String,
    },
    /// The command already printed what is wrong (e.g. `spike status` of a sealed Nexus);
    /// nothing more goes to standard error, the process exits with `code`.
    #[error("")]
    Reported {
        /// The exit status.
        code: u8,
    },
    /// A validation or command failure; the message is complete (usually `Error: ...`).
    #[error("{0}")]
    Failed(String),
    /// A local I/O failure (reading input, writing output or recovery files).
    #[error("Error: cannot {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl PilotError {
    /// A local I/O failure while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// A complete failure message (`Error: ...`).
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }

    /// The text printed on standard error.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Config(_) => EXIT_USAGE,
            Self::Identity { .. } => EXIT_CONNECTION,
            Self::Api { source, .. } if is_connection_failure(source) => EXIT_CONNECTION,
            Self::NoInstance { failures } if failures.iter().any(|f| is_sealed(&f.error)) => {
                EXIT_SEALED
            }
            Self::NoInstance { .. } | Self::OutcomeUnknown { .. } => EXIT_CONNECTION,
            Self::Api { source, .. } if is_sealed(source) => EXIT_SEALED,
            Self::Sealed { .. } => EXIT_SEALED,
            Self::Reported { code } => *code,
            Self::Api { .. } | Self::Failed(_) | Self::Io { .. } => EXIT_FAILURE,
        }
    }
}

/// One Nexus URL that did not serve a request, and why.
#[derive(Debug)]
pub struct UrlFailure {
    /// The Nexus base URL.
    pub url: String,
    /// The failure (boxed: it is large).
    pub error: Box<ClientError>,
    /// For a 503 answer, the state its health reported (e.g. `sealed: waiting for bootstrap
    /// (0/2 shards)`), when it could be read ([`crate::session::Session::explain`]).
    pub state: Option<String>,
}

impl UrlFailure {
    /// The cause on one line.
    fn cause(&self) -> String {
        match &self.state {
            Some(state) => state.clone(),
            None if is_sealed(&self.error) || self.error.status() == Some(503) => {
                "answered HTTP 503: sealed or not ready".to_owned()
            }
            None => self.error.to_string(),
        }
    }
}

/// One `  <url>: <cause>` line per failure.
fn failure_lines(failures: &[UrlFailure]) -> String {
    failures
        .iter()
        .map(|f| format!("\n  {}: {}", f.url, f.cause()))
        .collect()
}

/// The message when no configured Nexus URL served the request.
pub fn no_instance_message(failures: &[UrlFailure]) -> String {
    let count = failures.len();
    let lines = failure_lines(failures);
    let all_sealed = failures.iter().all(|f| is_sealed(&f.error));
    if all_sealed {
        let unexplained = failures.iter().any(|f| f.state.is_none());
        let hint = if unexplained {
            format!("\n{SEALED_FALLBACK_MESSAGE}")
        } else {
            String::new()
        };
        format!(
            "{NOT_READY_MESSAGE}\nSPIKE Nexus is sealed at each of its {count} URLs:{lines}{hint}"
        )
    } else {
        format!("Error: {CONNECT_FAILED} at any of its {count} URLs:{lines}")
    }
}

/// The message when a write may have reached an instance whose connection then failed.
pub fn outcome_unknown_message(
    nexus_url: &str,
    err: &ClientError,
    earlier: &[UrlFailure],
) -> String {
    let tried = if earlier.is_empty() {
        String::new()
    } else {
        format!("\nTried before it:{}", failure_lines(earlier))
    };
    format!(
        "Error: {CONNECT_FAILED} at {nexus_url}: {err}\nThe request may have reached SPIKE Nexus \
         at {nexus_url}, so its outcome is unknown. A write is not repeated at another instance \
         (it could take effect twice); check the current state before running it again.{tried}"
    )
}

/// Whether the client error means Nexus could not be reached or identities did not match.
pub fn is_connection_failure(err: &ClientError) -> bool {
    err.is_unreachable() || err.is_tls_rejection() || matches!(err, ClientError::Identity(_))
}

/// Whether Nexus answered `state_not_ready` (HTTP 503): it is sealed.
pub fn is_sealed(err: &ClientError) -> bool {
    err.error_code() == ErrorCode::StateNotReady
}

/// The message for a failed Nexus request, following SPIKE's `HandleAPIError` order (docs/compatibility.md#pilot-spike),
/// with the URL and cause appended where SPIKE printed only a generic sentence.
pub fn api_message(err: &ClientError, nexus_url: &str, own_id: Option<&str>) -> String {
    if is_connection_failure(err) {
        return format!("Error: {CONNECT_FAILED} at {nexus_url}: {err}");
    }
    match err.error_code() {
        ErrorCode::StateNotReady => format!("{NOT_READY_MESSAGE}\n{SEALED_FALLBACK_MESSAGE}"),
        ErrorCode::DataMarshalFailure => "Error: Malformed request.".to_owned(),
        ErrorCode::DataUnmarshalFailure => format!("Error: Failed to parse API response. ({err})"),
        ErrorCode::ApiNotFound => "Error: Resource not found.".to_owned(),
        ErrorCode::ApiBadRequest => "Error: Invalid request.".to_owned(),
        ErrorCode::DataInvalidInput => "Error: Invalid input provided.".to_owned(),
        // Nexus answered, so these are not connection failures.
        ErrorCode::NetPeerConnection => match err.status() {
            Some(507) => format!(
                "Error: SPIKE Nexus at {nexus_url} cannot store the change: its disk is full \
                 (HTTP 507). {STORAGE_FULL_HINT}"
            ),
            // `detail: backend_outcome_unknown`: the database did not confirm the commit.
            Some(504) => format!(
                "Error: SPIKE Nexus at {nexus_url} sent the change to its database, which did \
                 not confirm it (HTTP 504): it may or may not have been applied. Read it back \
                 (spike secret get / spike policy get) before retrying; the cause is in its \
                 journal: {NEXUS_JOURNAL_HINT}"
            ),
            Some(status @ 500..=599) => format!(
                "Error: SPIKE Nexus at {nexus_url} failed the request (HTTP {status}); the cause \
                 is in its journal: {NEXUS_JOURNAL_HINT}"
            ),
            Some(status) => {
                format!("Error: SPIKE Nexus at {nexus_url} refused the request (HTTP {status}).")
            }
            None => format!("Error: {CONNECT_FAILED} at {nexus_url}: {err}"),
        },
        ErrorCode::AccessUnauthorized => match own_id {
            Some(id) => format!(
                "Error: Unauthorized access. (this workload is {id}; check the policies in SPIKE \
                 Nexus)"
            ),
            None => "Error: Unauthorized access.".to_owned(),
        },
        ErrorCode::NetReadingResponseBody => "Error: Failed to read response body.".to_owned(),
        ErrorCode::EntityNotFound => "Error: Entity not found.".to_owned(),
        ErrorCode::EntityInvalid => "Error: Invalid entity.".to_owned(),
        ErrorCode::ApiPostFailed => "Error: Operation failed.".to_owned(),
        ErrorCode::ObjectCreationFailed => "Error: Failed to create resource.".to_owned(),
        ErrorCode::CryptoEncryptionFailed => "Error: Encryption failed.".to_owned(),
        ErrorCode::CryptoDecryptionFailed => "Error: Decryption failed.".to_owned(),
        ErrorCode::CryptoCipherNotAvailable => "Error: Cipher not available.".to_owned(),
        ErrorCode::CryptoInvalidEncryptionKeyLength => {
            "Error: Invalid encryption key length.".to_owned()
        }
        _ => format!("Error: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://nexus.test:8553";

    fn msg(err: ClientError) -> (String, u8) {
        let e = PilotError::Api {
            nexus_url: URL.into(),
            own_id: Some("spiffe://spike.test/w".into()),
            source: Box::new(err),
        };
        (e.message(), e.exit_code())
    }

    #[test]
    fn maps_like_spike() {
        let url = || format!("{URL}/v1/store/secrets");
        let cases = [
            (
                ClientError::NotReady { url: url() },
                NOT_READY_MESSAGE,
                EXIT_SEALED,
            ),
            (
                ClientError::NotFound { url: url() },
                "Error: Resource not found.",
                EXIT_FAILURE,
            ),
            (
                ClientError::BadRequest { url: url() },
                "Error: Invalid request.",
                EXIT_FAILURE,
            ),
            (
                ClientError::Unauthorized { url: url() },
                "Error: Unauthorized access.",
                EXIT_FAILURE,
            ),
            (
                ClientError::Peer {
                    url: url(),
                    status: 500,
                },
                "Error: SPIKE Nexus at https://nexus.test:8553 failed the request (HTTP 500); the \
                 cause is in its journal: journalctl -u spike-nexus",
                EXIT_FAILURE,
            ),
            (
                ClientError::Peer {
                    url: url(),
                    status: 507,
                },
                "Error: SPIKE Nexus at https://nexus.test:8553 cannot store the change: its disk \
                 is full (HTTP 507). Reads still work; writes resume by themselves once space is \
                 freed under /var/lib/spike-nexus.",
                EXIT_FAILURE,
            ),
            (
                ClientError::Peer {
                    url: url(),
                    status: 504,
                },
                "it may or may not have been applied. Read it back",
                EXIT_FAILURE,
            ),
            (
                ClientError::Peer {
                    url: url(),
                    status: 413,
                },
                "Error: SPIKE Nexus at https://nexus.test:8553 refused the request (HTTP 413).",
                EXIT_FAILURE,
            ),
            (
                ClientError::Api {
                    url: url(),
                    code: ErrorCode::EntityNotFound,
                },
                "Error: Entity not found.",
                EXIT_FAILURE,
            ),
            (
                ClientError::Api {
                    url: url(),
                    code: ErrorCode::DataInvalidInput,
                },
                "Error: Invalid input provided.",
                EXIT_FAILURE,
            ),
            (
                ClientError::Connect {
                    url: url(),
                    source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                },
                "Error: Failed to connect to SPIKE Nexus at https://nexus.test:8553: ",
                EXIT_CONNECTION,
            ),
            (
                ClientError::Timeout {
                    url: url(),
                    phase: "connect",
                    after: std::time::Duration::from_secs(1),
                },
                "Failed to connect to SPIKE Nexus at",
                EXIT_CONNECTION,
            ),
        ];
        for (err, want, code) in cases {
            let (got, got_code) = msg(err);
            assert!(got.contains(want), "{got:?} lacks {want:?}");
            assert_eq!(got_code, code, "{got}");
        }
    }

    #[test]
    fn answered_statuses_are_not_connection_failures() {
        for status in [500, 502, 507, 413] {
            let (got, code) = msg(ClientError::Peer {
                url: URL.into(),
                status,
            });
            assert!(!got.contains(CONNECT_FAILED), "{got}");
            assert!(got.contains(&format!("(HTTP {status})")), "{got}");
            assert_eq!(code, EXIT_FAILURE);
        }
    }

    #[test]
    fn not_ready_fallback_does_not_claim_not_initialized() {
        let (got, code) = msg(ClientError::NotReady { url: URL.into() });
        assert_eq!(code, EXIT_SEALED);
        assert!(got.starts_with(NOT_READY_MESSAGE), "{got}");
        assert!(!got.contains("not initialized"), "{got}");
        assert!(
            got.contains("is sealed (its root key is not in memory)"),
            "{got}"
        );
        assert!(
            got.contains("wait for SPIKE Bootstrap and the keepers"),
            "{got}"
        );
        assert!(got.contains("spike-operator restore DIR"), "{got}");
    }

    #[test]
    fn sealed_and_reported() {
        let e = PilotError::Sealed {
            nexus_url: URL.into(),
            state: "sealed: Nexus cannot open its store: disk I/O error".into(),
        };
        assert_eq!(e.exit_code(), EXIT_SEALED);
        assert_eq!(
            e.message(),
            format!(
                "{NOT_READY_MESSAGE}\nSPIKE Nexus at {URL} is sealed: Nexus cannot open its \
                 store: disk I/O error"
            )
        );
        let quiet = PilotError::Reported { code: EXIT_SEALED };
        assert_eq!(quiet.exit_code(), EXIT_SEALED);
        assert!(quiet.message().is_empty());
    }

    fn failure(url: &str, error: ClientError, state: Option<&str>) -> UrlFailure {
        UrlFailure {
            url: url.into(),
            error: Box::new(error),
            state: state.map(str::to_owned),
        }
    }

    fn refused(url: &str) -> ClientError {
        ClientError::Connect {
            url: url.into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        }
    }

    #[test]
    fn no_instance_names_every_url_with_its_cause() {
        let e = PilotError::NoInstance {
            failures: vec![
                failure("https://a:1", refused("https://a:1"), None),
                failure(
                    "https://b:2",
                    ClientError::NotReady {
                        url: "https://b:2/v1/store/secrets".into(),
                    },
                    Some("sealed: waiting for bootstrap (0/2 shards)"),
                ),
                failure(
                    "https://c:3",
                    ClientError::NotReady {
                        url: "https://c:3/v1/store/secrets".into(),
                    },
                    None,
                ),
            ],
        };
        let text = e.message();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!("Error: {CONNECT_FAILED} at any of its 3 URLs:"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("  https://a:1: cannot connect"),
            "{text}"
        );
        assert_eq!(
            lines[2],
            "  https://b:2: sealed: waiting for bootstrap (0/2 shards)"
        );
        assert_eq!(
            lines[3],
            "  https://c:3: answered HTTP 503: sealed or not ready"
        );
        assert_eq!(lines.len(), 4, "{text}");
        // An instance answered sealed: the sealed exit status.
        assert_eq!(e.exit_code(), EXIT_SEALED);

        let e = PilotError::NoInstance {
            failures: vec![
                failure("https://a:1", refused("https://a:1"), None),
                failure("https://b:2", refused("https://b:2"), None),
            ],
        };
        assert_eq!(e.exit_code(), EXIT_CONNECTION);
        assert_eq!(e.message().lines().count(), 3);
    }

    #[test]
    fn no_instance_all_sealed_keeps_the_not_ready_style() {
        let sealed = |url: &str, state| {
            failure(
                url,
                ClientError::NotReady {
                    url: format!("{url}/v1/store/secrets"),
                },
                state,
            )
        };
        let e = PilotError::NoInstance {
            failures: vec![
                sealed(
                    "https://a:1",
                    Some("sealed: waiting for its keepers (1/2 shards)"),
                ),
                sealed(
                    "https://b:2",
                    Some("sealed: waiting for its keepers (0/2 shards)"),
                ),
            ],
        };
        assert_eq!(e.exit_code(), EXIT_SEALED);
        assert_eq!(
            e.message(),
            format!(
                "{NOT_READY_MESSAGE}\nSPIKE Nexus is sealed at each of its 2 URLs:\n  \
                 https://a:1: sealed: waiting for its keepers (1/2 shards)\n  https://b:2: \
                 sealed: waiting for its keepers (0/2 shards)"
            )
        );
        let e = PilotError::NoInstance {
            failures: vec![sealed("https://a:1", None), sealed("https://b:2", None)],
        };
        assert!(
            e.message().ends_with(SEALED_FALLBACK_MESSAGE),
            "{}",
            e.message()
        );
    }

    #[test]
    fn outcome_unknown_names_the_url() {
        let e = PilotError::OutcomeUnknown {
            nexus_url: "https://b:2".into(),
            source: Box::new(ClientError::Timeout {
                url: "https://b:2/v1/store/secrets".into(),
                phase: "response headers",
                after: std::time::Duration::from_secs(30),
            }),
            earlier: vec![failure("https://a:1", refused("https://a:1"), None)],
        };
        let text = e.message();
        assert!(
            text.starts_with(&format!("Error: {CONNECT_FAILED} at https://b:2: ")),
            "{text}"
        );
        assert!(
            text.contains("may have reached SPIKE Nexus at https://b:2, so its outcome is unknown"),
            "{text}"
        );
        assert!(
            text.contains("\nTried before it:\n  https://a:1: cannot connect"),
            "{text}"
        );
        assert_eq!(e.exit_code(), EXIT_CONNECTION);
    }

    #[test]
    fn usage_and_identity_codes() {
        assert_eq!(PilotError::Usage("x".into()).exit_code(), EXIT_USAGE);
        let e = PilotError::Identity {
            endpoint: "unix:/nope".into(),
            reason: "does not exist".into(),
        };
        assert_eq!(e.exit_code(), EXIT_CONNECTION);
        assert_eq!(
            e.message(),
            "No SPIFFE identity: the Workload API at unix:/nope does not exist"
        );
    }
}
