//! The `spike-keeper` binary: arguments, config, logging, hardening, signals, then
//! [`spike_keeper::daemon::run_daemon`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spike_daemon::ProcessEnv;
use spike_daemon::harden::{HardenPolicy, harden};
use spike_daemon::notify::Notifier;
use spike_daemon::shutdown::{Shutdown, spawn_signal_handler};
use spike_keeper::KeeperConfig;

/// SPIKE Keeper: holds one Shamir shard of the root key in memory.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (SPIKE_* environment variables override it).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration offline and exit.
    CheckConfig,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match KeeperConfig::load(args.config.as_deref(), &ProcessEnv) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("spike-keeper: {err}");
            return ExitCode::from(64);
        }
    };
    if let Some(Command::CheckConfig) = args.command {
        for deprecation in &config.deprecations {
            eprintln!("spike-keeper: warning: {deprecation}");
        }
        println!("configuration OK (listen {})", config.listen);
        return ExitCode::SUCCESS;
    }
    if let Err(err) = spike_daemon::logging::init(&config.log, &ProcessEnv) {
        eprintln!("spike-keeper: {err}");
        return ExitCode::from(64);
    }
    for deprecation in &config.deprecations {
        tracing::warn!("{deprecation}");
    }
    let policy = HardenPolicy {
        lock_memory: true,
        require_mlock: config.require_mlock,
    };
    match harden(policy) {
        Ok(report) => report.warnings.iter().for_each(|w| tracing::warn!("{w}")),
        Err(err) => {
            tracing::error!(error = %err, "process hardening failed");
            eprintln!("spike-keeper: {err}");
            return ExitCode::FAILURE;
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // Bounded thread count: with memory locked, every thread's stack is resident, and
        // tokio's default blocking pool (512 threads) could alone outgrow the unit's
        // MemoryMax=; the keeper does no blocking work beyond startup.
        .max_blocking_threads(4)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("spike-keeper: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = Shutdown::new();
        spawn_signal_handler(shutdown.token()).map_err(|e| e.to_string())?;
        let fds = spike_daemon::listen::take_listeners().map_err(|e| e.to_string())?;
        spike_keeper::daemon::run_daemon(config, fds, Notifier::from_env(), shutdown.token())
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "spike-keeper failed");
            eprintln!("spike-keeper: {err}");
            ExitCode::FAILURE
        }
    }
}
