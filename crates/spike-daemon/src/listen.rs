//! Named listen sockets from systemd socket activation (`LISTEN_PID`, `LISTEN_FDS`,
//! `LISTEN_FDNAMES`, fds from 3), with a fallback to binding the configured address.
//!
//! A `.socket` unit with `FileDescriptorName=api` hands the service a listening socket; the
//! daemon asks for it by name with [`ListenFds::tcp_or_bind`] / [`ListenFds::unix_or_bind`] and
//! binds the configured address itself when the unit did not provide one.
//!
//! The environment is parsed here, following `sd_listen_fds_with_names(3)` as the `sd-notify`
//! crate's `listen_fds_with_names` does, but from an injected [`EnvSource`] and with a
//! configurable first fd, so that tests can pass real sockets. The environment is not unset
//! (that needs `set_var`); child processes would see a `LISTEN_PID` that is not theirs and
//! ignore it.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{SockType, getsockopt, sockopt};
use tokio::net::{TcpListener, UnixListener};

use crate::env::{EnvSource, ProcessEnv};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
pub const SD_LISTEN_FDS_START: RawFd = 3;

/// Upper bound on `LISTEN_FDS` we accept (systemd's own limit on fds per unit is far lower).
const MAX_LISTEN_FDS: u32 = 1024;

static PROCESS_FDS_TAKEN: AtomicBool = AtomicBool::new(false);

/// Why socket activation or a fallback bind failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// `LISTEN_PID` or `LISTEN_FDS` is not a number.
    #[error("invalid {var}={value:?} from the service manager")]
    BadEnv {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// `LISTEN_FDNAMES` does not have one name per fd.
    #[error("LISTEN_FDNAMES has {names} names for {fds} fds")]
    NameCount {
        /// Number of names.
        names: usize,
        /// Number of fds.
        fds: usize,
    },
    /// The listen fds of this process were already taken (they can be adopted only once).
    #[error("the socket-activation fds of this process were already taken")]
    AlreadyTaken,
    /// A passed fd is not usable (closed, or not a socket).
    #[error("fd {fd} ({name}) passed by the service manager is not usable: {source}")]
    BadFd {
        /// The fd number.
        fd: RawFd,
        /// Its name.
        name: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The fd named `name` is not a listening stream socket of the wanted family.
    #[error("socket {name:?} (fd {fd}) is not a listening {want} stream socket")]
    WrongKind {
        /// The name.
        name: String,
        /// The fd number.
        fd: RawFd,
        /// `TCP` or `unix`.
        want: &'static str,
    },
    /// More than one fd carries this name; the daemon serves one listener per name.
    #[error(
        "{count} sockets are named {name:?}; give each ListenStream= its own FileDescriptorName="
    )]
    Duplicate {
        /// The name.
        name: String,
        /// How many fds have it.
        count: usize,
    },
    /// Binding the configured fallback address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address or path.
        addr: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Where a listener came from, for the startup log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerOrigin {
    /// Passed by systemd under this name.
    Activated {
        /// The fd number it had.
        fd: RawFd,
    },
    /// Bound by the daemon itself.
    Bound,
}

/// The socket-activation fds of this process, by name; each can be taken once.
#[derive(Debug, Default)]
pub struct ListenFds {
    by_name: BTreeMap<String, Vec<OwnedFd>>,
}

/// Adopts the socket-activation fds of this process (from 3, as systemd passes them). Can
/// succeed only once per process; later calls fail with [`ListenError::AlreadyTaken`].
///
/// # Errors
///
/// [`ListenError`] for a malformed environment or an unusable fd.
pub fn take_listeners() -> Result<ListenFds, ListenError> {
    if PROCESS_FDS_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(ListenError::AlreadyTaken);
    }
    ListenFds::from_env_with(&ProcessEnv, std::process::id(), SD_LISTEN_FDS_START)
}

impl ListenFds {
    /// No fds: every request falls back to binding.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// Adopts the fds `first_fd .. first_fd + LISTEN_FDS` described by `env`, if `LISTEN_PID`
    /// equals `pid`; otherwise returns no fds. Adopted fds are marked close-on-exec and are
    /// closed when dropped unclaimed.
    ///
    /// The caller hands over ownership of those fd numbers: nothing else in the process may use
    /// or close them afterwards. [`take_listeners`] is the form for daemons; this one exists so
    /// that tests can pass sockets they created at fd numbers of their choosing.
    ///
    /// # Errors
    ///
    /// [`ListenError`] for a malformed environment or an fd that is not an open socket.
    pub fn from_env_with(
        env: &dyn EnvSource,
        pid: u32,
        first_fd: RawFd,
    ) -> Result<Self, ListenError> {
        let Some(listen_pid) = env.var("LISTEN_PID") else {
            return Ok(Self::none());
        };
        let listen_pid: u32 = listen_pid.trim().parse().map_err(|_| ListenError::BadEnv {
            var: "LISTEN_PID",
            value: listen_pid.clone(),
        })?;
        if listen_pid != pid {
            return Ok(Self::none());
        }
        let Some(count) = env.var("LISTEN_FDS") else {
            return Ok(Self::none());
        };
        let count: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|n| *n <= MAX_LISTEN_FDS)
            .ok_or_else(|| ListenError::BadEnv {
                var: "LISTEN_FDS",
                value: count.clone(),
            })?;
        let count_usize = count as usize;
        let names: Vec<String> = match env.var("LISTEN_FDNAMES") {
            Some(names) => names.split(':').map(str::to_owned).collect(),
            None => vec!["unknown".to_owned(); count_usize],
        };
        if names.len() != count_usize {
            return Err(ListenError::NameCount {
                names: names.len(),
                fds: count_usize,
            });
        }
        let mut by_name: BTreeMap<String, Vec<OwnedFd>> = BTreeMap::new();
        for (offset, name) in (0..count).zip(names) {
            let fd = RawFd::try_from(offset)
                .ok()
                .and_then(|o| first_fd.checked_add(o))
                .ok_or_else(|| ListenError::BadEnv {
                    var: "LISTEN_FDS",
                    value: count.to_string(),
                })?;
            let owned = adopt(fd, &name)?;
            by_name.entry(name).or_default().push(owned);
        }
        Ok(Self { by_name })
    }

    /// Names of the fds not yet taken.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Whether no fds are left.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    fn take_one(&mut self, name: &str) -> Result<Option<OwnedFd>, ListenError> {
        let Some(mut fds) = self.by_name.remove(name) else {
            return Ok(None);
        };
        if fds.len() > 1 {
            return Err(ListenError::Duplicate {
                name: name.to_owned(),
                count: fds.len(),
            });
        }
        Ok(fds.pop())
    }

    /// Takes the fd named `name` as a TCP listener. Must run inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ListenError::WrongKind`] if it is not a listening TCP socket;
    /// [`ListenError::Duplicate`] if several fds carry the name.
    pub fn take_tcp(&mut self, name: &str) -> Result<Option<TcpListener>, ListenError> {
        let Some(fd) = self.take_one(name)? else {
            return Ok(None);
        };
        let raw = fd.as_raw_fd();
        let wrong = || ListenError::WrongKind {
            name: name.to_owned(),
            fd: raw,
            want: "TCP",
        };
        if !is_listening_stream(&fd) {
            return Err(wrong());
        }
        let std_listener = std::net::TcpListener::from(fd);
        // A unix socket has no IP address: this rejects AF_UNIX.
        std_listener.local_addr().map_err(|_| wrong())?;
        std_listener.set_nonblocking(true).map_err(|_| wrong())?;
        TcpListener::from_std(std_listener)
            .map(Some)
            .map_err(|source| ListenError::BadFd {
                fd: raw,
                name: name.to_owned(),
                source,
            })
    }

    /// Takes the fd named `name` as a unix-socket listener. Must run inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ListenError::WrongKind`] if it is not a listening unix stream socket;
    /// [`ListenError::Duplicate`] if several fds carry the name.
    pub fn take_unix(&mut self, name: &str) -> Result<Option<UnixListener>, ListenError> {
        let Some(fd) = self.take_one(name)? else {
            return Ok(None);
        };
        let raw = fd.as_raw_fd();
        let wrong = || ListenError::WrongKind {
            name: name.to_owned(),
            fd: raw,
            want: "unix",
        };
        if !is_listening_stream(&fd) {
            return Err(wrong());
        }
        let std_listener = std::os::unix::net::UnixListener::from(fd);
        // std checks the address family is AF_UNIX.
        std_listener.local_addr().map_err(|_| wrong())?;
        std_listener.set_nonblocking(true).map_err(|_| wrong())?;
        UnixListener::from_std(std_listener)
            .map(Some)
            .map_err(|source| ListenError::BadFd {
                fd: raw,
                name: name.to_owned(),
                source,
            })
    }

    /// The activated TCP socket named `name`, or a fresh one bound to `addr`.
    ///
    /// # Errors
    ///
    /// As [`ListenFds::take_tcp`], or [`ListenError::Bind`].
    pub async fn tcp_or_bind(
        &mut self,
        name: &str,
        addr: SocketAddr,
    ) -> Result<(TcpListener, ListenerOrigin), ListenError> {
        if let Some(listener) = self.take_tcp(name)? {
            let fd = listener.as_raw_fd();
            return Ok((listener, ListenerOrigin::Activated { fd }));
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ListenError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        Ok((listener, ListenerOrigin::Bound))
    }

    /// The activated unix socket named `name`, or a fresh one bound at `path`. A stale socket
    /// file at `path` (left by a crash) is removed first; any other kind of file is an error.
    ///
    /// # Errors
    ///
    /// As [`ListenFds::take_unix`], or [`ListenError::Bind`].
    pub fn unix_or_bind(
        &mut self,
        name: &str,
        path: &Path,
    ) -> Result<(UnixListener, ListenerOrigin), ListenError> {
        if let Some(listener) = self.take_unix(name)? {
            let fd = listener.as_raw_fd();
            return Ok((listener, ListenerOrigin::Activated { fd }));
        }
        let bind_err = |source| ListenError::Bind {
            addr: path.display().to_string(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                std::fs::remove_file(path).map_err(bind_err)?;
            }
            Ok(_) => {
                return Err(bind_err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way",
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_err(e)),
        }
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        Ok((listener, ListenerOrigin::Bound))
    }

    /// The names left unclaimed (their fds are closed); the daemon should warn about them.
    #[must_use]
    pub fn into_unclaimed(self) -> Vec<String> {
        self.by_name.into_keys().collect()
    }
}

fn is_listening_stream(fd: &OwnedFd) -> bool {
    matches!(getsockopt(fd, sockopt::SockType), Ok(SockType::Stream))
        && matches!(getsockopt(fd, sockopt::AcceptConn), Ok(true))
}

/// Takes ownership of `fd`, checks that it is an open socket, and sets close-on-exec.
fn adopt(fd: RawFd, name: &str) -> Result<OwnedFd, ListenError> {
    let bad = |source: io::Error| ListenError::BadFd {
        fd,
        name: name.to_owned(),
        source,
    };
    if fd < 0 {
        return Err(bad(io::Error::from_raw_os_error(nix::libc::EBADF)));
    }
    #[expect(
        unsafe_code,
        reason = "socket activation hands this process fd numbers by contract (sd_listen_fds(3)); \
                  `take_listeners` adopts them once per process, so nothing else owns them"
    )]
    // SAFETY: the fd is in the range the service manager passed to this process (or that the
    // test passed to `from_env_with`), which by contract belongs to whoever takes it; it is
    // taken exactly once. If it turns out not to be an open socket we give it back unclosed.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    match nix::sys::stat::fstat(&owned) {
        Ok(st) if (st.st_mode & nix::libc::S_IFMT) == nix::libc::S_IFSOCK => {}
        Ok(_) => {
            let _ = owned.into_raw_fd();
            return Err(bad(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a socket",
            )));
        }
        Err(e) => {
            let _ = owned.into_raw_fd();
            return Err(bad(io::Error::from(e)));
        }
    }
    fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| bad(io::Error::from(e)))?;
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::MapEnv;

    #[test]
    fn no_env_or_other_pid_means_no_fds() {
        let fds = ListenFds::from_env_with(&MapEnv::new(), 42, 3).unwrap();
        assert!(fds.is_empty());
        let env = MapEnv::from([("LISTEN_PID", "41"), ("LISTEN_FDS", "2")]);
        assert!(ListenFds::from_env_with(&env, 42, 3).unwrap().is_empty());
    }

    #[test]
    fn malformed_env_is_an_error() {
        let env = MapEnv::from([("LISTEN_PID", "x"), ("LISTEN_FDS", "1")]);
        assert!(matches!(
            ListenFds::from_env_with(&env, 1, 3),
            Err(ListenError::BadEnv {
                var: "LISTEN_PID",
                ..
            })
        ));
        let env = MapEnv::from([("LISTEN_PID", "1"), ("LISTEN_FDS", "-1")]);
        assert!(matches!(
            ListenFds::from_env_with(&env, 1, 3),
            Err(ListenError::BadEnv {
                var: "LISTEN_FDS",
                ..
            })
        ));
        let env = MapEnv::from([
            ("LISTEN_PID", "1"),
            ("LISTEN_FDS", "2"),
            ("LISTEN_FDNAMES", "api"),
        ]);
        assert!(matches!(
            ListenFds::from_env_with(&env, 1, 3),
            Err(ListenError::NameCount { names: 1, fds: 2 })
        ));
    }
}
