//! The `spike-bootstrap` one-shot: arguments, config, logging, then [`spike_bootstrap::run`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spike_bootstrap::{BootstrapConfig, Outcome};
use spike_daemon::ProcessEnv;

/// SPIKE Bootstrap: generate the root key, seed the keepers, verify Nexus (runs once).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (SPIKE_* environment variables override it).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Re-key even if already bootstrapped; refused unless Nexus reports it holds no data.
    #[arg(long)]
    force: bool,
    /// Accepted for compatibility with SPIKE's `bootstrap -init`; bootstrapping is the default.
    #[arg(long)]
    init: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration offline and exit (same exit codes as a run).
    CheckConfig,
}

fn main() -> ExitCode {
    // Go's flag package spells it `-init`.
    let argv = std::env::args().map(|a| if a == "-init" { "--init".to_owned() } else { a });
    let args = Args::parse_from(argv);
    let mut config = match BootstrapConfig::load(args.config.as_deref(), &ProcessEnv) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("spike-bootstrap: {err}");
            return ExitCode::from(err.exit_code());
        }
    };
    config.force |= args.force;
    if let Some(Command::CheckConfig) = args.command {
        for deprecation in &config.deprecations {
            eprintln!("spike-bootstrap: warning: {deprecation}");
        }
        for warning in config.warnings() {
            eprintln!("spike-bootstrap: warning: {warning}");
        }
        println!(
            "configuration OK: {} keepers, threshold {}, Nexus {}, marker {}",
            config.keepers.len(),
            config.threshold,
            config.nexus_api_url,
            config.marker_path().display()
        );
        return ExitCode::SUCCESS;
    }
    if let Err(err) = spike_daemon::logging::init(&Default::default(), &ProcessEnv) {
        eprintln!("spike-bootstrap: {err}");
        return ExitCode::from(64);
    }
    for deprecation in &config.deprecations {
        tracing::warn!("{deprecation}");
    }
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("spike-bootstrap: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(spike_bootstrap::run(&config)) {
        Ok(outcome) => {
            println!("{}", describe(&outcome));
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(error = %err, "bootstrap failed");
            eprintln!("spike-bootstrap: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::MemoryBackend => "Nexus uses the memory backend: nothing to bootstrap".to_owned(),
        Outcome::AlreadyBootstrapped { marker } => {
            format!("already bootstrapped (marker {})", marker.display())
        }
        Outcome::NexusAlreadyInitialized { marker } => format!(
            "Nexus is already initialized; not re-keying (marker {})",
            marker.display()
        ),
        Outcome::Bootstrapped { marker, keepers } => format!(
            "bootstrap completed: {keepers} keepers seeded, Nexus verified (marker {}). \
             Keepers hold their shards in RAM only: export the recovery shards now and keep \
             them offline (as root: spike-operator recover DIR; docs/operations.md), or a \
             power cut leaves Nexus sealed with no way back.",
            marker.display()
        ),
    }
}
