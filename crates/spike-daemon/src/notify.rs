//! systemd service notifications (`sd_notify(3)`): `READY=1`, `STATUS=...`, `STOPPING=1`,
//! `WATCHDOG=1`.
//!
//! Messages are the [`sd_notify::NotifyState`] values of the `sd-notify` crate; sending is done
//! here so that the socket is injectable ([`Notifier::with_socket`]) and abstract sockets
//! (`NOTIFY_SOCKET=@name`) work. Outside systemd (`NOTIFY_SOCKET` unset) every call is a
//! successful no-op.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::env::{EnvSource, ProcessEnv};

/// How long one notification may block on a full receive queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

/// Sends notifications to the service manager; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Arc<Target>>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the process environment (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`).
    #[must_use]
    pub fn from_env() -> Self {
        Self::from_env_source(&ProcessEnv)
    }

    /// From an injected environment.
    #[must_use]
    pub fn from_env_source(env: &dyn EnvSource) -> Self {
        let target = env
            .var("NOTIFY_SOCKET")
            .filter(|s| !s.is_empty())
            .map(|s| match s.strip_prefix('@') {
                Some(name) => Target::Abstract(name.as_bytes().to_vec()),
                None => Target::Path(PathBuf::from(s)),
            })
            .map(Arc::new);
        Self {
            target,
            watchdog: watchdog_from_env(env, std::process::id()),
        }
    }

    /// Sends to the datagram socket at `path` (tests, or a caller that knows better).
    #[must_use]
    pub fn with_socket(path: impl AsRef<Path>) -> Self {
        Self {
            target: Some(Arc::new(Target::Path(path.as_ref().to_owned()))),
            watchdog: None,
        }
    }

    /// A notifier that sends nothing.
    #[must_use]
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Sets the watchdog interval (as `WATCHDOG_USEC` would); builder style.
    #[must_use]
    pub fn with_watchdog(mut self, interval: Option<Duration>) -> Self {
        self.watchdog = interval;
        self
    }

    /// Whether notifications go anywhere.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The watchdog interval systemd expects pings within (`WatchdogSec=`), if enabled for
    /// this process.
    #[must_use]
    pub fn watchdog_enabled(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `states` as one datagram. Newlines inside free-form values are replaced by spaces
    /// so that a status text cannot inject further assignments.
    ///
    /// # Errors
    ///
    /// The socket error (e.g. the manager's socket is gone).
    pub fn notify(&self, states: &[NotifyState<'_>]) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let mut msg = String::new();
        for state in states {
            let line = state.to_string().replace('\n', " ");
            msg.push_str(&line);
            msg.push('\n');
        }
        let sock = UnixDatagram::unbound()?;
        sock.set_write_timeout(Some(SEND_TIMEOUT))?;
        let sent = match target.as_ref() {
            Target::Path(path) => sock.send_to(msg.as_bytes(), path)?,
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(msg.as_bytes(), &addr)?
            }
        };
        if sent == msg.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "incomplete notification",
            ))
        }
    }

    /// `READY=1`: listening (with an SVID). Not "unsealed": see the design, docs/protocol.md#root-key-shards-and-recovery-files.
    ///
    /// # Errors
    ///
    /// As [`Notifier::notify`].
    pub fn ready(&self) -> io::Result<()> {
        self.notify(&[NotifyState::Ready])
    }

    /// `STATUS=<text>`, shown by `systemctl status`.
    ///
    /// # Errors
    ///
    /// As [`Notifier::notify`].
    pub fn status(&self, text: &str) -> io::Result<()> {
        self.notify(&[NotifyState::Status(text)])
    }

    /// `STOPPING=1`.
    ///
    /// # Errors
    ///
    /// As [`Notifier::notify`].
    pub fn stopping(&self) -> io::Result<()> {
        self.notify(&[NotifyState::Stopping])
    }

    /// `WATCHDOG=1`.
    ///
    /// # Errors
    ///
    /// As [`Notifier::notify`].
    pub fn watchdog(&self) -> io::Result<()> {
        self.notify(&[NotifyState::Watchdog])
    }

    /// `EXTEND_TIMEOUT_USEC=...`: asks for more start-up time (e.g. while waiting for SPIRE).
    ///
    /// # Errors
    ///
    /// As [`Notifier::notify`].
    pub fn extend_timeout(&self, by: Duration) -> io::Result<()> {
        let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
        self.notify(&[NotifyState::ExtendTimeoutUsec(usec)])
    }

    /// Pings `WATCHDOG=1` every half watchdog interval until `token` is cancelled. Returns at
    /// once when the watchdog is not enabled. Run it on the runtime that serves requests: a
    /// wedged runtime then stops pinging and systemd restarts the service.
    pub async fn run_watchdog(self, token: CancellationToken) {
        let Some(interval) = self.watchdog.filter(|d| !d.is_zero()) else {
            return;
        };
        let mut ticker = tokio::time::interval(interval / 2);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = ticker.tick() => {
                    if let Err(e) = self.watchdog() {
                        tracing::warn!(error = %e, "watchdog notification failed");
                    }
                }
            }
        }
    }

    /// Spawns [`Notifier::run_watchdog`] on the current runtime.
    pub fn spawn_watchdog(&self, token: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run_watchdog(token))
    }
}

/// `WATCHDOG_USEC` when `WATCHDOG_PID` is unset or equals `pid` (as `sd_watchdog_enabled(3)`).
fn watchdog_from_env(env: &dyn EnvSource, pid: u32) -> Option<Duration> {
    let usec: u64 = env.var("WATCHDOG_USEC")?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    match env.var("WATCHDOG_PID") {
        Some(p) if p.trim().parse::<u32>().ok() != Some(pid) => None,
        _ => Some(Duration::from_micros(usec)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::MapEnv;

    #[test]
    fn outside_systemd_everything_is_a_no_op() {
        let n = Notifier::from_env_source(&MapEnv::new());
        assert!(!n.is_enabled());
        n.ready().unwrap();
        n.status("x").unwrap();
        n.stopping().unwrap();
        n.watchdog().unwrap();
        assert_eq!(n.watchdog_enabled(), None);
    }

    #[test]
    fn watchdog_env_honours_pid() {
        let pid = std::process::id();
        let env = MapEnv::from([("WATCHDOG_USEC", "30000000")]);
        assert_eq!(watchdog_from_env(&env, pid), Some(Duration::from_secs(30)));
        let env = env.with("WATCHDOG_PID", pid.to_string());
        assert_eq!(watchdog_from_env(&env, pid), Some(Duration::from_secs(30)));
        assert_eq!(watchdog_from_env(&env, pid + 1), None);
        assert_eq!(
            watchdog_from_env(&MapEnv::from([("WATCHDOG_USEC", "0")]), pid),
            None
        );
        assert_eq!(
            watchdog_from_env(&MapEnv::from([("WATCHDOG_USEC", "soon")]), pid),
            None
        );
    }

    #[test]
    fn abstract_socket_names_are_recognised() {
        let n = Notifier::from_env_source(&MapEnv::from([("NOTIFY_SOCKET", "@sd/notify")]));
        assert_eq!(
            n.target.as_deref(),
            Some(&Target::Abstract(b"sd/notify".to_vec()))
        );
    }
}
