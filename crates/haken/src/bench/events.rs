//! `haken bench events`: end-to-end event delivery. A Haken server runs as a child process
//! (so its CPU time can be read alone) on SQLite or a scratch PostgreSQL database; a receiver
//! on 127.0.0.1 records when each event arrives; clients make real API changes (profile
//! updates, one `user.account.update_profile` event each). In the same run, a plain HTTP
//! client measures the raw request rate the same receiver reaches: the baseline.

use axum::serve::ListenerExt as _;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::{drive, percentile, start_server};

#[derive(Debug, clap::Args)]
pub struct EventsBench {
    /// Store to measure: sqlite, postgres, or both.
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// PostgreSQL server to create a scratch database on.
    #[arg(long, env = "HAKEN_BENCH_PG_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
    /// Concurrent API clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Pace the changes at this many per second (for latency at a fixed rate); 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Requests in flight per hook (the hook's delivery.maxInFlight).
    #[arg(long, default_value_t = 8)]
    max_in_flight: u32,
}

#[derive(Default)]
struct Arrivals {
    /// uuid → (published ms, received ms)
    events: HashMap<String, (i64, i64)>,
    duplicates: u64,
}

#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    data: EnvelopeData<'a>,
}

#[derive(serde::Deserialize)]
struct EnvelopeData<'a> {
    #[serde(borrow)]
    events: Vec<ReceivedEvent<'a>>,
}

#[derive(serde::Deserialize)]
struct ReceivedEvent<'a> {
    #[serde(borrow)]
    uuid: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    published: std::borrow::Cow<'a, str>,
}

#[derive(Clone)]
struct Rx {
    arrivals: Arc<Mutex<Arrivals>>,
    requests: Arc<AtomicU64>,
}

async fn receive(State(rx): State<Rx>, headers: HeaderMap, body: axum::body::Bytes) -> (StatusCode, HeaderMap, String) {
    rx.requests.fetch_add(1, Ordering::Relaxed);
    let now = haken_core::Timestamp::now().millis();
    if let Some(c) = headers.get("x-okta-verification-challenge").and_then(|v| v.to_str().ok()) {
        return (StatusCode::OK, HeaderMap::new(), json!({ "verification": c }).to_string());
    }
    // Only the two fields the bench needs are read (the rest is skipped, not built into a
    // tree): the receiver shares the machine with the server it measures.
    if let Ok(b) = serde_json::from_slice::<Envelope<'_>>(&body)
        && let Ok(mut a) = rx.arrivals.lock()
    {
        for e in b.data.events {
            let published = haken_core::Timestamp::parse(&e.published).map_or(now, |t| t.millis());
            if a.events.insert(e.uuid.into_owned(), (published, now)).is_some() {
                a.duplicates += 1;
            }
        }
    }
    (StatusCode::OK, HeaderMap::new(), String::new())
}

/// CPU time (user + system) of a process, in milliseconds.
fn cpu_ms(pid: u32) -> Option<f64> {
    stat_cpu_ms(format!("/proc/{pid}/stat"))
}

/// CPU time of a process's threads by thread name (threads of one name summed), in ms.
fn thread_cpu_ms(pid: u32) -> HashMap<String, f64> {
    let mut by_name = HashMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let dir = task.path();
        let (Ok(name), Some(ms)) = (std::fs::read_to_string(dir.join("comm")), stat_cpu_ms(dir.join("stat"))) else {
            continue;
        };
        *by_name.entry(name.trim().to_owned()).or_insert(0.0) += ms;
    }
    by_name
}

/// Where the CPU time between two [`thread_cpu_ms`] readings went, largest share first.
fn thread_shares(before: &HashMap<String, f64>, after: &HashMap<String, f64>) -> String {
    let mut spent: Vec<(&str, f64)> = after
        .iter()
        .map(|(k, v)| (k.as_str(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    let total: f64 = spent.iter().map(|(_, d)| d).sum();
    spent.sort_by(|a, b| b.1.total_cmp(&a.1));
    spent.iter().map(|(k, d)| format!("{k} {:.0}%", 100.0 * d / total.max(1e-9))).collect::<Vec<_>>().join(", ")
}

/// CPU time (user + system) in a `/proc` `stat` file, in milliseconds.
fn stat_cpu_ms(path: impl AsRef<std::path::Path>) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Linux reports clock ticks; USER_HZ is 100 on every mainstream configuration.
    Some((utime + stime) * 10.0)
}

/// CPU time of the PostgreSQL sessions serving the scratch database (the server's pool
/// connections), in ms; `None` unless PostgreSQL runs on this machine and its processes can be
/// read.
async fn db_cpu_ms(url: &str) -> Option<f64> {
    let pids = haken_store::scratch::session_pids(url).await.ok()?;
    let mut total = 0.0;
    for pid in pids {
        total += cpu_ms(u32::try_from(pid).ok()?)?;
    }
    Some(total)
}

pub async fn run(args: EventsBench) -> anyhow::Result<()> {
    let backends: Vec<&str> = match args.backend.as_str() {
        "both" => vec!["sqlite", "postgres"],
        "sqlite" => vec!["sqlite"],
        "postgres" => vec!["postgres"],
        other => anyhow::bail!("unknown backend {other}: use sqlite, postgres or both"),
    };
    let mut lines = Vec::new();
    for backend in backends {
        lines.push(run_one(&args, backend).await?);
    }
    for l in &lines {
        println!("{l}");
    }
    Ok(())
}

async fn run_one(args: &EventsBench, backend: &str) -> anyhow::Result<String> {
    // The receiver.
    let rx = Rx { arrivals: Arc::default(), requests: Arc::default() };
    let app = axum::Router::new().route("/hook", axum::routing::any(receive)).with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let rx_url = format!("http://{}/hook", listener.local_addr()?);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let rx_task = tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = std::env::temp_dir().join(format!("haken-bench-events-{}", haken_core::id::random_base62(8)));
    std::fs::create_dir_all(&dir)?;
    let scratch = match backend {
        "postgres" => Some(haken_store::scratch::create_database(&args.pg_url, "haken_bench").await?),
        _ => None,
    };
    let token = format!("bench-{}", haken_core::id::random_base62(24));
    let server = start_server(&dir, scratch.as_deref(), &token).await?;
    let base = server.base.clone();
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency * 2).build()?;
    let auth = format!("SSWS {token}");

    // Baseline: a plain client posting a small JSON body to the same receiver.
    let (c, u) = (client.clone(), rx_url.clone());
    let baseline = drive(args.concurrency, args.seconds.min(5), move |_, i| {
        let (c, u) = (c.clone(), u.clone());
        async move {
            c.post(u)
                .json(&json!({ "data": { "events": [] }, "n": i }))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;

    // The hook and one user per client.
    let hook = client
        .post(format!("{base}/api/v1/eventHooks"))
        .header("Authorization", &auth)
        .json(&json!({
            "name": "bench",
            "events": { "type": "EVENT_TYPE", "items": ["user.account.update_profile"], "filter": null },
            "channel": { "type": "HTTP", "version": "1.0.0", "config": { "uri": rx_url, "headers": [] } },
            "delivery": { "retryPolicy": "durable", "maxInFlight": args.max_in_flight }
        }))
        .send()
        .await?
        .json::<Value>()
        .await?;
    let hook_id = hook["id"].as_str().context("hook created")?.to_owned();
    let v = client
        .post(format!("{base}/api/v1/eventHooks/{hook_id}/lifecycle/verify"))
        .header("Authorization", &auth)
        .send()
        .await?;
    anyhow::ensure!(v.status().is_success(), "verification failed: {}", v.text().await.unwrap_or_default());
    let mut ids = Vec::new();
    for i in 0..args.concurrency {
        let login = format!("bench{i}@example.org");
        let u: Value = client
            .post(format!("{base}/api/v1/users?activate=false"))
            .header("Authorization", &auth)
            .json(&json!({ "profile": { "login": login, "email": login, "firstName": "Bench", "lastName": format!("U{i}") } }))
            .send()
            .await?
            .json()
            .await?;
        ids.push(u["id"].as_str().context("user created")?.to_owned());
    }
    let ids = Arc::new(ids);
    if let Ok(mut a) = rx.arrivals.lock() {
        *a = Arrivals::default();
    }
    let requests_before = rx.requests.load(Ordering::Relaxed);

    // The load.
    let db_cpu_before = match &scratch {
        Some(url) => db_cpu_ms(url).await,
        None => None,
    };
    let cpu_before = cpu_ms(server.child.id()).unwrap_or(0.0);
    let threads_before = thread_cpu_ms(server.child.id());
    let started = Instant::now();
    let per_client_interval =
        (args.rate > 0).then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate as f64));
    let (c, b, a) = (client.clone(), base.clone(), auth.clone());
    let concurrency = args.concurrency;
    // Response times of the API changes alone (the pacing sleep is not part of them).
    let responses: Arc<Mutex<Vec<f64>>> = Arc::default();
    let r = responses.clone();
    let writes = drive(args.concurrency, args.seconds, move |ci, i| {
        let (c, b, a, ids, r) = (c.clone(), b.clone(), a.clone(), ids.clone(), r.clone());
        async move {
            // Paced clients start spread over one interval, so the rate is even rather than
            // a burst of every client at once each interval.
            if let (Some(iv), 0) = (per_client_interval, i) {
                tokio::time::sleep(iv.mul_f64(ci as f64 / concurrency as f64)).await;
            }
            let t = Instant::now();
            let ok = c
                .post(format!("{b}/api/v1/users/{}", ids[ci]))
                .header("Authorization", a)
                .json(&json!({ "profile": { "nickName": format!("n{i}") } }))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if let Ok(mut r) = r.lock() {
                r.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            if let Some(iv) = per_client_interval {
                tokio::time::sleep(iv.saturating_sub(t.elapsed())).await;
            }
            ok
        }
    })
    .await;
    let expected = writes.ops as usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = rx.arrivals.lock().map(|a| a.events.len()).unwrap_or(0);
        if got >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = started.elapsed();
    let deliveries = rx.requests.load(Ordering::Relaxed) - requests_before;
    let cpu_after = cpu_ms(server.child.id()).unwrap_or(0.0);
    let threads = thread_shares(&threads_before, &thread_cpu_ms(server.child.id()));
    let db_cpu_after = match &scratch {
        Some(url) => db_cpu_ms(url).await,
        None => None,
    };
    let (received, dups, mut latencies) = match rx.arrivals.lock() {
        Ok(a) => (a.events.len(), a.duplicates, a.events.values().map(|(p, r)| (r - p) as f64).collect::<Vec<f64>>()),
        Err(_) => (0, 0, Vec::new()),
    };
    latencies.sort_by(|x, y| x.total_cmp(y));
    let mut responses = responses.lock().map(|r| r.clone()).unwrap_or_default();
    responses.sort_by(|x, y| x.total_cmp(y));
    drop(server);
    rx_task.abort();
    if let Some(url) = scratch {
        let _ = haken_store::scratch::drop_database(&args.pg_url, &url).await;
    }
    let _ = std::fs::remove_dir_all(&dir);

    let events_per_s = received as f64 / drained.as_secs_f64();
    let cpu_per_event = if received > 0 { (cpu_after - cpu_before) / received as f64 } else { 0.0 };
    // PostgreSQL's share, when it could be read (a local server).
    let db_cpu_per_event = match (db_cpu_before, db_cpu_after) {
        (Some(b), Some(a)) if received > 0 && a >= b => Some((a - b) / received as f64),
        _ => None,
    };
    let db_part = db_cpu_per_event.map(|v| format!(" db_cpu_ms_per_event={v:.3}")).unwrap_or_default();
    let ratio = events_per_s / baseline.rate().max(1e-9);
    println!(
        "{backend}: {} API changes in {:.1} s ({:.0}/s, {} errors, response p50 {:.1} ms, p99 {:.1} ms); {received} of {expected} events received in {:.1} s = {events_per_s:.0} events/s, {dups} duplicates",
        writes.ops,
        writes.elapsed.as_secs_f64(),
        writes.rate(),
        writes.errors,
        percentile(&responses, 0.5),
        percentile(&responses, 0.99),
        drained.as_secs_f64()
    );
    println!(
        "{backend}: {deliveries} delivery requests ({:.1} events each); commit->receive p50 {:.1} ms, p99 {:.1} ms; server CPU {:.3} ms per delivered event{}; baseline (plain client -> same receiver) {:.0} req/s",
        received as f64 / deliveries.max(1) as f64,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        cpu_per_event,
        db_cpu_per_event.map(|v| format!(", PostgreSQL backends {v:.3} ms")).unwrap_or_default(),
        baseline.rate()
    );
    // The server's CPU by thread: on SQLite one writer thread runs every write, so its share
    // says how near the writer is to being what limits the rate.
    println!("{backend}: server CPU by thread: {threads}");
    anyhow::ensure!(received >= expected, "events were lost: {received} of {expected} arrived");
    Ok(format!(
        "backend={backend} concurrency={} rate={} events/s={events_per_s:.0} p50_ms={:.1} p99_ms={:.1} baseline_req/s={:.0} ratio={ratio:.3} cpu_ms_per_event={cpu_per_event:.3}{db_part} duplicates={dups}",
        args.concurrency,
        if args.rate > 0 { args.rate.to_string() } else { "max".to_owned() },
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        baseline.rate()
    ))
}
