//! `haken bench …`: measurements that print figures, run against a real server started in
//! this process on 127.0.0.1, with a baseline measured in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use haken_server::ServerConfig;
use haken_server::config::Secret;
use serde_json::json;

mod events;
mod import;
mod inline;

pub use events::EventsBench;
pub use import::ImportBench;
pub use inline::InlineBench;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// API write throughput: profile updates per second (each with its System Log event).
    Api(ApiBench),
    /// Event delivery end to end: API changes in, events out at a receiver on 127.0.0.1.
    Events(EventsBench),
    /// Inline hooks: what the engine and each flow add on top of a trivial handler's round trip.
    Inline(InlineBench),
    /// User import at scale through a trivial import hook: users/s and the server's peak memory.
    Import(ImportBench),
}

#[derive(Debug, clap::Args)]
pub struct ApiBench {
    /// Store to measure: sqlite, postgres, or both.
    #[arg(long, default_value = "both")]
    backend: String,
    /// PostgreSQL server to create a scratch database on.
    #[arg(long, env = "HAKEN_BENCH_PG_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Api(a) => api(a).await,
        BenchCommand::Events(e) => events::run(e).await,
        BenchCommand::Inline(i) => inline::run(i).await,
        BenchCommand::Import(i) => import::run(i).await,
    }
}

/// A `haken serve` child process (so its CPU time and memory can be read alone); killed when
/// dropped.
pub(crate) struct Server {
    pub(crate) child: std::process::Child,
    pub(crate) base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts this binary's `serve` on a free port of 127.0.0.1 with `token` as its API token, and
/// waits until it answers `/healthz`.
pub(crate) async fn start_server(dir: &std::path::Path, db: Option<&str>, token: &str) -> anyhow::Result<Server> {
    use std::process::{Command, Stdio};
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let exe = std::env::current_exe().context("finding the haken binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--insecure-hooks"])
        .arg("--data-dir")
        .arg(dir)
        .args(["--rate-limit-per-minute", &u32::MAX.to_string()])
        .env("HAKEN_BOOTSTRAP_TOKEN", token)
        .env("HAKEN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(url) = db {
        cmd.args(["--database-url", url]);
    }
    let server =
        Server { child: cmd.spawn().context("starting haken serve")?, base: format!("http://127.0.0.1:{port}") };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http.get(format!("{}/healthz", server.base)).send().await.is_ok_and(|r| r.status().is_success()) {
        anyhow::ensure!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(server)
}

pub(crate) struct Figures {
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

impl Figures {
    pub(crate) fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Runs `clients` loops for `seconds`, each calling `op(client_index, iteration)`.
pub(crate) async fn drive<F, Fut>(clients: usize, seconds: u64, op: F) -> Figures
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                if op(c, i).await {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors += 1;
                }
                i += 1;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    let elapsed = started.elapsed();
    all.sort_by(|a, b| a.total_cmp(b));
    Figures { ops: all.len() as u64, errors, elapsed, p50_ms: percentile(&all, 0.5), p99_ms: percentile(&all, 0.99) }
}

async fn api(args: ApiBench) -> anyhow::Result<()> {
    let backends: Vec<&str> = match args.backend.as_str() {
        "both" => vec!["sqlite", "postgres"],
        "sqlite" => vec!["sqlite"],
        "postgres" => vec!["postgres"],
        other => anyhow::bail!("unknown backend {other}: use sqlite, postgres or both"),
    };
    let mut summary = Vec::new();
    for backend in backends {
        let dir = std::env::temp_dir().join(format!("haken-bench-{}", haken_core::id::random_base62(8)));
        let (db_url, scratch) = match backend {
            "postgres" => {
                let url =
                    haken_store::scratch::create_database(&args.pg_url, "haken_bench").await.with_context(|| {
                        format!("creating a scratch database on {}", haken_store::redact_url(&args.pg_url))
                    })?;
                (Some(url.clone()), Some(url))
            }
            _ => (None, None),
        };
        let token = format!("bench-{}", haken_core::id::random_base62(24));
        let cfg = ServerConfig {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.clone(),
            database_url: db_url.map(Secret::new),
            bootstrap_token: Some(Secret::new(token.clone())),
            rate_limit_per_minute: u32::MAX,
            ..ServerConfig::default()
        };
        let server = haken_server::start(cfg).await?;
        let base = server.public_url.clone();
        let client = reqwest::Client::builder().pool_max_idle_per_host(args.clients * 2).build()?;
        let auth = format!("SSWS {token}");

        // One user per client, so clients do not queue on each other's rows.
        let mut ids = Vec::new();
        for i in 0..args.clients {
            let login = format!("bench{i}@example.org");
            let resp = client
                .post(format!("{base}/api/v1/users?activate=false"))
                .header("Authorization", &auth)
                .json(&json!({ "profile": { "login": login, "email": login, "firstName": "Bench", "lastName": format!("User{i}") } }))
                .send()
                .await?;
            let body: serde_json::Value = resp.json().await?;
            ids.push(body["id"].as_str().unwrap_or_default().to_owned());
        }
        let ids = Arc::new(ids);

        // Baseline: the lightest request through the same stack and connection pool.
        let (c, b) = (client.clone(), base.clone());
        let baseline = drive(args.clients, args.seconds, move |_, _| {
            let (c, b) = (c.clone(), b.clone());
            async move { c.get(format!("{b}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;

        let before = server.store.count_events("user.account.update_profile").await?;
        let (c, b, a) = (client.clone(), base.clone(), auth.clone());
        let writes = drive(args.clients, args.seconds, move |ci, i| {
            let (c, b, a, ids) = (c.clone(), b.clone(), a.clone(), ids.clone());
            async move {
                let id = &ids[ci];
                c.post(format!("{b}/api/v1/users/{id}"))
                    .header("Authorization", a)
                    .json(&json!({ "profile": { "nickName": format!("n{i}") } }))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        let after = server.store.count_events("user.account.update_profile").await?;
        server.shutdown().await?;
        if let Some(url) = scratch {
            let _ = haken_store::scratch::drop_database(&args.pg_url, &url).await;
        }
        let _ = std::fs::remove_dir_all(&dir);

        let ratio = writes.rate() / baseline.rate().max(1e-9);
        println!(
            "{backend}: {} profile updates in {:.1} s = {:.0} updates/s (p50 {:.2} ms, p99 {:.2} ms, {} errors, {} events written)",
            writes.ops,
            writes.elapsed.as_secs_f64(),
            writes.rate(),
            writes.p50_ms,
            writes.p99_ms,
            writes.errors,
            after - before
        );
        println!(
            "{backend}: baseline GET /healthz {:.0} req/s (p50 {:.2} ms); writes reach {:.2} of the baseline rate",
            baseline.rate(),
            baseline.p50_ms,
            ratio
        );
        anyhow::ensure!(
            after - before >= writes.ops as i64,
            "fewer events than successful updates: the write path lost events"
        );
        summary.push(format!(
            "{backend}_updates/s={:.0} {backend}_p50_ms={:.2} {backend}_p99_ms={:.2} {backend}_baseline_req/s={:.0} {backend}_ratio={:.3}",
            writes.rate(),
            writes.p50_ms,
            writes.p99_ms,
            baseline.rate(),
            ratio
        ));
    }
    println!("clients={} seconds={} {}", args.clients, args.seconds, summary.join(" "));
    Ok(())
}
