//! The `spike-nexus` binary: arguments, config, logging, hardening, then
//! [`spike_nexus::run_daemon`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spike_daemon::{ProcessEnv, harden, logging};
use spike_nexus::{api::sys, config, probe};
use std::time::Duration;

#[derive(Parser)]
#[command(name = "spike-nexus", about = "SPIKE Nexus: the secret store")]
#[command(disable_version_flag = true)]
struct Args {
    /// TOML configuration file (SPIKE_* environment variables override it).
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// Print the version and build id, then exit.
    #[arg(long, short = 'V')]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and exit (0 valid, 64 invalid).
    CheckConfig,
    /// Ask a running Nexus for its health over the local socket (prints the JSON body).
    Health {
        /// The health unix socket.
        #[arg(long, default_value = "/run/spike/nexus-health.sock")]
        socket: PathBuf,
        /// Print only the HTTP status code (200 unsealed, 501 not bootstrapped, 503 sealed).
        #[arg(long)]
        print_code: bool,
    },
    /// Wait until Nexus is unsealed; exit 1 with the last status after the timeout.
    WaitUnsealed {
        /// The health unix socket.
        #[arg(long, default_value = "/run/spike/nexus-health.sock")]
        socket: PathBuf,
        /// How long to wait (Go duration, e.g. 300s, 5m).
        #[arg(long, default_value = "300s", value_parser = spike_daemon::config::parse_go_duration)]
        timeout: std::time::Duration,
    },
    /// Run as spike-ready.service: READY=1 once Nexus is unsealed (fail after --wait), exit
    /// once it is not.
    WatchReady {
        /// The health unix socket.
        #[arg(long, default_value = "/run/spike/nexus-health.sock")]
        socket: PathBuf,
        /// Probe interval while ready (Go duration).
        #[arg(long, default_value = "1s", value_parser = spike_daemon::config::parse_go_duration)]
        interval: std::time::Duration,
        /// How long to wait for unsealed before failing the start (Go duration).
        #[arg(long, default_value = "90s", value_parser = spike_daemon::config::parse_go_duration)]
        wait: std::time::Duration,
    },
    /// Run as spike-ready-trigger.service: while Nexus is unsealed, poke spike-ready.socket.
    TriggerReady {
        /// The health unix socket.
        #[arg(long, default_value = "/run/spike/nexus-health.sock")]
        socket: PathBuf,
        /// The socket of spike-ready.socket.
        #[arg(long, default_value = "/run/spike/ready.sock")]
        trigger: PathBuf,
        /// Probe interval (Go duration).
        #[arg(long, default_value = "1s", value_parser = spike_daemon::config::parse_go_duration)]
        interval: std::time::Duration,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.version {
        println!("spike-nexus {} (build {})", sys::VERSION, sys::BUILD_ID);
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Health { socket, print_code }) = &args.command {
        return probe_main(|rt| {
            rt.block_on(probe::health(socket, Duration::from_secs(10)))
                .map(|a| {
                    println!(
                        "{}",
                        if *print_code {
                            a.code.to_string()
                        } else {
                            a.body
                        }
                    );
                })
                .map_err(|e| e.to_string())
        });
    }
    if let Some(Command::WaitUnsealed { socket, timeout }) = &args.command {
        return probe_main(|rt| rt.block_on(probe::wait_unsealed(socket, *timeout)));
    }
    if let Some(Command::WatchReady {
        socket,
        interval,
        wait,
    }) = &args.command
    {
        let notifier = spike_daemon::notify::Notifier::from_env();
        return probe_main(|rt| {
            rt.block_on(async {
                // The fd named "trigger" of spike-ready.socket, when socket-activated.
                let trigger = spike_daemon::listen::take_listeners()
                    .and_then(|mut fds| fds.take_unix("trigger"))
                    .map_err(|e| e.to_string())?;
                probe::watch_ready(socket, *interval, *wait, &notifier, trigger).await
            })
        });
    }
    if let Some(Command::TriggerReady {
        socket,
        trigger,
        interval,
    }) = &args.command
    {
        let notifier = spike_daemon::notify::Notifier::from_env();
        return probe_main(|rt| {
            rt.block_on(probe::trigger_ready(socket, trigger, *interval, &notifier))
        });
    }
    let config = match config::load(args.config.as_deref(), &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spike-nexus: {e}");
            return ExitCode::from(64);
        }
    };
    if matches!(args.command, Some(Command::CheckConfig)) {
        for deprecation in &config.deprecations {
            eprintln!("spike-nexus: warning: {deprecation}");
        }
        for warning in config.warnings() {
            eprintln!("spike-nexus: warning: {warning}");
        }
        if let Err(e) = config::check_postgres(&config) {
            eprintln!("spike-nexus: {e}");
            return ExitCode::from(64);
        }
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    if let Err(e) = logging::init(&config.log, &ProcessEnv) {
        eprintln!("spike-nexus: {e}");
        return ExitCode::from(64);
    }
    for deprecation in &config.deprecations {
        tracing::warn!("{deprecation}");
    }
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let policy = harden::HardenPolicy {
        lock_memory: true,
        require_mlock: config.require_mlock,
    };
    match harden::harden(policy) {
        Ok(report) => report.warnings.iter().for_each(|w| tracing::warn!("{w}")),
        Err(e) => {
            eprintln!("spike-nexus: process hardening failed: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        // Bounded thread count: with memory locked, every thread's stack is resident, and
        // tokio's default blocking pool (512 threads) could alone outgrow the unit's
        // MemoryMax=; store work (SQLite reads and the group commit) runs on the blocking pool.
        .max_blocking_threads(32)
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| Ok(rt.block_on(spike_nexus::run_daemon(config))?));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "spike-nexus failed");
            eprintln!("spike-nexus: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn probe_main(f: impl FnOnce(&tokio::runtime::Runtime) -> Result<(), String>) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| f(&rt));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spike-nexus: {e}");
            ExitCode::FAILURE
        }
    }
}
