//! The policy-change listener: keeps this instance's policy cache current when another
//! instance changes a policy.
//!
//! Every policy write bumps `spike.changes.policy_epoch` and sends `NOTIFY spike_policies`
//! in its own transaction, so the notification goes out on commit, to every instance. The
//! listener holds its own connection (not pooled: a pooled one would drop notifications),
//! `LISTEN`s, and on each notification re-reads every policy and hands them to the
//! [`Store`](crate::store::Store)'s cache. Notifications are lost while the listener is
//! disconnected, so it also re-reads the epoch every [`POLL`] and on every reconnect,
//! and re-reads the policies when the epoch moved.
//!
//! Staleness: a change made on another instance shows here one notification round trip
//! plus one policy read after its commit (milliseconds); if the notification is lost, within
//! [`POLL`] plus the database timeout, as long as the database is reachable.
//!
//! A snapshot older than a policy write this instance made itself is never applied over
//! it ([`Gate`]): the epoch orders them.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use tokio_postgres::AsyncMessage;

use super::super::records::RecordCodec;
use super::super::{PolicySink, StoreError};
use super::{Database, POLICY_CHANNEL, Shared, pg_error};
use crate::model::Policy;

/// How often the listener re-reads the policy epoch (and checks its connection).
pub const POLL: Duration = Duration::from_secs(5);

/// Reads the policy epoch and every policy. The epoch is read first: a change committed in
/// between shows in the policies and moves the epoch again, so it is read once more later.
pub(super) async fn load_policies(
    client: &tokio_postgres::Client,
    records: &RecordCodec,
) -> Result<(i64, Vec<Policy>), StoreError> {
    let epoch = epoch(client).await?;
    let rows = client
        .query("SELECT id, nonce, ciphertext FROM spike.policies", &[])
        .await
        .map_err(pg_error)?;
    let mut policies = Vec::with_capacity(rows.len());
    for row in rows {
        let id: Vec<u8> = row.try_get(0).map_err(pg_error)?;
        let nonce: Vec<u8> = row.try_get(1).map_err(pg_error)?;
        let ciphertext: Vec<u8> = row.try_get(2).map_err(pg_error)?;
        policies.push(records.open_policy(&id, &nonce, ciphertext)?);
    }
    Ok((epoch, policies))
}

async fn epoch(client: &tokio_postgres::Client) -> Result<i64, StoreError> {
    client
        .query_one("SELECT policy_epoch FROM spike.changes WHERE id = 1", &[])
        .await
        .map_err(pg_error)?
        .try_get(0)
        .map_err(pg_error)
}

/// Orders cache updates by policy epoch: the listener's snapshots and this instance's own
/// writes.
#[derive(Clone, Default)]
pub(super) struct Gate(Arc<Mutex<GateState>>);

#[derive(Default)]
struct GateState {
    /// The newest epoch the cache reflects (a snapshot, or this instance's own write).
    applied: i64,
    sink: Option<PolicySink>,
}

impl Gate {
    /// This instance committed the policy change of `epoch`; the store updates its cache.
    pub(super) fn written(&self, epoch: i64) {
        let mut state = self.0.lock();
        state.applied = state.applied.max(epoch);
    }

    /// Applies a snapshot taken at `epoch`, unless the cache is newer already. Returns
    /// whether it was applied.
    fn apply(&self, epoch: i64, policies: Vec<Policy>) -> bool {
        let mut state = self.0.lock();
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

    fn applied(&self) -> i64 {
        self.0.lock().applied
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
        let gate = Gate::default();
        let shared = Arc::clone(&db.shared);
        let task = db.spawn(run(shared, records, gate.clone()))?;
        Ok(Handle { gate, task })
    }

    pub(super) fn gate(&self) -> Gate {
        self.gate.clone()
    }

    /// Where the policies go on a change (the store's cache).
    pub(super) fn set_sink(&self, sink: PolicySink) {
        self.gate.0.lock().sink = Some(sink);
    }

    pub(super) fn stop(&self) {
        self.task.abort();
    }
}

async fn run(shared: Arc<Shared>, records: Arc<RecordCodec>, gate: Gate) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match listen(&shared, &records, &gate).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %e, "policy listener disconnected: {e}; reconnecting");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(POLL);
    }
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
    let (notify, mut notified) = tokio::sync::mpsc::unbounded_channel::<()>();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if notify.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let outcome = follow(&client, records, gate, timeout, &mut notified).await;
    driver.abort();
    outcome
}

async fn follow(
    client: &tokio_postgres::Client,
    records: &RecordCodec,
    gate: &Gate,
    timeout: Duration,
    notified: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
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
        if force || current != gate.applied() {
            let (epoch, policies) = tokio::time::timeout(timeout, load_policies(client, records))
                .await
                .map_err(|_| timed("policy read"))??;
            if gate.apply(epoch, policies) {
                tracing::debug!(epoch, "policy cache reloaded");
            }
        }
        force = false;
        tokio::select! {
            received = notified.recv() => {
                if received.is_none() {
                    return Err(StoreError::Unavailable("the listener's connection closed".into()));
                }
                // Several changes in a row: one reload.
                while notified.try_recv().is_ok() {}
                force = true;
            }
            () = tokio::time::sleep(POLL) => {}
        }
    }
}
