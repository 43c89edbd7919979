//! PostgreSQL: a dispatcher round in a few statements, each atomic on its own. Leasing the
//! due deliveries of every hook with room is one statement, and it returns each delivery's
//! events with it. A round used to be a transaction of a dozen round trips plus one more per
//! delivery for its events; on a busy node those round trips were most of the dispatcher's
//! cost, on both sides.
//!
//! Writers put their events into deliveries themselves (`pg_deliveries_sql!`), so most rounds
//! have nothing to form. Forming (one statement for every hook, which also reads the hooks
//! revision) runs only when there may be work for it or the hooks may have changed: at a
//! node's first round, after a backfill queued events without deliveries, when the router's
//! revision (which every write checks) is not the one the dispatcher holds, and at least
//! every [`FORM_SWEEP_MS`] — which also forms what a node that died before forming left, and
//! picks up hooks another node changed while this one wrote nothing.
//!
//! Nothing here needs the statements to share a transaction: a formed delivery is an ordinary
//! pending delivery whoever leases it, and a lease is taken row by row with `SKIP LOCKED`, so
//! nodes working at the same moment never take the same rows.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use haken_core::hook::EventHook;
use serde_json::value::RawValue;
use sqlx::Row;

use crate::{Claimed, DispatchRound, PgBackend, StoreError, decode};

/// Longest time between two forming statements of a node (ms).
pub(crate) const FORM_SWEEP_MS: i64 = 1_000;

/// When a node's dispatcher must run its forming statement.
#[derive(Debug)]
pub(crate) struct Forming {
    /// Set when something queued events without a delivery (a backfill), or forming left some.
    due: AtomicBool,
    /// When forming last ran (ms).
    at: AtomicI64,
}

impl Default for Forming {
    fn default() -> Self {
        Forming { due: AtomicBool::new(true), at: AtomicI64::new(i64::MIN) }
    }
}

impl Forming {
    /// Asks the next round to form.
    pub(crate) fn request(&self) {
        self.due.store(true, Ordering::Release);
    }

    /// Whether a round at `now`, holding hooks of revision `held` while the router has
    /// `router_rev`, must form; clears the request it consumes.
    fn take(&self, now: i64, held: i64, router_rev: Option<i64>) -> bool {
        let requested = self.due.swap(false, Ordering::AcqRel);
        requested
            || held == i64::MIN
            // Only a router newer than the dispatcher's hooks: one that lags (this node wrote
            // nothing since another changed the hooks) would make every round form.
            || router_rev.is_some_and(|r| r > held)
            || now.saturating_sub(self.at.load(Ordering::Acquire)) >= FORM_SWEEP_MS
    }
}

/// Most deliveries one round forms (ids are made here, so they are time-ordered like every
/// other id of the store). What is left waits for the next round, which comes at once.
const FORM_IDS: usize = 32;

/// Per hook and round, at most this many deliveries' worth of events are formed, so one hook's
/// backlog never holds back the others'.
const FORM_PER_HOOK: i64 = 10;

/// Groups each hook's oldest unbatched rows into deliveries of `$1` events: the first group of
/// every hook gets an id before any hook's second, so a deep backlog shares the round fairly.
/// Rows of a hook that is gone (deleted while a writer routed to it) are left to retention.
/// Also returns the hooks revision and, when it is not `$5` (the one this node holds), the
/// receiving hooks.
const FORM_SQL: &str = "\
WITH s AS (
    SELECT x.seq, h.id AS hook_id FROM event_hooks h
    CROSS JOIN LATERAL (
        SELECT o.seq FROM outbox o WHERE o.delivery_id IS NULL AND o.hook_id = h.id
        ORDER BY o.seq LIMIT $4 FOR UPDATE SKIP LOCKED
    ) x
),
c AS (SELECT seq, hook_id, (row_number() OVER (PARTITION BY hook_id ORDER BY seq) - 1) / $1 AS chunk FROM s),
g AS (
    SELECT hook_id, chunk, count(*) AS n, row_number() OVER (ORDER BY chunk, hook_id) AS k
    FROM c GROUP BY hook_id, chunk
),
f AS (SELECT hook_id, chunk, n, ($3::text[])[k::int] AS id FROM g WHERE k <= cardinality($3::text[])),
d AS (
    INSERT INTO deliveries (id, hook_id, kind, status, attempts, event_count, created, event_time, next_attempt_at)
    SELECT id, hook_id, 'event', 'PENDING', 0, n, $2, $2, $2 FROM f RETURNING 1
),
u AS (
    UPDATE outbox o SET delivery_id = f.id FROM c JOIN f ON f.hook_id = c.hook_id AND f.chunk = c.chunk
    WHERE o.seq = c.seq RETURNING 1
)
SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM u), v.rev,
    CASE WHEN v.rev <> $5 THEN ARRAY(SELECT data FROM event_hooks WHERE receives = 1 ORDER BY seq) END
FROM (SELECT coalesce((SELECT value FROM settings WHERE key = 'event_hooks_rev'), '0')::bigint AS rev) AS v";

/// Leases, per hook (`$1`) up to its room (`$2`) until its lease end (`$3`), the deliveries due
/// at `$4`, oldest first, for node `$5`; returns each with its stored events in order. Each
/// event is looked up by its key, so the plan never depends on the size of the System Log
/// (a join could hash all of it).
const LEASE_SQL: &str = "\
WITH r AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS r (hook_id, room, until)),
p AS (
    SELECT x.id, r.until FROM r
    CROSS JOIN LATERAL (
        SELECT d.id FROM deliveries d
        WHERE d.hook_id = r.hook_id AND d.status = 'PENDING' AND d.next_attempt_at <= $4
          AND (d.lease_until IS NULL OR d.lease_until < $4)
        ORDER BY d.next_attempt_at, d.seq LIMIT r.room FOR UPDATE SKIP LOCKED
    ) x
)
UPDATE deliveries SET lease_owner = $5, lease_until = p.until FROM p WHERE deliveries.id = p.id
RETURNING deliveries.*,
    ARRAY(SELECT (SELECT l.data FROM log_events l WHERE l.seq = o.event_seq) FROM outbox o
          WHERE o.delivery_id = deliveries.id ORDER BY o.seq) AS stored_events";

impl PgBackend {
    /// Forms deliveries from routed events that have none, and reads the receiving hooks again
    /// when their revision is not `held`.
    async fn form(&self, now: i64, max_events: i64, held: i64) -> Result<(), StoreError> {
        let ids: Vec<String> = (0..FORM_IDS).map(|_| haken_core::log_event::new_uuid()).collect();
        let formed = sqlx::query(FORM_SQL)
            .bind(max_events)
            .bind(now)
            .bind(&ids)
            .bind(max_events.saturating_mul(FORM_PER_HOOK))
            .bind(held)
            .fetch_one(&self.work)
            .await?;
        self.forming.at.store(now, Ordering::Release);
        // Every id taken: more may wait, and the next round forms again at once.
        if usize::try_from(formed.try_get::<i64, _>(0)?).is_ok_and(|n| n >= FORM_IDS) {
            self.forming.request();
            self.hooks.wake.notify_one();
        }
        let rev: i64 = formed.try_get(2)?;
        if let Some(texts) = formed.try_get::<Option<Vec<String>>, _>(3)? {
            let hooks = Arc::new(texts.iter().map(|t| decode(t)).collect::<Result<Vec<EventHook>, _>>()?);
            if let Ok(mut h) = self.dispatch_hooks.lock() {
                *h = (rev, hooks);
            }
        }
        Ok(())
    }

    /// One dispatcher round: form deliveries from routed events that have none (when there
    /// may be some, see the module's notes), then lease, per hook with room, the deliveries
    /// due now.
    pub(crate) async fn dispatch_round(
        &self,
        now: i64,
        max_events: i64,
        node: &str,
        lease_until: i64,
        room: &(dyn Fn(&EventHook) -> u32 + Send + Sync),
    ) -> Result<DispatchRound, StoreError> {
        let held = self.dispatch_hooks.lock().map(|h| h.0).unwrap_or(i64::MIN);
        let router_rev = self.hooks.router.get().map(|r| r.revision());
        if self.forming.take(now, held, router_rev)
            && let Err(e) = self.form(now, max_events, held).await
        {
            self.forming.request();
            return Err(e);
        }
        let (rev, hooks) = self.dispatch_hooks.lock().map(|h| (h.0, h.1.clone())).unwrap_or((i64::MIN, Arc::default()));
        let mut open: Vec<&EventHook> = Vec::with_capacity(hooks.len());
        let (mut hook_ids, mut rooms, mut untils) = (Vec::new(), Vec::new(), Vec::new());
        for hook in hooks.iter() {
            let limit = room(hook);
            if limit == 0 {
                continue;
            }
            // A lease never ends before the attempt can: the hook's timeout and a margin.
            let timeout = i64::try_from(hook.delivery.timeout_ms).unwrap_or(30_000);
            hook_ids.push(hook.id.clone());
            rooms.push(i64::from(limit));
            untils.push(lease_until.max(now + timeout + 5_000));
            open.push(hook);
        }
        let mut out = DispatchRound { hooks: Some((rev, hooks.clone())), ..DispatchRound::default() };
        if !open.is_empty() {
            let leased = sqlx::query(LEASE_SQL)
                .bind(&hook_ids)
                .bind(&rooms)
                .bind(&untils)
                .bind(now)
                .bind(node)
                .fetch_all(&self.work)
                .await?;
            let mut by_hook: Vec<Vec<Claimed>> = open.iter().map(|_| Vec::new()).collect();
            for r in &leased {
                let delivery = Self::delivery_from_row(r)?;
                let inline: Option<String> = r.try_get("inline_events")?;
                let stored: Option<Vec<String>> = r.try_get("stored_events")?;
                let stored_events = match (&inline, stored) {
                    (None, Some(texts)) => Some(
                        texts
                            .into_iter()
                            .map(|t| {
                                RawValue::from_string(t)
                                    .map_err(|e| StoreError::Corrupt(format!("event of delivery {}: {e}", delivery.id)))
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                    ),
                    (None, None) => Some(Vec::new()),
                    (Some(_), _) => None,
                };
                let inline_events = inline.map(|s| decode(&s)).transpose()?;
                if let Some(i) = open.iter().position(|h| h.id == delivery.hook_id) {
                    by_hook[i].push(Claimed { delivery, inline_events, stored_events });
                }
            }
            for (hook, mut claimed) in open.into_iter().zip(by_hook) {
                if claimed.is_empty() {
                    continue;
                }
                claimed.sort_by_key(|c| (c.delivery.next_attempt_at, c.delivery.created));
                out.claimed.push((hook.clone(), claimed));
            }
        }
        if out.claimed.is_empty() {
            let row = sqlx::query(
                "SELECT MIN(d.next_attempt_at) FROM deliveries d JOIN event_hooks h ON h.id = d.hook_id \
                 WHERE d.status = 'PENDING' AND h.receives = 1 AND d.next_attempt_at > $1 \
                 AND (d.lease_until IS NULL OR d.lease_until < $1)",
            )
            .bind(now)
            .fetch_one(&self.work)
            .await?;
            out.next_due = row.try_get(0)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forming_runs_when_there_may_be_work_or_newer_hooks() {
        let f = Forming::default();
        assert!(f.take(10_000, i64::MIN, Some(3)), "a node's first round forms");
        f.at.store(10_000, Ordering::Release);
        assert!(!f.take(10_001, 3, Some(3)), "nothing new: no forming");
        assert!(f.take(10_001, 3, Some(4)), "the router saw newer hooks");
        assert!(!f.take(10_001, 4, Some(3)), "a router that lags does not make every round form");
        assert!(!f.take(10_001, 4, None));
        f.request();
        assert!(f.take(10_002, 4, Some(4)), "a backfill asked for it");
        assert!(!f.take(10_003, 4, Some(4)), "the request is consumed");
        assert!(f.take(10_000 + FORM_SWEEP_MS, 4, Some(4)), "the sweep comes once a second");
    }
}
