//! Throw-away PostgreSQL databases for tests and benchmarks: each run gets its own database
//! on the server, so runs never see each other's rows.

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};

use crate::StoreError;

/// Creates a fresh database on the server of `admin_url` and returns its URL.
pub async fn create_database(admin_url: &str, prefix: &str) -> Result<String, StoreError> {
    let name = format!("{prefix}_{}", haken_core::id::random_base62(12).to_lowercase());
    let mut conn = PgConnection::connect(admin_url).await?;
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).await?;
    conn.close().await?;
    Ok(replace_database(admin_url, &name))
}

/// Drops a database made by [`create_database`] (closing other sessions on it first).
pub async fn drop_database(admin_url: &str, url: &str) -> Result<(), StoreError> {
    let name = url.rsplit('/').next().unwrap_or_default().split('?').next().unwrap_or_default().to_owned();
    if name.is_empty() || name.contains('"') {
        return Err(StoreError::BadUrl(crate::redact_url(url)));
    }
    let mut conn = PgConnection::connect(admin_url).await?;
    conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))).await?;
    conn.close().await?;
    Ok(())
}

/// Process ids of the server sessions connected to the database of `url` (other than the one
/// asking): what a benchmark reads to tell PostgreSQL's CPU time from the server's.
pub async fn session_pids(url: &str) -> Result<Vec<i32>, StoreError> {
    let mut conn = PgConnection::connect(url).await?;
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut conn)
    .await?;
    conn.close().await?;
    Ok(pids)
}

/// `url` with its database name replaced.
pub fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = &base[scheme_end..];
    let server = match host_part.find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

/// True when a PostgreSQL server answers at `url`.
pub async fn reachable(url: &str) -> bool {
    match tokio::time::timeout(std::time::Duration::from_secs(3), PgConnection::connect(url)).await {
        Ok(Ok(c)) => {
            let _ = c.close().await;
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_database_names() {
        use super::replace_database as r;
        assert_eq!(r("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
        assert_eq!(r("postgres://u@h/db?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(r("postgres://h", "x"), "postgres://h/x");
    }
}
