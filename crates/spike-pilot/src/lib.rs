//! `spike`, the SPIKE Pilot command-line interface, as a library.
//!
//! The binary (`src/main.rs`) only hardens the process and calls [`run`]; everything else is
//! here so that tests (and end-to-end harnesses) can run the CLI in-process with their own
//! standard streams ([`Io`]) and environment ([`EnvSource`]).
//!
//! Pilot talks to SPIKE Nexus over mutual TLS with the workload's X.509-SVID from the
//! SPIFFE Workload API and requires the server to present a Nexus SPIFFE ID (docs/protocol.md#conventions). Unlike
//! SPIKE's Go Pilot it does not refuse commands based on its own SVID's role: Nexus decides,
//! so a workload can use `spike secret get` under its own identity.
//!
//! Exit status: 0 success, 1 API or validation error, 2 usage or configuration error,
//! 3 connection or identity failure, 4 Nexus answered but is sealed (SPIKE's Go Pilot exits 0
//! after API errors; docs/compatibility.md row 22). `spike status` exits 0 only while Nexus is unsealed and
//! serving, and 4 when it answered sealed: not bootstrapped, waiting for its keepers, holding
//! data without its root key (after a power cut: `spike-operator restore DIR`), or unable to
//! open its store. Any command that gets `state_not_ready` (HTTP 503) reads the health once
//! and prints the same state, and exits 4.
//! Data goes to standard output only; errors and prompts go to standard error.
//!
//! # Layout
//!
//! - `cli`: the clap definitions ([`cli::Cli`]).
//! - `config`: [`Config`] from `--config`/`$XDG_CONFIG_HOME/spike/config.toml`/
//!   `/etc/spike/pilot.toml` and the environment ([`EnvSource`]).
//! - `errors`: [`PilotError`], exit codes and SPIKE's error-message mapping (docs/compatibility.md#pilot-spike).
//! - `failover`: several Nexus URLs: which failures move on to the next URL
//!   ([`failover::classify`]) and the loop every request goes through ([`failover::run`]).
//! - `harden`: best-effort process hardening used by the binary.
//! - `output`: human/JSON/YAML formatting of every read command ([`output::Format`]).
//! - `policy_yaml`: the policy file parser ([`policy_yaml::parse_policy_yaml`]).
//! - `session`: lazily established identity + one Nexus client per configured URL; every
//!   request goes through [`session::Session::read`] or [`session::Session::write`].
//! - `commands`: one module per command group (`secret`, `policy`, `cipher`, `operator`,
//!   `status`).

pub mod cli;
pub mod commands;
pub mod config;
pub mod errors;
pub mod failover;
pub mod harden;
pub mod output;
pub mod policy_yaml;
pub mod session;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

pub use config::{Config, ConfigError, EnvSource, MapEnv, ProcessEnv};
pub use errors::{EXIT_CONNECTION, EXIT_FAILURE, EXIT_OK, EXIT_SEALED, EXIT_USAGE, PilotError};

use crate::cli::{Cli, Command};
use crate::session::Session;

/// The standard streams of one CLI invocation.
pub struct Io<'a> {
    /// Standard input (shards for `operator restore`, data for `cipher`, confirmations).
    pub stdin: &'a mut dyn Read,
    /// Standard output: data and success messages only.
    pub stdout: &'a mut dyn Write,
    /// Standard error: errors, warnings and prompts.
    pub stderr: &'a mut dyn Write,
    /// Whether `stdin` is the process's terminal (enables hidden input with echo off on
    /// file descriptor 0). Only set this when `stdin` really is the process's fd 0.
    pub stdin_is_terminal: bool,
}

impl<'a> Io<'a> {
    /// Streams that are not a terminal.
    pub fn new(
        stdin: &'a mut dyn Read,
        stdout: &'a mut dyn Write,
        stderr: &'a mut dyn Write,
    ) -> Self {
        Self {
            stdin,
            stdout,
            stderr,
            stdin_is_terminal: false,
        }
    }
}

/// Runs the CLI with `args` (including the program name) and the process environment.
///
/// Builds a single-threaded Tokio runtime; from async code use [`run_async`] instead.
pub fn run<I, T>(args: I, io: &mut Io<'_>) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run_with_env(args, io, &ProcessEnv)
}

/// Like [`run`] with an injected environment.
pub fn run_with_env<I, T>(args: I, io: &mut Io<'_>, env: &dyn EnvSource) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            let _ = writeln!(io.stderr, "Error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    runtime.block_on(run_async(args, io, env))
}

/// Runs the CLI inside an existing Tokio runtime.
pub async fn run_async<I, T>(args: I, io: &mut Io<'_>, env: &dyn EnvSource) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    ExitCode::from(run_code(args, io, env).await)
}

/// Runs the CLI and returns the numeric exit status.
pub async fn run_code<I, T>(args: I, io: &mut Io<'_>, env: &dyn EnvSource) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let text = err.render().to_string();
            let sink: &mut dyn Write = if err.use_stderr() {
                io.stderr
            } else {
                io.stdout
            };
            let _ = sink.write_all(text.as_bytes());
            let _ = sink.flush();
            return u8::try_from(err.exit_code()).unwrap_or(EXIT_USAGE);
        }
    };
    let result = dispatch(cli, io, env).await;
    let _ = io.stdout.flush();
    match result {
        Ok(()) => EXIT_OK,
        Err(err) => {
            let message = err.message();
            if !message.is_empty() {
                let _ = writeln!(io.stderr, "{message}");
                let _ = io.stderr.flush();
            }
            err.exit_code()
        }
    }
}

async fn dispatch(cli: Cli, io: &mut Io<'_>, env: &dyn EnvSource) -> Result<(), PilotError> {
    match cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "spike", io.stdout);
            Ok(())
        }
        Command::Man => {
            let man = clap_mangen::Man::new(Cli::command());
            man.render(io.stdout)
                .map_err(|e| PilotError::io("write the man page", e))
        }
        command => {
            let config = Config::load(cli.config.as_deref(), cli.nexus_url.as_deref(), env)?;
            let mut session = Session::new(config);
            let result = match command {
                Command::Secret { cmd } => commands::secret::run(cmd, &mut session, io).await,
                Command::Policy { cmd } => commands::policy::run(cmd, &mut session, io).await,
                Command::Cipher { cmd } => commands::cipher::run(cmd, &mut session, io).await,
                Command::Operator { cmd } => {
                    commands::operator::run(cmd, &mut session, io, env).await
                }
                Command::Status(args) => commands::status::run(args, &mut session, io).await,
                Command::Completions { .. } | Command::Man => Ok(()),
            };
            let result = match result {
                Ok(()) => Ok(()),
                Err(err) => Err(session.explain(err).await),
            };
            session.close().await;
            result
        }
    }
}
