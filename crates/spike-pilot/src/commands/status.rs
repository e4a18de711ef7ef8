//! `spike status`: the health extension `GET /v1/sys/health` plus both versions.

use crate::Io;
use crate::cli::StatusArgs;
use crate::errors::{EXIT_SEALED, PilotError};
use crate::output::{self, Format, StatusReport};
use crate::session::Session;

use super::write_stdout;

/// Runs `spike status`: prints the live health (the state names the way out of a sealed
/// state) and tells the states apart by exit status.
///
/// # Errors
/// [`PilotError::Reported`] with [`EXIT_SEALED`] (4) after printing the report when Nexus
/// answered but is sealed (not bootstrapped, waiting for keepers, data without its root key,
/// store unavailable); connection failures (3); a Nexus without the health route, e.g. a Go
/// SPIKE Nexus (1).
pub async fn run(
    args: StatusArgs,
    session: &mut Session,
    io: &mut Io<'_>,
) -> Result<(), PilotError> {
    let format = Format::parse(&args.format.format)?;
    // With several URLs, a sealed instance's report moves on to the next URL and is shown
    // only when no instance serves; the report names the URL that answered.
    let (url, health) = session
        .read_unless(
            |nexus| async move { nexus.health().await },
            |health| {
                health.is_supported()
                    && !StatusReport::from_health("", health.status, &health.body).is_serving()
            },
        )
        .await?;
    if !health.is_supported() {
        return Err(PilotError::failed(format!(
            "Error: SPIKE Nexus at {url} does not implement /v1/sys/health (HTTP {}); it may be \
             a Go SPIKE Nexus.",
            health.status
        )));
    }
    let report = StatusReport::from_health(&url, health.status, &health.body);
    write_stdout(io, output::status(&report, format).as_bytes())?;
    if report.is_serving() {
        Ok(())
    } else {
        Err(PilotError::Reported { code: EXIT_SEALED })
    }
}
