//! `spike`: the SPIKE Pilot CLI. Hardens the process, then runs [`spike_pilot::run`].

use std::io::IsTerminal as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    spike_pilot::harden::harden_process();
    let stdin = std::io::stdin();
    let stdin_is_terminal = stdin.is_terminal();
    let mut stdin = stdin.lock();
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let mut io = spike_pilot::Io {
        stdin: &mut stdin,
        stdout: &mut stdout,
        stderr: &mut stderr,
        stdin_is_terminal,
    };
    spike_pilot::run(std::env::args_os(), &mut io)
}
