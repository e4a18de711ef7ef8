//! One module per command group; each exposes `run(cmd, session, io)`.

pub mod cipher;
pub mod operator;
pub mod policy;
pub mod secret;
pub mod status;

use crate::Io;
use crate::errors::PilotError;

/// Writes data to standard output.
pub(crate) fn write_stdout(io: &mut Io<'_>, data: &[u8]) -> Result<(), PilotError> {
    io.stdout
        .write_all(data)
        .and_then(|()| io.stdout.flush())
        .map_err(|e| PilotError::io("write to standard output", e))
}

/// Writes a line to standard output.
pub(crate) fn say(io: &mut Io<'_>, line: &str) -> Result<(), PilotError> {
    write_stdout(io, format!("{line}\n").as_bytes())
}

/// Writes text to standard error (prompts, warnings); failures are ignored.
pub(crate) fn tell(io: &mut Io<'_>, text: &str) {
    let _ = io.stderr.write_all(text.as_bytes());
    let _ = io.stderr.flush();
}
