//! The frequent SQLite writes, run as jobs on the writer thread (`sqlite_writer.rs`). Each
//! does what its PostgreSQL twin in `backend.rs` does, with SQLite's own SQL: the thread is
//! the only writer while a job runs, so no row locks are needed.

use std::sync::Arc;

use haken_core::hook::{Attempt, AttemptOutcome, Delivery, DeliveryStatus, EventHook, HookStatus};
use haken_core::{LogEvent, Timestamp, User};
use rusqlite::{Connection, OptionalExtension, params};

use crate::sqlite_writer::Writer;

use crate::{
    Change, Claimed, DispatchRound, HookRuntime, SqliteBackend, StoreError, UserColumns, decode, encode, routed_json,
};

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// One JSON document by key (`sql` selects `data` with `?1`).
fn read_doc<T: serde::de::DeserializeOwned>(conn: &Connection, sql: &str, key: &str) -> Result<Option<T>, StoreError> {
    let data: Option<String> = conn.prepare_cached(sql)?.query_row([key], |r| r.get(0)).optional()?;
    data.map(|d| decode(&d)).transpose()
}

/// Writes the events and, for each hook that receives one, an outbox row; returns whether
/// anything was routed. The router is rebuilt first if hooks changed since it was built.
pub(crate) fn insert_events(conn: &Connection, hooks: &HookRuntime, events: &[LogEvent]) -> Result<bool, StoreError> {
    if events.is_empty() {
        return Ok(false);
    }
    let router = hooks.router.get();
    if let Some(router) = router {
        let rev = hooks_rev(conn)?;
        if rev != router.revision() {
            let mut st = conn.prepare_cached("SELECT data FROM event_hooks WHERE receives = 1")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            let mut receiving = Vec::new();
            for data in rows {
                receiving.push(decode::<EventHook>(&data?)?);
            }
            router.refresh(rev, receiving);
        }
    }
    let mut routed = false;
    let mut insert_event =
        conn.prepare_cached("INSERT INTO log_events (uuid, published, event_type, data) VALUES (?1, ?2, ?3, ?4)")?;
    let mut insert_outbox =
        conn.prepare_cached("INSERT INTO outbox (hook_id, event_seq, created) VALUES (?1, ?2, ?3)")?;
    for ev in events {
        let targets = router.map(|r| r.route(ev)).unwrap_or_default();
        let data = routed_json(ev, &targets)?;
        insert_event.execute(params![ev.uuid, ev.published.millis(), ev.event_type, data])?;
        let seq = conn.last_insert_rowid();
        for hook_id in &targets {
            insert_outbox.execute(params![hook_id, seq, ev.published.millis()])?;
            routed = true;
        }
    }
    Ok(routed)
}

/// The event hooks' revision (bumped by every hook change).
fn hooks_rev(conn: &Connection) -> Result<i64, StoreError> {
    let rev: Option<String> = conn
        .prepare_cached("SELECT value FROM settings WHERE key = 'event_hooks_rev'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(rev.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0))
}

/// The indexed columns of a user's row as stored, beside its document.
struct StoredKeys {
    login_lower: String,
    status: String,
    email_key: Option<String>,
    name_key: Option<String>,
}

/// A user's document and stored keys, by id.
fn read_user(conn: &Connection, id: &str) -> Result<Option<(User, StoredKeys)>, StoreError> {
    let row = conn
        .prepare_cached("SELECT data, login_lower, status, email_key, name_key FROM users WHERE id = ?1")?
        .query_row([id], |r| {
            let keys =
                StoredKeys { login_lower: r.get(1)?, status: r.get(2)?, email_key: r.get(3)?, name_key: r.get(4)? };
            Ok((r.get::<_, String>(0)?, keys))
        })
        .optional()?;
    row.map(|(data, keys)| Ok((decode(&data)?, keys))).transpose()
}

/// Writes `user` over the row whose keys were `old`. The statement names only the indexed
/// columns whose values change: SQLite rewrites the entries of every index whose columns an
/// UPDATE names, and most changes touch the profile alone.
fn write_user(conn: &Connection, old: &StoredKeys, user: &User) -> Result<(), StoreError> {
    let c = UserColumns::of(user)?;
    let mut sql = String::from("UPDATE users SET last_updated = ?, data = ?");
    let mut p: Vec<&dyn rusqlite::ToSql> = vec![&c.last_updated, &c.data];
    let renamed = old.login_lower != c.login_lower;
    if renamed {
        sql.push_str(", login_lower = ?");
        p.push(&c.login_lower);
    }
    if old.status != c.status {
        sql.push_str(", status = ?");
        p.push(&c.status);
    }
    if old.email_key != c.email_key {
        sql.push_str(", email_key = ?");
        p.push(&c.email_key);
    }
    if old.name_key != c.name_key {
        sql.push_str(", name_key = ?");
        p.push(&c.name_key);
    }
    sql.push_str(" WHERE id = ?");
    p.push(&c.id);
    conn.prepare_cached(&sql)?
        .execute(p.as_slice())
        .map_err(|e| if renamed && is_unique_violation(&e) { StoreError::Conflict("login") } else { e.into() })?;
    Ok(())
}

fn write_event_hook(conn: &Connection, hook: &EventHook) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE event_hooks SET name_lower = ?2, receives = ?3, data = ?4 WHERE id = ?1")?
        .execute(params![hook.id, hook.name.to_lowercase(), i64::from(hook.receives()), encode(hook)?])
        .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict("name") } else { e.into() })?;
    conn.prepare_cached(
        "INSERT INTO settings (key, value) VALUES ('event_hooks_rev', '1') \
         ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(settings.value AS INTEGER) + 1 AS TEXT)",
    )?
    .execute([])?;
    Ok(())
}

fn delivery_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Delivery, Option<String>)> {
    let status: String = r.get("status")?;
    let opt_ts = |v: Option<i64>| v.map(Timestamp);
    let delivery = Delivery {
        id: r.get("id")?,
        hook_id: r.get("hook_id")?,
        kind: r.get("kind")?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                format!("delivery status {status}").into(),
            )
        })?,
        attempts: u32::try_from(r.get::<_, i64>("attempts")?).unwrap_or(u32::MAX),
        event_count: u32::try_from(r.get::<_, i64>("event_count")?).unwrap_or(u32::MAX),
        created: Timestamp(r.get("created")?),
        event_time: Timestamp(r.get("event_time")?),
        next_attempt_at: Timestamp(r.get("next_attempt_at")?),
        last_attempt_at: opt_ts(r.get("last_attempt_at")?),
        delivered_at: opt_ts(r.get("delivered_at")?),
        last_status: r.get::<_, Option<i64>>("last_status")?.and_then(|v| u16::try_from(v).ok()),
        last_error: r.get("last_error")?,
    };
    Ok((delivery, r.get("inline_events")?))
}

/// Whether routed events wait for a delivery.
fn any_unformed(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM outbox WHERE delivery_id IS NULL LIMIT 1")?
        .query_row([], |r| r.get::<_, i64>(0))
        .optional()?
        .is_some())
}

/// A delivery [`form_deliveries`] made.
struct Formed {
    id: String,
    hook_id: String,
    /// Its lease end, when it was written leased to this node.
    lease: Option<i64>,
}

/// Puts routed events not yet in a delivery into deliveries of up to `max_events` each. Each
/// delivery is written leased to `node` until the time `lease(hook_id)` gives, if it gives one.
fn form_deliveries(
    conn: &Connection,
    now: i64,
    max_events: i64,
    node: &str,
    lease: &mut dyn FnMut(&str) -> Option<i64>,
) -> Result<Vec<Formed>, StoreError> {
    let hook_ids: Vec<String> = conn
        .prepare_cached("SELECT DISTINCT hook_id FROM outbox WHERE delivery_id IS NULL LIMIT 200")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut made = Vec::new();
    for hook_id in hook_ids {
        // A hook deleted while a writer was routing to it can leave rows behind: drop them.
        let exists: Option<i64> = conn
            .prepare_cached("SELECT 1 FROM event_hooks WHERE id = ?1")?
            .query_row([&hook_id], |r| r.get(0))
            .optional()?;
        if exists.is_none() {
            conn.prepare_cached("DELETE FROM outbox WHERE hook_id = ?1 AND delivery_id IS NULL")?
                .execute([&hook_id])?;
            continue;
        }
        // A bounded number of deliveries per hook and round keeps the transaction short.
        for _ in 0..20 {
            let seqs: Vec<i64> = conn
                .prepare_cached(
                    "SELECT seq FROM outbox WHERE delivery_id IS NULL AND hook_id = ?1 ORDER BY seq LIMIT ?2",
                )?
                .query_map(params![hook_id, max_events], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let (Some(first), Some(last)) = (seqs.first(), seqs.last()) else {
                break;
            };
            let id = haken_core::log_event::new_uuid();
            let until = lease(&hook_id);
            conn.prepare_cached(
                "INSERT INTO deliveries (id, hook_id, kind, status, attempts, event_count, created, event_time, next_attempt_at, \
                 lease_owner, lease_until) VALUES (?1, ?2, 'event', 'PENDING', 0, ?3, ?4, ?4, ?4, ?5, ?6)",
            )?
            .execute(params![id, hook_id, seqs.len() as i64, now, until.map(|_| node), until])?;
            // The rows just read are the hook's unbatched rows from `first` to `last`: no other
            // writer runs between the read and this update.
            conn.prepare_cached(
                "UPDATE outbox SET delivery_id = ?1 WHERE hook_id = ?2 AND delivery_id IS NULL AND seq >= ?3 AND seq <= ?4",
            )?
            .execute(params![id, hook_id, first, last])?;
            let full = seqs.len() as i64 >= max_events;
            made.push(Formed { id, hook_id: hook_id.clone(), lease: until });
            if !full {
                break;
            }
        }
    }
    Ok(made)
}

/// The end of every writer group when this node's delivery engine is installed (SQLite's
/// hand-over, as PostgreSQL's writes do it): the events the group's jobs routed are put into
/// deliveries in the group's own transaction; those for hooks with room are leased to this
/// node and, once committed, handed to the engine with their events, so they go out without a
/// dispatcher round or an event read. The rest wait for a round, which is woken.
pub(crate) fn group_end(hooks: Arc<HookRuntime>) -> crate::sqlite_writer::GroupEnd {
    Box::new(move |conn| {
        let intake = hooks.intake.get()?.clone();
        let step = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(|_| ());
        let formed = (|| -> Result<Option<(crate::backend::Handover, bool)>, StoreError> {
            if !any_unformed(conn)? {
                return Ok(None);
            }
            step("SAVEPOINT group_end")?;
            // A failure (or a panic, which would stop the writer) takes back what forming wrote:
            // the group's own writes still commit, and a round forms the rows.
            let handed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hand_over_formed(conn, &intake)))
                .unwrap_or_else(|_| Err(StoreError::Database("forming deliveries failed unexpectedly".into())))
                .and_then(|handed| {
                    step("RELEASE group_end")?;
                    Ok(handed)
                });
            if handed.is_err() {
                step("ROLLBACK TO group_end").and_then(|()| step("RELEASE group_end"))?;
            }
            handed.map(Some)
        })();
        let (handover, wake) = match formed {
            Ok(None) => return None,
            Ok(Some((handover, all))) => (Some(handover), !all),
            Err(e) => {
                tracing::warn!(error = %e, "Could not form the deliveries of a write; a dispatcher round will.");
                (None, true)
            }
        };
        let hooks = hooks.clone();
        Some(Box::new(move |committed: bool| {
            // Not committed: the slots go back as the handover drops.
            if let Some(h) = handover.filter(|_| committed) {
                h.give();
            }
            // Rows left for a round, or rows formed by a group that did not commit (some may be
            // older than the group: they are unformed again).
            if wake || !committed {
                hooks.wake.notify_one();
            }
        }) as crate::sqlite_writer::AfterCommit)
    })
}

/// Forms the deliveries of rows waiting in the outbox, leasing those whose hook has room with
/// `intake`; returns them with their events, and whether every one was leased.
fn hand_over_formed(
    conn: &Connection,
    intake: &Arc<dyn crate::Intake>,
) -> Result<(crate::backend::Handover, bool), StoreError> {
    let rev = hooks_rev(conn)?;
    let now = Timestamp::now().millis();
    // Slots reserved so far: given back if forming fails.
    let mut reserved = crate::backend::Reserved::new(intake.clone());
    let formed = form_deliveries(conn, now, crate::MAX_EVENTS_PER_DELIVERY, intake.node(), &mut |hook_id| {
        let lease = intake.reserve(hook_id, rev, now);
        if lease.is_some() {
            reserved.hold(hook_id);
        }
        lease
    })?;
    // Rows beyond what one forming takes wait for a round too.
    let all = !any_unformed(conn)? && formed.iter().all(|f| f.lease.is_some());
    let mut claimed = Vec::new();
    let mut events = conn.prepare_cached(
        "SELECT l.data FROM outbox o JOIN log_events l ON l.seq = o.event_seq WHERE o.delivery_id = ?1 ORDER BY o.seq",
    )?;
    for f in formed {
        if f.lease.is_none() {
            continue;
        }
        let texts: Vec<String> = events.query_map([&f.id], |r| r.get(0))?.collect::<Result<_, _>>()?;
        let stored = texts
            .into_iter()
            .map(|t| {
                serde_json::value::RawValue::from_string(t)
                    .map_err(|e| StoreError::Corrupt(format!("event of delivery {}: {e}", f.id)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        claimed.push(crate::backend::handed_claim(f.id, f.hook_id, now, stored));
    }
    Ok((reserved.into_handover(claimed), all))
}

/// How much a hook may take this round (its in-flight bound less what is in flight).
pub(crate) type Room = Box<dyn Fn(&EventHook) -> u32 + Send + Sync>;

fn dispatch_round(
    conn: &Connection,
    now: i64,
    max_events: i64,
    node: &str,
    lease_until: i64,
    room: &Room,
    hooks_seen: Option<crate::HooksAt>,
) -> Result<DispatchRound, StoreError> {
    let mut out = DispatchRound::default();
    // The receiving hooks and their revision (read again only when it moved): writes hand
    // over only deliveries of the revision the engine holds.
    let rev = hooks_rev(conn)?;
    out.hooks = match hooks_seen {
        Some((seen, hooks)) if seen == rev => Some((rev, hooks)),
        _ => {
            let mut st = conn.prepare_cached("SELECT data FROM event_hooks WHERE receives = 1")?;
            let receiving = st
                .query_map([], |r| r.get::<_, String>(0))?
                .map(|d| d.map_err(StoreError::from).and_then(|d| decode::<EventHook>(&d)))
                .collect::<Result<Vec<_>, _>>()?;
            Some((rev, Arc::new(receiving)))
        }
    };
    if any_unformed(conn)? {
        form_deliveries(conn, now, max_events, node, &mut |_| None)?;
    }
    let due: Vec<(String, i64)> = conn
        .prepare_cached(
            "SELECT d.hook_id, MIN(d.next_attempt_at) FROM deliveries d JOIN event_hooks h ON h.id = d.hook_id \
             WHERE d.status = 'PENDING' AND h.receives = 1 AND (d.lease_until IS NULL OR d.lease_until < ?1) \
             GROUP BY d.hook_id",
        )?
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (hook_id, at) in due {
        if at > now {
            out.next_due = Some(out.next_due.map_or(at, |n: i64| n.min(at)));
            continue;
        }
        let Some(hook) = read_doc::<EventHook>(conn, "SELECT data FROM event_hooks WHERE id = ?1", &hook_id)? else {
            continue;
        };
        let limit = room(&hook);
        if limit == 0 {
            continue;
        }
        // A lease never ends before the attempt can: the hook's timeout and a margin.
        let timeout = i64::try_from(hook.delivery.timeout_ms).unwrap_or(30_000);
        let hook_lease_until = lease_until.max(now + timeout + 5_000);
        // One statement to pick and one per delivery to lease: an UPDATE over a subquery with
        // a bound LIMIT is prepared again whenever the limit changes.
        let ids: Vec<String> = conn
            .prepare_cached(
                "SELECT id FROM deliveries WHERE hook_id = ?1 AND status = 'PENDING' AND next_attempt_at <= ?2 \
                 AND (lease_until IS NULL OR lease_until < ?2) ORDER BY next_attempt_at, seq LIMIT ?3",
            )?
            .query_map(params![hook_id, now, i64::from(limit)], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            continue;
        }
        let mut lease =
            conn.prepare_cached("UPDATE deliveries SET lease_owner = ?1, lease_until = ?2 WHERE id = ?3 RETURNING *")?;
        let mut claimed = Vec::with_capacity(ids.len());
        for id in &ids {
            let (delivery, inline) = lease.query_row(params![node, hook_lease_until, id], delivery_from_row)?;
            claimed.push(Claimed {
                delivery,
                inline_events: inline.map(|s| decode(&s)).transpose()?,
                stored_events: None,
            });
        }
        out.claimed.push((hook, claimed));
    }
    Ok(out)
}

fn finish_attempt(
    conn: &Connection,
    hooks: &HookRuntime,
    a: &Attempt,
    outcome: &AttemptOutcome,
    events: &[LogEvent],
    stop_hook: Option<&str>,
) -> Result<(bool, bool), StoreError> {
    let done_at = a.started.millis() + i64::try_from(a.latency_ms).unwrap_or(0);
    let (status, next, delivered, error) = match outcome {
        AttemptOutcome::Delivered => ("DELIVERED", done_at, Some(done_at), None),
        AttemptOutcome::Retry { at } => ("PENDING", at.millis(), None, a.error.clone()),
        AttemptOutcome::Dead { reason } => ("DEAD", done_at, None, Some(reason.clone())),
    };
    // Only the lease holder records the outcome: a node whose lease expired (and was
    // taken over, or cleared by a replay) must not overwrite what happened since.
    let updated = conn
        .prepare_cached(
            "UPDATE deliveries SET status = ?2, attempts = attempts + 1, next_attempt_at = ?3, delivered_at = ?4, \
             last_attempt_at = ?5, last_status = ?6, last_error = ?7, lease_owner = NULL, lease_until = NULL \
             WHERE id = ?1 AND status = 'PENDING' AND lease_owner = ?8",
        )?
        .execute(params![
            a.delivery_id,
            status,
            next,
            delivered,
            a.started.millis(),
            a.status_code.map(i64::from),
            error,
            a.node
        ])?;
    // Every attempt that went out is in the log, whoever holds the delivery now (the log only
    // grows). Updated, the delivery exists; otherwise one removed meanwhile takes no orphan row.
    conn.prepare_cached(if updated > 0 {
        "INSERT INTO delivery_attempts (delivery_id, hook_id, attempt, started, latency_ms, status_code, error, response_snippet, node) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    } else {
        "INSERT INTO delivery_attempts (delivery_id, hook_id, attempt, started, latency_ms, status_code, error, response_snippet, node) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = ?1)"
    })?
    .execute(params![
        a.delivery_id,
        a.hook_id,
        i64::from(a.attempt),
        a.started.millis(),
        i64::try_from(a.latency_ms).unwrap_or(i64::MAX),
        a.status_code.map(i64::from),
        a.error,
        a.response_snippet,
        a.node
    ])?;
    if updated == 0 {
        return Ok((false, false));
    }
    if let Some(hook_id) = stop_hook
        && let Some(mut hook) = read_doc::<EventHook>(conn, "SELECT data FROM event_hooks WHERE id = ?1", hook_id)?
    {
        // Deactivate the hook as it is now (not the copy the sender held).
        hook.status = HookStatus::Inactive;
        hook.last_updated = Timestamp(done_at);
        write_event_hook(conn, &hook)?;
    }
    let routed = insert_events(conn, hooks, events)?;
    Ok((true, routed))
}

impl SqliteBackend {
    /// After a writer job committed: its routed events are formed at its group's end when an
    /// engine is installed, which wakes the dispatcher if need be; otherwise a round forms them.
    fn after_job(&self, routed: bool) {
        self.after_commit(routed && self.hooks.intake.get().is_none());
    }

    pub(crate) async fn insert_user(
        &self,
        user: &User,
        group_ids: &[String],
        events: &[LogEvent],
    ) -> Result<(), StoreError> {
        let (hooks, user, group_ids, events) = (self.hooks.clone(), user.clone(), group_ids.to_vec(), events.to_vec());
        let routed = self
            .writer
            .write(move |conn| -> Result<bool, StoreError> {
                conn.prepare_cached(
                    "INSERT INTO users (id, login_lower, status, last_updated, data, email_key, name_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(UserColumns::of(&user)?.params())
                    .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict("login") } else { e.into() })?;
                for gid in &group_ids {
                    let added = conn
                        .prepare_cached(
                            "INSERT INTO group_members (group_id, user_id, added) SELECT id, ?2, ?3 FROM groups WHERE id = ?1 ON CONFLICT DO NOTHING",
                        )?
                        .execute(params![gid, user.id, user.created.millis()])?;
                    if added == 0 {
                        let exists: Option<i64> =
                            conn.prepare_cached("SELECT 1 FROM groups WHERE id = ?1")?.query_row([gid], |r| r.get(0)).optional()?;
                        if exists.is_none() {
                            return Err(StoreError::MissingReference(gid.clone()));
                        }
                    }
                }
                insert_events(conn, &hooks, &events)
            })
            .await?;
        self.after_job(routed);
        Ok(())
    }

    pub(crate) async fn update_user<E, F>(&self, id: &str, mut f: F) -> Result<User, E>
    where
        E: From<StoreError> + Send + 'static,
        F: FnMut(User) -> Result<Option<Change<User>>, E> + Send + 'static,
    {
        let (hooks, id) = (self.hooks.clone(), id.to_owned());
        let (user, routed) = self
            .writer
            .write(move |conn| -> Result<(User, bool), E> {
                let (current, keys) = read_user(conn, &id)?.ok_or(StoreError::NotFound)?;
                let Some(change) = f(current.clone())? else {
                    return Ok((current, false));
                };
                write_user(conn, &keys, &change.value)?;
                let routed = insert_events(conn, &hooks, &change.events)?;
                Ok((change.value, routed))
            })
            .await?;
        self.after_job(routed);
        Ok(user)
    }

    pub(crate) async fn delete_user<E, F>(&self, id: &str, mut f: F) -> Result<(), E>
    where
        E: From<StoreError> + Send + 'static,
        F: FnMut(&User) -> Result<Vec<LogEvent>, E> + Send + 'static,
    {
        let (hooks, id) = (self.hooks.clone(), id.to_owned());
        let routed = self
            .writer
            .write(move |conn| -> Result<bool, E> {
                let user: User =
                    read_doc(conn, "SELECT data FROM users WHERE id = ?1", &id)?.ok_or(StoreError::NotFound)?;
                let events = f(&user)?;
                let db = |sql: &str| -> Result<(), StoreError> {
                    conn.prepare_cached(sql)?.execute([&id])?;
                    Ok(())
                };
                db("DELETE FROM group_members WHERE user_id = ?1")?;
                db("DELETE FROM users WHERE id = ?1")?;
                Ok(insert_events(conn, &hooks, &events)?)
            })
            .await?;
        self.after_job(routed);
        Ok(())
    }

    /// One dispatcher round in one write job: form deliveries from new routed events, then
    /// lease, per hook with room, the deliveries due now.
    pub(crate) async fn dispatch_round(
        &self,
        now: i64,
        max_events: i64,
        node: &str,
        lease_until: i64,
        room: Room,
    ) -> Result<DispatchRound, StoreError> {
        let node = node.to_owned();
        let seen = self.hooks_seen.lock().ok().and_then(|s| s.clone());
        let round = self
            .writer
            .write_background(move |conn| {
                dispatch_round(conn, now, max_events, &node, lease_until, &room, seen.clone())
            })
            .await?;
        if let (Some(hooks), Ok(mut seen)) = (&round.hooks, self.hooks_seen.lock()) {
            *seen = Some(hooks.clone());
        }
        Ok(round)
    }

    pub(crate) async fn finish_attempt(
        &self,
        a: &Attempt,
        outcome: &AttemptOutcome,
        events: &[LogEvent],
        stop_hook: Option<&str>,
    ) -> Result<bool, StoreError> {
        let hooks = Arc::clone(&self.hooks);
        let (a, outcome, events, stop_hook) =
            (a.clone(), outcome.clone(), events.to_vec(), stop_hook.map(str::to_owned));
        let (recorded, routed) = self
            .writer
            .write_background(move |conn| finish_attempt(conn, &hooks, &a, &outcome, &events, stop_hook.as_deref()))
            .await?;
        self.after_job(routed);
        Ok(recorded)
    }
}

/// The recorder of delivered attempts (`record.rs`): each batch is one job of the writer
/// thread, every record in it written as [`finish_attempt`] writes one.
pub(crate) fn recorder(writer: Arc<Writer>, hooks: Arc<HookRuntime>) -> crate::record::Recorder {
    crate::record::Recorder::start(Box::new(move |batch| {
        let (writer, hooks) = (writer.clone(), hooks.clone());
        Box::pin(async move {
            writer
                .write_background(move |conn| -> Result<(), StoreError> {
                    for a in &batch {
                        finish_attempt(conn, &hooks, a, &AttemptOutcome::Delivered, &[], None)?;
                    }
                    Ok(())
                })
                .await
        })
    }))
}
