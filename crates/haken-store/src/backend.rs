//! The two backends. Their SQL is the same text (both accept `$n` placeholders), so one macro
//! writes both implementations; what differs (connecting, taking the write lock, row locks,
//! how polling pages the System Log) is passed in or written per backend below.

use std::str::FromStr;
use std::sync::Arc;

use haken_core::hook::{Attempt, AttemptOutcome, Delivery, DeliveryStatus, EventHook};
use haken_core::token::ApiToken;
use haken_core::{Group, LogEvent, Timestamp, User};
use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row};

use crate::pg_batch::UserBatcher;
use crate::sqlite_writer::{Gate, Writer};
use crate::{
    Change, Claimed, Document, EventRouter, HookRuntime, ImportRow, LogCursor, LogQuery, QueueStats, RowWrite,
    SignInWrite, StoreError, StoreOptions, UserColumns, UserQuery, decode, encode, name_key_of, routed_json,
};

/// Embedded SQLite: one writer at a time (so commit order is `seq` order and no transaction
/// ever waits on a lock upgrade): the writer thread for the frequent writes, a one-connection
/// pool for the rest, never both at once (the gate); readers use their own pool under WAL.
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    pub(crate) writer: Arc<Writer>,
    gate: Gate,
    write: SqlitePool,
    read: SqlitePool,
    /// Readers reserved for the delivery engine, so API load cannot starve it.
    work: SqlitePool,
    pub(crate) hooks: Arc<HookRuntime>,
    /// Delivered attempts, recorded in batches (`record.rs`): one writer job for many.
    pub(crate) recorder: Arc<crate::record::Recorder>,
    /// The receiving hooks a dispatcher round last read, with their revision.
    pub(crate) hooks_seen: Arc<std::sync::Mutex<Option<crate::HooksAt>>>,
}

/// PostgreSQL, shared by any number of nodes.
#[derive(Debug, Clone)]
pub struct PgBackend {
    /// Profile and lifecycle changes, batched (`pg_batch.rs`).
    pub(crate) users: Arc<UserBatcher>,
    write: PgPool,
    read: PgPool,
    /// Connections reserved for the delivery engine, so API load cannot starve it.
    pub(crate) work: PgPool,
    pub(crate) hooks: Arc<HookRuntime>,
    /// The receiving hooks as the dispatcher last read them, with their revision: a round
    /// reads them again only when the revision moved (see `pg_dispatch.rs`).
    pub(crate) dispatch_hooks: Arc<std::sync::Mutex<(i64, Arc<Vec<EventHook>>)>>,
    /// When the dispatcher must run its forming statement (see `pg_dispatch.rs`).
    pub(crate) forming: Arc<crate::pg_dispatch::Forming>,
    /// Delivered attempts, recorded in batches (`record.rs`).
    pub(crate) recorder: Arc<crate::record::Recorder>,
}

impl SqliteBackend {
    /// Events were queued without deliveries: SQLite's rounds always look for them.
    fn queued_unformed(&self) {}

    pub(crate) async fn connect(opts: &StoreOptions) -> Result<Self, StoreError> {
        let path = opts.url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() {
            return Err(StoreError::BadUrl(opts.url.clone()));
        }
        let base = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(base.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(base.clone().read_only(true))
            .await?;
        let work = SqlitePoolOptions::new()
            .max_connections(2)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(base.read_only(true))
            .await?;
        let gate = Gate::default();
        let hooks = Arc::<HookRuntime>::default();
        let writer = Arc::new(Writer::start(path, gate.clone(), Some(crate::sqlite_hot::group_end(hooks.clone())))?);
        let recorder = Arc::new(crate::sqlite_hot::recorder(writer.clone(), hooks.clone()));
        Ok(SqliteBackend { writer, gate, write, read, work, hooks, recorder, hooks_seen: Arc::default() })
    }

    /// Queues a page of a backfill's events (by `seq`) to `hook_id` by the rules of
    /// [`BACKFILL_ONE_SQL`], as the first work of `tx`; returns how many were queued. Backfills
    /// running at once queue each event once: SQLite's write transactions run one at a time
    /// ([`Self::begin`] takes the write lock).
    async fn queue_backfill_page(
        tx: &mut WriteTx<sqlx::Sqlite>,
        hook_id: &str,
        seqs: &[i64],
        now: i64,
        resend: bool,
    ) -> Result<u64, StoreError> {
        let mut queued = 0;
        for seq in seqs {
            queued += sqlx::query(BACKFILL_ONE_SQL)
                .bind(hook_id)
                .bind(seq)
                .bind(now)
                .bind(resend)
                .execute(&mut ***tx)
                .await?
                .rows_affected();
        }
        Ok(queued)
    }

    async fn begin(&self) -> Result<WriteTx<sqlx::Sqlite>, StoreError> {
        // The writer thread stays out while this transaction runs.
        let gate = self.gate.clone().lock_owned().await;
        // IMMEDIATE takes the write lock up front, so another process (the CLI) writing at
        // the same time waits on busy_timeout instead of failing mid-transaction.
        let tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx { tx, _gate: Some(gate) })
    }

    /// The delivery engine's writes share the single writer (SQLite has one).
    async fn begin_work(&self) -> Result<WriteTx<sqlx::Sqlite>, StoreError> {
        self.begin().await
    }

    pub(crate) async fn close(&self) {
        self.recorder.close().await;
        self.writer.close().await;
        self.work.close().await;
        self.read.close().await;
        self.write.close().await;
    }
}

/// A connection idle for longer than this is checked (a round trip) before it is handed out.
const PG_PING_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Pool settings for PostgreSQL. sqlx checks every connection before handing it out by
/// default: a round trip per statement on a busy node, as many as the statements themselves.
/// Only connections that sat idle are checked here (one that broke while in use fails its
/// statement, and is dropped, like any error).
fn pg_pool_options(max: u32, opts: &StoreOptions) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(opts.acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PG_PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

impl PgBackend {
    /// Events were queued without deliveries (a backfill): the next round forms them.
    fn queued_unformed(&self) {
        self.forming.request();
    }

    pub(crate) async fn connect(opts: &StoreOptions) -> Result<Self, StoreError> {
        let pool = pg_pool_options(opts.max_connections.max(2), opts).connect(&opts.url).await?;
        // Several nodes may start at once: one applies the migrations, the others wait.
        let mut conn = pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock(727274001)").execute(&mut *conn).await?;
        let migrated = sqlx::migrate!("./migrations/postgres").run(&mut *conn).await;
        sqlx::query("SELECT pg_advisory_unlock(727274001)").execute(&mut *conn).await?;
        migrated?;
        drop(conn);
        // The delivery engine's statements are queue reads and writes through their indexes
        // at any table size. PostgreSQL planned the lease anew at every run (its arrays' sizes
        // make a custom plan look cheaper), which cost more than running it; a generic plan
        // made on a nearly empty table could pick a sequential scan and keep it while the
        // table grows. So the work pool takes generic plans and is kept off sequential scans
        // where an index serves.
        let work = pg_pool_options(4, opts)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql("SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan")
                        .execute(conn)
                        .await
                        .map(|_| ())
                })
            })
            .connect(&opts.url)
            .await?;
        let hooks = Arc::<HookRuntime>::default();
        let users = Arc::new(UserBatcher::start(pool.clone(), hooks.clone()));
        let dispatch_hooks = Arc::new(std::sync::Mutex::new((i64::MIN, Arc::default())));
        let forming = Arc::default();
        // Delivered attempts are written without waiting for the WAL flush: a record lost in a
        // crash of PostgreSQL leaves its delivery pending and leased, and it is sent again when
        // the lease ends — at least once, as everywhere — while each record's commit no
        // longer waits for a flush of its own. One connection: the recorder writes one batch
        // at a time.
        let records = pg_pool_options(1, opts)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql(
                        "SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan; SET synchronous_commit = off",
                    )
                    .execute(conn)
                    .await
                    .map(|_| ())
                })
            })
            .connect(&opts.url)
            .await?;
        let recorder = Arc::new(crate::record::Recorder::postgres(records));
        Ok(PgBackend { users, write: pool.clone(), read: pool, work, hooks, dispatch_hooks, forming, recorder })
    }

    /// Queues a page of a backfill's events (by `seq`) to `hook_id` by the rules of
    /// [`BACKFILL_ONE_SQL`], in one statement (up to 500 events, one round trip), as the first
    /// work of `tx`; returns how many were queued. Backfills running at once, on any nodes,
    /// queue each event once: the transaction first takes a lock on the hook (two at once
    /// would each miss the rows the other has not committed yet); the lock is the
    /// transaction's, and after it each statement sees what an earlier backfill committed.
    async fn queue_backfill_page(
        tx: &mut WriteTx<sqlx::Postgres>,
        hook_id: &str,
        seqs: &[i64],
        now: i64,
        resend: bool,
    ) -> Result<u64, StoreError> {
        // Whatever the server's default: under REPEATABLE READ the lock's own statement
        // would fix the snapshot before the wait, and the rows committed meanwhile would stay
        // unseen.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").execute(&mut ***tx).await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('haken.backfill.' || $1, 0))")
            .bind(hook_id)
            .execute(&mut ***tx)
            .await?;
        Ok(sqlx::query(
            "INSERT INTO outbox (hook_id, event_seq, created) \
             SELECT $1, s.seq, $3 FROM unnest($2::bigint[]) WITH ORDINALITY AS s (seq, ord) \
             WHERE EXISTS (SELECT 1 FROM event_hooks WHERE id = $1) \
             AND NOT EXISTS (SELECT 1 FROM outbox o LEFT JOIN deliveries d ON d.id = o.delivery_id \
                 WHERE o.hook_id = $1 AND o.event_seq = s.seq AND (NOT $4 OR o.delivery_id IS NULL OR d.status = 'PENDING')) \
             ORDER BY s.ord",
        )
        .bind(hook_id)
        .bind(seqs)
        .bind(now)
        .bind(resend)
        .execute(&mut ***tx)
        .await?
        .rows_affected())
    }

    async fn begin(&self) -> Result<WriteTx<sqlx::Postgres>, StoreError> {
        Ok(WriteTx { tx: self.write.begin().await?, _gate: None })
    }

    async fn begin_work(&self) -> Result<WriteTx<sqlx::Postgres>, StoreError> {
        Ok(WriteTx { tx: self.work.begin().await?, _gate: None })
    }

    pub(crate) async fn close(&self) {
        self.users.close();
        self.recorder.close().await;
        self.work.close().await;
        self.write.close().await;
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.write
    }
}

/// A write transaction. On SQLite it also holds the gate, so the writer thread waits for it.
pub(crate) struct WriteTx<DB: sqlx::Database> {
    tx: sqlx::Transaction<'static, DB>,
    _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<DB: sqlx::Database> WriteTx<DB> {
    async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl<DB: sqlx::Database> std::ops::Deref for WriteTx<DB> {
    type Target = sqlx::Transaction<'static, DB>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for WriteTx<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

/// Queues one event (`$2`, by seq) of a backfill to hook `$1` (`$3`: now). A hook deleted
/// meanwhile gets nothing. An event the hook already has (queued or delivered) is skipped
/// unless `$4` (resend) is set; even then, one it still waits to receive is not queued twice.
const BACKFILL_ONE_SQL: &str = "INSERT INTO outbox (hook_id, event_seq, created) SELECT $1, $2, $3 \
     WHERE EXISTS (SELECT 1 FROM event_hooks WHERE id = $1) \
     AND NOT EXISTS (SELECT 1 FROM outbox o LEFT JOIN deliveries d ON d.id = o.delivery_id \
         WHERE o.hook_id = $1 AND o.event_seq = $2 AND (NOT $4 OR o.delivery_id IS NULL OR d.status = 'PENDING'))";

macro_rules! backend_impl {
    ($backend:ty, $db:ty, $row:ty, for_update = $lock:literal, skip_locked = $skip:literal, poll_by_tx = $poll_by_tx:literal) => {
        impl $backend {

            /// Reads one JSON document row under the backend's row lock (`sql` selects `data`).
            async fn lock_doc<T: serde::de::DeserializeOwned>(
                tx: &mut sqlx::Transaction<'static, $db>,
                sql: &'static str,
                id: &str,
            ) -> Result<Option<T>, StoreError> {
                let row = sqlx::query(sql).bind(id).fetch_optional(&mut **tx).await?;
                row.map(|r| decode(&r.try_get::<String, _>(0)?)).transpose()
            }

            pub(crate) fn after_commit(&self, routed: bool) {
                if routed {
                    self.hooks.wake.notify_one();
                }
            }

            pub(crate) async fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
                let row = sqlx::query("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(&self.read).await?;
                Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
            }

            pub(crate) async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
                sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(value)
                    .execute(&self.write)
                    .await?;
                let row = sqlx::query("SELECT value FROM settings WHERE key = $1").bind(key).fetch_one(&self.write).await?;
                Ok(row.try_get::<String, _>(0)?)
            }

            pub(crate) async fn update_setting<E, F>(&self, key: &str, f: F) -> Result<Value, E>
            where
                E: From<StoreError> + Send,
                F: FnOnce(Option<Value>) -> Result<Change<Value>, E> + Send,
            {
                let mut tx = self.begin().await?;
                let row = sqlx::query(concat!("SELECT value FROM settings WHERE key = $1", $lock))
                    .bind(key)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(StoreError::from)?;
                let current = match row {
                    Some(r) => Some(decode::<Value>(&r.try_get::<String, _>(0).map_err(StoreError::from)?)?),
                    None => None,
                };
                let change = f(current)?;
                sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value")
                    .bind(key)
                    .bind(encode(&change.value)?)
                    .execute(&mut **tx)
                    .await
                    .map_err(StoreError::from)?;
                let routed = self.insert_events(&mut tx, &change.events).await?;
                tx.commit().await.map_err(StoreError::from)?;
                self.after_commit(routed);
                Ok(change.value)
            }

            pub(crate) async fn insert_token(&self, token: &ApiToken, events: &[LogEvent]) -> Result<(), StoreError> {
                let mut tx = self.begin().await?;
                sqlx::query("INSERT INTO api_tokens (id, token_hash, data) VALUES ($1, $2, $3)")
                    .bind(&token.id)
                    .bind(&token.token_hash)
                    .bind(encode(token)?)
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| if unique_violation(&e) { StoreError::Conflict("token") } else { e.into() })?;
                let routed = self.insert_events(&mut tx, events).await?;
                tx.commit().await?;
                self.after_commit(routed);
                Ok(())
            }

            pub(crate) async fn token_by_hash(&self, hash: &str) -> Result<Option<ApiToken>, StoreError> {
                let row = sqlx::query("SELECT data FROM api_tokens WHERE token_hash = $1").bind(hash).fetch_optional(&self.read).await?;
                row.map(|r| decode(&r.try_get::<String, _>(0)?)).transpose()
            }

            pub(crate) async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
                let rows = sqlx::query("SELECT data FROM api_tokens ORDER BY seq").fetch_all(&self.read).await?;
                rows.iter().map(|r| decode(&r.try_get::<String, _>(0)?)).collect()
            }

            pub(crate) async fn update_token(&self, token: &ApiToken, events: &[LogEvent]) -> Result<(), StoreError> {
                let mut tx = self.begin().await?;
                let done = sqlx::query("UPDATE api_tokens SET data = $2 WHERE id = $1")
                    .bind(&token.id)
                    .bind(encode(token)?)
                    .execute(&mut **tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                let routed = self.insert_events(&mut tx, events).await?;
                tx.commit().await?;
                self.after_commit(routed);
                Ok(())
            }

            pub(crate) async fn get_user(&self, id_or_login: &str) -> Result<Option<User>, StoreError> {
                let row = sqlx::query("SELECT data FROM users WHERE id = $1 OR login_lower = $2")
                    .bind(id_or_login)
                    .bind(id_or_login.to_lowercase())
                    .fetch_optional(&self.read)
                    .await?;
                row.map(|r| decode(&r.try_get::<String, _>(0)?)).transpose()
            }

            /// Writes a changed user over its row; a login taken by another user is a conflict.
            async fn write_user(tx: &mut sqlx::Transaction<'static, $db>, user: &User) -> Result<(), StoreError> {
                let update = sqlx::query(
                    "UPDATE users SET login_lower = $2, status = $3, last_updated = $4, data = $5, email_key = $6, name_key = $7 WHERE id = $1",
                );
                crate::bind_user!(update, UserColumns::of(user)?)
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| if unique_violation(&e) { StoreError::Conflict("login") } else { StoreError::from(e) })?;
                Ok(())
            }


            pub(crate) async fn list_users(&self, q: &UserQuery) -> Result<Vec<(i64, User)>, StoreError> {
                let mut b: QueryBuilder<$db> = QueryBuilder::new("SELECT seq, data FROM users WHERE seq > ");
                b.push_bind(q.after_seq);
                if let Some(statuses) = &q.statuses {
                    b.push(" AND status IN (");
                    let mut sep = b.separated(", ");
                    for s in statuses {
                        sep.push_bind(s.clone());
                    }
                    if statuses.is_empty() {
                        sep.push("NULL");
                    }
                    b.push(")");
                }
                if let Some(id) = &q.id {
                    b.push(" AND id = ").push_bind(id.clone());
                }
                if let Some(login) = &q.login_lower {
                    b.push(" AND login_lower = ").push_bind(login.clone());
                }
                if let Some(from) = q.updated_from {
                    b.push(" AND last_updated >= ").push_bind(from);
                }
                if let Some(to) = q.updated_to {
                    b.push(" AND last_updated <= ").push_bind(to);
                }
                b.push(" ORDER BY seq LIMIT ").push_bind(q.limit);
                let rows = b.build().fetch_all(&self.read).await?;
                rows.iter().map(|r| Ok((r.try_get::<i64, _>(0)?, decode(&r.try_get::<String, _>(1)?)?))).collect()
            }

            pub(crate) async fn count_users(&self) -> Result<i64, StoreError> {
                let row = sqlx::query("SELECT COUNT(*) FROM users").fetch_one(&self.read).await?;
                Ok(row.try_get::<i64, _>(0)?)
            }

            pub(crate) async fn insert_group(&self, group: &Group, events: &[LogEvent]) -> Result<(), StoreError> {
                let mut tx = self.begin().await?;
                sqlx::query("INSERT INTO groups (id, name_lower, data) VALUES ($1, $2, $3)")
                    .bind(&group.id)
                    .bind(group.name().to_lowercase())
                    .bind(encode(group)?)
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| if unique_violation(&e) { StoreError::Conflict("name") } else { e.into() })?;
                let routed = self.insert_events(&mut tx, events).await?;
                tx.commit().await?;
                self.after_commit(routed);
                Ok(())
            }

            pub(crate) async fn get_group(&self, id: &str) -> Result<Option<Group>, StoreError> {
                let row = sqlx::query("SELECT data FROM groups WHERE id = $1").bind(id).fetch_optional(&self.read).await?;
                row.map(|r| decode(&r.try_get::<String, _>(0)?)).transpose()
            }

            async fn lock_group(tx: &mut sqlx::Transaction<'static, $db>, id: &str) -> Result<Group, StoreError> {
                Self::lock_doc(tx, concat!("SELECT data FROM groups WHERE id = $1", $lock), id).await?.ok_or(StoreError::NotFound)
            }

            async fn write_group(tx: &mut sqlx::Transaction<'static, $db>, group: &Group) -> Result<(), StoreError> {
                sqlx::query("UPDATE groups SET name_lower = $2, data = $3 WHERE id = $1")
                    .bind(&group.id)
                    .bind(group.name().to_lowercase())
                    .bind(encode(group)?)
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| if unique_violation(&e) { StoreError::Conflict("name") } else { e.into() })?;
                Ok(())
            }

            pub(crate) async fn update_group<E, F>(&self, id: &str, f: F) -> Result<Group, E>
            where
                E: From<StoreError> + Send,
                F: FnOnce(Group) -> Result<Option<Change<Group>>, E> + Send,
            {
                let mut tx = self.begin().await?;
                let current = Self::lock_group(&mut tx, id).await?;
                let Some(change) = f(current.clone())? else {
                    return Ok(current);
                };
                Self::write_group(&mut tx, &change.value).await?;
                let routed = self.insert_events(&mut tx, &change.events).await?;
                tx.commit().await.map_err(StoreError::from)?;
                self.after_commit(routed);
                Ok(change.value)
            }

            pub(crate) async fn delete_group<E, F>(&self, id: &str, f: F) -> Result<(), E>
            where
                E: From<StoreError> + Send,
                F: FnOnce(&Group) -> Result<Vec<LogEvent>, E> + Send,
            {
                let mut tx = self.begin().await?;
                let group = Self::lock_group(&mut tx, id).await?;
                let events = f(&group)?;
                sqlx::query("DELETE FROM group_members WHERE group_id = $1").bind(id).execute(&mut **tx).await.map_err(StoreError::from)?;
                sqlx::query("DELETE FROM groups WHERE id = $1").bind(id).execute(&mut **tx).await.map_err(StoreError::from)?;
                let routed = self.insert_events(&mut tx, &events).await?;
                tx.commit().await.map_err(StoreError::from)?;
                self.after_commit(routed);
                Ok(())
            }

            pub(crate) async fn list_groups(&self, after_seq: i64, limit: i64, name_prefix: Option<&str>) -> Result<Vec<(i64, Group)>, StoreError> {
                let rows = match name_prefix {
                    Some(prefix) => {
                        // Prefix match by range, so neither LIKE wildcards in the input nor
                        // collation differences between the backends matter.
                        let lo = prefix.to_lowercase();
                        let hi = format!("{lo}\u{10FFFF}");
                        sqlx::query("SELECT seq, data FROM groups WHERE seq > $1 AND name_lower >= $2 AND name_lower < $3 ORDER BY seq LIMIT $4")
                            .bind(after_seq)
                            .bind(lo)
                            .bind(hi)
                            .bind(limit)
                            .fetch_all(&self.read)
                            .await?
                    }
                    None => {
                        sqlx::query("SELECT seq, data FROM groups WHERE seq > $1 ORDER BY seq LIMIT $2")
                            .bind(after_seq)
                            .bind(limit)
                            .fetch_all(&self.read)
                            .await?
                    }
                };
                rows.iter().map(|r| Ok((r.try_get::<i64, _>(0)?, decode(&r.try_get::<String, _>(1)?)?))).collect()
            }

            async fn lock_user(tx: &mut sqlx::Transaction<'static, $db>, id: &str) -> Result<User, StoreError> {
                Self::lock_doc(tx, concat!("SELECT data FROM users WHERE id = $1", $lock), id)
                    .await?
                    .ok_or_else(|| StoreError::MissingReference(id.to_owned()))
            }

            pub(crate) async fn add_member<E, F>(&self, group_id: &str, user_id: &str, now: i64, f: F) -> Result<bool, E>
            where
                E: From<StoreError> + Send,
                F: FnOnce(&Group, &User) -> Result<Vec<LogEvent>, E> + Send,
            {
                let mut tx = self.begin().await?;
                let mut group = Self::lock_group(&mut tx, group_id).await?;
                let user = Self::lock_user(&mut tx, user_id).await?;
                let done = sqlx::query("INSERT INTO group_members (group_id, user_id, added) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(group_id)
                    .bind(user_id)
                    .bind(now)
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| if foreign_key_violation(&e) { StoreError::NotFound } else { e.into() })?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                let events = f(&group, &user)?;
                group.last_membership_updated = haken_core::Timestamp(now);
                Self::write_group(&mut tx, &group).await?;
                let routed = self.insert_events(&mut tx, &events).await?;
                tx.commit().await.map_err(StoreError::from)?;
                self.after_commit(routed);
                Ok(true)
            }

            pub(crate) async fn remove_member<E, F>(&self, group_id: &str, user_id: &str, now: i64, f: F) -> Result<bool, E>
            where
                E: From<StoreError> + Send,
                F: FnOnce(&Group, &User) -> Result<Vec<LogEvent>, E> + Send,
            {
                let mut tx = self.begin().await?;
                let mut group = Self::lock_group(&mut tx, group_id).await?;
                let user = Self::lock_user(&mut tx, user_id).await?;
                let done = sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
                    .bind(group_id)
                    .bind(user_id)
                    .execute(&mut **tx)
                    .await
                    .map_err(StoreError::from)?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                let events = f(&group, &user)?;
                group.last_membership_updated = haken_core::Timestamp(now);
                Self::write_group(&mut tx, &group).await?;
                let routed = self.insert_events(&mut tx, &events).await?;
                tx.commit().await.map_err(StoreError::from)?;
                self.after_commit(routed);
                Ok(true)
            }

            pub(crate) async fn list_members(&self, group_id: &str, after_seq: i64, limit: i64) -> Result<Vec<(i64, User)>, StoreError> {
                let rows = sqlx::query(
                    "SELECT u.seq, u.data FROM group_members m JOIN users u ON u.id = m.user_id \
                     WHERE m.group_id = $1 AND u.seq > $2 ORDER BY u.seq LIMIT $3",
                )
                .bind(group_id)
                .bind(after_seq)
                .bind(limit)
                .fetch_all(&self.read)
                .await?;
                rows.iter().map(|r| Ok((r.try_get::<i64, _>(0)?, decode(&r.try_get::<String, _>(1)?)?))).collect()
            }

            pub(crate) async fn user_groups(&self, user_id: &str) -> Result<Vec<Group>, StoreError> {
                let rows = sqlx::query(
                    "SELECT g.data FROM group_members m JOIN groups g ON g.id = m.group_id WHERE m.user_id = $1 ORDER BY g.seq",
                )
                .bind(user_id)
                .fetch_all(&self.read)
                .await?;
                rows.iter().map(|r| decode(&r.try_get::<String, _>(0)?)).collect()
            }

            // ---- event hooks ----

            async fn bump_hooks_rev(&self, tx: &mut sqlx::Transaction<'static, $db>) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ('event_hooks_rev', '1') \
                     ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(settings.value AS INTEGER) + 1 AS TEXT)",
                )
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            pub(crate) async fn insert_event_hook(&self, hook: &EventHook, events: &[LogEvent]) -> Result<(), StoreError> {
                let mut tx = self.begin().await?;
                sqlx::query("INSERT INTO event_hooks (id, name_lower, receives, data) VALUES ($1, $2, $3, $4)")
                    .bind(&hook.id)
                    .bind(hook.name.to_lowercase())
                    .bind(i64::from(hook.receives()))
                    .bind(encode(hook)?)
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| if unique_violation(&e) { StoreError::Conflict("name") } else { e.into() })?;
                self.bump_hooks_rev(&mut tx).await?;
                let routed = self.insert_events(&mut tx, events).await?;
                tx.commit().await?;
                self.after_commit(routed);
                Ok(())
            }

            pub(crate) async fn get_event_hook(&self, id: &str) -> Result<Option<EventHook>, StoreError> {
                let row = sqlx::query("SELECT data FROM event_hooks WHERE id = $1").bind(id).fetch_optional(&self.read).await?;
                row.map(|r| decode(&r.try_get::<String, _>(0)?)).transpose()
            }

            pub(crate) async fn list_event_hooks(&self) -> Result<Vec<EventHook>, StoreError> {
                let rows = sqlx::query("SELECT data FROM event_hooks ORDER BY seq").fetch_all(&self.read).await?;
                rows.iter().map(|r| decode(&r.try_get::<String, _>(0)?)).collect()
            }

            async fn write_event_hook(&self, tx: &mut sqlx::Transaction<'static, $db>, hook: &EventHook) -> Result<(), StoreError> {
                sqlx::query("UPDATE event_hooks SET name_lower = $2, receives = $3, data = $4 WHERE id = $1")
                    .bind(&hook.id)
                    .bind(hook.name.to_lowercase())
                    .bind(i64::from(hook.receives()))
                    .bind(encode(hook)?)
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| if unique_violation(&e) { StoreError::Conflict("name") } else { StoreError::from(e) })?;
                self.bump_hooks_rev(tx).await
            }

            pub(crate) async fn update_event_hook<E, F>(&self, id: &str, f: F) -> Result<EventHook, E>
            where
                E: From<StoreError> + Send,
                F: FnOnce(EventHook) -> Result<Option<Change<EventHook>>, E> + Send,
            {
                let mut tx = self.begin().await?;
                let current: EventHook = Self::lock_doc(&mut tx, concat!("SELECT data FROM event_hooks WHERE id = $1", $lock), id)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                let Some(change) = f(current.clone())? else {
                    return Ok(current);
                };
                self.write_event_hook(&mut tx, &change.value).await?;
                let routed = self.insert_events(&mut tx, &change.events).await?;
                tx.commit().await.map_err(StoreError::from)?;
                self.after_commit(routed || change.value.receives());
                Ok(change.value)
            }

            pub(crate) async fn delete_event_hook<E, F>(&self, id: &str, f: F) -> Result<(), E>
            where
                E: From<StoreError> + Send,
                F: FnOnce(&EventHook) -> Result<Vec<LogEvent>, E> + Send,
            {
                let mut tx = self.begin().await?;
                let hook: EventHook = Self::lock_doc(&mut tx, concat!("SELECT data FROM event_hooks WHERE id = $1", $lock), id)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                let events = f(&hook)?;
                // Deliveries before their attempts: a late attempt being logged holds its
                // delivery's row (key share), so it either finishes before this delete of the
                // deliveries, and the next statement sees and removes it, or finds no row.
                for sql in [
                    "DELETE FROM outbox WHERE hook_id = $1",
                    "DELETE FROM deliveries WHERE hook_id = $1",
                    "DELETE FROM delivery_attempts WHERE hook_id = $1",
                    "DELETE FROM event_hooks WHERE id = $1",
                ] {
                    sqlx::query(sql).bind(id).execute(&mut **tx).await.map_err(StoreError::from)?;
                }
                self.bump_hooks_rev(&mut tx).await?;
                let routed = self.insert_events(&mut tx, &events).await?;
                tx.commit().await.map_err(StoreError::from)?;
                self.after_commit(routed);
                Ok(())
            }

            // ---- documents (inline hooks, hook keys, apps, policies, sessions, jobs) ----

            fn doc_write_error(e: sqlx::Error) -> StoreError {
                match &e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => {
                        if d.message().contains("lookup") { StoreError::Conflict("lookup") } else { StoreError::Conflict("name") }
                    }
                    _ => e.into(),
                }
            }

            /// Inserts a new document inside the caller's transaction.
            async fn write_new_doc<T: Document>(tx: &mut sqlx::Transaction<'static, $db>, doc: &T) -> Result<(), StoreError> {
                sqlx::query("INSERT INTO documents (kind, id, name_lower, lookup, parent, data) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(T::KIND)
                    .bind(doc.doc_id())
                    .bind(doc.doc_name().map(|n| n.to_lowercase()))
                    .bind(doc.doc_lookup())
                    .bind(doc.doc_parent())
                    .bind(encode(doc)?)
                    .execute(&mut **tx)
                    .await
                    .map_err(Self::doc_write_error)?;
                Ok(())
            }

            pub(crate) async fn insert_doc<T: Document>(&self, doc: &T, events: &[LogEvent]) -> Result<(), StoreError> {
                let mut tx = self.begin().await?;
                Self::write_new_doc(&mut tx, doc).await?;
                let routed = self.insert_events(&mut tx, events).await?;
                tx.commit().await?;
                self.after_commit(routed);
                Ok(())
            }

            pub(crate) async fn get_doc<T: Document>(&self, id: &str) -> Result<Option<T>, StoreError> {
                let row = sqlx::query("SELECT data FROM documents WHERE kind = $1 AND id = $2")
                    .bind(T::KIND)
                    .bind(id)
                    .fetch_optional(&self.read)
                    .await?;
                row.map(|r| decode(&r.try_get::<String, _>(0)?)).transpose()
            }

            pub(crate) async fn doc_by_lookup<T: Document>(&self, lookup: &str) -> Result<Option<T>, StoreError> {
                let row = sqlx::query("SELECT data FROM documents WHERE kind = $1 AND lookup = $2")
                    .bind(T::KIND)
                    .bind(lookup)
                    .fetch_optional(&self.read)
                    .await?;
                row.map(|r| decode(&r.try_get::<String, _>(0)?)).transpose()
            }

            pub(crate) async fn list_docs<T: Document>(&self, parent: Option<&str>, after_seq: i64, limit: i64) -> Result<Vec<(i64, T)>, StoreError> {
                let rows = match parent {
                    Some(p) => sqlx::query("SELECT seq, data FROM documents WHERE kind = $1 AND parent = $2 AND seq > $3 ORDER BY seq LIMIT $4")
                        .bind(T::KIND)
                        .bind(p)
                        .bind(after_seq)
                        .bind(limit)
                        .fetch_all(&self.read)
                        .await?,
                    None => sqlx::query("SELECT seq, data FROM documents WHERE kind = $1 AND seq > $2 ORDER BY seq LIMIT $3")
                        .bind(T::KIND)
                        .bind(after_seq)
                        .bind(limit)
                        .fetch_all(&self.read)
                        .await?,
                };
                rows.iter().map(|r| Ok((r.try_get::<i64, _>(0)?, decode(&r.try_get::<String, _>(1)?)?))).collect()
            }

            pub(crate) async fn count_docs<T: Document>(&self) -> Result<i64, StoreError> {
                let row = sqlx::query("SELECT COUNT(*) FROM documents WHERE kind = $1").bind(T::KIND).fetch_one(&self.read).await?;
                Ok(row.try_get::<i64, _>(0)?)
            }

            /// A document of kind `T` under the backend's row lock.
            async fn lock_typed_doc<T: Document>(tx: &mut sqlx::Transaction<'static, $db>, id: &str) -> Result<T, StoreError> {
                let row = sqlx::query(concat!("SELECT data FROM documents WHERE kind = $1 AND id = $2", $lock))
                    .bind(T::KIND)
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?;
                match row {
                    Some(r) => decode(&r.try_get::<String, _>(0)?),
                    None => Err(StoreError::NotFound),
                }
            }

            pub(crate) async fn update_doc<T, E, F>(&self, id: &str, f: F) -> Result<T, E>
            where
                T: Document + Clone,
                E: From<StoreError> + Send,
                F: FnOnce(T) -> Result<Option<Change<T>>, E> + Send,
            {
                let mut tx = self.begin().await?;
                let current: T = Self::lock_typed_doc(&mut tx, id).await?;
                let Some(change) = f(current.clone())? else {
                    return Ok(current);
                };
                sqlx::query("UPDATE documents SET name_lower = $3, lookup = $4, parent = $5, data = $6 WHERE kind = $1 AND id = $2")
                    .bind(T::KIND)
                    .bind(id)
                    .bind(change.value.doc_name().map(|n| n.to_lowercase()))
                    .bind(change.value.doc_lookup())
                    .bind(change.value.doc_parent())
                    .bind(encode(&change.value)?)
                    .execute(&mut **tx)
                    .await
                    .map_err(Self::doc_write_error)?;
                let routed = self.insert_events(&mut tx, &change.events).await?;
                tx.commit().await.map_err(StoreError::from)?;
                self.after_commit(routed);
                Ok(change.value)
            }

            pub(crate) async fn delete_doc<T, E, F>(&self, id: &str, f: F) -> Result<(), E>
            where
                T: Document,
                E: From<StoreError> + Send,
                F: FnOnce(&T) -> Result<Vec<LogEvent>, E> + Send,
            {
                let mut tx = self.begin().await?;
                let current: T = Self::lock_typed_doc(&mut tx, id).await?;
                let events = f(&current)?;
                sqlx::query("DELETE FROM documents WHERE kind = $1 AND id = $2")
                    .bind(T::KIND)
                    .bind(id)
                    .execute(&mut **tx)
                    .await
                    .map_err(StoreError::from)?;
                let routed = self.insert_events(&mut tx, &events).await?;
                tx.commit().await.map_err(StoreError::from)?;
                self.after_commit(routed);
                Ok(())
            }

            /// Users whose profile `email` is `email` (ignoring case), oldest first.
            pub(crate) async fn users_by_email(&self, email: &str, limit: i64) -> Result<Vec<User>, StoreError> {
                let rows = sqlx::query("SELECT data FROM users WHERE email_key = $1 ORDER BY seq LIMIT $2")
                    .bind(email.to_lowercase())
                    .bind(limit)
                    .fetch_all(&self.read)
                    .await?;
                rows.iter().map(|r| decode(&r.try_get::<String, _>(0)?)).collect()
            }

            /// Users whose profile `firstName` and `lastName` are these (ignoring case), oldest first.
            pub(crate) async fn users_by_name(&self, first: &str, last: &str, limit: i64) -> Result<Vec<User>, StoreError> {
                let rows = sqlx::query("SELECT data FROM users WHERE name_key = $1 ORDER BY seq LIMIT $2")
                    .bind(name_key_of(first, last))
                    .bind(limit)
                    .fetch_all(&self.read)
                    .await?;
                rows.iter().map(|r| decode(&r.try_get::<String, _>(0)?)).collect()
            }

            // ---- registration and policies ----

            // ---- user import ----

            pub(crate) async fn users_by_logins(&self, logins: &[String]) -> Result<Vec<User>, StoreError> {
                let mut out = Vec::with_capacity(logins.len());
                for chunk in logins.chunks(500) {
                    let mut b: QueryBuilder<$db> = QueryBuilder::new("SELECT data FROM users WHERE login_lower IN (");
                    let mut sep = b.separated(", ");
                    for l in chunk {
                        sep.push_bind(l.as_str());
                    }
                    b.push(")");
                    for r in b.build().fetch_all(&self.read).await? {
                        out.push(decode(&r.try_get::<String, _>(0)?)?);
                    }
                }
                Ok(out)
            }

            pub(crate) async fn write_import_batch<J, E, F>(&self, rows: &[ImportRow], job: Option<&J>, mut update: F) -> Result<(), E>
            where
                J: Document,
                E: From<StoreError> + Send,
                F: FnMut(usize, User) -> Result<Option<Change<User>>, E> + Send,
            {
                let mut tx = self.begin().await?;
                let mut events: Vec<LogEvent> = Vec::new();
                let mut creates: Vec<UserColumns> = Vec::new();
                for (i, row) in rows.iter().enumerate() {
                    events.extend(row.events.iter().cloned());
                    match &row.write {
                        RowWrite::Nothing => {}
                        RowWrite::Create(user) => creates.push(UserColumns::of(user)?),
                        RowWrite::Update(id) => {
                            let current: User = Self::lock_doc(&mut tx, concat!("SELECT data FROM users WHERE id = $1", $lock), id)
                                .await?
                                .ok_or(StoreError::NotFound)?;
                            if let Some(change) = update(i, current)? {
                                Self::write_user(&mut tx, &change.value).await?;
                                events.extend(change.events);
                            }
                        }
                    }
                }
                // New users in multi-row statements; a taken login fails the whole batch, which
                // the caller then retries row by row.
                for chunk in creates.chunks(200) {
                    let mut b: QueryBuilder<$db> =
                        QueryBuilder::new("INSERT INTO users (id, login_lower, status, last_updated, data, email_key, name_key) ");
                    b.push_values(chunk, |mut r, c| {
                        r.push_bind(c.id.as_str())
                            .push_bind(c.login_lower.as_str())
                            .push_bind(c.status)
                            .push_bind(c.last_updated)
                            .push_bind(c.data.as_str())
                            .push_bind(c.email_key.as_deref())
                            .push_bind(c.name_key.as_deref());
                    });
                    b.build()
                        .execute(&mut **tx)
                        .await
                        .map_err(|e| if unique_violation(&e) { StoreError::Conflict("login") } else { StoreError::from(e) })?;
                }
                if let Some(job) = job {
                    sqlx::query("UPDATE documents SET data = $3 WHERE kind = $1 AND id = $2")
                        .bind(J::KIND)
                        .bind(job.doc_id())
                        .bind(encode(job)?)
                        .execute(&mut **tx)
                        .await
                        .map_err(StoreError::from)?;
                }
                let routed = self.insert_events(&mut tx, &events).await?;
                tx.commit().await.map_err(StoreError::from)?;
                self.after_commit(routed);
                Ok(())
            }

            // ---- sign-in and sessions ----

            pub(crate) async fn user_by_login(&self, login: &str) -> Result<Option<User>, StoreError> {
                let row = sqlx::query("SELECT data FROM users WHERE login_lower = $1")
                    .bind(login.to_lowercase())
                    .fetch_optional(&self.read)
                    .await?;
                row.map(|r| decode(&r.try_get::<String, _>(0)?)).transpose()
            }

            pub(crate) async fn record_sign_in<R, E, F>(&self, user_id: &str, f: F) -> Result<(User, R), E>
            where
                R: Send,
                E: From<StoreError> + Send,
                F: FnOnce(User) -> Result<(SignInWrite, R), E> + Send,
            {
                let mut tx = self.begin().await?;
                let current: User = Self::lock_doc(&mut tx, concat!("SELECT data FROM users WHERE id = $1", $lock), user_id)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                let (write, verdict) = f(current.clone())?;
                let user = match write.user {
                    Some(user) => {
                        Self::write_user(&mut tx, &user).await?;
                        user
                    }
                    None => current,
                };
                if let Some(session) = &write.session {
                    Self::write_new_doc(&mut tx, session).await?;
                }
                let routed = self.insert_events(&mut tx, &write.events).await?;
                tx.commit().await.map_err(StoreError::from)?;
                self.after_commit(routed);
                Ok((user, verdict))
            }

            // ---- deliveries ----

            pub(crate) fn delivery_from_row(r: &$row) -> Result<Delivery, StoreError> {
                let status: String = r.try_get("status")?;
                let opt_ts = |v: Option<i64>| v.map(Timestamp);
                Ok(Delivery {
                    id: r.try_get("id")?,
                    hook_id: r.try_get("hook_id")?,
                    kind: r.try_get("kind")?,
                    status: DeliveryStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("delivery status {status}")))?,
                    attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                    event_count: u32::try_from(r.try_get::<i64, _>("event_count")?).unwrap_or(u32::MAX),
                    created: Timestamp(r.try_get("created")?),
                    event_time: Timestamp(r.try_get("event_time")?),
                    next_attempt_at: Timestamp(r.try_get("next_attempt_at")?),
                    last_attempt_at: opt_ts(r.try_get("last_attempt_at")?),
                    delivered_at: opt_ts(r.try_get("delivered_at")?),
                    last_status: r.try_get::<Option<i64>, _>("last_status")?.and_then(|v| u16::try_from(v).ok()),
                    last_error: r.try_get("last_error")?,
                })
            }


            pub(crate) async fn due_hooks(&self, now: i64) -> Result<(Vec<String>, Option<i64>), StoreError> {
                let rows = sqlx::query(
                    "SELECT d.hook_id, MIN(d.next_attempt_at) FROM deliveries d JOIN event_hooks h ON h.id = d.hook_id \
                     WHERE d.status = 'PENDING' AND h.receives = 1 AND (d.lease_until IS NULL OR d.lease_until < $1) \
                     GROUP BY d.hook_id",
                )
                .bind(now)
                .fetch_all(&self.work)
                .await?;
                let mut due = Vec::new();
                let mut next: Option<i64> = None;
                for r in rows {
                    let hook: String = r.try_get(0)?;
                    let at: i64 = r.try_get(1)?;
                    if at <= now {
                        due.push(hook);
                    } else {
                        next = Some(next.map_or(at, |n| n.min(at)));
                    }
                }
                Ok((due, next))
            }

            pub(crate) async fn release_leases(&self, node: &str) -> Result<u64, StoreError> {
                let mut tx = self.begin_work().await?;
                let done = sqlx::query("UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1 AND status = 'PENDING'")
                    .bind(node)
                    .execute(&mut **tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected())
            }

            pub(crate) async fn delivery_events(&self, delivery_id: &str) -> Result<Vec<Box<serde_json::value::RawValue>>, StoreError> {
                let rows = sqlx::query(
                    "SELECT l.data FROM outbox o JOIN log_events l ON l.seq = o.event_seq WHERE o.delivery_id = $1 ORDER BY o.seq",
                )
                .bind(delivery_id)
                .fetch_all(&self.work)
                .await?;
                rows.iter()
                    .map(|r| {
                        serde_json::value::RawValue::from_string(r.try_get::<String, _>(0)?)
                            .map_err(|e| StoreError::Corrupt(format!("event of delivery {delivery_id}: {e}")))
                    })
                    .collect()
            }

            pub(crate) async fn insert_test_delivery(&self, d: &Delivery, events: &[LogEvent]) -> Result<(), StoreError> {
                let mut tx = self.begin().await?;
                sqlx::query(
                    "INSERT INTO deliveries (id, hook_id, kind, status, attempts, event_count, created, event_time, next_attempt_at, inline_events) \
                     VALUES ($1, $2, $3, 'PENDING', 0, $4, $5, $6, $7, $8)",
                )
                .bind(&d.id)
                .bind(&d.hook_id)
                .bind(&d.kind)
                .bind(events.len() as i64)
                .bind(d.created.millis())
                .bind(d.event_time.millis())
                .bind(d.next_attempt_at.millis())
                .bind(encode(&events)?)
                .execute(&mut **tx)
                .await?;
                tx.commit().await?;
                self.after_commit(true);
                Ok(())
            }

            pub(crate) async fn list_deliveries(&self, hook_id: &str, status: Option<DeliveryStatus>, before_seq: i64, limit: i64) -> Result<Vec<(i64, Delivery)>, StoreError> {
                let mut b: QueryBuilder<$db> = QueryBuilder::new("SELECT * FROM deliveries WHERE hook_id = ");
                b.push_bind(hook_id.to_owned());
                if let Some(st) = status {
                    b.push(" AND status = ").push_bind(st.as_str());
                }
                if before_seq > 0 {
                    b.push(" AND seq < ").push_bind(before_seq);
                }
                b.push(" ORDER BY seq DESC LIMIT ").push_bind(limit);
                let rows = b.build().fetch_all(&self.read).await?;
                rows.iter().map(|r| Ok((r.try_get::<i64, _>("seq")?, Self::delivery_from_row(r)?))).collect()
            }

            pub(crate) async fn get_delivery(&self, hook_id: &str, id: &str) -> Result<Option<(Delivery, Vec<Attempt>)>, StoreError> {
                let Some(row) = sqlx::query("SELECT * FROM deliveries WHERE hook_id = $1 AND id = $2")
                    .bind(hook_id)
                    .bind(id)
                    .fetch_optional(&self.read)
                    .await?
                else {
                    return Ok(None);
                };
                let delivery = Self::delivery_from_row(&row)?;
                let rows = sqlx::query("SELECT * FROM delivery_attempts WHERE delivery_id = $1 ORDER BY seq").bind(id).fetch_all(&self.read).await?;
                let attempts = rows
                    .iter()
                    .map(|r| {
                        Ok(Attempt {
                            delivery_id: r.try_get("delivery_id")?,
                            hook_id: r.try_get("hook_id")?,
                            attempt: u32::try_from(r.try_get::<i64, _>("attempt")?).unwrap_or(u32::MAX),
                            started: Timestamp(r.try_get("started")?),
                            latency_ms: u64::try_from(r.try_get::<i64, _>("latency_ms")?).unwrap_or(0),
                            status_code: r.try_get::<Option<i64>, _>("status_code")?.and_then(|v| u16::try_from(v).ok()),
                            error: r.try_get("error")?,
                            response_snippet: r.try_get("response_snippet")?,
                            node: r.try_get("node")?,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                Ok(Some((delivery, attempts)))
            }

            pub(crate) async fn replay_deliveries(&self, hook_id: &str, id: Option<&str>, now: i64) -> Result<u64, StoreError> {
                let mut tx = self.begin().await?;
                let done = match id {
                    // A pending delivery is already queued (and may be on the wire): not replayed.
                    Some(id) => sqlx::query(
                        "UPDATE deliveries SET status = 'PENDING', attempts = 0, next_attempt_at = $3, lease_owner = NULL, lease_until = NULL, \
                         delivered_at = NULL, last_error = NULL WHERE hook_id = $1 AND id = $2 AND status <> 'PENDING'",
                    )
                    .bind(hook_id)
                    .bind(id)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?,
                    None => sqlx::query(
                        "UPDATE deliveries SET status = 'PENDING', attempts = 0, next_attempt_at = $2, lease_owner = NULL, lease_until = NULL, \
                         last_error = NULL WHERE hook_id = $1 AND status = 'DEAD'",
                    )
                    .bind(hook_id)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?,
                };
                tx.commit().await?;
                self.after_commit(done.rows_affected() > 0);
                Ok(done.rows_affected())
            }

            pub(crate) async fn backfill(&self, hook_id: &str, (since, until): (i64, i64), now: i64, resend: bool, matches: &(dyn Fn(&LogEvent) -> bool + Send + Sync)) -> Result<u64, StoreError> {
                let mut after = 0i64;
                let mut queued = 0u64;
                loop {
                    let rows = sqlx::query(
                        "SELECT seq, data FROM log_events WHERE published >= $1 AND published <= $2 AND seq > $3 ORDER BY seq LIMIT 500",
                    )
                    .bind(since)
                    .bind(until)
                    .bind(after)
                    .fetch_all(&self.read)
                    .await?;
                    if rows.is_empty() {
                        break;
                    }
                    let mut picked = Vec::new();
                    for r in &rows {
                        let seq: i64 = r.try_get(0)?;
                        after = seq;
                        let ev: LogEvent = decode(&r.try_get::<String, _>(1)?)?;
                        if matches(&ev) {
                            picked.push(seq);
                        }
                    }
                    if !picked.is_empty() {
                        let mut tx = self.begin().await?;
                        queued += Self::queue_backfill_page(&mut tx, hook_id, &picked, now, resend).await?;
                        tx.commit().await?;
                    }
                    if rows.len() < 500 {
                        break;
                    }
                }
                if queued > 0 {
                    self.queued_unformed();
                }
                self.after_commit(queued > 0);
                Ok(queued)
            }

            /// `DELETE FROM {target} IN (ids…)`, where `target` names the table and the column;
            /// returns the rows deleted.
            async fn delete_in(tx: &mut sqlx::Transaction<'static, $db>, target: &str, ids: &[String]) -> Result<u64, StoreError> {
                let mut b: QueryBuilder<$db> = QueryBuilder::new(format!("DELETE FROM {target} IN ("));
                let mut sep = b.separated(", ");
                for id in ids {
                    sep.push_bind(id.clone());
                }
                b.push(")");
                Ok(b.build().execute(&mut **tx).await?.rows_affected())
            }

            pub(crate) async fn purge(&self, delivered_before: i64, logs_before: i64) -> Result<(u64, u64), StoreError> {
                let mut deliveries = 0u64;
                loop {
                    let mut tx = self.begin_work().await?;
                    let ids = sqlx::query(concat!("SELECT id FROM deliveries WHERE status = 'DELIVERED' AND created < $1 LIMIT 1000", $skip))
                        .bind(delivered_before)
                        .fetch_all(&mut **tx)
                        .await?;
                    if ids.is_empty() {
                        tx.commit().await?;
                        break;
                    }
                    let ids = ids.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<Vec<_>, _>>()?;
                    // Locked above, so no replay can make them pending in between.
                    Self::delete_in(&mut tx, "delivery_attempts WHERE delivery_id", &ids).await?;
                    Self::delete_in(&mut tx, "outbox WHERE delivery_id", &ids).await?;
                    deliveries += Self::delete_in(&mut tx, "deliveries WHERE id", &ids).await?;
                    tx.commit().await?;
                }
                // Rows routed to a hook while it was being deleted (the writer's routing
                // predates the deletion): nothing will ever send them.
                let mut tx = self.begin_work().await?;
                sqlx::query("DELETE FROM outbox WHERE delivery_id IS NULL AND NOT EXISTS (SELECT 1 FROM event_hooks h WHERE h.id = outbox.hook_id)")
                    .execute(&mut **tx)
                    .await?;
                // On PostgreSQL such a write makes its deliveries too: pending ones of a hook that
                // is gone go the same way, with their rows (the ids are read first, so a delivery
                // written meanwhile is left whole for the next purge).
                let orphans = sqlx::query(
                    "SELECT d.id FROM deliveries d WHERE d.status = 'PENDING' \
                     AND NOT EXISTS (SELECT 1 FROM event_hooks h WHERE h.id = d.hook_id) LIMIT 1000",
                )
                .fetch_all(&mut **tx)
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>(0))
                .collect::<Result<Vec<_>, _>>()?;
                if !orphans.is_empty() {
                    Self::delete_in(&mut tx, "outbox WHERE delivery_id", &orphans).await?;
                    Self::delete_in(&mut tx, "deliveries WHERE id", &orphans).await?;
                    Self::delete_in(&mut tx, "delivery_attempts WHERE delivery_id", &orphans).await?;
                }
                tx.commit().await?;
                let mut events = 0u64;
                loop {
                    let mut tx = self.begin_work().await?;
                    let done = sqlx::query(
                        "DELETE FROM log_events WHERE seq IN (SELECT l.seq FROM log_events l WHERE l.published < $1 \
                         AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_seq = l.seq) LIMIT 5000)",
                    )
                    .bind(logs_before)
                    .execute(&mut **tx)
                    .await?;
                    tx.commit().await?;
                    events += done.rows_affected();
                    if done.rows_affected() < 5000 {
                        break;
                    }
                }
                Ok((deliveries, events))
            }

            pub(crate) async fn queue_stats(&self) -> Result<Vec<QueueStats>, StoreError> {
                let unformed = sqlx::query("SELECT hook_id, COUNT(*), MIN(created) FROM outbox WHERE delivery_id IS NULL GROUP BY hook_id")
                    .fetch_all(&self.work)
                    .await?;
                let pending = sqlx::query(
                    "SELECT hook_id, CAST(COALESCE(SUM(event_count), 0) AS BIGINT), MIN(created) FROM deliveries WHERE status = 'PENDING' GROUP BY hook_id",
                )
                .fetch_all(&self.work)
                .await?;
                let mut by_hook: std::collections::BTreeMap<String, QueueStats> = std::collections::BTreeMap::new();
                for row in unformed.iter().chain(&pending) {
                    let hook_id: String = row.try_get(0)?;
                    let q = by_hook.entry(hook_id.clone()).or_insert_with(|| QueueStats { hook_id, ..QueueStats::default() });
                    q.pending_events += row.try_get::<i64, _>(1)?;
                    let oldest: Option<i64> = row.try_get(2)?;
                    q.oldest_pending = [q.oldest_pending, oldest].into_iter().flatten().min();
                }
                Ok(by_hook.into_values().collect())
            }

            // ---- System Log ----

            pub(crate) async fn append_events(&self, events: &[LogEvent]) -> Result<(), StoreError> {
                let mut tx = self.begin().await?;
                let routed = self.insert_events(&mut tx, events).await?;
                tx.commit().await?;
                self.after_commit(routed);
                Ok(())
            }

            pub(crate) async fn count_events(&self, event_type: &str) -> Result<i64, StoreError> {
                let row = sqlx::query("SELECT COUNT(*) FROM log_events WHERE event_type = $1").bind(event_type).fetch_one(&self.read).await?;
                Ok(row.try_get::<i64, _>(0)?)
            }

            pub(crate) async fn list_logs(&self, q: &LogQuery) -> Result<Vec<(LogCursor, LogEvent)>, StoreError> {
                let by_tx: bool = $poll_by_tx;
                let tx_col = if by_tx { "CAST(CAST(tx_id AS TEXT) AS BIGINT)" } else { "0" };
                let mut b: QueryBuilder<$db> = QueryBuilder::new(format!("SELECT seq, data, published, {tx_col} AS txn FROM log_events WHERE "));
                if q.polling {
                    match q.after {
                        Some(LogCursor::Poll(txn, seq)) if by_tx => {
                            b.push("(tx_id, seq) > (CAST(CAST(").push_bind(txn).push(" AS TEXT) AS xid8), ").push_bind(seq).push(")");
                        }
                        Some(LogCursor::Poll(_, seq)) | Some(LogCursor::Published(_, seq)) => {
                            b.push("seq > ").push_bind(seq);
                        }
                        None => {
                            b.push("published >= ").push_bind(q.since);
                        }
                    }
                    if by_tx {
                        // Below the oldest running transaction nothing can still commit.
                        b.push(" AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY tx_id, seq LIMIT ");
                    } else {
                        b.push(" ORDER BY seq LIMIT ");
                    }
                    b.push_bind(q.limit);
                } else {
                    b.push("published >= ").push_bind(q.since);
                    b.push(" AND published <= ").push_bind(q.until);
                    let (cmp, order) = if q.descending { ("<", "DESC") } else { (">", "ASC") };
                    if let Some(LogCursor::Published(p, seq)) = q.after {
                        b.push(format!(" AND (published {cmp} ")).push_bind(p);
                        b.push(" OR (published = ").push_bind(p);
                        b.push(format!(" AND seq {cmp} ")).push_bind(seq);
                        b.push("))");
                    }
                    b.push(format!(" ORDER BY published {order}, seq {order} LIMIT ")).push_bind(q.limit);
                }
                let rows = b.build().fetch_all(&self.read).await?;
                rows.iter()
                    .map(|r| {
                        let seq: i64 = r.try_get(0)?;
                        let at = if q.polling { LogCursor::Poll(r.try_get(3)?, seq) } else { LogCursor::Published(r.try_get(2)?, seq) };
                        Ok((at, decode(&r.try_get::<String, _>(1)?)?))
                    })
                    .collect()
            }
        }
    };
}

/// The sqlx writes' event insert on SQLite (the writer thread has its own, `sqlite_hot.rs`).
impl SqliteBackend {
    /// Writes the events and, for each hook that receives one, an outbox row. Returns
    /// whether anything was routed (the caller wakes the dispatcher after commit).
    async fn insert_events(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        events: &[LogEvent],
    ) -> Result<bool, StoreError> {
        if events.is_empty() {
            return Ok(false);
        }
        let router = self.hooks.router.get();
        if let Some(router) = router {
            let row = sqlx::query("SELECT value FROM settings WHERE key = 'event_hooks_rev'")
                .fetch_optional(&mut **tx)
                .await?;
            let rev = match row {
                Some(r) => r.try_get::<String, _>(0)?.parse::<i64>().unwrap_or(0),
                None => 0,
            };
            if rev != router.revision() {
                let rows = sqlx::query("SELECT data FROM event_hooks WHERE receives = 1").fetch_all(&mut **tx).await?;
                let hooks =
                    rows.iter().map(|r| decode(&r.try_get::<String, _>(0)?)).collect::<Result<Vec<_>, StoreError>>()?;
                router.refresh(rev, hooks);
            }
        }
        let mut routed_any = false;
        // One multi-row statement per chunk: a write's events (an import batch holds
        // hundreds) cost one round trip, not one each.
        let mut rows: Vec<(&LogEvent, String, Vec<String>)> = Vec::with_capacity(events.len());
        for ev in events {
            let targets = router.map(|r| r.route(ev)).unwrap_or_default();
            let data = routed_json(ev, &targets)?;
            rows.push((ev, data, targets));
        }
        for chunk in rows.chunks(500) {
            let mut b: QueryBuilder<sqlx::Sqlite> =
                QueryBuilder::new("INSERT INTO log_events (uuid, published, event_type, data) ");
            b.push_values(chunk, |mut r, (ev, data, _)| {
                r.push_bind(ev.uuid.as_str())
                    .push_bind(ev.published.millis())
                    .push_bind(ev.event_type.as_str())
                    .push_bind(data.as_str());
            });
            if chunk.iter().all(|(_, _, t)| t.is_empty()) {
                b.build().execute(&mut **tx).await?;
                continue;
            }
            b.push(" RETURNING uuid, seq");
            let returned = b.build().fetch_all(&mut **tx).await?;
            let mut seq_of = std::collections::HashMap::with_capacity(returned.len());
            for r in &returned {
                seq_of.insert(r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?);
            }
            let mut outbox: Vec<(&str, i64, i64)> = Vec::new();
            for (ev, _, targets) in chunk {
                let seq = *seq_of
                    .get(&ev.uuid)
                    .ok_or_else(|| StoreError::Corrupt(format!("no seq for event {}", ev.uuid)))?;
                for hook_id in targets {
                    outbox.push((hook_id.as_str(), seq, ev.published.millis()));
                }
            }
            for part in outbox.chunks(500) {
                let mut ob: QueryBuilder<sqlx::Sqlite> =
                    QueryBuilder::new("INSERT INTO outbox (hook_id, event_seq, created) ");
                ob.push_values(part, |mut r, (hook_id, seq, created)| {
                    r.push_bind(*hook_id).push_bind(*seq).push_bind(*created);
                });
                ob.build().execute(&mut **tx).await?;
                routed_any = true;
            }
        }
        Ok(routed_any)
    }
}

/// User rows a batch of changes writes, as columns (see `pg_batch.rs`).
#[derive(Debug, Default)]
pub(crate) struct UserRows {
    pub ids: Vec<String>,
    pub logins: Vec<String>,
    pub statuses: Vec<&'static str>,
    pub updated: Vec<i64>,
    pub data: Vec<String>,
    pub emails: Vec<Option<String>>,
    pub names: Vec<Option<String>>,
}

impl UserRows {
    pub(crate) fn push(&mut self, c: UserColumns) {
        self.ids.push(c.id);
        self.logins.push(c.login_lower);
        self.statuses.push(c.status);
        self.updated.push(c.last_updated);
        self.data.push(c.data);
        self.emails.push(c.email_key);
        self.names.push(c.name_key);
    }
}

/// Events as the columns of a PostgreSQL insert over `unnest`, with one (event uuid, hook id)
/// pair per outbox row `router` routes, and a slot for each delivery those rows could fill.
pub(crate) struct EventRows<'a> {
    pub uuids: Vec<&'a str>,
    pub published: Vec<i64>,
    pub types: Vec<&'a str>,
    pub data: Vec<String>,
    pub routed_uuid: Vec<&'a str>,
    pub routed_hook: Vec<String>,
    /// Delivery slots: per hook, one per [`MAX_EVENTS_PER_DELIVERY`](crate::MAX_EVENTS_PER_DELIVERY)
    /// routed rows or part of it (`slot_chunks` counts from 0), each with the delivery's id
    /// and, when this node's engine reserved room for it, its lease end. A statement that
    /// writes only some of the events uses fewer.
    pub slot_ids: Vec<String>,
    pub slot_hooks: Vec<String>,
    pub slot_chunks: Vec<i64>,
    pub slot_leases: Vec<Option<i64>>,
    /// When the deliveries are made (ms): they are due at once.
    pub now: i64,
    /// Who holds the reservations (empty: no one).
    intake: Option<Arc<dyn crate::Intake>>,
    node: String,
}

impl EventRows<'_> {
    /// Binds the rows as parameters `$1`…`$6` of a statement, and `tag` (the wake-up's
    /// payload) as `$7`.
    pub(crate) fn bind<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
        tag: &'q str,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q.bind(&self.uuids)
            .bind(&self.published)
            .bind(&self.types)
            .bind(&self.data)
            .bind(&self.routed_uuid)
            .bind(&self.routed_hook)
            .bind(tag)
    }

    /// Binds the seven parameters [`pg_deliveries_sql!`] names, after the statement's others.
    pub(crate) fn bind_deliveries<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q.bind(&self.slot_ids)
            .bind(&self.slot_hooks)
            .bind(&self.slot_chunks)
            .bind(&self.slot_leases)
            .bind(self.now)
            .bind(crate::MAX_EVENTS_PER_DELIVERY)
            .bind(&self.node)
    }

    /// Reserves room with this node's engine for the slots' deliveries, when the events were
    /// routed by hooks revision `rev`. What the statement does not use is given back by
    /// [`EventRows::settle`] (or when the rows are dropped unsettled).
    pub(crate) fn reserve(&mut self, hooks: &HookRuntime, rev: i64) {
        let Some(intake) = hooks.intake.get() else { return };
        for (hook, lease) in self.slot_hooks.iter().zip(self.slot_leases.iter_mut()) {
            *lease = intake.reserve(hook, rev, self.now);
        }
        if self.slot_leases.iter().any(Option::is_some) {
            self.node = intake.node().to_owned();
            self.intake = Some(intake.clone());
        }
    }

    /// After the statement ran: gives back the reservations it did not use and returns the
    /// deliveries it wrote leased to this node (`ids`/`uuids`: one pair per event, in order),
    /// to hand over once the write is committed.
    pub(crate) fn settle(&mut self, ids: &[String], uuids: &[String]) -> Result<Handover, StoreError> {
        let Some(intake) = self.intake.take() else { return Ok(Handover::default()) };
        let handed = self.handed(ids, uuids);
        let used = handed.as_ref().map(|(_, used)| used.as_slice()).unwrap_or_default();
        for (slot, lease) in self.slot_leases.iter().enumerate() {
            if lease.is_some() && !used.get(slot).copied().unwrap_or(false) {
                intake.release(&self.slot_hooks[slot]);
            }
        }
        let (claimed, _) = handed?;
        Ok(Handover { intake: (!claimed.is_empty()).then_some(intake), claimed })
    }

    /// The deliveries `ids`/`uuids` name, with their events, and which slots they used.
    /// The event texts move into the deliveries (the statement is done with them); an event
    /// several deliveries take is copied for all but the last.
    fn handed(&mut self, ids: &[String], uuids: &[String]) -> Result<(Vec<Claimed>, Vec<bool>), StoreError> {
        let mut raws: Vec<Option<Box<serde_json::value::RawValue>>> = vec![None; self.data.len()];
        let mut uses = vec![0usize; self.data.len()];
        for uuid in uuids {
            if let Some(k) = self.uuids.iter().position(|u| u == uuid) {
                uses[k] += 1;
            }
        }
        let mut claimed: Vec<Claimed> = Vec::new();
        let mut used = vec![false; self.slot_ids.len()];
        for (id, uuid) in ids.iter().zip(uuids) {
            if claimed.last().is_none_or(|c| c.delivery.id != *id) {
                let slot = self
                    .slot_ids
                    .iter()
                    .position(|s| s == id)
                    .filter(|&k| self.slot_leases[k].is_some() && !used[k])
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("delivery {id} was written leased without a reservation"))
                    })?;
                used[slot] = true;
                claimed.push(handed_claim(id.clone(), self.slot_hooks[slot].clone(), self.now, Vec::new()));
            }
            let event = self.uuids.iter().position(|u| u == uuid).ok_or_else(|| {
                StoreError::Corrupt(format!("delivery {id} holds event {uuid}, which the write did not carry"))
            })?;
            if raws[event].is_none() {
                let raw = serde_json::value::RawValue::from_string(std::mem::take(&mut self.data[event]))
                    .map_err(|e| StoreError::Corrupt(format!("event {uuid}: {e}")))?;
                raws[event] = Some(raw);
            }
            uses[event] -= 1;
            // The last delivery to take the event takes the text itself.
            let raw = if uses[event] == 0 { raws[event].take() } else { raws[event].clone() }
                .ok_or_else(|| StoreError::Corrupt(format!("event {uuid} taken twice")))?;
            if let Some(c) = claimed.last_mut() {
                c.delivery.event_count += 1;
                c.stored_events.get_or_insert_with(Vec::new).push(raw);
            }
        }
        Ok((claimed, used))
    }
}

impl Drop for EventRows<'_> {
    /// Rows dropped unsettled (the statement failed): every reservation goes back.
    fn drop(&mut self) {
        if let Some(intake) = self.intake.take() {
            for (hook, lease) in self.slot_hooks.iter().zip(&self.slot_leases) {
                if lease.is_some() {
                    intake.release(hook);
                }
            }
        }
    }
}

/// Deliveries a statement wrote leased to this node, for its engine once the write is
/// committed. Dropped without [`Handover::give`] (the commit failed), their slots go back; a
/// delivery written all the same is leased again when its lease ends.
#[derive(Default)]
pub(crate) struct Handover {
    intake: Option<Arc<dyn crate::Intake>>,
    claimed: Vec<Claimed>,
}

impl Handover {
    pub(crate) fn give(mut self) {
        if let Some(intake) = self.intake.take() {
            intake.hand_over(std::mem::take(&mut self.claimed));
        }
    }
}

impl Drop for Handover {
    fn drop(&mut self) {
        if let Some(intake) = self.intake.take() {
            for c in &self.claimed {
                intake.release(&c.delivery.hook_id);
            }
        }
    }
}

/// A delivery a write just made and leased to this node, with its events, as handed over.
pub(crate) fn handed_claim(
    id: String,
    hook_id: String,
    now: i64,
    events: Vec<Box<serde_json::value::RawValue>>,
) -> Claimed {
    let at = Timestamp(now);
    Claimed {
        delivery: Delivery {
            id,
            hook_id,
            kind: "event".into(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            event_count: u32::try_from(events.len()).unwrap_or(u32::MAX),
            created: at,
            event_time: at,
            next_attempt_at: at,
            last_attempt_at: None,
            delivered_at: None,
            last_status: None,
            last_error: None,
        },
        inline_events: None,
        stored_events: Some(events),
    }
}

/// Slots reserved one by one while deliveries are formed (SQLite's group end): given back when
/// dropped (forming failed), or they become a [`Handover`] of the deliveries they hold.
pub(crate) struct Reserved {
    intake: Arc<dyn crate::Intake>,
    hooks: Vec<String>,
}

impl Reserved {
    pub(crate) fn new(intake: Arc<dyn crate::Intake>) -> Reserved {
        Reserved { intake, hooks: Vec::new() }
    }

    /// Notes a slot of `hook_id` that `intake` reserved.
    pub(crate) fn hold(&mut self, hook_id: &str) {
        self.hooks.push(hook_id.to_owned());
    }

    /// The handover of `claimed`, one delivery per slot held.
    pub(crate) fn into_handover(mut self, claimed: Vec<Claimed>) -> Handover {
        debug_assert_eq!(claimed.len(), self.hooks.len());
        self.hooks.clear();
        Handover { intake: (!claimed.is_empty()).then(|| self.intake.clone()), claimed }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        for hook in &self.hooks {
            self.intake.release(hook);
        }
    }
}

/// The part of a PostgreSQL write statement that queues the events of CTE `e` (`seq`, `uuid`,
/// `published`): each routed pair (`$5`, `$6`) becomes an outbox row already in a delivery of
/// up to `$size` events, and the deliveries are written with them, due at `$now`. Each
/// (hook, chunk) takes its id and lease end from the slots (`$ids`, `$hooks`, `$chunks`,
/// `$leases`; see [`EventRows::bind_deliveries`]); a leased one is leased to `$node`, and CTE
/// `hd` names its events. The dispatcher has nothing to form for such writes. Defines CTEs
/// `ro`, `sl`, `gr`, `dl`, `o` (one row per outbox row) and `hd`.
macro_rules! pg_deliveries_sql {
    ($ids:literal, $hooks:literal, $chunks:literal, $leases:literal, $now:literal, $size:literal, $node:literal) => {
        concat!(
            "ro AS (SELECT t.hook_id, t.uuid, e.seq, e.published, \
               (row_number() OVER (PARTITION BY t.hook_id ORDER BY e.seq) - 1) / ", $size, "::bigint AS chunk \
               FROM e JOIN unnest($5::text[], $6::text[]) AS t (uuid, hook_id) ON t.uuid = e.uuid), \
             sl AS (SELECT * FROM unnest(", $ids, "::text[], ", $hooks, "::text[], ", $chunks, "::bigint[], ", $leases, "::bigint[]) \
               AS sl (id, hook_id, chunk, lease_until)), \
             gr AS (SELECT g.hook_id, g.chunk, g.n, sl.id, sl.lease_until \
               FROM (SELECT hook_id, chunk, count(*) AS n FROM ro GROUP BY hook_id, chunk) g \
               LEFT JOIN sl ON sl.hook_id = g.hook_id AND sl.chunk = g.chunk), \
             dl AS (INSERT INTO deliveries (id, hook_id, kind, status, attempts, event_count, created, event_time, \
               next_attempt_at, lease_owner, lease_until) \
               SELECT gr.id, gr.hook_id, 'event', 'PENDING', 0, gr.n, ", $now, "::bigint, ", $now, "::bigint, ", $now, "::bigint, \
               CASE WHEN gr.lease_until IS NOT NULL THEN ", $node, "::text END, gr.lease_until FROM gr \
               ORDER BY gr.hook_id, gr.chunk RETURNING 1), \
             o AS (INSERT INTO outbox (hook_id, event_seq, created, delivery_id) \
               SELECT ro.hook_id, ro.seq, ro.published, gr.id \
               FROM ro JOIN gr ON gr.hook_id = ro.hook_id AND gr.chunk = ro.chunk ORDER BY ro.seq RETURNING 1), \
             hd AS (SELECT gr.id, ro.uuid, ro.seq FROM ro JOIN gr ON gr.hook_id = ro.hook_id AND gr.chunk = ro.chunk \
               WHERE gr.lease_until IS NOT NULL)"
        )
    };
}
pub(crate) use pg_deliveries_sql;

pub(crate) fn event_rows<'a>(
    router: Option<&dyn EventRouter>,
    events: &'a [LogEvent],
) -> Result<EventRows<'a>, StoreError> {
    let mut rows = EventRows {
        uuids: Vec::with_capacity(events.len()),
        published: Vec::with_capacity(events.len()),
        types: Vec::with_capacity(events.len()),
        data: Vec::with_capacity(events.len()),
        routed_uuid: Vec::new(),
        routed_hook: Vec::new(),
        slot_ids: Vec::new(),
        slot_hooks: Vec::new(),
        slot_chunks: Vec::new(),
        slot_leases: Vec::new(),
        now: Timestamp::now().millis(),
        intake: None,
        node: String::new(),
    };
    for ev in events {
        let targets = router.map(|r| r.route(ev)).unwrap_or_default();
        rows.data.push(routed_json(ev, &targets)?);
        for hook_id in targets {
            rows.routed_uuid.push(ev.uuid.as_str());
            rows.routed_hook.push(hook_id);
        }
        rows.uuids.push(ev.uuid.as_str());
        rows.published.push(ev.published.millis());
        rows.types.push(ev.event_type.as_str());
    }
    let mut per_hook: Vec<(&str, i64)> = Vec::new();
    for hook in &rows.routed_hook {
        match per_hook.iter_mut().find(|(h, _)| *h == hook.as_str()) {
            Some((_, n)) => *n += 1,
            None => per_hook.push((hook.as_str(), 1)),
        }
    }
    for (hook, n) in per_hook {
        for chunk in 0..(n + crate::MAX_EVENTS_PER_DELIVERY - 1) / crate::MAX_EVENTS_PER_DELIVERY {
            rows.slot_ids.push(haken_core::log_event::new_uuid());
            rows.slot_hooks.push(hook.to_owned());
            rows.slot_chunks.push(chunk);
            rows.slot_leases.push(None);
        }
    }
    Ok(rows)
}

/// PostgreSQL's event insert: the events, their deliveries and the wake-up for other nodes in
/// one statement, so a write costs the same round trips however many events it carries.
impl PgBackend {
    /// The hooks revision as stored (0 before any hook).
    async fn hooks_rev(tx: &mut sqlx::Transaction<'static, sqlx::Postgres>) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT value FROM settings WHERE key = 'event_hooks_rev'").fetch_optional(&mut **tx).await?;
        Ok(match row {
            Some(r) => r.try_get::<String, _>(0)?.parse::<i64>().unwrap_or(0),
            None => 0,
        })
    }

    async fn insert_events(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        events: &[LogEvent],
    ) -> Result<bool, StoreError> {
        if events.is_empty() || self.hooks.router.get().is_none() {
            return Ok(Self::insert_events_at(&self.hooks, tx, events, None, None, false).await?.0);
        }
        let rev = Self::hooks_rev(tx).await?;
        Ok(Self::insert_events_at(&self.hooks, tx, events, Some(rev), None, false).await?.0)
    }

    /// [`PgBackend::insert_events`] with the hooks revision already read in this transaction.
    /// With `users`, the same statement also writes those user rows (a batch of changes).
    /// With `hand_over`, deliveries for hooks this node's engine has room for are written leased
    /// to it and returned, for [`Handover::give`] after the commit. The flag returned says
    /// whether deliveries were made that were not handed over (other nodes are woken for those
    /// only).
    pub(crate) async fn insert_events_at(
        hooks: &HookRuntime,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        events: &[LogEvent],
        rev: Option<i64>,
        users: Option<UserRows>,
        hand_over: bool,
    ) -> Result<(bool, Handover), StoreError> {
        if events.is_empty() && users.is_none() {
            return Ok((false, Handover::default()));
        }
        let router = hooks.router.get();
        if let (Some(router), Some(rev)) = (router, rev)
            && rev != router.revision()
        {
            let rows = sqlx::query("SELECT data FROM event_hooks WHERE receives = 1").fetch_all(&mut **tx).await?;
            let hooks =
                rows.iter().map(|r| decode(&r.try_get::<String, _>(0)?)).collect::<Result<Vec<_>, StoreError>>()?;
            router.refresh(rev, hooks);
        }
        let mut ev = event_rows(router.map(|r| r.as_ref()), events)?;
        if let (true, Some(rev)) = (hand_over, rev) {
            ev.reserve(hooks, rev);
        }
        // Rows go in in array order, so `seq` follows the events' order.
        macro_rules! events_sql {
            ($ids:literal, $hooks:literal, $chunks:literal, $leases:literal, $now:literal, $size:literal, $node:literal) => {
                concat!(
                    "e AS (INSERT INTO log_events (uuid, published, event_type, data) \
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) RETURNING seq, uuid, published), ",
                    pg_deliveries_sql!($ids, $hooks, $chunks, $leases, $now, $size, $node),
                    " SELECT n - h, CASE WHEN n > h THEN (SELECT count(*) FROM pg_notify('haken_outbox', $7)) END, \
                     ARRAY(SELECT id FROM hd ORDER BY id, seq), ARRAY(SELECT uuid FROM hd ORDER BY id, seq) \
                     FROM (SELECT count(*) AS n, (SELECT count(*) FROM hd) AS h FROM o) c"
                )
            };
        }
        let sql = if users.is_some() {
            concat!(
                "WITH u AS (UPDATE users SET login_lower = v.login_lower, status = v.status, \
               last_updated = v.last_updated, data = v.data, email_key = v.email_key, name_key = v.name_key \
               FROM unnest($8::text[], $9::text[], $10::text[], $11::bigint[], $12::text[], $13::text[], $14::text[]) \
               AS v (id, login_lower, status, last_updated, data, email_key, name_key) \
               WHERE users.id = v.id RETURNING 1), ",
                events_sql!("$15", "$16", "$17", "$18", "$19", "$20", "$21")
            )
        } else {
            concat!("WITH ", events_sql!("$8", "$9", "$10", "$11", "$12", "$13", "$14"))
        };
        let q = ev.bind(sqlx::query(sql), hooks.tag.0.as_str());
        let q = match users {
            Some(u) => {
                q.bind(u.ids).bind(u.logins).bind(u.statuses).bind(u.updated).bind(u.data).bind(u.emails).bind(u.names)
            }
            None => q,
        };
        let q = ev.bind_deliveries(q);
        let row = q.fetch_one(&mut **tx).await?;
        // Routed: deliveries were made that were not handed over, for a round to lease.
        let routed = row.try_get::<i64, _>(0)? > 0;
        let handed: (Vec<String>, Vec<String>) = (row.try_get(2)?, row.try_get(3)?);
        Ok((routed, ev.settle(&handed.0, &handed.1)?))
    }
}

/// Logs attempt `a` of a delivery that still exists (PostgreSQL). The key share lock on the
/// delivery lets a delete under way finish first, so a removed delivery takes no orphan row.
async fn log_attempt<'e, X>(ex: X, a: &Attempt) -> Result<(), StoreError>
where
    X: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    sqlx::query(
        "INSERT INTO delivery_attempts (delivery_id, hook_id, attempt, started, latency_ms, status_code, error, response_snippet, node) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 FROM deliveries WHERE id = $1 FOR KEY SHARE",
    )
    .bind(&a.delivery_id)
    .bind(&a.hook_id)
    .bind(i64::from(a.attempt))
    .bind(a.started.millis())
    .bind(i64::try_from(a.latency_ms).unwrap_or(i64::MAX))
    .bind(a.status_code.map(i64::from))
    .bind(&a.error)
    .bind(&a.response_snippet)
    .bind(&a.node)
    .execute(ex)
    .await?;
    Ok(())
}

/// The writes that SQLite runs on its writer thread instead (see `sqlite_hot.rs`), in their
/// async form for PostgreSQL.
macro_rules! async_writes {
    ($backend:ty, $db:ty, for_update = $lock:literal, skip_locked = $skip:literal) => {
        impl $backend {
            pub(crate) async fn insert_user(&self, user: &User, group_ids: &[String], events: &[LogEvent]) -> Result<(), StoreError> {
                let mut tx = self.begin().await?;
                let insert = sqlx::query(
                    "INSERT INTO users (id, login_lower, status, last_updated, data, email_key, name_key) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                );
                crate::bind_user!(insert, UserColumns::of(user)?)
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| if unique_violation(&e) { StoreError::Conflict("login") } else { e.into() })?;
                for gid in group_ids {
                    let added = sqlx::query(
                        "INSERT INTO group_members (group_id, user_id, added) SELECT id, $2, $3 FROM groups WHERE id = $1 ON CONFLICT DO NOTHING",
                    )
                    .bind(gid)
                    .bind(&user.id)
                    .bind(user.created.millis())
                    .execute(&mut **tx)
                    .await?;
                    if added.rows_affected() == 0 {
                        let exists = sqlx::query("SELECT 1 FROM groups WHERE id = $1").bind(gid).fetch_optional(&mut **tx).await?;
                        if exists.is_none() {
                            return Err(StoreError::MissingReference(gid.clone()));
                        }
                    }
                }
                let routed = self.insert_events(&mut tx, events).await?;
                tx.commit().await?;
                self.after_commit(routed);
                Ok(())
            }


            pub(crate) async fn delete_user<E, F>(&self, id: &str, f: F) -> Result<(), E>
            where
                E: From<StoreError> + Send,
                F: FnOnce(&User) -> Result<Vec<LogEvent>, E> + Send,
            {
                let mut tx = self.begin().await?;
                let user: User = Self::lock_doc(&mut tx, concat!("SELECT data FROM users WHERE id = $1", $lock), id)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                let events = f(&user)?;
                sqlx::query("DELETE FROM group_members WHERE user_id = $1").bind(id).execute(&mut **tx).await.map_err(StoreError::from)?;
                sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(&mut **tx).await.map_err(StoreError::from)?;
                let routed = self.insert_events(&mut tx, &events).await?;
                tx.commit().await.map_err(StoreError::from)?;
                self.after_commit(routed);
                Ok(())
            }

            pub(crate) async fn finish_attempt(&self, a: &Attempt, outcome: &AttemptOutcome, events: &[LogEvent], stop_hook: Option<&str>) -> Result<bool, StoreError> {
                let done_at = a.started.millis() + i64::try_from(a.latency_ms).unwrap_or(0);
                let (status, next, delivered, error) = match outcome {
                    AttemptOutcome::Delivered => ("DELIVERED", done_at, Some(done_at), None),
                    AttemptOutcome::Retry { at } => ("PENDING", at.millis(), None, a.error.clone()),
                    AttemptOutcome::Dead { reason } => ("DEAD", done_at, None, Some(reason.clone())),
                };
                if events.is_empty() && stop_hook.is_none() {
                    // The common case (delivered, or a retry): one statement, atomic on its
                    // own, records the outcome and the attempt if this node still holds the
                    // lease — no transaction around it.
                    let row = sqlx::query(
                        "WITH d AS (UPDATE deliveries SET status = $2, attempts = attempts + 1, next_attempt_at = $3, delivered_at = $4, \
                         last_attempt_at = $5, last_status = $6, last_error = $7, lease_owner = NULL, lease_until = NULL \
                         WHERE id = $1 AND status = 'PENDING' AND lease_owner = $8 RETURNING id), \
                         i AS (INSERT INTO delivery_attempts (delivery_id, hook_id, attempt, started, latency_ms, status_code, error, response_snippet, node) \
                         SELECT d.id, $9, $10, $5, $11, $6, $12, $13, $8 FROM d RETURNING 1) \
                         SELECT count(*) FROM i",
                    )
                    .bind(&a.delivery_id)
                    .bind(status)
                    .bind(next)
                    .bind(delivered)
                    .bind(a.started.millis())
                    .bind(a.status_code.map(i64::from))
                    .bind(error)
                    .bind(&a.node)
                    .bind(&a.hook_id)
                    .bind(i64::from(a.attempt))
                    .bind(i64::try_from(a.latency_ms).unwrap_or(i64::MAX))
                    .bind(&a.error)
                    .bind(&a.response_snippet)
                    .fetch_one(&self.work)
                    .await?;
                    if row.try_get::<i64, _>(0)? > 0 {
                        return Ok(true);
                    }
                    // The lease was lost: the attempt still went out and is logged.
                    log_attempt(&self.work, a).await?;
                    return Ok(false);
                }
                let mut tx = self.begin_work().await?;
                // A hook to deactivate is locked first, in the order a hook delete takes its
                // rows (hook, then deliveries): the two cannot deadlock.
                let stopping: Option<EventHook> = match stop_hook {
                    Some(hook_id) => Self::lock_doc(&mut tx, concat!("SELECT data FROM event_hooks WHERE id = $1", $lock), hook_id).await?,
                    None => None,
                };
                // Every attempt that went out is in the log.
                log_attempt(&mut **tx, a).await?;
                // Only the lease holder records the outcome: a node whose lease expired (and was
                // taken over, or cleared by a replay) must not overwrite what happened since.
                let updated = sqlx::query(
                    "UPDATE deliveries SET status = $2, attempts = attempts + 1, next_attempt_at = $3, delivered_at = $4, \
                     last_attempt_at = $5, last_status = $6, last_error = $7, lease_owner = NULL, lease_until = NULL \
                     WHERE id = $1 AND status = 'PENDING' AND lease_owner = $8",
                )
                .bind(&a.delivery_id)
                .bind(status)
                .bind(next)
                .bind(delivered)
                .bind(a.started.millis())
                .bind(a.status_code.map(i64::from))
                .bind(error)
                .bind(&a.node)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    tx.commit().await?;
                    return Ok(false);
                }
                if let Some(mut hook) = stopping {
                    // Deactivate the hook as it is now (not the copy the sender held).
                    hook.status = haken_core::hook::HookStatus::Inactive;
                    hook.last_updated = Timestamp(done_at);
                    self.write_event_hook(&mut tx, &hook).await?;
                }
                let routed = self.insert_events(&mut tx, events).await?;
                tx.commit().await?;
                self.after_commit(routed);
                Ok(true)
            }
        }
    };
}

backend_impl!(
    SqliteBackend,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    for_update = "",
    skip_locked = "",
    poll_by_tx = false
);
backend_impl!(
    PgBackend,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    for_update = " FOR UPDATE",
    skip_locked = " FOR UPDATE SKIP LOCKED",
    // Concurrent writers commit out of `seq` order; polling readers page by (transaction id,
    // seq) below the oldest running transaction instead, which no later commit can precede.
    poll_by_tx = true
);
async_writes!(PgBackend, sqlx::Postgres, for_update = " FOR UPDATE", skip_locked = " FOR UPDATE SKIP LOCKED");
