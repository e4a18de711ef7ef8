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
use spike_keeper::provision::run_sealing_key;

/// SPIKE Keeper: holds one Shamir shard of the root key (in memory; sealed to the machine
/// with `shard_sealing`).
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
    /// Validate the configuration offline and exit (with shard sealing, also that this
    /// machine can provide the mode: a TPM2 for `tpm2` and `host+tpm2`).
    CheckConfig,
    /// Create, verify or re-seal the shard sealing key credential (run as root by
    /// spike-keeper-sealing@N.service before each start of keeper N).
    SealingKey {
        /// The credential file (LoadCredentialEncrypted= of the keeper unit reads it).
        #[arg(long, value_name = "FILE")]
        credential: PathBuf,
        /// The keeper's sealed shard file: a key kept aside that sealed it and decrypts
        /// again is put back instead of a new one.
        #[arg(long, value_name = "FILE")]
        sealed_shard: Option<PathBuf>,
    },
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
    match args.command {
        Some(Command::CheckConfig) => {
            for deprecation in &config.deprecations {
                eprintln!("spike-keeper: warning: {deprecation}");
            }
            if let Err(err) = config.sealing.check_supported(&ProcessEnv) {
                eprintln!("spike-keeper: invalid configuration: key `shard_sealing`: {err}");
                return ExitCode::from(64);
            }
            println!(
                "configuration OK (listen {}, shard_sealing {})",
                config.listen, config.sealing.mode
            );
            return ExitCode::SUCCESS;
        }
        Some(Command::SealingKey {
            credential,
            sealed_shard,
        }) => return run_sealing_key(&config, &credential, sealed_shard.as_deref()),
        None => {}
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
        // MemoryMax=; the keeper's only blocking work is writing its sealed shard file
        // (sealing on), one write at a time.
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
        spike_keeper::daemon::run_daemon(
            config,
            &ProcessEnv,
            fds,
            Notifier::from_env(),
            shutdown.token(),
        )
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
