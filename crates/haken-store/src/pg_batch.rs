//! PostgreSQL: profile and lifecycle changes of users, batched. A task per node takes the
//! changes queued at the moment and writes them in one transaction: one locking read for all
//! their rows, each change computed in queue order (two changes of one user see each other),
//! one statement for every changed row with all their events and outbox rows, one commit. A
//! round trip to PostgreSQL costs about as much as the work of a row, so this is what lets
//! one node keep up with many concurrent writers.
//!
//! A change that renames the login is written on its own inside a savepoint, so a login taken
//! by another user fails only that change.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use haken_core::User;
use sqlx::{PgPool, Row};

use crate::backend::UserRows;
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

/// A queued change: the user's id and the computation, given the locked row (`Ok(None)`: no
/// such user; `Err`: the batch failed before it could run, answer with that).
struct Job {
    id: String,
    run: Box<dyn FnOnce(Result<Option<User>, StoreError>) -> Ran + Send>,
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

    async fn update<E, F>(&self, id: &str, f: F) -> Result<User, E>
    where
        E: From<StoreError> + Send + 'static,
        F: FnOnce(User) -> Result<Option<Change<User>>, E> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel::<Result<User, E>>();
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
            match outcome {
                Ok((user, change)) => Ran {
                    change,
                    answer: Box::new(move |done| {
                        let _ = reply.send(done.map(|()| user).map_err(E::from));
                    }),
                },
                Err(e) => Ran {
                    change: None,
                    answer: Box::new(move |_| {
                        let _ = reply.send(Err(e));
                    }),
                },
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

async fn run(pool: PgPool, hooks: Arc<HookRuntime>, mut queue: tokio::sync::mpsc::UnboundedReceiver<Job>) {
    // Jobs taken from the queue and not yet in a batch, in queue order.
    let mut held: std::collections::VecDeque<Job> = std::collections::VecDeque::new();
    // Users with a change in a batch in flight: their later changes wait for that batch, so
    // batches in flight never touch the same row (and never wait on each other's locks).
    let mut busy: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut in_flight: tokio::task::JoinSet<Vec<String>> = tokio::task::JoinSet::new();
    let mut incoming = Vec::with_capacity(MAX_BATCH);
    let mut open = true;
    loop {
        while in_flight.len() < PIPELINE {
            let batch = take_runnable(&mut held, &busy);
            if batch.is_empty() {
                break;
            }
            let ids: Vec<String> = batch.iter().map(|j| j.id.clone()).collect();
            busy.extend(ids.iter().cloned());
            let (pool, hooks) = (pool.clone(), hooks.clone());
            in_flight.spawn(async move {
                write_and_answer(&pool, &hooks, batch).await;
                ids
            });
        }
        if !open && held.is_empty() && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            done = in_flight.join_next(), if !in_flight.is_empty() => match done {
                Some(Ok(ids)) => {
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
                    held.extend(incoming.drain(..));
                }
            }
        }
    }
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

async fn write_and_answer(pool: &PgPool, hooks: &HookRuntime, batch: Vec<Job>) {
    let mut answers: Vec<(Answer, Option<StoreError>)> = Vec::with_capacity(batch.len());
    match write_batch(pool, hooks, batch, &mut answers).await {
        Ok(routed) => {
            for (answer, own) in answers {
                answer(own.map_or(Ok(()), Err));
            }
            if routed {
                hooks.wake.notify_one();
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

/// Writes one batch. Pushes one answer per job (with the job's own error, if it has one)
/// even when the batch fails part-way, so every caller hears back.
async fn write_batch(
    pool: &PgPool,
    hooks: &HookRuntime,
    batch: Vec<Job>,
    answers: &mut Vec<(Answer, Option<StoreError>)>,
) -> Result<bool, StoreError> {
    let mut jobs = batch.into_iter();
    let result = write_jobs(pool, hooks, &mut jobs, answers).await;
    if let Err(e) = &result {
        // Jobs the failure came before: they never ran.
        for job in jobs {
            let ran = (job.run)(Err(StoreError::Database(e.to_string())));
            answers.push((ran.answer, None));
        }
    }
    result
}

async fn write_jobs(
    pool: &PgPool,
    hooks: &HookRuntime,
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
    for job in jobs.by_ref() {
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
    for id in &changed {
        let u = current.get(id).ok_or_else(|| StoreError::Corrupt(format!("user {id} left the batch")))?;
        rows.push(UserColumns::of(u)?);
    }
    let users = (!changed.is_empty()).then_some(rows);
    let routed = PgBackend::insert_events_at(hooks, &mut tx, &events, Some(rev), users).await?;
    tx.commit().await?;
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
        F: FnOnce(User) -> Result<Option<Change<User>>, E> + Send + 'static,
    {
        self.users.update(id, f).await
    }
}
