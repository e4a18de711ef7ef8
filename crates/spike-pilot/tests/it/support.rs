//! Helpers: run the CLI in-process with captured streams and a hermetic environment.

use spike_pilot::{Io, MapEnv};

/// What one in-process run produced.
pub(crate) struct Outcome {
    pub(crate) code: u8,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: String,
}

impl Outcome {
    pub(crate) fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// An environment with no configuration file (XDG dir is an empty temp dir) and a
/// Workload API socket that does not exist.
pub(crate) fn hermetic_env(dir: &std::path::Path) -> MapEnv {
    MapEnv::from_pairs([
        ("XDG_CONFIG_HOME", dir.to_str().unwrap().to_owned()),
        ("HOME", dir.to_str().unwrap().to_owned()),
        (
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix:{}/no-agent.sock", dir.display()),
        ),
    ])
}

/// Runs `spike <args>` in-process.
pub(crate) fn run_in_process(args: &[&str], stdin: &[u8]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    run_with(args, stdin, &hermetic_env(dir.path()))
}

/// Runs `spike <args>` in-process with `env`.
pub(crate) fn run_with(args: &[&str], stdin: &[u8], env: &MapEnv) -> Outcome {
    let mut input = stdin;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut argv = vec!["spike"];
    argv.extend_from_slice(args);
    let code = {
        let mut io = Io::new(&mut input, &mut stdout, &mut stderr);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(spike_pilot::run_code(argv, &mut io, env))
    };
    Outcome {
        code,
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}
