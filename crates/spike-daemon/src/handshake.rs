//! [`HandshakeFailureLog`]: logs failed TLS handshakes on the mTLS listeners at `warn`, at
//! most once per peer IP address per interval, in bounded memory.
//!
//! A peer that keeps failing (a misconfigured workload retrying, a scanner) would otherwise
//! fill the journal; an attacker with many addresses must not grow memory either. Each
//! address gets one `warn` line per interval (default 60 s); more failures inside the
//! interval go to `debug`. At most `capacity` addresses (default 1024) are remembered:
//! expired entries are dropped when the map is full, and while it is still full new
//! addresses are logged at `debug` only. Counting every failure (for metrics) is the
//! caller's job; this type only decides what reaches the journal.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Default minimum time between two `warn` lines for the same peer address.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Default number of peer addresses remembered.
pub const DEFAULT_CAPACITY: usize = 1024;

/// Rate-limited `warn` logging of TLS handshake failures; cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct HandshakeFailureLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// When each address was last logged at `warn`.
    last_warned: Mutex<HashMap<IpAddr, Instant>>,
    interval: Duration,
    capacity: usize,
    /// The listener, for the message (`SPIKE Nexus API`, `SPIKE Keeper API`).
    listener: &'static str,
}

impl HandshakeFailureLog {
    /// A log for `listener` with [`DEFAULT_INTERVAL`] and [`DEFAULT_CAPACITY`].
    pub fn new(listener: &'static str) -> Self {
        Self::with_limits(listener, DEFAULT_INTERVAL, DEFAULT_CAPACITY)
    }

    /// A log with an explicit interval and capacity (at least one entry).
    pub fn with_limits(listener: &'static str, interval: Duration, capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                last_warned: Mutex::new(HashMap::new()),
                interval,
                capacity: capacity.max(1),
                listener,
            }),
        }
    }

    /// Whether a failure from `ip` at `now` gets a `warn` line (and records it if so).
    pub fn should_warn(&self, ip: IpAddr, now: Instant) -> bool {
        let interval = self.inner.interval;
        let mut map = self.inner.last_warned.lock();
        if let Some(last) = map.get_mut(&ip) {
            if now.saturating_duration_since(*last) < interval {
                return false;
            }
            *last = now;
            return true;
        }
        if map.len() >= self.inner.capacity {
            map.retain(|_, last| now.saturating_duration_since(*last) < interval);
            if map.len() >= self.inner.capacity {
                return false;
            }
        }
        map.insert(ip, now);
        true
    }

    /// Number of addresses currently remembered.
    pub fn tracked(&self) -> usize {
        self.inner.last_warned.lock().len()
    }

    /// Logs a failed handshake from `peer`: at `warn` the first time per interval for its IP
    /// address, else at `debug`. `cause` should name the rejected SPIFFE ID when there was
    /// one. Returns whether the line went out at `warn`.
    pub fn report(&self, peer: SocketAddr, cause: &dyn Display) -> bool {
        let listener = self.inner.listener;
        if self.should_warn(peer.ip(), Instant::now()) {
            tracing::warn!(
                peer_addr = %peer,
                error = %cause,
                "TLS handshake on the {listener} from {peer} failed: {cause} (further failures \
                 from {} are logged at debug for {}s)",
                peer.ip(),
                self.inner.interval.as_secs()
            );
            true
        } else {
            tracing::debug!(
                peer_addr = %peer,
                error = %cause,
                "TLS handshake on the {listener} from {peer} failed: {cause}"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[tokio::test(start_paused = true)]
    async fn once_per_address_per_interval() {
        let log = HandshakeFailureLog::with_limits("test API", Duration::from_secs(60), 16);
        let t0 = Instant::now();
        assert!(log.should_warn(ip(1), t0));
        assert!(!log.should_warn(ip(1), t0 + Duration::from_secs(59)));
        assert!(log.should_warn(ip(2), t0 + Duration::from_secs(1)));
        assert!(log.should_warn(ip(1), t0 + Duration::from_secs(60)));
        assert!(!log.should_warn(ip(1), t0 + Duration::from_secs(61)));
        // The port does not matter: the limit is per IP address.
        let peer = SocketAddr::new(ip(3), 40000);
        assert!(log.report(peer, &"bad certificate"));
        assert!(!log.report(SocketAddr::new(ip(3), 40001), &"bad certificate"));
    }

    /// A writer collecting formatted log lines.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_message_names_the_peer_and_the_cause() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let log = HandshakeFailureLog::new("SPIKE Keeper API");
        let peer = SocketAddr::new(ip(9), 51000);
        let cause = "client spiffe://spike.test/intruder rejected: SPIFFE ID not authorized";
        tracing::subscriber::with_default(subscriber, || {
            assert!(log.report(peer, &cause));
            assert!(!log.report(peer, &cause));
        });
        let text = String::from_utf8(lines.0.lock().clone()).unwrap();
        let mut out = text.lines();
        let first = out.next().unwrap();
        assert!(first.contains(" WARN "), "{first}");
        assert!(
            first.contains(
                "TLS handshake on the SPIKE Keeper API from 192.0.2.9:51000 failed: client \
                 spiffe://spike.test/intruder rejected: SPIFFE ID not authorized (further \
                 failures from 192.0.2.9 are logged at debug for 60s)"
            ),
            "{first}"
        );
        let second = out.next().unwrap();
        assert!(second.contains("DEBUG"), "{second}");
        assert!(second.contains("192.0.2.9:51000"), "{second}");
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_and_expired_entries_make_room() {
        let log = HandshakeFailureLog::with_limits("test API", Duration::from_secs(60), 4);
        let t0 = Instant::now();
        for i in 0..4 {
            assert!(log.should_warn(ip(i), t0));
        }
        // Full: a new address is not remembered (and not logged at warn).
        for i in 4..200 {
            assert!(!log.should_warn(ip(i), t0 + Duration::from_secs(1)));
        }
        assert_eq!(log.tracked(), 4);
        // Once the old entries expire, new addresses get their warn line again.
        assert!(log.should_warn(ip(100), t0 + Duration::from_secs(60)));
        assert_eq!(log.tracked(), 1);
    }
}
