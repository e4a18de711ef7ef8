//! The audit stream: one structured event per API request on target
//! [`spike_daemon::logging::AUDIT_TARGET`].
//!
//! Fields: `request_id`, `peer_spiffe_id`, `action`, `path` (the resource path, never a
//! value), `status` (HTTP), `result` (`allowed`, `denied` or `error`), `duration_ms`.
//!
//! Events are written off the request path: [`Audit::emit`] appends the event to a buffer,
//! and the `spike-audit` thread writes what gathered there (to the journal or stderr, as the
//! logging setup says), [`GATHER`] after the first event it finds waiting. Nothing is
//! dropped: when [`MAX_BUFFERED`] events or [`MAX_BUFFERED_BYTES`] of their text wait
//! already (a journal that does not keep up), or once the buffer is closed, the event is
//! written on the spot, by the request. [`Audit::close`] (at shutdown, after the listeners
//! have stopped, and when the last handle is dropped) writes every buffered event before it
//! returns. The journal's timestamp of an event is when it was written, normally a few
//! milliseconds after the request ended; events written by their requests under overload may
//! precede older buffered ones.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use spike_daemon::logging::AUDIT_TARGET;

/// The outcome class of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditResult {
    /// Authorized and answered 2xx.
    Allowed,
    /// Refused by authorization (401).
    Denied,
    /// Any other non-2xx answer.
    Error,
}

impl AuditResult {
    /// From an HTTP status.
    pub fn from_status(status: u16) -> Self {
        match status {
            200..=299 => AuditResult::Allowed,
            401 | 403 => AuditResult::Denied,
            _ => AuditResult::Error,
        }
    }

    /// The field value.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditResult::Allowed => "allowed",
            AuditResult::Denied => "denied",
            AuditResult::Error => "error",
        }
    }
}

/// One audit event.
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    /// Random per-request id.
    pub request_id: &'a str,
    /// The caller's SPIFFE ID (empty if none).
    pub peer_spiffe_id: &'a str,
    /// The action name (`secret_get`, ... or `fallback`, `not_ready`).
    pub action: &'static str,
    /// The resource path (secret path, policy name, system path, or the URL path).
    pub path: &'a str,
    /// The HTTP status.
    pub status: u16,
    /// Time spent.
    pub duration: Duration,
}

/// How long the audit thread lets events gather after the first one before it writes them.
pub const GATHER: Duration = Duration::from_millis(2);

/// The most events waiting in the buffer; past that, a request writes its own event.
pub const MAX_BUFFERED: usize = 16_384;

/// The most bytes of event text (request id, peer ID, path) waiting in the buffer; past that,
/// a request writes its own event. An event's path can be a long URL path.
pub const MAX_BUFFERED_BYTES: usize = 4 * 1024 * 1024;

/// An owned [`AuditEvent`], as buffered.
struct Record {
    request_id: String,
    peer_spiffe_id: String,
    action: &'static str,
    path: String,
    status: u16,
    duration: Duration,
}

impl Record {
    fn write(&self) {
        write(&AuditEvent {
            request_id: &self.request_id,
            peer_spiffe_id: &self.peer_spiffe_id,
            action: self.action,
            path: &self.path,
            status: self.status,
            duration: self.duration,
        });
    }
}

#[derive(Default)]
struct Buffer {
    events: Vec<Record>,
    /// Bytes of text held by `events`.
    bytes: usize,
    closed: bool,
}

impl Buffer {
    /// Takes every buffered event.
    fn take(&mut self) -> Vec<Record> {
        self.bytes = 0;
        std::mem::take(&mut self.events)
    }
}

#[derive(Default)]
struct Shared {
    buffer: Mutex<Buffer>,
    /// Signalled when the first event lands in an empty buffer, and on close.
    wake: Condvar,
}

/// The audit stream of one Nexus: a buffer and the thread that writes it.
pub struct Audit {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").finish_non_exhaustive()
    }
}

impl Audit {
    /// Starts the `spike-audit` writer thread. When the thread cannot be started, every
    /// event is written by its request.
    pub fn start() -> Audit {
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("spike-audit".to_owned())
                .spawn(move || run(&shared))
        };
        let thread = match thread {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the audit thread; requests write their own audit events");
                shared.buffer.lock().closed = true;
                None
            }
        };
        Audit {
            shared,
            thread: Mutex::new(thread),
        }
    }

    /// Queues `event` for the audit thread (or writes it now, see the module docs).
    pub fn emit(&self, event: &AuditEvent<'_>) {
        let size = event.request_id.len() + event.peer_spiffe_id.len() + event.path.len();
        let mut buffer = self.shared.buffer.lock();
        if buffer.closed
            || buffer.events.len() >= MAX_BUFFERED
            || buffer.bytes + size > MAX_BUFFERED_BYTES
        {
            drop(buffer);
            write(event);
            return;
        }
        let first = buffer.events.is_empty();
        buffer.bytes += size;
        buffer.events.push(Record {
            request_id: event.request_id.to_owned(),
            peer_spiffe_id: event.peer_spiffe_id.to_owned(),
            action: event.action,
            path: event.path.to_owned(),
            status: event.status,
            duration: event.duration,
        });
        drop(buffer);
        if first {
            self.shared.wake.notify_one();
        }
    }

    /// Writes every buffered event and stops the thread; later events are written by their
    /// requests. Returns once the buffer is empty.
    pub fn close(&self) {
        self.shared.buffer.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.lock().take()
            && thread.join().is_err()
        {
            tracing::error!("the audit thread panicked");
        }
        // Without a thread (it could not start, or it panicked), write what is left here.
        let rest = self.shared.buffer.lock().take();
        write_all(&rest);
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        self.close();
    }
}

/// The audit thread: waits for a first event, lets more gather for [`GATHER`], writes them
/// all; after close, writes what is left and returns.
fn run(shared: &Shared) {
    loop {
        let closed = {
            let mut buffer = shared.buffer.lock();
            while buffer.events.is_empty() && !buffer.closed {
                shared.wake.wait(&mut buffer);
            }
            buffer.closed
        };
        if !closed {
            std::thread::sleep(GATHER);
        }
        let batch = shared.buffer.lock().take();
        write_all(&batch);
        if closed {
            return;
        }
    }
}

/// Writes buffered events in order, on the calling thread.
fn write_all(records: &[Record]) {
    for record in records {
        record.write();
    }
}

/// Writes `event` now, on the calling thread.
fn write(event: &AuditEvent<'_>) {
    let result = AuditResult::from_status(event.status);
    let duration_ms = u64::try_from(event.duration.as_millis()).unwrap_or(u64::MAX);
    tracing::info!(
        target: AUDIT_TARGET,
        request_id = event.request_id,
        peer_spiffe_id = event.peer_spiffe_id,
        action = event.action,
        path = event.path,
        status = event.status,
        result = result.as_str(),
        duration_ms,
        "audit"
    );
}

/// A fresh random request id (16 hex characters).
pub fn request_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return "0000000000000000".to_owned();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_and_ids() {
        assert_eq!(AuditResult::from_status(200), AuditResult::Allowed);
        assert_eq!(AuditResult::from_status(401), AuditResult::Denied);
        assert_eq!(AuditResult::from_status(404), AuditResult::Error);
        assert_eq!(AuditResult::from_status(503), AuditResult::Error);
        let a = request_id();
        assert_eq!(a.len(), 16);
        assert_ne!(a, request_id());
    }

    /// Counts the audit events the global dispatcher sees, from any thread.
    #[test]
    fn buffered_events_are_all_written_by_close_and_none_after_is_lost() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tracing_subscriber::layer::SubscriberExt as _;

        static SEEN: AtomicUsize = AtomicUsize::new(0);
        struct Count;
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                if event.metadata().target() == AUDIT_TARGET {
                    SEEN.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        // The audit thread logs through the global dispatcher.
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Count))
            .unwrap();
        let audit = Audit::start();
        let event = AuditEvent {
            request_id: "0123456789abcdef",
            peer_spiffe_id: "spiffe://spike.ist/spike/pilot/role/superuser",
            action: "secret_get",
            path: "a/b",
            status: 200,
            duration: Duration::from_micros(40),
        };
        for _ in 0..1000 {
            audit.emit(&event);
        }
        // Long paths pass the byte bound: those requests write their own events.
        let long = "p".repeat(1024 * 1024);
        for _ in 0..8 {
            audit.emit(&AuditEvent {
                path: &long,
                ..event.clone()
            });
        }
        assert!(audit.shared.buffer.lock().bytes <= MAX_BUFFERED_BYTES);
        audit.close();
        assert_eq!(SEEN.load(Ordering::SeqCst), 1008);
        // After close, a request writes its own event.
        audit.emit(&event);
        assert_eq!(SEEN.load(Ordering::SeqCst), 1009);
        drop(audit);
        assert_eq!(SEEN.load(Ordering::SeqCst), 1009);
    }
}
