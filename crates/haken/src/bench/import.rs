//! `haken bench import`: user import at scale. A Haken server runs as a child process (so its
//! peak memory can be read alone) with an app whose user import hook is a trivial handler on
//! 127.0.0.1 (it answers 204: keep the default action). Generated CSV files of 10,000 and then
//! `--rows` users are imported through the API; the figures are users per second and the
//! server's peak RSS (`VmHWM`) after each, to show that memory does not grow with the file.
//! The big file is then imported again, which must create no user.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::start_server;
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct ImportBench {
    /// Rows of the big file.
    #[arg(long, default_value_t = 100_000)]
    rows: u64,
    /// Store to measure: sqlite or postgres.
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// PostgreSQL server to create a scratch database on.
    #[arg(long, env = "HAKEN_BENCH_PG_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
}

/// Peak resident memory of a process in MiB (`VmHWM` of `/proc/<pid>/status`).
fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Writes a CSV of `rows` users whose logins start with `prefix`.
fn write_csv(path: &std::path::Path, prefix: &str, rows: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "userName,email,firstName,lastName,title,department,employeeNumber")?;
    for i in 0..rows {
        writeln!(
            f,
            "{prefix}{i}@example.org,{prefix}{i}@example.org,First{i},Last{i},Engineer,Dept{},E{i:07}",
            i % 17
        )?;
    }
    f.flush()?;
    Ok(())
}

struct Client {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl Client {
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await?;
        anyhow::ensure!(status.is_success(), "POST {path} answered {status}: {v}");
        Ok(v)
    }

    /// Imports the file and waits for the job; returns the job and the wall time.
    async fn import(&self, app_id: &str, path: &std::path::Path) -> anyhow::Result<(Value, Duration)> {
        let file = tokio::fs::File::open(path).await?;
        let len = file.metadata().await?.len();
        let started = Instant::now();
        let r = self
            .http
            .post(format!("{}/api/v1/apps/{app_id}/imports", self.base))
            .header("Authorization", &self.auth)
            .header("Content-Type", "text/csv")
            .header("Content-Length", len)
            .body(reqwest::Body::from(file))
            .send()
            .await?;
        let status = r.status();
        let mut job: Value = r.json().await?;
        anyhow::ensure!(status.as_u16() == 202, "the upload answered {status}: {job}");
        let url = format!("{}/api/v1/apps/{app_id}/imports/{}", self.base, job["id"].as_str().unwrap_or_default());
        while job["status"] == "RUNNING" {
            tokio::time::sleep(Duration::from_millis(100)).await;
            job = self.http.get(&url).header("Authorization", &self.auth).send().await?.json().await?;
        }
        anyhow::ensure!(job["status"] == "COMPLETED", "the import did not complete: {job}");
        Ok((job, started.elapsed()))
    }
}

pub async fn run(args: ImportBench) -> anyhow::Result<()> {
    anyhow::ensure!(args.rows >= 1, "--rows must be at least 1");
    // The trivial hook: 204, keep the default action.
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let hook = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/hook", listener.local_addr()?);
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let hook_task = tokio::spawn(async move { axum::serve(listener, hook).await });

    let dir = std::env::temp_dir().join(format!("haken-bench-import-{}", haken_core::id::random_base62(8)));
    std::fs::create_dir_all(&dir)?;
    let scratch = match args.backend.as_str() {
        "postgres" => Some(haken_store::scratch::create_database(&args.pg_url, "haken_bench").await?),
        "sqlite" => None,
        other => anyhow::bail!("unknown backend {other}: use sqlite or postgres"),
    };
    let token = format!("bench-{}", haken_core::id::random_base62(24));
    let server = start_server(&dir.join("data"), scratch.as_deref(), &token).await?;
    let pid = server.child.id();
    let client = Client { http: reqwest::Client::new(), base: server.base.clone(), auth: format!("SSWS {token}") };

    let hook = client
        .post(
            "/api/v1/inlineHooks",
            json!({ "name": "bench import", "type": "com.okta.import.transform", "version": "1.0.0",
                    "channel": { "type": "HTTP", "version": "1.0.0", "config": { "uri": hook_url } } }),
        )
        .await?;
    let app = client
        .post(
            "/api/v1/apps",
            json!({ "name": "haken_import", "label": "Bench source", "signOnMode": "BOOKMARK",
                    "settings": { "import": { "inlineHookId": hook["id"], "matching": ["LOGIN"] } } }),
        )
        .await?;
    let app_id = app["id"].as_str().unwrap_or_default().to_owned();
    let rss_start = peak_rss_mb(pid).unwrap_or(0.0);

    let small_rows = args.rows.min(10_000);
    let small = dir.join("small.csv");
    write_csv(&small, "s", small_rows)?;
    let (job, t) = client.import(&app_id, &small).await?;
    let rss_small = peak_rss_mb(pid).unwrap_or(0.0);
    println!(
        "{small_rows} rows: created {} in {:.1} s = {:.0} users/s; server peak RSS {rss_small:.1} MiB (at start {rss_start:.1})",
        job["counts"]["created"],
        t.as_secs_f64(),
        small_rows as f64 / t.as_secs_f64()
    );

    let big = dir.join("big.csv");
    write_csv(&big, "u", args.rows)?;
    let (job, t) = client.import(&app_id, &big).await?;
    let rate = args.rows as f64 / t.as_secs_f64();
    let rss_big = peak_rss_mb(pid).unwrap_or(0.0);
    let created = job["counts"]["created"].as_u64().unwrap_or(0);
    println!(
        "{} rows: created {created} in {:.1} s = {rate:.0} users/s; server peak RSS {rss_big:.1} MiB",
        args.rows,
        t.as_secs_f64()
    );
    anyhow::ensure!(created == args.rows, "not every row was created: {job}");

    let (again, t2) = client.import(&app_id, &big).await?;
    let rerun_created = again["counts"]["created"].as_u64().unwrap_or(u64::MAX);
    println!(
        "re-run of {} rows: created {rerun_created}, skipped {} in {:.1} s = {:.0} rows/s; server peak RSS {:.1} MiB; hook calls {}",
        args.rows,
        again["counts"]["skipped"],
        t2.as_secs_f64(),
        args.rows as f64 / t2.as_secs_f64(),
        peak_rss_mb(pid).unwrap_or(0.0),
        calls.load(Ordering::Relaxed)
    );
    drop(server);
    hook_task.abort();
    if let Some(url) = scratch {
        let _ = haken_store::scratch::drop_database(&args.pg_url, &url).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "backend={} rows={} users/s={rate:.0} rss_mb_10k={rss_small:.1} rss_mb={rss_big:.1} rerun_created={rerun_created} rerun_rows/s={:.0}",
        args.backend,
        args.rows,
        args.rows as f64 / t2.as_secs_f64()
    );
    Ok(())
}
