//! The two backends. Their SQL is the same text (both accept `$n` placeholders), so one macro
//! writes both implementations; what differs (connecting, taking the write lock, row locks,
//! the polling horizon) is passed in or written per backend below.

use std::str::FromStr;

use haken_core::token::ApiToken;
use haken_core::{Group, LogEvent, User};
use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row};

use crate::{Change, LogCursor, LogQuery, StoreError, StoreOptions, UserQuery, decode, encode};

/// Embedded SQLite: a one-connection pool serialises writers (so commit order is `seq` order
/// and no transaction ever waits on a lock upgrade); readers use their own pool under WAL.
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    write: SqlitePool,
    read: SqlitePool,
}

/// PostgreSQL, shared by any number of nodes.
#[derive(Debug, Clone)]
pub struct PgBackend {
    write: PgPool,
    read: PgPool,
}

impl SqliteBackend {
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
            .connect_with(base.read_only(true))
            .await?;
        Ok(SqliteBackend { write, read })
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        // IMMEDIATE takes the write lock up front, so another process (the CLI) writing at
        // the same time waits on busy_timeout instead of failing mid-transaction.
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }

    pub(crate) async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

impl PgBackend {
    pub(crate) async fn connect(opts: &StoreOptions) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(2))
            .acquire_timeout(opts.acquire_timeout)
            .connect(&opts.url)
            .await?;
        // Several nodes may start at once: one applies the migrations, the others wait.
        let mut conn = pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock(727274001)").execute(&mut *conn).await?;
        let migrated = sqlx::migrate!("./migrations/postgres").run(&mut *conn).await;
        sqlx::query("SELECT pg_advisory_unlock(727274001)").execute(&mut *conn).await?;
        migrated?;
        drop(conn);
        Ok(PgBackend { write: pool.clone(), read: pool })
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        Ok(self.write.begin().await?)
    }

    pub(crate) async fn close(&self) {
        self.write.close().await;
    }
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

macro_rules! backend_impl {
    ($backend:ty, $db:ty, for_update = $lock:literal, polling_horizon = $horizon:literal) => {
        impl $backend {
            async fn insert_events(tx: &mut sqlx::Transaction<'static, $db>, events: &[LogEvent]) -> Result<(), StoreError> {
                for ev in events {
                    sqlx::query("INSERT INTO log_events (uuid, published, event_type, data) VALUES ($1, $2, $3, $4)")
                        .bind(&ev.uuid)
                        .bind(ev.published.millis())
                        .bind(&ev.event_type)
                        .bind(encode(ev)?)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
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
                    .fetch_optional(&mut *tx)
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
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from)?;
                Self::insert_events(&mut tx, &change.events).await?;
                tx.commit().await.map_err(StoreError::from)?;
                Ok(change.value)
            }

            pub(crate) async fn insert_token(&self, token: &ApiToken, events: &[LogEvent]) -> Result<(), StoreError> {
                let mut tx = self.begin().await?;
                sqlx::query("INSERT INTO api_tokens (id, token_hash, data) VALUES ($1, $2, $3)")
                    .bind(&token.id)
                    .bind(&token.token_hash)
                    .bind(encode(token)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| if unique_violation(&e) { StoreError::Conflict("token") } else { e.into() })?;
                Self::insert_events(&mut tx, events).await?;
                tx.commit().await?;
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
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Self::insert_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(())
            }

            pub(crate) async fn insert_user(&self, user: &User, group_ids: &[String], events: &[LogEvent]) -> Result<(), StoreError> {
                let mut tx = self.begin().await?;
                sqlx::query("INSERT INTO users (id, login_lower, status, last_updated, data) VALUES ($1, $2, $3, $4, $5)")
                    .bind(&user.id)
                    .bind(user.login().to_lowercase())
                    .bind(user.status.as_str())
                    .bind(user.last_updated.millis())
                    .bind(encode(user)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| if unique_violation(&e) { StoreError::Conflict("login") } else { e.into() })?;
                for gid in group_ids {
                    let added = sqlx::query(
                        "INSERT INTO group_members (group_id, user_id, added) SELECT id, $2, $3 FROM groups WHERE id = $1 ON CONFLICT DO NOTHING",
                    )
                    .bind(gid)
                    .bind(&user.id)
                    .bind(user.created.millis())
                    .execute(&mut *tx)
                    .await?;
                    if added.rows_affected() == 0 {
                        let exists = sqlx::query("SELECT 1 FROM groups WHERE id = $1").bind(gid).fetch_optional(&mut *tx).await?;
                        if exists.is_none() {
                            return Err(StoreError::MissingReference(gid.clone()));
                        }
                    }
                }
                Self::insert_events(&mut tx, events).await?;
                tx.commit().await?;
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

            pub(crate) async fn update_user<E, F>(&self, id: &str, f: F) -> Result<User, E>
            where
                E: From<StoreError> + Send,
                F: FnOnce(User) -> Result<Option<Change<User>>, E> + Send,
            {
                let mut tx = self.begin().await?;
                let row = sqlx::query(concat!("SELECT data FROM users WHERE id = $1", $lock))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::from)?
                    .ok_or(StoreError::NotFound)?;
                let current: User = decode(&row.try_get::<String, _>(0).map_err(StoreError::from)?)?;
                let Some(change) = f(current.clone())? else {
                    return Ok(current);
                };
                let user = change.value;
                sqlx::query("UPDATE users SET login_lower = $2, status = $3, last_updated = $4, data = $5 WHERE id = $1")
                    .bind(&user.id)
                    .bind(user.login().to_lowercase())
                    .bind(user.status.as_str())
                    .bind(user.last_updated.millis())
                    .bind(encode(&user)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| if unique_violation(&e) { StoreError::Conflict("login") } else { StoreError::from(e) })?;
                Self::insert_events(&mut tx, &change.events).await?;
                tx.commit().await.map_err(StoreError::from)?;
                Ok(user)
            }

            pub(crate) async fn delete_user<E, F>(&self, id: &str, f: F) -> Result<(), E>
            where
                E: From<StoreError> + Send,
                F: FnOnce(&User) -> Result<Vec<LogEvent>, E> + Send,
            {
                let mut tx = self.begin().await?;
                let row = sqlx::query(concat!("SELECT data FROM users WHERE id = $1", $lock))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::from)?
                    .ok_or(StoreError::NotFound)?;
                let user: User = decode(&row.try_get::<String, _>(0).map_err(StoreError::from)?)?;
                let events = f(&user)?;
                sqlx::query("DELETE FROM group_members WHERE user_id = $1").bind(id).execute(&mut *tx).await.map_err(StoreError::from)?;
                sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(&mut *tx).await.map_err(StoreError::from)?;
                Self::insert_events(&mut tx, &events).await?;
                tx.commit().await.map_err(StoreError::from)?;
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
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| if unique_violation(&e) { StoreError::Conflict("name") } else { e.into() })?;
                Self::insert_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(())
            }

            pub(crate) async fn get_group(&self, id: &str) -> Result<Option<Group>, StoreError> {
                let row = sqlx::query("SELECT data FROM groups WHERE id = $1").bind(id).fetch_optional(&self.read).await?;
                row.map(|r| decode(&r.try_get::<String, _>(0)?)).transpose()
            }

            async fn lock_group(tx: &mut sqlx::Transaction<'static, $db>, id: &str) -> Result<Group, StoreError> {
                let row = sqlx::query(concat!("SELECT data FROM groups WHERE id = $1", $lock))
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                decode(&row.try_get::<String, _>(0)?)
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
                Self::insert_events(&mut tx, &change.events).await?;
                tx.commit().await.map_err(StoreError::from)?;
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
                sqlx::query("DELETE FROM group_members WHERE group_id = $1").bind(id).execute(&mut *tx).await.map_err(StoreError::from)?;
                sqlx::query("DELETE FROM groups WHERE id = $1").bind(id).execute(&mut *tx).await.map_err(StoreError::from)?;
                Self::insert_events(&mut tx, &events).await?;
                tx.commit().await.map_err(StoreError::from)?;
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
                let row = sqlx::query(concat!("SELECT data FROM users WHERE id = $1", $lock))
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or_else(|| StoreError::MissingReference(id.to_owned()))?;
                decode(&row.try_get::<String, _>(0)?)
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
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| if foreign_key_violation(&e) { StoreError::NotFound } else { e.into() })?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                let events = f(&group, &user)?;
                group.last_membership_updated = haken_core::Timestamp(now);
                Self::write_group(&mut tx, &group).await?;
                Self::insert_events(&mut tx, &events).await?;
                tx.commit().await.map_err(StoreError::from)?;
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
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from)?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                let events = f(&group, &user)?;
                group.last_membership_updated = haken_core::Timestamp(now);
                Self::write_group(&mut tx, &group).await?;
                Self::insert_events(&mut tx, &events).await?;
                tx.commit().await.map_err(StoreError::from)?;
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

            pub(crate) async fn append_events(&self, events: &[LogEvent]) -> Result<(), StoreError> {
                let mut tx = self.begin().await?;
                Self::insert_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(())
            }

            pub(crate) async fn count_events(&self, event_type: &str) -> Result<i64, StoreError> {
                let row = sqlx::query("SELECT COUNT(*) FROM log_events WHERE event_type = $1").bind(event_type).fetch_one(&self.read).await?;
                Ok(row.try_get::<i64, _>(0)?)
            }

            pub(crate) async fn list_logs(&self, q: &LogQuery) -> Result<Vec<(i64, LogEvent)>, StoreError> {
                let mut b: QueryBuilder<$db> = QueryBuilder::new("SELECT seq, data FROM log_events WHERE ");
                if q.polling {
                    match q.after {
                        Some(LogCursor::Seq(seq)) | Some(LogCursor::Published(_, seq)) => {
                            b.push("seq > ").push_bind(seq);
                        }
                        None => {
                            b.push("published >= ").push_bind(q.since);
                        }
                    }
                    b.push($horizon);
                    b.push(" ORDER BY seq LIMIT ").push_bind(q.limit);
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
                rows.iter().map(|r| Ok((r.try_get::<i64, _>(0)?, decode(&r.try_get::<String, _>(1)?)?))).collect()
            }
        }
    };
}

backend_impl!(SqliteBackend, sqlx::Sqlite, for_update = "", polling_horizon = "");
backend_impl!(
    PgBackend,
    sqlx::Postgres,
    for_update = " FOR UPDATE",
    polling_horizon = " AND tx_id < pg_snapshot_xmin(pg_current_snapshot())"
);
