//! The testkit's error type.

/// Errors from the test CA, the Workload API server and the PostgreSQL harness.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// rcgen failed to build or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A socket or temporary directory could not be created.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A gRPC connection to the Workload API socket failed.
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The Workload API answered with a gRPC status.
    #[error("workload api status: {0}")]
    Status(#[from] tonic::Status),
    /// A stream ended before its first message.
    #[error("stream ended without a message")]
    EmptyStream,
    /// No PostgreSQL server binaries were found for the PostgreSQL harness.
    #[error(
        "PostgreSQL server binaries not found ({0}); run scripts/install-deps.sh or set SPIKE_PG_BINDIR"
    )]
    PostgresNotInstalled(String),
    /// A step of the PostgreSQL harness failed (the message carries stderr or the server log).
    #[error("postgres harness: {0}")]
    Postgres(String),
}
