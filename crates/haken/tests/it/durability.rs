//! Durability of event delivery with the real binary: SIGKILL at random moments while events
//! are produced and delivered, and three nodes on one PostgreSQL with one killed mid-run.
//! Afterwards every committed event (the System Log is the record of what committed) must
//! have reached the receiver at least once; duplicates are counted and reported.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{TOKEN, pg_admin_url, postgres_available, tempdir::Dir};
use crate::receiver::{Receiver, Reply};

const BIN: &str = env!("CARGO_BIN_EXE_haken");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

fn report(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// A `haken serve` process, killed (SIGKILL) and reaped when dropped.
struct Node {
    child: Child,
    base: String,
}

impl Node {
    async fn start(port: u16, data_dir: &str, db: Option<&str>, node_id: &str) -> Node {
        Node::start_logging(port, data_dir, db, node_id, None).await
    }

    /// As [`Node::start`]; with `log`, the node logs at that level into that file.
    async fn start_logging(
        port: u16,
        data_dir: &str,
        db: Option<&str>,
        node_id: &str,
        log: Option<(&str, std::fs::File)>,
    ) -> Node {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir", data_dir, "--insecure-hooks"])
            .args(["--node-id", node_id, "--delivery-lease-secs", "3"])
            .env("HAKEN_BOOTSTRAP_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        match log {
            Some((level, file)) => cmd.env("HAKEN_LOG", level).stderr(file),
            None => cmd.env("HAKEN_LOG", "warn").stderr(Stdio::null()),
        };
        if let Some(url) = db {
            cmd.args(["--database-url", url]);
        }
        let child = cmd.spawn().expect("haken starts");
        let node = Node { child, base: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = reqwest::Client::new();
        loop {
            if http.get(format!("{}/healthz", node.base)).send().await.is_ok_and(|r| r.status().is_success()) {
                return node;
            }
            assert!(Instant::now() < deadline, "node on port {port} did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn api(http: &reqwest::Client, method: reqwest::Method, url: String, body: Option<Value>) -> Option<Value> {
    let mut req =
        http.request(method, url).header("Authorization", format!("SSWS {TOKEN}")).timeout(Duration::from_secs(5));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// Creates a durable hook on `base` for group creations and verifies it.
async fn subscribe(http: &reqwest::Client, base: &str, receiver: &Receiver, timeout_ms: u64) -> String {
    let body = json!({
        "name": "durability",
        "events": { "type": "EVENT_TYPE", "items": ["group.lifecycle.create"], "filter": null },
        "channel": { "type": "HTTP", "version": "1.0.0", "config": { "uri": receiver.url, "headers": [] } },
        "delivery": { "retryPolicy": "durable", "timeoutMs": timeout_ms }
    });
    let hook =
        api(http, reqwest::Method::POST, format!("{base}/api/v1/eventHooks"), Some(body)).await.expect("hook created");
    let id = hook["id"].as_str().unwrap_or_default().to_owned();
    api(http, reqwest::Method::POST, format!("{base}/api/v1/eventHooks/{id}/lifecycle/verify"), None)
        .await
        .expect("verified");
    id
}

/// Keeps creating groups against `bases` (round robin) until `stop`; counts acknowledged ones.
fn produce(bases: Vec<String>, stop: Arc<AtomicBool>, acked: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let base = &bases[i % bases.len()];
            let body = json!({ "profile": { "name": format!("g-{i}-{}", haken_core::id::random_base62(6)) } });
            if api(&http, reqwest::Method::POST, format!("{base}/api/v1/groups"), Some(body)).await.is_some() {
                acked.fetch_add(1, Ordering::Relaxed);
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            i += 1;
        }
    })
}

/// uuids of every committed `group.lifecycle.create` event, from the System Log.
async fn committed(http: &reqwest::Client, base: &str) -> HashSet<String> {
    let since = haken_core::Timestamp(haken_core::Timestamp::now().millis() - 3_600_000).to_rfc3339();
    let until = haken_core::Timestamp(haken_core::Timestamp::now().millis() + 60_000).to_rfc3339();
    let mut url = format!(
        "{base}/api/v1/logs?limit=1000&since={since}&until={until}&filter={}",
        crate::users::urlencode("eventType eq \"group.lifecycle.create\"")
    );
    let mut out = HashSet::new();
    loop {
        let resp = http.get(&url).header("Authorization", format!("SSWS {TOKEN}")).send().await.expect("logs");
        let next = resp
            .headers()
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|l| l.ends_with("rel=\"next\""))
            .and_then(|l| Some(l[l.find('<')? + 1..l.find('>')?].to_owned()));
        let page: Vec<Value> = resp.json().await.unwrap_or_default();
        out.extend(page.iter().filter_map(|e| e["uuid"].as_str().map(str::to_owned)));
        match next {
            Some(n) => url = n,
            None => return out,
        }
    }
}

/// Waits until the receiver has every committed event; returns (committed, received, duplicates).
async fn settle(http: &reqwest::Client, base: &str, receiver: &Receiver, secs: u64) -> (usize, usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let want = committed(http, base).await;
        let got = receiver.uuids();
        let unique: HashSet<String> = got.iter().cloned().collect();
        let missing: Vec<&String> = want.difference(&unique).collect();
        if missing.is_empty() {
            return (want.len(), got.len(), got.len() - unique.len());
        }
        assert!(
            Instant::now() < deadline,
            "{} committed events never delivered (of {}), e.g. {:?}",
            missing.len(),
            want.len(),
            missing.first()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_sqlite() {
    let dir = Dir::new("crash");
    let data = dir.0.to_str().unwrap_or_default().to_owned();
    let port = free_port();
    let receiver = Receiver::start().await;
    let http = reqwest::Client::new();
    let mut node = Node::start(port, &data, None, "crash-node").await;
    subscribe(&http, &node.base, &receiver, 2000).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let producer = produce(vec![node.base.clone()], stop.clone(), acked.clone());
    for kill in 0..10 {
        let wait = 150 + (rand::random::<u64>() % 600);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        node.kill();
        node = Node::start(port, &data, None, "crash-node").await;
        let _ = kill;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = producer.await;
    let (committed, received, dups) = settle(&http, &node.base, &receiver, 60).await;
    report(&format!(
        "crash test (sqlite, 10 SIGKILLs): {committed} committed events, all delivered; {received} received, {dups} duplicates; {} creations acknowledged",
        acked.load(Ordering::Relaxed)
    ));
    assert!(committed >= 20, "the run produced too little to mean anything ({committed})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_postgres() {
    if !postgres_available().await {
        return;
    }
    let db = haken_store::scratch::create_database(&pg_admin_url(), "haken_test").await.expect("scratch db");
    let dir = Dir::new("crash-pg");
    let data = dir.0.to_str().unwrap_or_default().to_owned();
    let port = free_port();
    let receiver = Receiver::start().await;
    let http = reqwest::Client::new();
    let mut node = Node::start(port, &data, Some(&db), "crash-pg-node").await;
    subscribe(&http, &node.base, &receiver, 2000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let producer = produce(vec![node.base.clone()], stop.clone(), acked.clone());
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(150 + (rand::random::<u64>() % 600))).await;
        node.kill();
        node = Node::start(port, &data, Some(&db), "crash-pg-node").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = producer.await;
    let (committed, received, dups) = settle(&http, &node.base, &receiver, 60).await;
    report(&format!(
        "crash test (postgres, 10 SIGKILLs): {committed} committed events, all delivered; {received} received, {dups} duplicates"
    ));
    assert!(committed >= 20);
    drop(node);
    let _ = haken_store::scratch::drop_database(&pg_admin_url(), &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_work_and_survive_one_dying() {
    if !postgres_available().await {
        return;
    }
    let db = haken_store::scratch::create_database(&pg_admin_url(), "haken_test").await.expect("scratch db");
    let dirs: Vec<Dir> = (0..3).map(|i| Dir::new(&format!("node{i}"))).collect();
    let receiver = Receiver::start().await;
    let http = reqwest::Client::new();
    let mut nodes = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        nodes.push(Node::start(free_port(), d.0.to_str().unwrap_or_default(), Some(&db), &format!("node-{i}")).await);
    }
    // Requests may take 10 s: the dying node's last deliveries are still on the wire, leased
    // to it, when it is killed (its receiver never answers it).
    let hook = subscribe(&http, &nodes[0].base, &receiver, 10_000).await;
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let doomed = format!("{}/", bases[2]);
    let from_doomed = move |q: &crate::receiver::Recorded| {
        q.method == "POST" && q.json()["source"].as_str().is_some_and(|s| s.starts_with(&doomed))
    };
    let hang = from_doomed.clone();
    receiver.respond_with(move |q| if hang(q) { Reply::Slow(Duration::from_secs(60)) } else { Reply::Ok });
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let producer = produce(bases.clone(), stop.clone(), acked.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.posts().iter().filter(|q| from_doomed(q)).count() < 2 {
        assert!(Instant::now() < deadline, "node-2 never took a delivery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The third node dies mid-run, with deliveries in flight and leased to it.
    nodes[2].kill();
    let held: HashSet<String> = receiver.posts().iter().filter(|q| from_doomed(q)).flat_map(|q| q.uuids()).collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = producer.await;
    // What the dead node held (its requests were read, never answered) is delivered by the
    // others once its leases end.
    let deadline = Instant::now() + Duration::from_secs(60);
    let orphaned = loop {
        let by_others: HashSet<String> =
            receiver.posts().iter().filter(|q| !from_doomed(q)).flat_map(|q| q.uuids()).collect();
        let orphaned: Vec<String> = held.difference(&by_others).cloned().collect();
        if orphaned.is_empty() || Instant::now() > deadline {
            break orphaned;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (committed, received, dups) = settle(&http, &bases[0], &receiver, 60).await;
    // Which nodes delivered: the attempt log names them.
    let list =
        api(&http, reqwest::Method::GET, format!("{}/api/v1/eventHooks/{hook}/deliveries?limit=200", bases[0]), None)
            .await
            .unwrap_or_default();
    let mut delivering = HashSet::new();
    for d in list.as_array().cloned().unwrap_or_default().iter().take(200) {
        let id = d["id"].as_str().unwrap_or_default();
        let detail =
            api(&http, reqwest::Method::GET, format!("{}/api/v1/eventHooks/{hook}/deliveries/{id}", bases[0]), None)
                .await
                .unwrap_or_default();
        for a in detail["attemptLog"].as_array().cloned().unwrap_or_default() {
            if a["statusCode"] == 200 {
                delivering.insert(a["node"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    report(&format!(
        "multi-node test (3 nodes, node-2 killed holding {} events): {committed} committed events, all delivered; {received} received, {dups} duplicates; delivering nodes {delivering:?}",
        held.len()
    ));
    assert!(committed >= 20);
    assert!(!held.is_empty());
    assert!(orphaned.is_empty(), "events node-2 held were never delivered by another node: {orphaned:?}");
    assert!(
        delivering.contains("node-0") && delivering.contains("node-1"),
        "the work is shared between the living nodes: {delivering:?}"
    );
    drop(nodes);
    let _ = haken_store::scratch::drop_database(&pg_admin_url(), &db).await;
}

/// Secrets are stored, never logged: a node logging at debug level through verification (a
/// failed one too), a secret rotation, a failed and a retried delivery writes neither the
/// auth header's value nor a signing secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_server_log() {
    let dir = Dir::new("secret-log");
    let log_path = dir.0.join("server.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let data = dir.0.join("data");
    let node =
        Node::start_logging(free_port(), data.to_str().unwrap_or_default(), None, "node-log", Some(("debug", log)))
            .await;
    let receiver = Receiver::start().await;
    let posts = Arc::new(AtomicUsize::new(0));
    let refuse_verification = Arc::new(AtomicBool::new(true));
    let (p, refuse) = (posts.clone(), refuse_verification.clone());
    receiver.respond_with(move |q| match q.method.as_str() {
        "GET" if refuse.load(Ordering::SeqCst) => Reply::Status(500),
        // The first delivery fails and is retried.
        "POST" if p.fetch_add(1, Ordering::SeqCst) == 0 => Reply::Status(500),
        _ => Reply::Ok,
    });
    let http = reqwest::Client::new();
    let auth_value = format!("Bearer never-logged-{}", haken_core::id::random_base62(12));
    let body = json!({
        "name": "secret-log",
        "events": { "type": "EVENT_TYPE", "items": ["group.lifecycle.create"] },
        "channel": { "type": "HTTP", "version": "1.0.0", "config": {
            "uri": receiver.url, "headers": [],
            "authScheme": { "type": "HEADER", "key": "Authorization", "value": auth_value } } },
        "delivery": { "retryPolicy": "okta" },
        "signing": { "enabled": true }
    });
    let base = node.base.clone();
    let hook =
        api(&http, reqwest::Method::POST, format!("{base}/api/v1/eventHooks"), Some(body)).await.expect("created");
    let id = hook["id"].as_str().unwrap_or_default().to_owned();
    let mut secrets = vec![hook["signing"]["secret"].as_str().unwrap_or_default().to_owned()];
    let verify = format!("{base}/api/v1/eventHooks/{id}/lifecycle/verify");
    assert!(api(&http, reqwest::Method::POST, verify.clone(), None).await.is_none(), "a 500 fails verification");
    refuse_verification.store(false, Ordering::SeqCst);
    api(&http, reqwest::Method::POST, verify, None).await.expect("verified");
    let rotated = api(&http, reqwest::Method::POST, format!("{base}/api/v1/eventHooks/{id}/signing/rotate"), None)
        .await
        .expect("rotated");
    secrets.push(rotated["signing"]["secret"].as_str().unwrap_or_default().to_owned());
    assert!(secrets.iter().all(|s| s.starts_with("whsec_")), "{secrets:?}");
    let group = json!({ "profile": { "name": "secret-log-group" } });
    api(&http, reqwest::Method::POST, format!("{base}/api/v1/groups"), Some(group)).await.expect("group");
    let got = receiver.wait_posts(20, |p| p.len() >= 2).await;
    assert_eq!(got.len(), 2, "the delivery failed once, then went through");
    assert_eq!(got[1].header("authorization"), Some(auth_value.as_str()), "the receiver got the auth value");
    drop(node);
    let text = std::fs::read_to_string(&log_path).expect("log read");
    // The log did cover these paths (else the test would prove nothing).
    assert!(text.contains("Delivered event batch"), "no delivery in the log:\n{text}");
    assert!(text.contains("retrying later"), "no failed delivery in the log:\n{text}");
    assert!(!text.contains(&auth_value) && !text.contains("never-logged-"), "the auth value was logged");
    for s in &secrets {
        let key = s.trim_start_matches("whsec_");
        assert!(!text.contains(key), "a signing secret was logged");
    }
    assert!(!text.contains("whsec_"), "a signing secret was logged");
}
