//! The clap definitions of every command and flag (docs/compatibility.md#pilot-spike plus `status`, `completions`, `man`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Long help text appended to `spike --help`.
pub const AFTER_LONG_HELP: &str = "\
Exit status:
  0  success
  1  SPIKE Nexus answered with an error, or the input was invalid
  2  usage error (unknown command or flag, missing argument) or invalid configuration
  3  SPIKE Nexus or the SPIFFE Workload API could not be reached, or TLS identities did
     not match
  4  SPIKE Nexus answered but is sealed: not bootstrapped yet, waiting for its keepers,
     holding data without its root key (after a power cut: spike-operator restore DIR),
     or unable to open its store; the message says which

Data is written to standard output only; errors and prompts go to standard error.

Configuration (highest precedence first): --nexus-url, environment variables, the
configuration file (--config FILE, else $XDG_CONFIG_HOME/spike/config.toml, else
/etc/spike/pilot.toml), defaults.
  SPIKE_NEXUS_API_URL          nexus_url               https://localhost:8553
  SPIFFE_ENDPOINT_SOCKET       spiffe_endpoint_socket  unix:///tmp/spire-agent/public/api.sock
  SPIKE_TRUST_ROOT_NEXUS       trust_root_nexus        spike.ist
  SPIKE_HTTP_CLIENT_TIMEOUT    timeout                 30s (per request)
  SPIKE_SPIFFE_SOURCE_TIMEOUT  spiffe_timeout          10s (waiting for the SVID)
  SPIKE_PILOT_SPIFFE_ID        spiffe_id               (the agent's first SVID)
  SPIKE_PILOT_RECOVERY_DIR     recovery files go to <dir>/recover (default ~/.spike/recover)

Several SPIKE Nexus instances sharing one store: give a comma-separated list of https URLs
(at most 16), e.g. SPIKE_NEXUS_API_URL=https://nexus-a:8553,https://nexus-b:8553. They are
tried in order. A URL that cannot be reached (refused, unreachable, TLS handshake or SPIFFE
ID failure) or answers 503 (sealed, not ready) moves on to the next, for every command. A
request that may have arrived before the connection failed is repeated at the next URL only
for reads (get, list, metadata, policy get/list, status, cipher); a write (put, delete,
undelete, policy create/apply/delete) then fails saying its outcome is unknown. Other answers
are final. operator restore takes a single URL.";

/// `spike`: the SPIKE Pilot command-line interface.
#[derive(Debug, Parser)]
#[command(
    name = "spike",
    version,
    about = "SPIKE Pilot: manage secrets, policies and recovery in SPIKE Nexus",
    long_about = "SPIKE Pilot: manage secrets, policies, encryption and recovery in SPIKE Nexus.\n\n\
        Pilot authenticates with the X.509-SVID from the SPIFFE Workload API and only talks to \
        a server presenting a SPIKE Nexus SPIFFE ID. What a caller may do is decided by Nexus \
        (Pilot superuser, recover and restore roles, or policies).",
    after_long_help = AFTER_LONG_HELP
)]
pub struct Cli {
    /// Configuration file (TOML; keys nexus_url, spiffe_endpoint_socket, trust_root_nexus,
    /// timeout).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// SPIKE Nexus URL, or a comma-separated list of instances tried in order (overrides
    /// SPIKE_NEXUS_API_URL and the configuration file).
    #[arg(long, global = true, value_name = "URL[,URL...]")]
    pub nexus_url: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage secrets.
    Secret {
        /// The secret command.
        #[command(subcommand)]
        cmd: SecretCmd,
    },
    /// Manage access policies.
    Policy {
        /// The policy command.
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Encrypt or decrypt data with SPIKE Nexus (encryption as a service).
    Cipher {
        /// The cipher command.
        #[command(subcommand)]
        cmd: CipherCmd,
    },
    /// Break-the-glass recovery of the root key.
    Operator {
        /// The operator command.
        #[command(subcommand)]
        cmd: OperatorCmd,
    },
    /// Show the health of SPIKE Nexus (GET /v1/sys/health).
    ///
    /// Exit status: 0 unsealed and serving; 4 SPIKE Nexus answered but is sealed (not
    /// bootstrapped, sealed waiting for keepers, sealed with data after a power cut, or store
    /// unavailable; the State line names the way out); 3 SPIKE Nexus unreachable or no SPIFFE
    /// identity; 1 other errors; 2 usage errors.
    Status(StatusArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// The `-f/--format` flag of read commands (alias `-o`).
#[derive(Debug, Clone, Args)]
pub struct FormatArg {
    /// Output format: human (h, plain, p), json (j) or yaml (y).
    #[arg(
        short = 'f',
        long = "format",
        short_alias = 'o',
        default_value = "human",
        value_name = "FORMAT"
    )]
    pub format: String,
}

/// `spike secret ...`
#[derive(Debug, Subcommand)]
pub enum SecretCmd {
    /// Create a new version of the secret at PATH with the given key=value pairs.
    Put {
        /// Secret path (e.g. tenants/demo/db/creds).
        path: String,
        /// One or more key=value pairs (split at the first `=`). KEY=- reads the value from
        /// standard input and KEY=@FILE from a file (exact bytes): use these for secret values,
        /// since a value on the command line is visible to other local users
        /// (/proc/PID/cmdline).
        #[arg(required = true, num_args = 1.., value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Read a secret (all keys, or the value of KEY).
    Get {
        /// Secret path.
        path: String,
        /// Print only this key's value.
        key: Option<String>,
        /// Version to read (0 = current).
        #[arg(short = 'v', long, default_value_t = 0)]
        version: i64,
        /// Output format.
        #[command(flatten)]
        format: FormatArg,
    },
    /// Soft-delete versions of a secret.
    Delete {
        /// Secret path.
        path: String,
        /// Comma-separated versions (0 = current).
        #[arg(short = 'v', long, default_value = "0", allow_hyphen_values = true)]
        versions: String,
    },
    /// Restore soft-deleted versions of a secret.
    Undelete {
        /// Secret path.
        path: String,
        /// Comma-separated versions (0 = current).
        #[arg(short = 'v', long, default_value = "0", allow_hyphen_values = true)]
        versions: String,
    },
    /// List all secret paths.
    List {
        /// Output format.
        #[command(flatten)]
        format: FormatArg,
    },
    /// Secret metadata.
    Metadata {
        /// The metadata command.
        #[command(subcommand)]
        cmd: MetadataCmd,
    },
}

/// `spike secret metadata ...`
#[derive(Debug, Subcommand)]
pub enum MetadataCmd {
    /// Show the versions and metadata of a secret.
    Get {
        /// Secret path.
        path: String,
        /// Version that must exist (0 = current).
        #[arg(short = 'v', long, default_value_t = 0)]
        version: i64,
        /// Output format.
        #[command(flatten)]
        format: FormatArg,
    },
}

/// The four policy fields as flags.
#[derive(Debug, Clone, Default, Args)]
pub struct PolicyFields {
    /// Policy name.
    #[arg(long)]
    pub name: Option<String>,
    /// Regular expression for secret paths (e.g. ^tenants/demo/.*$).
    #[arg(long = "path-pattern")]
    pub path_pattern: Option<String>,
    /// Regular expression for SPIFFE IDs (e.g. ^spiffe://example.org/app/.*$).
    #[arg(long = "spiffeid-pattern")]
    pub spiffeid_pattern: Option<String>,
    /// Comma-separated permissions: read, write, list, execute, super.
    #[arg(long)]
    pub permissions: Option<String>,
}

/// `spike policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Create a policy (fails if one with that name exists).
    Create {
        /// The policy.
        #[command(flatten)]
        fields: PolicyFields,
    },
    /// Create or update a policy from flags or a YAML file.
    Apply {
        /// The policy.
        #[command(flatten)]
        fields: PolicyFields,
        /// YAML file with name, spiffeidPattern, pathPattern and permissions.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["name", "path_pattern", "spiffeid_pattern", "permissions"])]
        file: Option<PathBuf>,
    },
    /// List policies, optionally only those with an exact pattern.
    List {
        /// Only policies whose path pattern is exactly this.
        #[arg(long = "path-pattern", conflicts_with = "spiffeid_pattern")]
        path_pattern: Option<String>,
        /// Only policies whose SPIFFE ID pattern is exactly this.
        #[arg(long = "spiffeid-pattern")]
        spiffeid_pattern: Option<String>,
        /// Output format.
        #[command(flatten)]
        format: FormatArg,
    },
    /// Show a policy.
    Get {
        /// Policy name.
        #[arg(conflicts_with = "name_flag")]
        name: Option<String>,
        /// Policy name (alternative to the argument).
        #[arg(long = "name", id = "name_flag")]
        name_flag: Option<String>,
        /// Output format.
        #[command(flatten)]
        format: FormatArg,
    },
    /// Delete a policy (asks for confirmation).
    Delete {
        /// Policy name.
        #[arg(conflicts_with = "name_flag")]
        name: Option<String>,
        /// Policy name (alternative to the argument).
        #[arg(long = "name", id = "name_flag")]
        name_flag: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// `spike cipher ...`
#[derive(Debug, Subcommand)]
pub enum CipherCmd {
    /// Encrypt: stream mode (file or stdin to file or stdout) or JSON mode (--plaintext).
    Encrypt {
        /// Input file (default: standard input; `-` also means standard input).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
        /// Output file (default: standard output), created with mode 0600.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
        /// JSON mode; prints {"version","nonce","ciphertext"} as JSON. `-` reads the raw
        /// plaintext from standard input and `@FILE` from a file (use these: an argument is
        /// visible to other local users); anything else is the base64 plaintext itself.
        #[arg(long, conflicts_with = "file")]
        plaintext: Option<String>,
        /// Algorithm hint (accepted and ignored by SPIKE Nexus).
        #[arg(long)]
        algorithm: Option<String>,
    },
    /// Decrypt: stream mode (file or stdin) or JSON mode (--version/--nonce/--ciphertext).
    Decrypt {
        /// Input file (default: standard input; `-` also means standard input).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
        /// Output file (default: standard output), created with mode 0600.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
        /// Cipher version (JSON mode; default 1).
        #[arg(long, value_parser = clap::value_parser!(u8))]
        version: Option<u8>,
        /// Base64 nonce (JSON mode).
        #[arg(long)]
        nonce: Option<String>,
        /// Base64 ciphertext (JSON mode).
        #[arg(long)]
        ciphertext: Option<String>,
        /// Algorithm hint (accepted and ignored by SPIKE Nexus).
        #[arg(long)]
        algorithm: Option<String>,
    },
}

/// `spike operator ...`
#[derive(Debug, Subcommand)]
pub enum OperatorCmd {
    /// Export the recovery shards to `spike.recovery.<id>.txt` files (recover role).
    Recover,
    /// Submit one recovery shard (restore role); run once per shard.
    Restore,
}

/// `spike status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format.
    #[command(flatten)]
    pub format: FormatArg,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }
}
