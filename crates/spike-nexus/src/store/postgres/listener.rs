//! The policy-change listener: keeps this instance's policy cache current when another
//! instance changes a policy.
//!
//! Every policy write bumps `spike.changes.policy_epoch` and sends `NOTIFY spike_policies`
//! in its own transaction, so the notification goes out on commit, to every instance. The
//! listener holds its own connection (not pooled: a pooled one would drop notifications),
//! `LISTEN`s, and on a notification re-reads every policy and hands them to the
//! [`Store`](crate::store::Store)'s cache. Notifications are lost while the listener is
//! disconnected, so it also reads the epoch every [`POLL`] and on every reconnect, and
//! re-reads the policies when the epoch moved. While its own connection cannot be made, it
//! polls the epoch through the pool instead.
//!
//! Staleness: a change made on another instance shows here one notification round trip
//! plus one policy read after its commit; if the notification is lost, within [`POLL`]
//! plus the database timeout. While no epoch read succeeds for longer than
//! [`Gate::fresh`] allows, the cache is stale and access checks answer 503 rather than
//! decide on grants that may have been revoked.
//!
//! The cache only moves forward in epochs ([`Gate`]): a snapshot older than the one applied
//! (for instance one read before this instance's own write committed) is dropped. A flood of
//! notifications costs one re-read per wake-up, not one per notification.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures::StreamExt;
use parking_lot::Mutex;
use tokio_postgres::AsyncMessage;

use super::super::records::RecordCodec;
use super::super::{PolicySink, StoreError};
use super::{Database, POLICY_CHANNEL, PolicyRows, Shared, pg_error};
use crate::model::Policy;

/// How often the listener reads the policy epoch (and checks its connection).
pub const POLL: Duration = Duration::from_secs(5);

/// Reads the policy epoch and every policy row. The epoch is read first: a change committed
/// in between shows in the rows and moves the epoch again, so it is read once more later.
pub(super) async fn read_rows(client: &tokio_postgres::Client) -> Result<PolicyRows, StoreError> {
    let epoch = epoch(client).await?;
    let rows = client
        .query("SELECT id, nonce, ciphertext FROM spike.policies", &[])
        .await
        .map_err(pg_error)?;
    let rows = rows
        .iter()
        .map(|row| {
            Ok((
                row.try_get::<_, Vec<u8>>(0).map_err(pg_error)?,
                row.try_get::<_, Vec<u8>>(1).map_err(pg_error)?,
                row.try_get::<_, Vec<u8>>(2).map_err(pg_error)?,
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok((epoch, rows))
}

/// Opens policy rows.
pub(super) fn open_rows(
    records: &RecordCodec,
    rows: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>,
) -> Result<Vec<Policy>, StoreError> {
    rows.into_iter()
        .map(|(id, nonce, ciphertext)| records.open_policy(&id, &nonce, ciphertext))
        .collect()
}

async fn epoch(client: &tokio_postgres::Client) -> Result<i64, StoreError> {
    client
        .query_one("SELECT policy_epoch FROM spike.changes WHERE id = 1", &[])
        .await
        .map_err(pg_error)?
        .try_get(0)
        .map_err(pg_error)
}

/// Orders cache updates by policy epoch and tracks when the epoch was last read.
#[derive(Clone)]
pub(super) struct Gate(Arc<Mutex<GateState>>);

struct GateState {
    /// The newest epoch the cache reflects; -1 forces a re-read.
    applied: i64,
    sink: Option<PolicySink>,
    /// The last successful read of the epoch (or of a snapshot).
    synced: Instant,
}

impl Gate {
    fn new() -> Self {
        Gate(Arc::new(Mutex::new(GateState {
            applied: -1,
            sink: None,
            synced: Instant::now(),
        })))
    }

    /// Applies a snapshot taken at `epoch`, unless the cache is newer already. Returns
    /// whether it was applied.
    pub(super) fn apply(&self, epoch: i64, policies: Vec<Policy>) -> bool {
        let mut state = self.0.lock();
        state.synced = Instant::now();
        if epoch < state.applied {
            return false;
        }
        let Some(sink) = &state.sink else {
            return false;
        };
        sink(policies);
        state.applied = epoch;
        true
    }

    /// The next poll re-reads the policies whatever the epoch.
    pub(super) fn force_reload(&self) {
        self.0.lock().applied = -1;
    }

    fn synced(&self) {
        self.0.lock().synced = Instant::now();
    }

    fn applied(&self) -> i64 {
        self.0.lock().applied
    }

    /// Whether the epoch was read within [`POLL`] plus three database timeouts.
    pub(super) fn fresh(&self, timeout: Duration) -> bool {
        self.0.lock().synced.elapsed() <= POLL + timeout.saturating_mul(3)
    }
}

/// The running listener.
pub(super) struct Handle {
    gate: Gate,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// Starts the listener on the database's runtime.
    pub(super) fn start(db: &Database, records: Arc<RecordCodec>) -> Result<Handle, StoreError> {
        let gate = Gate::new();
        let shared = Arc::clone(&db.shared);
        let task = db.spawn(run(shared, records, gate.clone()))?;
        Ok(Handle { gate, task })
    }

    pub(super) fn gate(&self) -> Gate {
        self.gate.clone()
    }

    /// Where the policies go on a change (the store's cache).
    pub(super) fn set_sink(&self, sink: PolicySink) {
        let mut state = self.gate.0.lock();
        state.sink = Some(sink);
        // The store loaded its policies just before; the listener's next read applies.
        state.applied = -1;
    }

    pub(super) fn stop(&self) {
        self.task.abort();
    }
}

async fn run(shared: Arc<Shared>, records: Arc<RecordCodec>, gate: Gate) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(200);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        if let Err(e) = listen(&shared, &records, &gate).await {
            tracing::warn!(error = %e, "policy listener disconnected: {e}; reconnecting");
        }
        // A connection that lived a while earns a quick reconnect.
        if started.elapsed() > POLL {
            backoff = FIRST_BACKOFF;
        }
        // Meanwhile, follow the epoch through the pool.
        if let Err(e) = poll_via_pool(&shared, &records, &gate).await {
            tracing::debug!(error = %e, "policy poll through the pool failed");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(POLL);
    }
}

async fn poll_via_pool(
    shared: &Shared,
    records: &RecordCodec,
    gate: &Gate,
) -> Result<(), StoreError> {
    let applied = gate.applied();
    let rows = shared
        .with_conn(move |conn| async move {
            let outcome = async {
                let current = epoch(conn.client()).await?;
                if current == applied {
                    return Ok(None);
                }
                read_rows(conn.client()).await.map(Some)
            }
            .await;
            (conn, outcome)
        })
        .await?;
    gate.synced();
    if let Some((epoch, rows)) = rows {
        gate.apply(epoch, open_rows(records, rows)?);
    }
    Ok(())
}

/// One connection's life: LISTEN, read everything, then follow notifications and polls
/// until the connection fails.
async fn listen(shared: &Shared, records: &RecordCodec, gate: &Gate) -> Result<(), StoreError> {
    let timeout = shared.timeout;
    let (client, mut connection) =
        tokio::time::timeout(timeout, shared.pg.connect(shared.tls.clone()))
            .await
            .map_err(|_| StoreError::Unavailable("PostgreSQL did not answer the listener".into()))?
            .map_err(pg_error)?;
    let notified = Arc::new(tokio::sync::Notify::new());
    let wake = Arc::clone(&notified);
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                // Coalesced: many notifications before the next wait are one wake-up.
                Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        // The connection is gone: wake the follower so it notices.
        wake.notify_one();
    });
    let outcome = follow(&client, records, gate, timeout, &notified).await;
    driver.abort();
    outcome
}

async fn follow(
    client: &tokio_postgres::Client,
    records: &RecordCodec,
    gate: &Gate,
    timeout: Duration,
    notified: &tokio::sync::Notify,
) -> Result<(), StoreError> {
    let timed = |what: &'static str| {
        StoreError::Unavailable(format!("PostgreSQL did not answer the listener's {what}"))
    };
    tokio::time::timeout(
        timeout,
        client.batch_execute(&format!("LISTEN {POLICY_CHANNEL}")),
    )
    .await
    .map_err(|_| timed("LISTEN"))?
    .map_err(pg_error)?;
    // Everything before the LISTEN is read now; everything after it is notified.
    let mut force = true;
    loop {
        let current = tokio::time::timeout(timeout, epoch(client))
            .await
            .map_err(|_| timed("poll"))??;
        gate.synced();
        if force || current != gate.applied() {
            let (epoch, rows) = tokio::time::timeout(timeout, read_rows(client))
                .await
                .map_err(|_| timed("policy read"))??;
            if gate.apply(epoch, open_rows(records, rows)?) {
                tracing::debug!(epoch, "policy cache reloaded");
            }
        }
        if client.is_closed() {
            return Err(StoreError::Unavailable(
                "the listener's connection closed".into(),
            ));
        }
        tokio::select! {
            () = notified.notified() => force = true,
            () = tokio::time::sleep(POLL) => force = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_goes_stale_without_epoch_reads_and_only_moves_forward() {
        let gate = Gate::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        gate.0.lock().sink = Some(Box::new(move |p: Vec<Policy>| sink.lock().push(p.len())));
        let timeout = Duration::from_secs(1);
        assert!(gate.fresh(timeout));
        let past = Instant::now()
            .checked_sub(POLL + timeout * 3 + Duration::from_millis(10))
            .unwrap();
        gate.0.lock().synced = past;
        assert!(!gate.fresh(timeout), "no epoch read for too long: stale");
        gate.synced();
        assert!(gate.fresh(timeout));
        assert!(gate.apply(5, Vec::new()));
        assert!(
            !gate.apply(4, Vec::new()),
            "an older snapshot never overwrites a newer"
        );
        gate.force_reload();
        assert_eq!(gate.applied(), -1);
        assert_eq!(seen.lock().len(), 1);
    }
}
