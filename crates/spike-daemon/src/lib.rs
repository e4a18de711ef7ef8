//! Daemon plumbing shared by the long-running SPIKE binaries (`spike-nexus`, `spike-keeper`):
//! logging to journald or stderr, the mTLS accept loop, signals to cancellation with a grace period, systemd
//! readiness/status/watchdog notifications, socket activation, process hardening, and config
//! loading from TOML plus SPIKE's environment variables.
//!
//! Everything that reads the environment takes an [`EnvSource`], so tests pass a [`MapEnv`] and
//! never touch the process environment. Only binaries call [`logging::init`] and
//! [`shutdown::spawn_signal_handler`].
//!
//! # Layout
//!
//! - [`common`]: the configuration keys every daemon shares (one name per concept, deprecated
//!   aliases), the one `[trust_roots]` table ([`common::TrustRootsFile`]), [`common::roots_list`]
//!   and the typed [`common::IdentitySettings`].
//! - [`config`]: figment loader (`load`) with an explicit SPIKE env-var map, errors that name the
//!   key and its origin, Go durations (`parse_go_duration`, `GoDuration`) and Go listen
//!   addresses (`:8553`).
//! - [`mod@env`]: the [`EnvSource`] trait, [`ProcessEnv`] and [`MapEnv`].
//! - [`handshake`]: [`handshake::HandshakeFailureLog`], failed TLS handshakes at `warn` once
//!   per peer address per minute, in bounded memory (used by Nexus and Keeper).
//! - [`harden`]: `PR_SET_DUMPABLE=0`, `RLIMIT_CORE=0`, umask 077, `mlockall` by policy.
//! - [`identity`]: the Workload API connection of a daemon and its own-ID role check.
//! - [`limits`]: the listeners' time and memory limits ([`limits::Limits`]): handshake slots
//!   that drop the oldest when full, per-peer connection and body-memory caps, body deadlines,
//!   write timeouts, connection lifetimes.
//! - [`listen`]: named socket-activation fds (`LISTEN_FDNAMES`) as tokio listeners, with a
//!   fallback bind; the one place with `unsafe` (adopting an fd number).
//! - [`logging`]: tracing subscriber setup, [`logging::log_keys`], [`logging::AUDIT_TARGET`].
//! - [`notify`]: `sd_notify` messages through an injectable [`notify::Notifier`], watchdog task.
//! - [`serve`]: [`serve::serve_mtls`], the one mTLS accept loop of Nexus and Keeper (the
//!   [`limits`] applied, accept backoff, graceful shutdown with a grace period), and
//!   [`serve::serve_connection`], the per-connection HTTP/1.1 driver the plain listeners reuse.
//! - [`shutdown`]: [`shutdown::Shutdown`], SIGTERM/SIGINT handling, `run_with_grace`, and
//!   [`shutdown::Tasks`] (named tasks; the first failure cancels the rest).

#![deny(unsafe_code)]

pub mod common;
pub mod config;
pub mod env;
pub mod handshake;
pub mod harden;
pub mod identity;
pub mod limits;
pub mod listen;
pub mod logging;
pub mod notify;
pub mod serve;
pub mod shutdown;

pub use env::{EnvSource, MapEnv, ProcessEnv};
pub use shutdown::CancellationToken;
