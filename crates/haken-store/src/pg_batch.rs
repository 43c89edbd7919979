//! PostgreSQL: profile and lifecycle changes of users, batched. A task per node takes the
//! changes queued at the moment and writes them together: each change computed in queue order
//! (two changes of one user see each other), one statement for every changed row with all their
//! events and outbox rows. A round trip to PostgreSQL costs about as much as the work of a row,
//! so this is what lets one node keep up with many concurrent writers.
//!
//! A batch is first written optimistically: each change is computed on the row as this node
//! last read or wrote it, and the statement writes a row only if it still holds that text (and
//! the hooks are still those the events were routed by). A known user's change is then one
//! statement and no lock at all; a row another node changed meanwhile comes back with the
//! failed statement, and its changes are computed again on it. What still fails after a few
//! tries, and any batch that renames a login, goes the locked way: one transaction with a
//! locking read of all its rows. There a login rename is written on its own inside a savepoint,
//! so a login taken by another user fails only that change.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use haken_core::User;
use sqlx::{PgPool, Row};

use crate::backend::{UserRows, pg_deliveries_sql};
use crate::{Change, HookRuntime, PgBackend, StoreError, UserColumns, decode};

/// Most changes in one transaction.
const MAX_BATCH: usize = 64;

/// Hands a change's result to its caller, given the batch's fate (`Err`: why it failed).
type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

struct Ran {
    /// The new row and its events, when the change writes something.
    change: Option<Change<User>>,
    answer: Answer,
}

/// A queued change: the user's id and the computation, given the row it applies to
/// (`Ok(None)`: no such user; `Err`: the batch failed before it could run, answer with that).
/// It may run more than once: a change computed on a row that turns out to be stale is
/// computed again on the current one, and only the last run's answer is given.
struct Job {
    id: String,
    run: Box<dyn FnMut(Result<Option<User>, StoreError>) -> Ran + Send>,
}

/// Most rows [`Known`] holds, and most bytes of row text; when either is reached it starts
/// over. A row larger than [`KNOWN_ROW_MAX`] is not kept (its next change reads it).
const KNOWN_MAX: usize = 4096;
const KNOWN_BYTES_MAX: usize = 16 << 20;
const KNOWN_ROW_MAX: usize = 64 << 10;

/// The `users.data` text of rows this node last read or wrote, by user id. Only ever a guess:
/// a write based on it checks that the row still holds exactly that text.
#[derive(Default)]
struct Known(Mutex<KnownRowsByUser>);

#[derive(Default)]
struct KnownRowsByUser {
    rows: HashMap<String, String>,
    bytes: usize,
}

impl Known {
    fn get(&self, id: &str) -> Option<String> {
        self.0.lock().ok()?.rows.get(id).cloned()
    }

    fn put(&self, id: &str, data: String) {
        let Ok(mut m) = self.0.lock() else { return };
        if let Some(old) = m.rows.remove(id) {
            m.bytes -= old.len();
        }
        if data.len() > KNOWN_ROW_MAX {
            return;
        }
        if m.rows.len() >= KNOWN_MAX || m.bytes + data.len() > KNOWN_BYTES_MAX {
            m.rows.clear();
            m.bytes = 0;
        }
        m.bytes += data.len();
        m.rows.insert(id.to_owned(), data);
    }

    fn forget(&self, id: &str) {
        if let Ok(mut m) = self.0.lock()
            && let Some(old) = m.rows.remove(id)
        {
            m.bytes -= old.len();
        }
    }
}

/// The queue of a node's user changes.
pub(crate) struct UserBatcher {
    queue: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Job>>>,
}

impl std::fmt::Debug for UserBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserBatcher").finish_non_exhaustive()
    }
}

impl UserBatcher {
    pub(crate) fn start(pool: PgPool, hooks: Arc<HookRuntime>) -> UserBatcher {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(run(pool, hooks, rx));
        UserBatcher { queue: Mutex::new(Some(tx)) }
    }

    /// Stops taking changes; the task ends once the queued ones are written.
    pub(crate) fn close(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.take();
        }
    }

    async fn update<E, F>(&self, id: &str, mut f: F) -> Result<User, E>
    where
        E: From<StoreError> + Send + 'static,
        F: FnMut(User) -> Result<Option<Change<User>>, E> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel::<Result<User, E>>();
        // Every run's answer holds this; the one given takes the sender.
        let reply = Arc::new(Mutex::new(Some(reply)));
        let run = Box::new(move |current: Result<Option<User>, StoreError>| -> Ran {
            let outcome = match current {
                Err(e) => Err(E::from(e)),
                Ok(None) => Err(E::from(StoreError::NotFound)),
                Ok(Some(cur)) => match std::panic::catch_unwind(AssertUnwindSafe(|| f(cur.clone()))) {
                    Ok(Ok(Some(change))) => Ok((change.value.clone(), Some(change))),
                    Ok(Ok(None)) => Ok((cur, None)),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(E::from(StoreError::Database("a write failed unexpectedly".into()))),
                },
            };
            let reply = reply.clone();
            let send = move |r: Result<User, E>| {
                if let Some(tx) = reply.lock().ok().and_then(|mut slot| slot.take()) {
                    let _ = tx.send(r);
                }
            };
            match outcome {
                Ok((user, change)) => {
                    Ran { change, answer: Box::new(move |done| send(done.map(|()| user).map_err(E::from))) }
                }
                Err(e) => Ran { change: None, answer: Box::new(move |_| send(Err(e))) },
            }
        });
        let job = Job { id: id.to_owned(), run };
        let sent = match self.queue.lock() {
            Ok(q) => q.as_ref().is_some_and(|q| q.send(job).is_ok()),
            Err(_) => false,
        };
        if !sent {
            return Err(StoreError::Database("the store is closed".into()).into());
        }
        answer.await.unwrap_or_else(|_| Err(StoreError::Database("the user writer stopped".into()).into()))
    }
}

/// Batches one node keeps in flight. While one commits (PostgreSQL waits for its WAL flush,
/// and the node for the answer), the next is already being written.
const PIPELINE: usize = 2;

/// A second batch goes out beside the first only when this many changes wait; fewer wait for
/// the first to finish and go in one statement with whatever came meanwhile. At low rates
/// a statement per one or two changes cost PostgreSQL more than the wait costs the changes.
const SECOND_BATCH_AT: usize = 4;

/// Under steady load (a statement of more than one change finished within [`STEADY`]), fewer
/// than [`SECOND_BATCH_AT`] changes wait up to this long for company before a statement goes
/// out with them. Each statement costs PostgreSQL its commit (a WAL flush) and the executor's
/// start-up whatever it carries: at 1,000 changes/s statements carried two changes each, and
/// this halves their number. An idle node, or one client writing one change after another,
/// writes at once.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);
const STEADY: std::time::Duration = std::time::Duration::from_millis(5);

async fn run(pool: PgPool, hooks: Arc<HookRuntime>, mut queue: tokio::sync::mpsc::UnboundedReceiver<Job>) {
    let known = Arc::new(Known::default());
    // Jobs taken from the queue and not yet in a batch, in queue order.
    let mut held: std::collections::VecDeque<Job> = std::collections::VecDeque::new();
    // Users with a change in a batch in flight: their later changes wait for that batch, so
    // batches in flight never touch the same row (and never wait on each other's locks).
    let mut busy: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut in_flight: tokio::task::JoinSet<Vec<String>> = tokio::task::JoinSet::new();
    let mut incoming = Vec::with_capacity(MAX_BATCH);
    let mut open = true;
    // When the last statement finished and how many changes it carried, and since when the
    // oldest held change waits.
    let mut last_done: Option<(tokio::time::Instant, usize)> = None;
    let mut waiting_since = tokio::time::Instant::now();
    loop {
        let mut linger_until = None;
        while in_flight.is_empty() || (in_flight.len() < PIPELINE && held.len() >= SECOND_BATCH_AT) {
            if in_flight.is_empty()
                && open
                && lingers(held.len(), last_done.map(|(t, n)| (t.elapsed(), n)), waiting_since.elapsed())
            {
                linger_until = Some(waiting_since + LINGER);
                break;
            }
            let batch = take_runnable(&mut held, &busy);
            if batch.is_empty() {
                break;
            }
            let ids: Vec<String> = batch.iter().map(|j| j.id.clone()).collect();
            busy.extend(ids.iter().cloned());
            let (pool, hooks, known) = (pool.clone(), hooks.clone(), known.clone());
            in_flight.spawn(async move {
                write_and_answer(&pool, &hooks, &known, batch).await;
                ids
            });
        }
        if !open && held.is_empty() && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            done = in_flight.join_next(), if !in_flight.is_empty() => match done {
                Some(Ok(ids)) => {
                    last_done = Some((tokio::time::Instant::now(), ids.len()));
                    for id in ids {
                        busy.remove(&id);
                    }
                }
                // A batch task that panicked (its callers heard: their answers were dropped).
                // Which users it held is lost with it; forget every mark rather than block
                // them forever (at worst a later batch waits on a row lock).
                Some(Err(_)) => busy.clear(),
                None => {}
            },
            n = queue.recv_many(&mut incoming, MAX_BATCH), if open => {
                if n == 0 {
                    open = false;
                } else {
                    if held.is_empty() {
                        waiting_since = tokio::time::Instant::now();
                    }
                    held.extend(incoming.drain(..));
                }
            }
            _ = tokio::time::sleep_until(linger_until.unwrap_or_else(tokio::time::Instant::now)), if linger_until.is_some() => {}
        }
    }
}

/// Whether `held` changes, the oldest waiting `waited`, should wait for more before a
/// statement takes them, the last statement (of `n` changes) having finished `ago`
/// (`last`: `None` when none has yet).
fn lingers(held: usize, last: Option<(std::time::Duration, usize)>, waited: std::time::Duration) -> bool {
    (1..SECOND_BATCH_AT).contains(&held) && last.is_some_and(|(ago, n)| ago < STEADY && n > 1) && waited < LINGER
}

/// The next batch: held jobs in queue order whose user has nothing in flight (a user that
/// waits keeps all its later changes waiting too, so one user's changes stay in order).
fn take_runnable(held: &mut std::collections::VecDeque<Job>, busy: &std::collections::HashSet<String>) -> Vec<Job> {
    if held.is_empty() {
        return Vec::new();
    }
    let mut batch = Vec::new();
    let mut rest = std::collections::VecDeque::with_capacity(held.len());
    let mut waiting: std::collections::HashSet<String> = std::collections::HashSet::new();
    for job in held.drain(..) {
        if batch.len() < MAX_BATCH && !busy.contains(&job.id) && !waiting.contains(&job.id) {
            batch.push(job);
        } else {
            waiting.insert(job.id.clone());
            rest.push_back(job);
        }
    }
    *held = rest;
    batch
}

async fn write_and_answer(pool: &PgPool, hooks: &HookRuntime, known: &Known, batch: Vec<Job>) {
    let mut routed = false;
    let rest = match write_optimistic(pool, hooks, known, batch, &mut routed).await {
        Ok(rest) => rest,
        Err((e, rest)) => {
            tracing::warn!(error = %e, "A statement of user changes failed; the changes it carried were not written.");
            let why = e.to_string();
            for mut job in rest {
                ((job.run)(Err(StoreError::Database(why.clone()))).answer)(Err(StoreError::Database(why.clone())));
            }
            Vec::new()
        }
    };
    if !rest.is_empty() {
        for job in &rest {
            known.forget(&job.id);
        }
        let mut answers: Vec<(Answer, Option<StoreError>)> = Vec::with_capacity(rest.len());
        match write_batch(pool, hooks, known, rest, &mut answers).await {
            Ok(r) => {
                routed |= r;
                for (answer, own) in answers {
                    answer(own.map_or(Ok(()), Err));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "A batch of user changes failed; none of it was written.");
                let why = e.to_string();
                for (answer, own) in answers {
                    answer(Err(own.unwrap_or_else(|| StoreError::Database(why.clone()))));
                }
            }
        }
    }
    if routed {
        hooks.wake.notify_one();
    }
}

/// Optimistic statements per batch before the rest goes the locked way. A row another node
/// changed comes back with the statement that missed it, so the next try is usually the last.
const OPTIMISTIC_TRIES: usize = 3;

/// Writes `users` rows only where they still hold the text the changes were computed on
/// (`expected`), or, with no new `data`, only checks that; writes the events of the users
/// written, with their deliveries (those this node's engine had room for leased to it), and
/// wakes other nodes for the rest. Nothing is written when the hooks
/// revision is not `$16` (the events were routed by other hooks; -1: no routing). Returns
/// whether the revision held, the ids written, the ids checked, and the rows of the other
/// users as the statement's snapshot has them.
const WRITE_KNOWN_SQL: &str = concat!(
    "\
WITH v AS (
    SELECT * FROM unnest($8::text[], $9::text[], $10::text[], $11::bigint[], $12::text[], $13::text[], $14::text[], $15::text[])
        AS v (id, login_lower, status, last_updated, data, email_key, name_key, expected)
),
r AS (SELECT coalesce((SELECT value FROM settings WHERE key = 'event_hooks_rev'), '0')::bigint AS rev),
go AS (SELECT $16::bigint < 0 OR (SELECT rev FROM r) = $16::bigint AS ok),
u AS (
    UPDATE users SET login_lower = v.login_lower, status = v.status, last_updated = v.last_updated,
        data = v.data, email_key = v.email_key, name_key = v.name_key
    FROM v WHERE users.id = v.id AND v.data IS NOT NULL AND users.data = v.expected AND (SELECT ok FROM go)
    RETURNING users.id
),
k AS (
    SELECT users.id FROM users JOIN v ON users.id = v.id
    WHERE v.data IS NULL AND users.data = v.expected AND (SELECT ok FROM go)
),
e AS (
    INSERT INTO log_events (uuid, published, event_type, data)
    SELECT t.uuid, t.published, t.event_type, t.data
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $17::text[]) WITH ORDINALITY
        AS t (uuid, published, event_type, data, owner, ord)
    WHERE t.owner IN (SELECT id FROM u) ORDER BY t.ord
    RETURNING seq, uuid, published
),
",
    pg_deliveries_sql!("$18", "$19", "$20", "$21", "$22", "$23", "$24"),
    ",
n AS (SELECT count(*) AS n FROM o),
s AS (
    SELECT users.id, users.data FROM users JOIN v ON users.id = v.id
    WHERE users.id NOT IN (SELECT id FROM u) AND users.id NOT IN (SELECT id FROM k)
)
SELECT (SELECT ok FROM go), ARRAY(SELECT id FROM u), ARRAY(SELECT id FROM k),
    ARRAY(SELECT id FROM s ORDER BY id), ARRAY(SELECT data FROM s ORDER BY id),
    n.n, CASE WHEN n.n > (SELECT count(*) FROM hd) THEN (SELECT count(*) FROM pg_notify('haken_outbox', $7)) END,
    ARRAY(SELECT id FROM hd ORDER BY id, seq), ARRAY(SELECT uuid FROM hd ORDER BY id, seq)
FROM n"
);

/// The optimistic way (see the module's notes). Answers every job it writes (or that needs no
/// write) and returns the others, for the locked way; sets `routed` when a write queued
/// deliveries. `Err`: a statement failed; the jobs returned with it were not written.
async fn write_optimistic(
    pool: &PgPool,
    hooks: &HookRuntime,
    known: &Known,
    mut jobs: Vec<Job>,
    routed: &mut bool,
) -> Result<Vec<Job>, (StoreError, Vec<Job>)> {
    // Each user's row as the changes start from (`None`: there is no such user; no entry: not
    // known, read before the next try).
    let mut base: HashMap<String, Option<String>> = HashMap::new();
    for job in &jobs {
        if let Some(data) = known.get(&job.id) {
            base.insert(job.id.clone(), Some(data));
        }
    }
    for _ in 0..OPTIMISTIC_TRIES {
        if jobs.is_empty() {
            break;
        }
        let mut unknown: Vec<String> =
            jobs.iter().filter(|j| !base.contains_key(&j.id)).map(|j| j.id.clone()).collect();
        unknown.sort_unstable();
        unknown.dedup();
        if !unknown.is_empty() {
            let read =
                sqlx::query("SELECT id, data FROM users WHERE id = ANY($1)").bind(&unknown).fetch_all(pool).await;
            let rows = match read {
                Ok(rows) => rows,
                Err(e) => return Err((e.into(), jobs)),
            };
            let mut found: HashMap<String, String> = HashMap::with_capacity(rows.len());
            for r in &rows {
                match (r.try_get::<String, _>(0), r.try_get::<String, _>(1)) {
                    (Ok(id), Ok(data)) => {
                        found.insert(id, data);
                    }
                    (Err(e), _) | (_, Err(e)) => return Err((e.into(), jobs)),
                }
            }
            for id in unknown {
                let data = found.remove(&id);
                base.insert(id, data);
            }
        }
        match try_known(pool, hooks, known, &mut base, jobs).await {
            Ok(Try::Done { rest, routed: r }) => {
                *routed |= r;
                jobs = rest;
            }
            Ok(Try::Locked(rest)) => return Ok(rest),
            Err(failed) => return Err(failed),
        }
    }
    Ok(jobs)
}

enum Try {
    /// The statement ran: the jobs it did not write (their rows changed meanwhile).
    Done { rest: Vec<Job>, routed: bool },
    /// The batch needs the locked way (it renames a login): nothing was written.
    Locked(Vec<Job>),
}

/// One optimistic statement for `jobs`, computed on `base` (which it updates to the rows the
/// missed users hold now).
async fn try_known(
    pool: &PgPool,
    hooks: &HookRuntime,
    known: &Known,
    base: &mut HashMap<String, Option<String>>,
    mut jobs: Vec<Job>,
) -> Result<Try, (StoreError, Vec<Job>)> {
    // The users that have a row (`order`) and their rows as the batch leaves them.
    let mut order: Vec<String> = Vec::new();
    let mut current: HashMap<String, User> = HashMap::new();
    let mut changed: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut events = Vec::new();
    let mut owners: Vec<String> = Vec::new();
    let mut ran: Vec<Answer> = Vec::with_capacity(jobs.len());
    for job in &mut jobs {
        let row = match current.get(&job.id) {
            Some(u) => Some(u.clone()),
            None => match base.get(&job.id) {
                Some(Some(text)) => match decode::<User>(text) {
                    Ok(u) => {
                        order.push(job.id.clone());
                        current.insert(job.id.clone(), u.clone());
                        Some(u)
                    }
                    Err(e) => return Err((e, jobs)),
                },
                _ => None,
            },
        };
        let renamed_from = row.as_ref().map(|b| b.login().to_lowercase());
        let r = (job.run)(Ok(row));
        match r.change {
            Some(change) => {
                if renamed_from.is_some_and(|from| from != change.value.login().to_lowercase()) {
                    return Ok(Try::Locked(jobs));
                }
                changed.insert(change.value.id.clone());
                owners.extend(std::iter::repeat_n(change.value.id.clone(), change.events.len()));
                events.extend(change.events);
                current.insert(change.value.id.clone(), change.value);
                ran.push(r.answer);
            }
            None => ran.push(r.answer),
        }
    }
    // No user to write or check (every job was for a user that does not exist): done.
    if order.is_empty() {
        for answer in ran {
            answer(Ok(()));
        }
        return Ok(Try::Done { rest: Vec::new(), routed: false });
    }
    // In id order, like the locked way's locks, so that statements of two nodes meet in one
    // order where the plan follows it.
    order.sort_unstable();
    let mut rows = KnownRows::default();
    let mut written: HashMap<String, String> = HashMap::new();
    for id in &order {
        let Some(Some(text)) = base.get(id) else { continue };
        let cols = match current.get(id).filter(|_| changed.contains(id)).map(UserColumns::of).transpose() {
            Ok(c) => c,
            Err(e) => return Err((e, jobs)),
        };
        if let Some(c) = &cols {
            written.insert(id.clone(), c.data.clone());
        }
        rows.push(id, text, cols);
    }
    let mut refreshed = false;
    // A router that was never built (a node's first write) is built before it routes.
    if hooks.router.get().is_some_and(|r| r.revision() < 0) {
        if let Err(e) = refresh_router(pool, hooks).await {
            return Err((e, jobs));
        }
        refreshed = true;
    }
    let out = loop {
        let router = hooks.router.get();
        let rev = router.map_or(-1, |r| r.revision());
        let mut ev = match crate::backend::event_rows(router.map(|r| r.as_ref()), &events) {
            Ok(ev) => ev,
            Err(e) => return Err((e, jobs)),
        };
        if rev >= 0 {
            ev.reserve(hooks, rev);
        }
        let q = ev
            .bind(sqlx::query(WRITE_KNOWN_SQL), hooks.tag.0.as_str())
            .bind(&rows.ids)
            .bind(&rows.logins)
            .bind(&rows.statuses)
            .bind(&rows.updated)
            .bind(&rows.data)
            .bind(&rows.emails)
            .bind(&rows.names)
            .bind(&rows.expected)
            .bind(rev)
            .bind(&owners);
        let q = ev.bind_deliveries(q);
        let row = match q.fetch_one(pool).await {
            Ok(row) => row,
            // Another node's statement took the same rows in the other order; PostgreSQL
            // rolled this one back. The locked way takes rows in id order.
            Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("40P01") => return Ok(Try::Locked(jobs)),
            Err(e) => return Err((e.into(), jobs)),
        };
        // Decoded strictly: past this point the statement has committed whatever it wrote.
        let held = match row.try_get::<bool, _>(0) {
            Ok(held) => held,
            Err(e) => return Err((e.into(), jobs)),
        };
        if !held {
            // Hooks changed since the router was built: route again by the current ones.
            if refreshed {
                return Ok(Try::Locked(jobs));
            }
            if let Err(e) = refresh_router(pool, hooks).await {
                return Err((e, jobs));
            }
            refreshed = true;
            continue;
        }
        break (row, ev);
    };
    let (out, mut ev) = out;
    let decoded = (|| -> Result<_, sqlx::Error> {
        Ok((
            out.try_get::<Vec<String>, _>(1)?,
            out.try_get::<Vec<String>, _>(2)?,
            out.try_get::<Vec<String>, _>(3)?,
            out.try_get::<Vec<String>, _>(4)?,
            out.try_get::<i64, _>(5)?,
            out.try_get::<Vec<String>, _>(7)?,
            out.try_get::<Vec<String>, _>(8)?,
        ))
    })();
    let (done, checked, missed_ids, missed_data, queued, handed_ids, handed_uuids) = match decoded {
        Ok(d) => d,
        Err(e) => return Err((e.into(), jobs)),
    };
    let handed_count = i64::try_from(handed_ids.len()).unwrap_or(i64::MAX);
    // The statement committed on its own: what it leased to this node goes out now.
    match ev.settle(&handed_ids, &handed_uuids) {
        Ok(handover) => handover.give(),
        Err(e) => return Err((e, jobs)),
    }
    let ok: std::collections::HashSet<&str> = done.iter().chain(checked.iter()).map(String::as_str).collect();
    for id in &done {
        if let Some(text) = written.remove(id) {
            known.put(id, text);
        }
    }
    for id in &checked {
        if let Some(Some(text)) = base.get(id) {
            known.put(id, text.clone());
        }
    }
    // The others: as they are now (or gone), for the next try.
    for id in &order {
        if !ok.contains(id.as_str()) {
            known.forget(id);
            base.insert(id.clone(), None);
        }
    }
    for (id, data) in missed_ids.into_iter().zip(missed_data) {
        if base.get(&id).and_then(|_| rows.expected_of(&id)) == Some(data.as_str()) {
            // The snapshot still has the text the change was computed on: the row changed
            // while the statement waited for it. Read again before the next try.
            base.remove(&id);
        } else {
            base.insert(id, Some(data));
        }
    }
    let mut rest = Vec::new();
    for (job, answer) in jobs.into_iter().zip(ran) {
        if ok.contains(job.id.as_str()) || !order.contains(&job.id) {
            answer(Ok(()));
        } else {
            rest.push(job);
        }
    }
    // Deliveries handed over need no round: wake the dispatcher only for the others.
    Ok(Try::Done { rest, routed: queued > handed_count })
}

/// The rows of an optimistic statement: per user the text its change was computed on and,
/// when it changes, the new columns (`data` NULL: only checked).
#[derive(Default)]
struct KnownRows {
    ids: Vec<String>,
    logins: Vec<String>,
    statuses: Vec<&'static str>,
    updated: Vec<i64>,
    data: Vec<Option<String>>,
    emails: Vec<Option<String>>,
    names: Vec<Option<String>>,
    expected: Vec<String>,
}

impl KnownRows {
    fn expected_of(&self, id: &str) -> Option<&str> {
        self.ids.iter().position(|i| i == id).map(|k| self.expected[k].as_str())
    }

    fn push(&mut self, id: &str, expected: &str, cols: Option<UserColumns>) {
        self.ids.push(id.to_owned());
        self.expected.push(expected.to_owned());
        match cols {
            Some(c) => {
                self.logins.push(c.login_lower);
                self.statuses.push(c.status);
                self.updated.push(c.last_updated);
                self.data.push(Some(c.data));
                self.emails.push(c.email_key);
                self.names.push(c.name_key);
            }
            None => {
                self.logins.push(String::new());
                self.statuses.push("");
                self.updated.push(0);
                self.data.push(None);
                self.emails.push(None);
                self.names.push(None);
            }
        }
    }
}

/// Rebuilds the router from the hooks as stored, with the revision read in the same statement.
async fn refresh_router(pool: &PgPool, hooks: &HookRuntime) -> Result<(), StoreError> {
    let Some(router) = hooks.router.get() else { return Ok(()) };
    let row = sqlx::query(
        "SELECT coalesce((SELECT value FROM settings WHERE key = 'event_hooks_rev'), '0')::bigint, \
         ARRAY(SELECT data FROM event_hooks WHERE receives = 1)",
    )
    .fetch_one(pool)
    .await?;
    let rev: i64 = row.try_get(0)?;
    let texts: Vec<String> = row.try_get(1)?;
    let hooks = texts.iter().map(|t| decode(t)).collect::<Result<Vec<_>, StoreError>>()?;
    router.refresh(rev, hooks);
    Ok(())
}

/// Writes one batch. Pushes one answer per job (with the job's own error, if it has one)
/// even when the batch fails part-way, so every caller hears back.
async fn write_batch(
    pool: &PgPool,
    hooks: &HookRuntime,
    known: &Known,
    batch: Vec<Job>,
    answers: &mut Vec<(Answer, Option<StoreError>)>,
) -> Result<bool, StoreError> {
    let mut jobs = batch.into_iter();
    let result = write_jobs(pool, hooks, known, &mut jobs, answers).await;
    if let Err(e) = &result {
        // Jobs the failure came before: they never ran.
        for mut job in jobs {
            let ran = (job.run)(Err(StoreError::Database(e.to_string())));
            answers.push((ran.answer, None));
        }
    }
    result
}

async fn write_jobs(
    pool: &PgPool,
    hooks: &HookRuntime,
    known: &Known,
    jobs: &mut std::vec::IntoIter<Job>,
    answers: &mut Vec<(Answer, Option<StoreError>)>,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    // Locks in id order, so batches of several nodes never wait on each other in a cycle.
    let mut ids: Vec<&str> = jobs.as_slice().iter().map(|j| j.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = sqlx::query(
        "SELECT id, data, (SELECT value FROM settings WHERE key = 'event_hooks_rev') FROM users \
         WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut rev = 0i64;
    let mut current: HashMap<String, User> = HashMap::with_capacity(rows.len());
    for r in &rows {
        rev = r.try_get::<Option<String>, _>(2)?.and_then(|v| v.parse().ok()).unwrap_or(0);
        current.insert(r.try_get(0)?, decode(&r.try_get::<String, _>(1)?)?);
    }
    let mut changed: Vec<String> = Vec::new();
    let mut events = Vec::new();
    for mut job in jobs.by_ref() {
        let before = current.get(&job.id).cloned();
        let renamed_from = before.as_ref().map(|b| b.login().to_lowercase());
        let ran = (job.run)(Ok(before));
        let Some(change) = ran.change else {
            answers.push((ran.answer, None));
            continue;
        };
        if renamed_from.is_some_and(|from| from != change.value.login().to_lowercase()) {
            // Written now, alone: a login taken elsewhere fails this change only.
            let wrote = rename(&mut tx, &change.value).await;
            match wrote {
                Ok(()) => {}
                Err(StoreError::Conflict(what)) => {
                    answers.push((ran.answer, Some(StoreError::Conflict(what))));
                    continue;
                }
                Err(e) => {
                    answers.push((ran.answer, None));
                    return Err(e);
                }
            }
        }
        if !changed.contains(&change.value.id) {
            changed.push(change.value.id.clone());
        }
        events.extend(change.events);
        current.insert(change.value.id.clone(), change.value);
        answers.push((ran.answer, None));
    }
    // The changed rows go in with the events, in one statement.
    let mut rows = UserRows::default();
    let mut texts = Vec::with_capacity(changed.len());
    for id in &changed {
        let u = current.get(id).ok_or_else(|| StoreError::Corrupt(format!("user {id} left the batch")))?;
        let cols = UserColumns::of(u)?;
        texts.push(cols.data.clone());
        rows.push(cols);
    }
    let users = (!changed.is_empty()).then_some(rows);
    let (routed, handover) = PgBackend::insert_events_at(hooks, &mut tx, &events, Some(rev), users, true).await?;
    tx.commit().await?;
    handover.give();
    for (id, text) in changed.iter().zip(texts) {
        known.put(id, text);
    }
    Ok(routed)
}

/// A change of login, in a savepoint: [`StoreError::Conflict`] (and nothing written) when
/// another user has it.
async fn rename(tx: &mut sqlx::Transaction<'static, sqlx::Postgres>, user: &User) -> Result<(), StoreError> {
    sqlx::query("SAVEPOINT rename").execute(&mut **tx).await?;
    let wrote = sqlx::query("UPDATE users SET login_lower = $2 WHERE id = $1")
        .bind(&user.id)
        .bind(user.login().to_lowercase())
        .execute(&mut **tx)
        .await;
    match wrote {
        Ok(_) => {
            sqlx::query("RELEASE SAVEPOINT rename").execute(&mut **tx).await?;
            Ok(())
        }
        Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
            sqlx::query("ROLLBACK TO SAVEPOINT rename").execute(&mut **tx).await?;
            Err(StoreError::Conflict("login"))
        }
        Err(e) => Err(e.into()),
    }
}

impl PgBackend {
    pub(crate) async fn update_user<E, F>(&self, id: &str, f: F) -> Result<User, E>
    where
        E: From<StoreError> + Send + 'static,
        F: FnMut(User) -> Result<Option<Change<User>>, E> + Send + 'static,
    {
        self.users.update(id, f).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few changes under steady load wait (briefly) for company; a lone change on an idle
    /// node or from one client writing in turn, enough changes for a statement, or changes
    /// that waited long enough go at once.
    #[test]
    fn only_few_changes_under_steady_load_wait() {
        let ms = std::time::Duration::from_millis;
        assert!(lingers(1, Some((ms(1), 2)), ms(0)));
        assert!(lingers(SECOND_BATCH_AT - 1, Some((ms(0), 3)), ms(1)));
        assert!(!lingers(1, None, ms(0)), "the first change of a node");
        assert!(!lingers(1, Some((STEADY, 2)), ms(0)), "an idle node");
        assert!(!lingers(1, Some((ms(1), 1)), ms(0)), "one client writing change after change");
        assert!(!lingers(SECOND_BATCH_AT, Some((ms(1), 2)), ms(0)), "enough for a statement");
        assert!(!lingers(2, Some((ms(1), 2)), LINGER), "waited long enough");
        assert!(!lingers(0, Some((ms(1), 2)), ms(0)), "nothing to write");
    }

    #[test]
    fn known_rows_stay_within_their_bounds() {
        let known = Known::default();
        known.put("a", "x".repeat(10));
        known.put("a", "y".repeat(20));
        assert_eq!(known.get("a").map(|t| t.len()), Some(20), "a row's latest text replaces the old");
        known.put("big", "z".repeat(KNOWN_ROW_MAX + 1));
        assert_eq!(known.get("big"), None, "a row over the size bound is not kept");
        known.forget("a");
        assert_eq!(known.get("a"), None);
        let bytes = |k: &Known| k.0.lock().map(|m| m.bytes).unwrap_or(usize::MAX);
        assert_eq!(bytes(&known), 0, "forgetting gives its bytes back");
        let row = "r".repeat(KNOWN_ROW_MAX);
        for i in 0..(KNOWN_BYTES_MAX / KNOWN_ROW_MAX + 3) {
            known.put(&format!("u{i}"), row.clone());
            assert!(bytes(&known) <= KNOWN_BYTES_MAX);
        }
        for i in 0..(KNOWN_MAX + 5) {
            known.put(&format!("s{i}"), String::from("s"));
            assert!(known.0.lock().map(|m| m.rows.len()).unwrap_or(usize::MAX) <= KNOWN_MAX);
        }
    }
}
