//! The listeners' defences against slow and greedy clients: every connection and every request
//! is bounded in time and memory, and no single peer can take the capacity others need.
//!
//! | Key | What it bounds | When exceeded |
//! |---|---|---|
//! | `max_handshakes` | connections still in the TLS handshake, all peers; and four times as many accepted connections that have not sent a byte yet | the slowest pending handshake (fewest bytes per second, the oldest among equals) is dropped; among connections that sent nothing, the oldest |
//! | `max_handshakes_per_ip` | connections in the handshake from one source IP | the same, among that IP's |
//! | `handshake_timeout` | one TLS handshake | the connection is closed |
//! | `max_connections` | established (authenticated) connections, all peers | the new connection is closed after its handshake |
//! | `max_connections_per_peer` | established connections of one SPIFFE ID (so also its requests in flight: HTTP/1.1 serves one at a time per connection) | the new connection is closed after its handshake |
//! | `read_header_timeout` | reading a request's headers, and an idle keep-alive connection | the connection is closed |
//! | `request_body_limit` | one request body | 400 |
//! | `request_body_timeout`, `request_body_min_rate` | reading one body: `request_body_timeout` plus one second per `request_body_min_rate` bytes of its announced length | the request fails, the connection is closed |
//! | `request_body_budget` | request bodies held in memory, all peers | 503 with `Retry-After: 1`, before the body is read |
//! | `request_body_budget_per_peer` | request bodies held in memory by one SPIFFE ID | 503 with `Retry-After: 1`, before the body is read |
//! | `write_timeout` | a response write that makes no progress | the connection is closed |
//! | `max_connection_lifetime` | one connection; also never past the peer certificate's `notAfter` | the connection finishes its in-flight request and closes, so the peer re-authenticates |
//!
//! Why the handshake slots drop a holder instead of refusing the newest: refusing the newest
//! would hand the listener to whoever filled it first. An accepted connection that has not
//! sent a byte waits outside the handshake slots, in a pool four times larger where the oldest
//! is dropped first; it takes a handshake slot once its first bytes are in the socket queue
//! (measured with `MSG_PEEK` when it arrives, so a client whose hello is already there is
//! credited before its task first runs). In the handshake slots the slowest holder goes: a
//! real client sends its whole ClientHello at once and finishes in milliseconds, a slow-loris
//! client sends a byte at a time. (Dropping simply the oldest was measured to fail: an
//! attacker reconnecting at ~30,000 connections per second on loopback cycled 32 slots faster
//! than a handshake completes.) The plain listeners (health socket, metrics) use the slowest-
//! first rule for their whole connections.
//!
//! Before the handshake a peer is only its source IP; after it, its SPIFFE ID, which is what
//! the per-peer limits count (many workloads can share one IP behind NAT; one workload can
//! connect from many).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use spike_identity::PeerId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::common::{CommonConfigError, MIN_REQUEST_BODY_LIMIT};

/// The limit keys' names, for messages and docs.
pub mod keys {
    /// Concurrent TLS handshakes.
    pub const MAX_HANDSHAKES: &str = "max_handshakes";
    /// Concurrent TLS handshakes from one source IP.
    pub const MAX_HANDSHAKES_PER_IP: &str = "max_handshakes_per_ip";
    /// Bound on one TLS handshake.
    pub const HANDSHAKE_TIMEOUT: &str = "handshake_timeout";
    /// Established connections.
    pub const MAX_CONNECTIONS: &str = "max_connections";
    /// Established connections of one SPIFFE ID.
    pub const MAX_CONNECTIONS_PER_PEER: &str = "max_connections_per_peer";
    /// Bound on reading request headers.
    pub const READ_HEADER_TIMEOUT: &str = "read_header_timeout";
    /// Largest request body.
    pub const REQUEST_BODY_LIMIT: &str = crate::common::keys::REQUEST_BODY_LIMIT;
    /// Base time to read a body.
    pub const REQUEST_BODY_TIMEOUT: &str = "request_body_timeout";
    /// Bytes per second a body must at least arrive at.
    pub const REQUEST_BODY_MIN_RATE: &str = "request_body_min_rate";
    /// Request body bytes in memory, all peers.
    pub const REQUEST_BODY_BUDGET: &str = "request_body_budget";
    /// Request body bytes in memory, one peer.
    pub const REQUEST_BODY_BUDGET_PER_PEER: &str = "request_body_budget_per_peer";
    /// Bound on a write that makes no progress.
    pub const WRITE_TIMEOUT: &str = "write_timeout";
    /// Longest life of one connection.
    pub const MAX_CONNECTION_LIFETIME: &str = "max_connection_lifetime";
    /// Connections of the health socket.
    pub const HEALTH_MAX_CONNECTIONS: &str = "health_max_connections";
    /// Connections of the metrics listener.
    pub const METRICS_MAX_CONNECTIONS: &str = "metrics_max_connections";
}

/// The raw values of the limit keys, as a daemon's config file holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLimits {
    /// `max_handshakes`: connections in the TLS handshake (at least 1).
    pub max_handshakes: usize,
    /// `max_handshakes_per_ip`: the same from one IP (1..=`max_handshakes`).
    pub max_handshakes_per_ip: usize,
    /// `handshake_timeout`: bound on one TLS handshake (greater than zero).
    pub handshake_timeout: Duration,
    /// `max_connections`: established connections (at least 1).
    pub max_connections: usize,
    /// `max_connections_per_peer`: the same of one SPIFFE ID (1..=`max_connections`).
    pub max_connections_per_peer: usize,
    /// `read_header_timeout`: reading request headers, and the keep-alive idle bound
    /// (greater than zero).
    pub read_header_timeout: Duration,
    /// `request_body_limit`: largest request body in bytes (at least
    /// [`MIN_REQUEST_BODY_LIMIT`]).
    pub request_body_limit: usize,
    /// `request_body_timeout`: base time to read one body (greater than zero).
    pub request_body_timeout: Duration,
    /// `request_body_min_rate`: one more second per this many bytes of announced body length
    /// (at least 1).
    pub request_body_min_rate: u64,
    /// `request_body_budget`: request body bytes in memory, all peers (at least
    /// `request_body_limit`).
    pub request_body_budget: usize,
    /// `request_body_budget_per_peer`: the same for one peer
    /// (`request_body_limit..=request_body_budget`).
    pub request_body_budget_per_peer: usize,
    /// `write_timeout`: bound on a write that makes no progress (greater than zero).
    pub write_timeout: Duration,
    /// `max_connection_lifetime`: longest life of one connection (greater than zero).
    pub max_connection_lifetime: Duration,
}

/// [`RawLimits`] from a daemon's raw config file, whose limit keys are fields with the same
/// names (durations as `GoDuration`): `spike_daemon::raw_limits!(file)`. A macro because the
/// daemons' flat files are distinct types (serde cannot flatten with `deny_unknown_fields`).
#[macro_export]
macro_rules! raw_limits {
    ($file:expr) => {
        $crate::limits::RawLimits {
            max_handshakes: $file.max_handshakes,
            max_handshakes_per_ip: $file.max_handshakes_per_ip,
            handshake_timeout: $file.handshake_timeout.0,
            max_connections: $file.max_connections,
            max_connections_per_peer: $file.max_connections_per_peer,
            read_header_timeout: $file.read_header_timeout.0,
            request_body_limit: $file.request_body_limit,
            request_body_timeout: $file.request_body_timeout.0,
            request_body_min_rate: $file.request_body_min_rate,
            request_body_budget: $file.request_body_budget,
            request_body_budget_per_peer: $file.request_body_budget_per_peer,
            write_timeout: $file.write_timeout.0,
            max_connection_lifetime: $file.max_connection_lifetime.0,
        }
    };
}

/// The validated limits of one mTLS listener: a [`RawLimits`] that [`Limits::parse`] accepted
/// (the ranges are in its docs); read its fields through `Deref` (see the module docs for each
/// one's meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits(RawLimits);

impl std::ops::Deref for Limits {
    type Target = RawLimits;

    fn deref(&self) -> &RawLimits {
        &self.0
    }
}

fn out_of_range(key: &'static str, message: impl Into<String>) -> CommonConfigError {
    CommonConfigError {
        key,
        message: message.into(),
    }
}

impl Limits {
    /// Validates the raw values; the error names the first key out of range.
    ///
    /// # Errors
    /// [`CommonConfigError`] naming the key.
    pub fn parse(raw: RawLimits) -> Result<Self, CommonConfigError> {
        for (key, n) in [
            (keys::MAX_HANDSHAKES, raw.max_handshakes),
            (keys::MAX_HANDSHAKES_PER_IP, raw.max_handshakes_per_ip),
            (keys::MAX_CONNECTIONS, raw.max_connections),
            (keys::MAX_CONNECTIONS_PER_PEER, raw.max_connections_per_peer),
        ] {
            if n == 0 {
                return Err(out_of_range(key, "must be at least 1"));
            }
        }
        if raw.max_handshakes_per_ip > raw.max_handshakes {
            return Err(out_of_range(
                keys::MAX_HANDSHAKES_PER_IP,
                format!(
                    "must not exceed {} ({})",
                    keys::MAX_HANDSHAKES,
                    raw.max_handshakes
                ),
            ));
        }
        if raw.max_connections_per_peer > raw.max_connections {
            return Err(out_of_range(
                keys::MAX_CONNECTIONS_PER_PEER,
                format!(
                    "must not exceed {} ({})",
                    keys::MAX_CONNECTIONS,
                    raw.max_connections
                ),
            ));
        }
        for (key, d) in [
            (keys::HANDSHAKE_TIMEOUT, raw.handshake_timeout),
            (keys::READ_HEADER_TIMEOUT, raw.read_header_timeout),
            (keys::REQUEST_BODY_TIMEOUT, raw.request_body_timeout),
            (keys::WRITE_TIMEOUT, raw.write_timeout),
            (keys::MAX_CONNECTION_LIFETIME, raw.max_connection_lifetime),
        ] {
            if d.is_zero() {
                return Err(out_of_range(key, "must be greater than zero"));
            }
        }
        if raw.request_body_limit < MIN_REQUEST_BODY_LIMIT {
            return Err(out_of_range(
                keys::REQUEST_BODY_LIMIT,
                format!(
                    "must be at least {MIN_REQUEST_BODY_LIMIT} (every SPIKE request fits in it)"
                ),
            ));
        }
        if raw.request_body_min_rate == 0 {
            return Err(out_of_range(
                keys::REQUEST_BODY_MIN_RATE,
                "must be at least 1 (bytes per second)",
            ));
        }
        if raw.request_body_budget < raw.request_body_limit {
            return Err(out_of_range(
                keys::REQUEST_BODY_BUDGET,
                format!(
                    "must be at least {} ({}): one largest body must fit",
                    keys::REQUEST_BODY_LIMIT,
                    raw.request_body_limit
                ),
            ));
        }
        if raw.request_body_budget_per_peer < raw.request_body_limit
            || raw.request_body_budget_per_peer > raw.request_body_budget
        {
            return Err(out_of_range(
                keys::REQUEST_BODY_BUDGET_PER_PEER,
                format!(
                    "must be between {} ({}) and {} ({})",
                    keys::REQUEST_BODY_LIMIT,
                    raw.request_body_limit,
                    keys::REQUEST_BODY_BUDGET,
                    raw.request_body_budget
                ),
            ));
        }
        Ok(Self::from_defaults(raw))
    }

    /// The raw values taken as they are, for a daemon's compiled-in defaults, which its unit
    /// tests pass through [`Limits::parse`]; configuration input always goes through `parse`.
    #[must_use]
    pub const fn from_defaults(raw: RawLimits) -> Self {
        Self(raw)
    }

    /// The time allowed to read a body of `announced` bytes (`None`: chunked, the limit; at
    /// most the limit either way).
    #[must_use]
    pub fn body_deadline(&self, announced: Option<u64>) -> Duration {
        // An announced length past the limit is refused once the limit is read; it must not
        // buy a longer deadline.
        let limit = self.request_body_limit as u64;
        let len = announced.map_or(limit, |n| n.min(limit));
        let extra = len / self.request_body_min_rate;
        self.request_body_timeout
            .saturating_add(Duration::from_secs(extra))
    }

    /// The bytes reserved from the budgets for a body of `announced` bytes: the announced
    /// length capped at the limit (a longer body is refused by the handler), or the limit when
    /// the length is not announced.
    #[must_use]
    pub fn body_reservation(&self, announced: Option<u64>) -> usize {
        announced.map_or(self.request_body_limit, |n| {
            usize::try_from(n).map_or(self.request_body_limit, |n| n.min(self.request_body_limit))
        })
    }
}

/// Counts events and says when a summary line is due (at most once per interval), so that a
/// flood produces one journal line per minute with a count, not one per event.
#[derive(Debug)]
pub struct EventCounter {
    count: AtomicU64,
    last: Mutex<Option<Instant>>,
    interval: Duration,
}

impl EventCounter {
    /// A counter that reports at most once per `interval`.
    #[must_use]
    pub fn new(interval: Duration) -> Self {
        Self {
            count: AtomicU64::new(0),
            last: Mutex::new(None),
            interval,
        }
    }

    /// Counts one event; returns the number counted since the last report when a report is
    /// due now (the first event always reports).
    pub fn record(&self) -> Option<u64> {
        self.count.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut last = self.last.lock();
        if last.is_some_and(|t| now.saturating_duration_since(t) < self.interval) {
            return None;
        }
        *last = Some(now);
        Some(self.count.swap(0, Ordering::Relaxed))
    }
}

/// Slots where, when full, the slowest holder (fewest bytes received per second, the oldest
/// among equals) is dropped to make room (see the module docs). Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct EvictingSlots {
    inner: Arc<Mutex<SlotTable>>,
    /// Woken when a slot is given back (for [`EvictingSlots::take_patient`]).
    freed: Arc<tokio::sync::Notify>,
    max: usize,
    max_per_ip: usize,
    evicted: Arc<EventCounter>,
}

#[derive(Debug, Default)]
struct SlotTable {
    next: u64,
    /// Holders by age (smallest sequence number = oldest).
    holders: BTreeMap<u64, Holder>,
    per_ip: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Holder {
    ip: Option<IpAddr>,
    token: CancellationToken,
    /// Bytes received from the peer so far ([`CountingIo`]).
    progress: Arc<AtomicU64>,
    /// When the slot was taken.
    since: Instant,
}

impl Holder {
    /// Bytes received per second since the slot was taken, counting at least one second: in
    /// its first second a holder is ranked by its bytes alone, so a client whose hello arrived
    /// is never outranked by a newcomer that sent a byte.
    fn rate(&self, now: Instant) -> u64 {
        let ms = u64::try_from(now.saturating_duration_since(self.since).as_millis())
            .unwrap_or(u64::MAX)
            .max(1000);
        self.progress.load(Ordering::Relaxed).saturating_mul(1000) / ms
    }
}

impl SlotTable {
    /// The holder to drop: the slowest (fewest bytes received per second since it took its
    /// slot), the oldest among equals; only holders from `ip` when it is given, never `except`.
    fn victim(&self, ip: Option<IpAddr>, except: Option<u64>) -> Option<u64> {
        let now = Instant::now();
        self.holders
            .iter()
            .filter(|(seq, h)| (ip.is_none() || h.ip == ip) && Some(**seq) != except)
            .min_by_key(|(seq, h)| (h.rate(now), **seq))
            .map(|(seq, _)| *seq)
    }

    fn remove(&mut self, seq: u64) -> Option<CancellationToken> {
        let Holder { ip, token, .. } = self.holders.remove(&seq)?;
        if let Some(ip) = ip
            && let Some(n) = self.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        Some(token)
    }
}

/// One held slot. Its [`SlotTicket::evicted`] future completes when the slot was taken by a
/// newer arrival: the holder must then drop its connection. Dropping the ticket frees the slot.
#[derive(Debug)]
pub struct SlotTicket {
    seq: u64,
    token: CancellationToken,
    progress: Arc<AtomicU64>,
    slots: EvictingSlots,
}

impl SlotTicket {
    /// Counts `n` more bytes received (e.g. seen waiting in the socket queue).
    pub fn credit(&self, n: u64) {
        self.progress.fetch_add(n, Ordering::Relaxed);
    }

    /// Wraps the connection's stream so that the bytes it receives count as this holder's
    /// progress (holders that sent less are dropped first).
    pub fn counting<IO>(&self, io: IO) -> CountingIo<IO> {
        CountingIo {
            io,
            received: Arc::clone(&self.progress),
        }
    }

    /// Completes when this slot was given to a newer connection.
    pub async fn evicted(&self) {
        self.token.cancelled().await;
    }

    /// Whether this slot was given to a newer connection.
    #[must_use]
    pub fn is_evicted(&self) -> bool {
        self.token.is_cancelled()
    }
}

impl Drop for SlotTicket {
    fn drop(&mut self) {
        if self.slots.inner.lock().remove(self.seq).is_some() {
            self.slots.freed.notify_one();
        }
    }
}

impl EvictingSlots {
    /// `max` slots in all, `max_per_ip` for one source IP (both at least 1).
    #[must_use]
    pub fn new(max: usize, max_per_ip: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(SlotTable::default())),
            freed: Arc::new(tokio::sync::Notify::new()),
            max: max.max(1),
            max_per_ip: max_per_ip.max(1),
            evicted: Arc::new(EventCounter::new(Duration::from_secs(60))),
        }
    }

    /// Takes a slot for a connection from `ip` (`None`: a unix socket). When that IP holds
    /// `max_per_ip`, one of its holders is dropped; then, when all `max` are held, one holder
    /// overall. The one dropped is the slowest, by bytes received per second since it took
    /// its slot (an idle connection before a trickling one, a trickling one before a client
    /// mid-handshake), the oldest among equals. Returns the ticket and how many holders were
    /// dropped.
    pub fn take(&self, ip: Option<IpAddr>) -> (SlotTicket, usize) {
        self.take_with_progress(ip, 0)
    }

    /// [`EvictingSlots::take`] for a connection that has already `received` bytes waiting
    /// (see [`pending_bytes`]): a client whose hello is in the socket queue when it is
    /// accepted is protected before its task first runs.
    pub fn take_with_progress(&self, ip: Option<IpAddr>, received: u64) -> (SlotTicket, usize) {
        // Without a rate bound nothing is refused.
        self.try_take(ip, received, None)
            .unwrap_or_else(|| (self.insert(&mut self.inner.lock(), ip, received), 0))
    }

    /// Like [`EvictingSlots::take_with_progress`], but only a holder slower than
    /// `evictable_below` bytes per second may be dropped; while every holder is faster (real
    /// handshakes in progress, which finish in milliseconds), this waits for a slot to free.
    /// The caller bounds the wait (the handshake timeout).
    pub async fn take_patient(
        &self,
        ip: Option<IpAddr>,
        received: u64,
        evictable_below: u64,
    ) -> (SlotTicket, usize) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(taken) = self.try_take(ip, received, Some(evictable_below)) {
                return taken;
            }
            freed.await;
        }
    }

    /// Inserts a holder for a connection from `ip` that has `received` bytes, and its ticket.
    fn insert(&self, table: &mut SlotTable, ip: Option<IpAddr>, received: u64) -> SlotTicket {
        let token = CancellationToken::new();
        let progress = Arc::new(AtomicU64::new(received));
        let seq = table.next;
        table.next += 1;
        if let Some(ip) = ip {
            *table.per_ip.entry(ip).or_insert(0) += 1;
        }
        table.holders.insert(
            seq,
            Holder {
                ip,
                token: token.clone(),
                progress: Arc::clone(&progress),
                since: Instant::now(),
            },
        );
        SlotTicket {
            seq,
            token,
            progress,
            slots: self.clone(),
        }
    }

    /// Takes a slot, dropping holders as [`EvictingSlots::take`] says; `None` when a holder
    /// would have to be dropped and none is slower than `evictable_below`.
    fn try_take(
        &self,
        ip: Option<IpAddr>,
        received: u64,
        evictable_below: Option<u64>,
    ) -> Option<(SlotTicket, usize)> {
        let now = Instant::now();
        let mut dropped = Vec::new();
        let ticket = {
            let mut table = self.inner.lock();
            let evictable = |table: &SlotTable, seq: u64| {
                evictable_below.is_none_or(|bound| {
                    table.holders.get(&seq).is_some_and(|h| h.rate(now) < bound)
                })
            };
            // Decide every drop before making any, so that a refusal drops nobody.
            let mut victims = Vec::new();
            if let Some(ip) = ip
                && table.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip
            {
                match table.victim(Some(ip), None) {
                    Some(victim) if evictable(&table, victim) => victims.push(victim),
                    // Nothing may be dropped: wait (a bounded take) or over-commit by one.
                    _ if evictable_below.is_some() => return None,
                    _ => {}
                }
            }
            if table.holders.len() - victims.len() >= self.max {
                match table.victim(None, victims.first().copied()) {
                    Some(victim) if evictable(&table, victim) => victims.push(victim),
                    _ if evictable_below.is_some() => return None,
                    _ => {}
                }
            }
            for victim in victims {
                if let Some(t) = table.remove(victim) {
                    dropped.push(t);
                }
            }
            self.insert(&mut table, ip, received)
        };
        for t in &dropped {
            t.cancel();
        }
        Some((ticket, dropped.len()))
    }

    /// Counts `n` dropped holders; returns the count to report when a summary line is due.
    pub fn record_evictions(&self, n: usize) -> Option<u64> {
        let mut due = None;
        for _ in 0..n {
            due = self.evicted.record().or(due);
        }
        due
    }

    /// Slots held now.
    #[must_use]
    pub fn held(&self) -> usize {
        self.inner.lock().holders.len()
    }
}

/// Why an authenticated connection was not admitted, or a body not reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// `max_connections` established connections are open.
    #[error("{max} connections are open (max_connections)")]
    Connections {
        /// The limit.
        max: usize,
    },
    /// The peer holds `max_connections_per_peer` connections.
    #[error("{peer} holds {max} connections (max_connections_per_peer)")]
    PeerConnections {
        /// The peer.
        peer: String,
        /// The limit.
        max: usize,
    },
    /// The request body budget is used up.
    #[error("request bodies hold {budget} bytes (request_body_budget)")]
    BodyBudget {
        /// The limit.
        budget: usize,
    },
    /// The peer's request body budget is used up.
    #[error("{peer}'s request bodies hold {budget} bytes (request_body_budget_per_peer)")]
    PeerBodyBudget {
        /// The peer.
        peer: String,
        /// The limit.
        budget: usize,
    },
}

/// Established connections and request-body memory, counted in all and per peer. Cheap to
/// clone (shared state).
#[derive(Debug, Clone)]
pub struct PeerTable {
    inner: Arc<Mutex<Usage>>,
    limits: Limits,
}

#[derive(Debug, Default)]
struct Usage {
    connections: usize,
    body_bytes: usize,
    peers: HashMap<Option<PeerId>, PeerUsage>,
}

#[derive(Debug, Default, Clone, Copy)]
struct PeerUsage {
    connections: usize,
    body_bytes: usize,
}

impl Usage {
    fn release(&mut self, peer: &Option<PeerId>, connections: usize, body_bytes: usize) {
        self.connections -= connections;
        self.body_bytes -= body_bytes;
        if let Some(u) = self.peers.get_mut(peer) {
            u.connections -= connections;
            u.body_bytes -= body_bytes;
            if u.connections == 0 && u.body_bytes == 0 {
                self.peers.remove(peer);
            }
        }
    }
}

/// An admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionPass {
    table: PeerTable,
    peer: Option<PeerId>,
}

/// A reservation of request-body memory; dropping it returns the bytes.
#[derive(Debug)]
pub struct BodyReservation {
    table: PeerTable,
    peer: Option<PeerId>,
    bytes: usize,
}

impl PeerTable {
    /// A table enforcing `limits`.
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Usage::default())),
            limits,
        }
    }

    /// The limits enforced.
    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Admits an established connection of `peer` (`None`: a listener without peer IDs).
    ///
    /// # Errors
    /// [`Refused::Connections`] or [`Refused::PeerConnections`].
    pub fn admit(&self, peer: Option<&PeerId>) -> Result<ConnectionPass, Refused> {
        let mut usage = self.inner.lock();
        if usage.connections >= self.limits.max_connections {
            return Err(Refused::Connections {
                max: self.limits.max_connections,
            });
        }
        let key = peer.cloned();
        let held = usage.peers.get(&key).map_or(0, |u| u.connections);
        if key.is_some() && held >= self.limits.max_connections_per_peer {
            return Err(Refused::PeerConnections {
                peer: peer.map(ToString::to_string).unwrap_or_default(),
                max: self.limits.max_connections_per_peer,
            });
        }
        usage.connections += 1;
        usage.peers.entry(key.clone()).or_default().connections += 1;
        Ok(ConnectionPass {
            table: self.clone(),
            peer: key,
        })
    }

    /// Open connections.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.inner.lock().connections
    }

    /// Request-body bytes reserved now.
    #[must_use]
    pub fn body_bytes(&self) -> usize {
        self.inner.lock().body_bytes
    }
}

impl ConnectionPass {
    /// Reserves `bytes` of request-body memory for this connection's peer.
    ///
    /// # Errors
    /// [`Refused::BodyBudget`] or [`Refused::PeerBodyBudget`].
    pub fn reserve_body(&self, bytes: usize) -> Result<BodyReservation, Refused> {
        let limits = self.table.limits;
        let mut usage = self.table.inner.lock();
        if usage.body_bytes.saturating_add(bytes) > limits.request_body_budget {
            return Err(Refused::BodyBudget {
                budget: limits.request_body_budget,
            });
        }
        let held = usage.peers.get(&self.peer).map_or(0, |u| u.body_bytes);
        if self.peer.is_some() && held.saturating_add(bytes) > limits.request_body_budget_per_peer {
            return Err(Refused::PeerBodyBudget {
                peer: self
                    .peer
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                budget: limits.request_body_budget_per_peer,
            });
        }
        usage.body_bytes += bytes;
        usage.peers.entry(self.peer.clone()).or_default().body_bytes += bytes;
        Ok(BodyReservation {
            table: self.table.clone(),
            peer: self.peer.clone(),
            bytes,
        })
    }
}

impl Drop for ConnectionPass {
    fn drop(&mut self) {
        self.table.inner.lock().release(&self.peer, 1, 0);
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        self.table.inner.lock().release(&self.peer, 0, self.bytes);
    }
}

/// How many bytes (up to 4 KiB) are waiting in a socket's receive queue, without reading them
/// (`recv(MSG_PEEK|MSG_DONTWAIT)`); 0 when none or on error. The accept loops call it once per
/// connection, so eviction can tell a client that already sent its hello from an idle one,
/// however long the connection's task takes to be scheduled.
pub fn pending_bytes(fd: std::os::fd::RawFd) -> u64 {
    peek_pending(fd).map_or(0, |n| n as u64)
}

/// `recv(MSG_PEEK|MSG_DONTWAIT)` of up to 4 KiB: `Ok(0)` at end of stream, `WouldBlock` when
/// nothing is waiting.
pub fn peek_pending(fd: std::os::fd::RawFd) -> std::io::Result<usize> {
    use nix::sys::socket::{MsgFlags, recv};
    let mut buf = [0u8; 4096];
    recv(fd, &mut buf, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT).map_err(std::io::Error::from)
}

/// A stream that counts the bytes it receives into its [`SlotTicket`]'s progress.
#[derive(Debug)]
pub struct CountingIo<IO> {
    io: IO,
    received: Arc<AtomicU64>,
}

impl<IO> CountingIo<IO> {
    /// The wrapped stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for CountingIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before) as u64;
        this.received.fetch_add(n, Ordering::Relaxed);
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for CountingIo<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The error a [`DeadlineBody`] ends with when its deadline passes.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "the request body did not arrive within {0:?} (request_body_timeout, request_body_min_rate)"
)]
pub struct BodyTimeout(pub Duration);

/// A request body that fails once its deadline passes, however the bytes trickle in.
#[derive(Debug)]
pub struct DeadlineBody<B> {
    inner: B,
    sleep: Pin<Box<Sleep>>,
    allowed: Duration,
}

impl<B> DeadlineBody<B> {
    /// Wraps `inner`; reading it must finish within `allowed` from now.
    pub fn new(inner: B, allowed: Duration) -> Self {
        Self {
            inner,
            sleep: Box::pin(tokio::time::sleep(allowed)),
            allowed,
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body + Unpin,
    B::Data: Buf,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(this.allowed))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An I/O stream whose writes fail with `TimedOut` when they make no progress for
/// `write_timeout` (a client that stops reading its response cannot hold the connection).
#[derive(Debug)]
pub struct WriteDeadline<IO> {
    io: IO,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<IO> WriteDeadline<IO> {
    /// Wraps `io`.
    pub fn new(io: IO, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            stalled: None,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    fn on_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the peer read nothing for {timeout:?} (write_timeout)"),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteDeadline<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.on_write(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.on_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.on_write(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.on_write(cx, polled)
    }
}

/// How long a connection may live: `max_connection_lifetime`, and never past the peer
/// certificate's `notAfter` (an expired SVID must re-authenticate; `None`: not known).
#[must_use]
pub fn connection_lifetime(max: Duration, not_after: Option<SystemTime>) -> Duration {
    match not_after {
        Some(t) => max.min(
            t.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        ),
        None => max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawLimits {
        RawLimits {
            max_handshakes: 8,
            max_handshakes_per_ip: 4,
            handshake_timeout: Duration::from_secs(5),
            max_connections: 16,
            max_connections_per_peer: 4,
            read_header_timeout: Duration::from_secs(5),
            request_body_limit: 4096,
            request_body_timeout: Duration::from_secs(5),
            request_body_min_rate: 1024,
            request_body_budget: 16384,
            request_body_budget_per_peer: 8192,
            write_timeout: Duration::from_secs(5),
            max_connection_lifetime: Duration::from_secs(600),
        }
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, last]))
    }

    fn peer(name: &str) -> PeerId {
        PeerId::new(
            spike_identity::SpiffeId::new(format!("spiffe://spike.test/workload/{name}")).unwrap(),
        )
    }

    #[test]
    fn every_key_is_range_checked_by_name() {
        assert!(Limits::parse(raw()).is_ok());
        let key = |f: fn(&mut RawLimits)| {
            let mut r = raw();
            f(&mut r);
            Limits::parse(r).unwrap_err().key
        };
        assert_eq!(key(|r| r.max_handshakes = 0), "max_handshakes");
        assert_eq!(
            key(|r| r.max_handshakes_per_ip = 9),
            "max_handshakes_per_ip"
        );
        assert_eq!(key(|r| r.max_connections = 0), "max_connections");
        assert_eq!(
            key(|r| r.max_connections_per_peer = 17),
            "max_connections_per_peer"
        );
        assert_eq!(
            key(|r| r.handshake_timeout = Duration::ZERO),
            "handshake_timeout"
        );
        assert_eq!(key(|r| r.write_timeout = Duration::ZERO), "write_timeout");
        assert_eq!(
            key(|r| r.max_connection_lifetime = Duration::ZERO),
            "max_connection_lifetime"
        );
        assert_eq!(key(|r| r.request_body_limit = 10), "request_body_limit");
        assert_eq!(
            key(|r| r.request_body_min_rate = 0),
            "request_body_min_rate"
        );
        assert_eq!(key(|r| r.request_body_budget = 100), "request_body_budget");
        assert_eq!(
            key(|r| r.request_body_budget_per_peer = 32768),
            "request_body_budget_per_peer"
        );
    }

    #[test]
    fn body_deadline_grows_with_the_announced_length() {
        let l = Limits::parse(raw()).unwrap();
        assert_eq!(l.body_deadline(Some(100)), Duration::from_secs(5));
        assert_eq!(l.body_deadline(Some(4096)), Duration::from_secs(9));
        // Unknown length: as if the limit were announced.
        assert_eq!(l.body_deadline(None), Duration::from_secs(9));
        // A huge announced length gets no more time than the limit.
        assert_eq!(l.body_deadline(Some(1 << 40)), Duration::from_secs(9));
        assert_eq!(l.body_reservation(Some(100)), 100);
        assert_eq!(l.body_reservation(Some(1 << 40)), 4096);
        assert_eq!(l.body_reservation(None), 4096);
    }

    #[test]
    fn full_slots_drop_the_oldest_holder() {
        let slots = EvictingSlots::new(3, 3);
        let (a, _) = slots.take(ip(1));
        let (b, _) = slots.take(ip(2));
        let (c, _) = slots.take(ip(3));
        let (d, dropped) = slots.take(ip(4));
        assert_eq!(dropped, 1);
        assert!(a.is_evicted());
        assert!(!b.is_evicted() && !c.is_evicted() && !d.is_evicted());
        assert_eq!(slots.held(), 3);
        drop(a);
        assert_eq!(slots.held(), 3, "an evicted ticket no longer holds a slot");
        drop(b);
        assert_eq!(slots.held(), 2);
    }

    #[test]
    fn a_client_that_sent_its_hello_outlives_idle_and_slow_newcomers() {
        use tokio::io::AsyncReadExt as _;
        let slots = EvictingSlots::new(4, 4);
        let (old_idle, _) = slots.take(ip(1));
        let (client, _) = slots.take(ip(2));
        let (slow, _) = slots.take(ip(3));
        client.progress.store(300, Ordering::Relaxed);
        slow.progress.store(2, Ordering::Relaxed);
        let (_n1, _) = slots.take(ip(4));
        // Full: the next arrivals drop the holders with the least progress, idle ones first.
        let (_n2, _) = slots.take(ip(5));
        assert!(old_idle.is_evicted());
        assert!(!client.is_evicted() && !slow.is_evicted());
        let (_n3, _) = slots.take(ip(6));
        let (_n4, _) = slots.take(ip(7));
        assert!(
            !client.is_evicted(),
            "a flood of idle newcomers never drops the client"
        );
        // Counting is done by the stream wrapper.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (ticket, _) = EvictingSlots::new(1, 1).take(None);
        rt.block_on(async {
            let (mut a, b) = tokio::io::duplex(64);
            let mut counted = ticket.counting(b);
            tokio::io::AsyncWriteExt::write_all(&mut a, b"hello")
                .await
                .unwrap();
            let mut buf = [0u8; 5];
            counted.read_exact(&mut buf).await.unwrap();
        });
        assert_eq!(ticket.progress.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn one_ip_loses_its_own_oldest_slot_first() {
        let slots = EvictingSlots::new(10, 2);
        let (other, _) = slots.take(ip(9));
        let (a1, _) = slots.take(ip(1));
        let (a2, _) = slots.take(ip(1));
        let (a3, dropped) = slots.take(ip(1));
        assert_eq!(dropped, 1);
        assert!(a1.is_evicted());
        assert!(!other.is_evicted() && !a2.is_evicted() && !a3.is_evicted());
        // Unix-socket holders (no IP) only count towards the total.
        let unix: Vec<_> = (0..5).map(|_| slots.take(None).0).collect();
        assert!(unix.iter().all(|t| !t.is_evicted()));
    }

    #[test]
    fn connections_and_body_memory_are_capped_in_all_and_per_peer() {
        let table = PeerTable::new(Limits::parse(raw()).unwrap());
        let (a, b) = (peer("a"), peer("b"));
        let a_conns: Vec<_> = (0..4).map(|_| table.admit(Some(&a)).unwrap()).collect();
        assert!(matches!(
            table.admit(Some(&a)),
            Err(Refused::PeerConnections { max: 4, .. })
        ));
        let b1 = table.admit(Some(&b)).unwrap();
        // Body memory: 8 KiB per peer, 16 KiB in all.
        let r1 = a_conns[0].reserve_body(4096).unwrap();
        let r2 = a_conns[1].reserve_body(4096).unwrap();
        assert!(matches!(
            a_conns[2].reserve_body(1),
            Err(Refused::PeerBodyBudget { .. })
        ));
        let r3 = b1.reserve_body(8192).unwrap();
        assert_eq!(table.body_bytes(), 16384);
        drop((r1, r2, r3));
        assert_eq!(table.body_bytes(), 0);
        drop(a_conns);
        assert_eq!(table.connections(), 1);
        let more: Vec<_> = (0..15)
            .filter_map(|i| table.admit(Some(&peer(&i.to_string()))).ok())
            .collect();
        assert_eq!(more.len(), 15);
        assert!(matches!(
            table.admit(Some(&peer("late"))),
            Err(Refused::Connections { max: 16 })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_fails_at_its_deadline() {
        use http_body_util::BodyExt as _;
        /// One byte per second, forever.
        struct Trickle(tokio::time::Interval);
        impl Body for Trickle {
            type Data = bytes::Bytes;
            type Error = std::io::Error;
            fn poll_frame(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
                self.get_mut()
                    .0
                    .poll_tick(cx)
                    .map(|_| Some(Ok(Frame::data(bytes::Bytes::from_static(b"x")))))
            }
        }
        let body = DeadlineBody::new(
            Trickle(tokio::time::interval(Duration::from_secs(1))),
            Duration::from_secs(3),
        );
        let start = Instant::now();
        let err = body.collect().await.unwrap_err();
        assert!(err.is::<BodyTimeout>(), "{err}");
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_fails_the_write() {
        use tokio::io::AsyncWriteExt as _;
        let (ours, _theirs) = tokio::io::duplex(64);
        let mut io = WriteDeadline::new(ours, Duration::from_secs(2));
        let start = Instant::now();
        let err = io.write_all(&[0u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn lifetime_never_passes_the_certificate_expiry() {
        let max = Duration::from_secs(600);
        assert_eq!(connection_lifetime(max, None), max);
        let soon = SystemTime::now() + Duration::from_secs(30);
        assert!(connection_lifetime(max, Some(soon)) <= Duration::from_secs(30));
        let past = SystemTime::now() - Duration::from_secs(1);
        assert_eq!(connection_lifetime(max, Some(past)), Duration::ZERO);
    }
}
