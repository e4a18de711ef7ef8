//! [`KeeperError`]: why the keeper could not start or stopped.

use spike_daemon::config::ConfigError;

/// Errors of the keeper daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeeperError {
    /// The configuration could not be loaded (file, syntax, unknown or mistyped keys).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A configuration value is well-typed but invalid.
    #[error("invalid configuration: key `{key}`: {message}")]
    InvalidConfig {
        /// The config key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The SPIFFE identity could not be obtained or used.
    #[error(transparent)]
    Identity(#[from] spike_identity::IdentityError),
    /// The workload's own SPIFFE ID is not a Keeper ID under the configured trust roots.
    #[error(
        "this workload's SPIFFE ID {id} is not a SPIKE Keeper ID (expected spiffe://<root>/spike/keeper \
         for a root in SPIKE_TRUST_ROOT_KEEPER = {roots})"
    )]
    NotAKeeper {
        /// The own SPIFFE ID.
        id: String,
        /// The configured keeper trust roots.
        roots: String,
    },
    /// The listening socket could not be obtained.
    #[error(transparent)]
    Listen(#[from] spike_daemon::listen::ListenError),
    /// In-flight connections outlived the shutdown grace period.
    #[error(transparent)]
    Grace(#[from] spike_daemon::shutdown::GraceExpired),
    /// Shard sealing is on but the unit does not provide what it needs.
    #[error(transparent)]
    Sealing(#[from] crate::sealing::SealingSetupError),
}
