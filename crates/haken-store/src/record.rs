//! The records of deliveries that went out, written in batches. A delivered attempt is
//! bookkeeping the sender does not wait for: it is queued here, and a task writes what gathered
//! within [`LINGER`] at once — on PostgreSQL one statement (the outcome of each delivery and its
//! attempt row), on SQLite one job of the writer thread. At a thousand deliveries a second this
//! is one write every few milliseconds instead of one per delivery.
//!
//! Until its record is written a delivery stays pending and leased to its node, so no other
//! node sends it; a record that is never written (the process died, or PostgreSQL failed twice)
//! leaves the delivery to be sent again when its lease ends — at least once, as everywhere.
//! On PostgreSQL the records' own connection commits without waiting for the WAL flush
//! (`synchronous_commit = off`), for the same reason: a crash of PostgreSQL can lose the last
//! fraction of a second of records, which means resends, not lost events.
//! Closing the store writes what is queued first.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use haken_core::hook::Attempt;
use sqlx::PgPool;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use crate::StoreError;

/// Writes one batch of delivered attempts.
pub(crate) type Sink =
    Box<dyn Fn(Vec<Attempt>) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>> + Send + Sync>;

/// How long the first queued record waits for others to share its statement.
const LINGER: Duration = Duration::from_millis(5);

/// Most records one statement carries.
const MAX_RECORDS: usize = 256;

/// The batch as rows: `v (id, hook_id, attempt, started, latency_ms, done_at, status_code,
/// error, snippet, node)`.
macro_rules! batch_rows {
    () => {
        "v AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
        $7::bigint[], $8::text[], $9::text[], $10::text[])
        AS v (id, hook_id, attempt, started, latency_ms, done_at, status_code, error, snippet, node)
)"
    };
}

/// Marks each delivery (`$1`) delivered by the attempt's node if it still holds the lease, and
/// records the attempt of each delivery it marked (the update holds its row: a delete of the
/// delivery under way finishes first or after).
const RECORD_SQL: &str = concat!(
    "WITH ",
    batch_rows!(),
    ",
d AS (
    UPDATE deliveries SET status = 'DELIVERED', attempts = deliveries.attempts + 1, next_attempt_at = v.done_at,
        delivered_at = v.done_at, last_attempt_at = v.started, last_status = v.status_code, last_error = NULL,
        lease_owner = NULL, lease_until = NULL
    FROM v WHERE deliveries.id = v.id AND deliveries.status = 'PENDING' AND deliveries.lease_owner = v.node
    RETURNING deliveries.id
)
INSERT INTO delivery_attempts (delivery_id, hook_id, attempt, started, latency_ms, status_code, error, response_snippet, node)
SELECT v.id, v.hook_id, v.attempt, v.started, v.latency_ms, v.status_code, v.error, v.snippet, v.node
FROM v JOIN d ON d.id = v.id"
);

/// After [`RECORD_SQL`] logged fewer attempts than the batch holds: the attempts of nodes that
/// had lost their lease (they did send) and any a repeated batch had not logged yet, each once,
/// for deliveries that still exist (the key share lock lets a delete under way finish first,
/// so it leaves no orphan row).
const RECORD_LATE_SQL: &str = concat!(
    "WITH ",
    batch_rows!(),
    "
INSERT INTO delivery_attempts (delivery_id, hook_id, attempt, started, latency_ms, status_code, error, response_snippet, node)
SELECT v.id, v.hook_id, v.attempt, v.started, v.latency_ms, v.status_code, v.error, v.snippet, v.node
FROM v JOIN deliveries x ON x.id = v.id
WHERE NOT EXISTS (SELECT 1 FROM delivery_attempts y
    WHERE y.delivery_id = v.id AND y.node = v.node AND y.attempt = v.attempt AND y.started = v.started)
FOR KEY SHARE OF x"
);

/// The queue of delivered attempts and the task that writes them.
pub(crate) struct Recorder {
    queue: Mutex<Option<UnboundedSender<Attempt>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    pub(crate) fn start(sink: Sink) -> Recorder {
        let (tx, rx) = unbounded_channel();
        let task = tokio::spawn(run(sink, rx));
        Recorder { queue: Mutex::new(Some(tx)), task: Mutex::new(Some(task)) }
    }

    /// A recorder writing to PostgreSQL through `pool`.
    pub(crate) fn postgres(pool: PgPool) -> Recorder {
        Recorder::start(Box::new(move |batch| {
            let pool = pool.clone();
            Box::pin(async move { write_pg(&pool, &batch).await.map_err(StoreError::from) })
        }))
    }

    /// Queues the record of a delivered attempt; gives it back once the store is closing
    /// (the caller writes it itself).
    pub(crate) fn push(&self, attempt: Attempt) -> Option<Attempt> {
        match self.queue.lock().ok().as_ref().and_then(|q| q.as_ref()) {
            Some(q) => q.send(attempt).err().map(|e| e.0),
            None => Some(attempt),
        }
    }

    /// Stops taking records and waits until the queued ones are written.
    pub(crate) async fn close(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.take();
        }
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn run(sink: Sink, mut rx: UnboundedReceiver<Attempt>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_RECORDS {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(a)) => batch.push(a),
                Ok(None) | Err(_) => break,
            }
        }
        // Whatever else is queued already goes too.
        while batch.len() < MAX_RECORDS
            && let Ok(a) = rx.try_recv()
        {
            batch.push(a);
        }
        if let Err(first_error) = sink(batch.clone()).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Err(e) = sink(batch.clone()).await {
                tracing::warn!(
                    error = %e, first_error = %first_error, deliveries = batch.len(),
                    "Could not record delivered attempts; those deliveries will be sent again when their leases end."
                );
            }
        }
    }
}

async fn write_pg(pool: &PgPool, batch: &[Attempt]) -> Result<(), sqlx::Error> {
    let n = batch.len();
    let (mut ids, mut hooks, mut attempts, mut started, mut latency, mut done_at) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut status, mut errors, mut snippets, mut nodes) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for a in batch {
        let lat = i64::try_from(a.latency_ms).unwrap_or(i64::MAX);
        ids.push(a.delivery_id.as_str());
        hooks.push(a.hook_id.as_str());
        attempts.push(i64::from(a.attempt));
        started.push(a.started.millis());
        latency.push(lat);
        done_at.push(a.started.millis().saturating_add(lat));
        status.push(a.status_code.map(i64::from));
        errors.push(a.error.as_deref());
        snippets.push(a.response_snippet.as_deref());
        nodes.push(a.node.as_str());
    }
    let mut logged = 0;
    for sql in [RECORD_SQL, RECORD_LATE_SQL] {
        if logged >= n as u64 {
            break;
        }
        logged += sqlx::query(sql)
            .bind(&ids)
            .bind(&hooks)
            .bind(&attempts)
            .bind(&started)
            .bind(&latency)
            .bind(&done_at)
            .bind(&status)
            .bind(&errors)
            .bind(&snippets)
            .bind(&nodes)
            .execute(pool)
            .await?
            .rows_affected();
    }
    Ok(())
}
