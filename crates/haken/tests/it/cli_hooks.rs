//! `haken hooks`, the developer loop, as a developer runs it: the real binary's `listen` as a
//! child process receiving from an in-process server, and the API commands (`list`, `verify`,
//! `trigger`, `deliveries`, `replay`) run as the real binary against that server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::harness::tempdir::Dir;
use crate::harness::{Backend, TOKEN, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_haken");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Out,
    Err,
}

/// A `haken hooks listen` process and the lines it prints; killed (and reaped) when dropped,
/// so a failing test leaves no process behind.
struct Listener {
    child: Child,
    url: String,
    lines: UnboundedReceiver<(Stream, String)>,
    seen: Vec<String>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Listener {
    async fn start(extra: &[&str]) -> Listener {
        Self::start_on(free_port(), extra).await
    }

    /// Starts `haken hooks listen --port <port> <extra…>` and waits for the URL it prints.
    async fn start_on(port: u16, extra: &[&str]) -> Listener {
        let mut child = Command::new(BIN)
            .args(["hooks", "listen", "--port", &port.to_string()])
            .args(extra)
            .env_remove("HAKEN_URL")
            .env_remove("HAKEN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("haken hooks listen starts");
        let (tx, lines) = unbounded_channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for (stream, pipe) in
            [(Stream::Out, Box::new(out) as Box<dyn std::io::Read + Send>), (Stream::Err, Box::new(err))]
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send((stream, line));
                }
            });
        }
        let url = format!("http://127.0.0.1:{port}/");
        let mut l = Listener { child, url, lines, seen: Vec::new() };
        let want = l.url.clone();
        // The banner goes to stdout, or to stderr with --json.
        l.wait_any(|_, line| line.contains(&want), 30).await;
        l
    }

    /// Waits for a line on `stream` that `pred` accepts (lines before it are consumed).
    async fn wait_for(&mut self, stream: Stream, pred: impl Fn(&str) -> bool, secs: u64) -> String {
        self.wait_any(|s, line| s == stream && pred(line), secs).await
    }

    async fn wait_any(&mut self, pred: impl Fn(Stream, &str) -> bool, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some((stream, line))) => {
                    self.seen.push(format!("{stream:?}: {line}"));
                    if pred(stream, &line) {
                        return line;
                    }
                }
                Ok(None) | Err(_) => {
                    panic!("the listener did not print the expected line; it printed:\n{}", self.seen.join("\n"))
                }
            }
        }
    }

    /// SIGTERM, then the exit status (the listener stops cleanly).
    fn terminate(mut self) -> ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            assert!(Instant::now() < deadline, "haken hooks listen did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What one run of the binary did.
struct Run {
    ok: bool,
    out: String,
    err: String,
}

/// Runs `haken <args>` in an empty directory, with `envs` and nothing from the caller's
/// HAKEN_URL / HAKEN_TOKEN.
async fn haken_in(dir: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args).current_dir(dir).env_remove("HAKEN_URL").env_remove("HAKEN_TOKEN").stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("haken runs");
    Run {
        ok: out.status.success(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `haken hooks <args> --url <server> --token <token>`.
async fn hooks(s: &TestServer, args: &[&str]) -> Run {
    let dir = Dir::new("cli");
    let mut all = vec!["hooks"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--url", &s.base, "--token", TOKEN]);
    haken_in(&dir.0, &all, &[]).await
}

/// Runs a `hooks` command until its output satisfies `done`.
async fn hooks_until(s: &TestServer, args: &[&str], done: impl Fn(&str) -> bool, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = hooks(s, args).await;
        assert!(r.ok, "haken hooks {args:?} failed: {}", r.err);
        if done(&r.out) {
            return r.out;
        }
        assert!(Instant::now() < deadline, "haken hooks {args:?} never printed what was expected; last:\n{}", r.out);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The word after `word` in `text`.
fn word_after(text: &str, word: &str) -> String {
    let mut words = text.split_whitespace();
    words.find(|w| *w == word);
    words.next().unwrap_or_default().trim_end_matches('.').to_owned()
}

fn hook_body(name: &str, uri: &str, items: &[&str]) -> Value {
    json!({
        "name": name,
        "events": { "type": "EVENT_TYPE", "items": items, "filter": null },
        "channel": { "type": "HTTP", "version": "1.0.0", "config": { "uri": uri } }
    })
}

async fn create_hook(s: &TestServer, body: Value) -> Value {
    s.post("/api/v1/eventHooks", body).await.ok().clone()
}

fn minutes_ago(m: i64) -> String {
    haken_core::Timestamp(haken_core::Timestamp::now().millis() - m * 60_000).to_rfc3339()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_verify_trigger_deliveries_replay_and_backfill() {
    let s = TestServer::start(Backend::Sqlite).await;
    let mut l = Listener::start(&[]).await;
    let hook =
        create_hook(&s, hook_body("cli loop", &l.url, &["user.lifecycle.create", "group.user_membership.add"])).await;
    let id = hook["id"].as_str().unwrap_or_default().to_owned();

    // Verification: the listener answers the challenge and says so.
    let r = hooks(&s, &["verify", &id]).await;
    assert!(r.ok, "{}", r.err);
    assert!(r.out.contains("VERIFIED"), "{}", r.out);
    l.wait_for(Stream::Out, |line| line.starts_with("verified"), 10).await;
    assert_eq!(s.get(&format!("/api/v1/eventHooks/{id}")).await.ok()["verificationStatus"], "VERIFIED");

    // A real event: one line with time, type, message, target and the envelope's eventId.
    let user = s.create_user("cli-loop@example.org", "Cli", "Loop").await;
    let uid = user["id"].as_str().unwrap_or_default();
    let line = l.wait_for(Stream::Out, |line| line.contains("user.lifecycle.create"), 15).await;
    assert!(line.contains(&format!("User:{uid} (cli-loop@example.org)")), "{line}");
    assert!(line.contains("eventId="), "{line}");
    assert!(line.starts_with(&haken_core::Timestamp::now().to_rfc3339()[..4]), "starts with the time: {line}");

    // A sample event of another type.
    let r = hooks(&s, &["trigger", &id, "group.user_membership.add"]).await;
    assert!(r.ok, "{}", r.err);
    let test_delivery = word_after(&r.out, "delivery");
    assert_eq!(test_delivery.len(), 36, "{}", r.out);
    assert!(r.out.contains("group.user_membership.add"), "{}", r.out);
    let line = l.wait_for(Stream::Out, |line| line.contains("group.user_membership.add"), 15).await;
    assert!(line.ends_with(&format!("eventId={test_delivery}")), "{line}");

    // The delivery log: both delivered (the status is written just after the listener answers).
    let table = hooks_until(&s, &["deliveries", &id], |out| out.matches("DELIVERED").count() == 2, 10).await;
    let mut rows = table.lines();
    let header = rows.next().unwrap_or_default();
    for col in ["ID", "KIND", "STATUS", "ATTEMPTS", "EVENTS", "LAST STATUS", "LAST ERROR", "CREATED"] {
        assert!(header.contains(col), "{header}");
    }
    let test_row = rows.find(|r| r.starts_with(&test_delivery)).unwrap_or_default().to_owned();
    assert!(test_row.contains(" test ") && test_row.contains(" 200 "), "{table}");

    // --limit follows `next` links until it has enough rows.
    let r = hooks(&s, &["deliveries", &id, "--limit", "2", "--page-size", "1", "--json"]).await;
    assert!(r.ok, "{}", r.err);
    let listed: Vec<Value> =
        r.out.lines().map(|l| serde_json::from_str(l).expect("one JSON delivery a line")).collect();
    assert_eq!(listed.len(), 2, "{}", r.out);
    assert_ne!(listed[0]["id"], listed[1]["id"]);
    assert!(listed.iter().all(|d| d["status"] == "DELIVERED"));
    let r = hooks(&s, &["deliveries", &id, "--limit", "1"]).await;
    assert_eq!(r.out.lines().count(), 2, "header and one row: {}", r.out);
    let r = hooks(&s, &["deliveries", &id, "--status", "dead"]).await;
    assert!(r.ok && r.out.is_empty(), "no dead letters: {} {}", r.out, r.err);

    // One delivery with its attempts.
    let r = hooks(&s, &["deliveries", &id, &test_delivery]).await;
    assert!(r.ok, "{}", r.err);
    assert!(r.out.contains("attemptLog"), "{}", r.out);
    let attempt = r.out.lines().skip_while(|l| !l.starts_with("ATTEMPT")).nth(1).unwrap_or_default().to_owned();
    assert!(attempt.starts_with('1') && attempt.contains(" 200 "), "{}", r.out);

    // Replaying one delivery resends it with the same eventId.
    let r = hooks(&s, &["replay", &id, &test_delivery]).await;
    assert!(r.ok, "{}", r.err);
    assert!(r.out.contains("PENDING"), "{}", r.out);
    let line = l.wait_for(Stream::Out, |line| line.contains("group.user_membership.add"), 15).await;
    assert!(line.ends_with(&format!("eventId={test_delivery}")), "{line}");

    // Backfill: the System Log's one user.lifecycle.create since ten minutes ago was delivered
    // to this hook already, so nothing is queued twice.
    let r = hooks(&s, &["replay", &id, "--since", &minutes_ago(10)]).await;
    assert!(r.ok, "{}", r.err);
    assert!(r.out.starts_with("Queued 0 event"), "{}", r.out);
    let r = hooks(&s, &["replay", &id, "--since", "yesterday"]).await;
    assert!(!r.ok);
    assert!(r.err.contains("E0000001") && r.err.contains("since"), "{}", r.err);

    // `list` with the URL and token from the environment, then from ./haken-data/bootstrap-token.
    let dir = Dir::new("cli-env");
    let r = haken_in(&dir.0, &["hooks", "list"], &[("HAKEN_URL", &s.base), ("HAKEN_TOKEN", TOKEN)]).await;
    assert!(r.ok, "{}", r.err);
    let row = r.out.lines().find(|l| l.starts_with(&id)).unwrap_or_default().to_owned();
    for cell in ["cli loop", "ACTIVE", "VERIFIED", l.url.as_str()] {
        assert!(row.contains(cell), "{}", r.out);
    }
    let r = haken_in(&dir.0, &["hooks", "list"], &[("HAKEN_URL", &s.base)]).await;
    assert!(!r.ok && r.err.contains("no API token"), "{}", r.err);
    std::fs::create_dir_all(dir.0.join("haken-data")).expect("mkdir");
    std::fs::write(dir.0.join("haken-data/bootstrap-token"), format!("{TOKEN}\n")).expect("write token");
    let r = haken_in(&dir.0, &["hooks", "list"], &[("HAKEN_URL", &s.base)]).await;
    assert!(r.ok && r.out.contains(&id), "{} {}", r.out, r.err);

    assert!(l.terminate().success(), "SIGTERM stops the listener cleanly");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_receiver_dead_letters_and_replay() {
    let s = TestServer::start(Backend::Sqlite).await;
    let mut l = Listener::start(&["--status", "500", "--json"]).await;
    let mut body = hook_body("failing", &l.url, &["user.lifecycle.create"]);
    body["delivery"] = json!({ "retryPolicy": "okta" });
    let id = create_hook(&s, body).await["id"].as_str().unwrap_or_default().to_owned();
    // --status is for POSTs: verification still succeeds. With --json, notes go to stderr.
    let r = hooks(&s, &["verify", &id]).await;
    assert!(r.ok, "{}", r.err);
    l.wait_for(Stream::Err, |line| line.starts_with("verified"), 10).await;

    let uid =
        s.create_user("dead-letter@example.org", "Dead", "Letter").await["id"].as_str().unwrap_or_default().to_owned();
    // Okta's policy: the first attempt and one retry, each printed as one JSON event on stdout.
    let mut uuid = String::new();
    for _ in 0..2 {
        let line = l.wait_for(Stream::Out, |_| true, 20).await;
        let ev: Value = serde_json::from_str(&line).expect("--json prints one JSON event a line");
        assert_eq!(ev["eventType"], "user.lifecycle.create");
        assert_eq!(ev["target"][0]["id"], uid.as_str());
        uuid = ev["uuid"].as_str().unwrap_or_default().to_owned();
    }
    let dead = hooks_until(&s, &["deliveries", &id, "--status", "DEAD"], |out| out.contains("DEAD"), 20).await;
    let row = dead.lines().nth(1).unwrap_or_default().to_owned();
    assert!(row.contains(" 500 ") && row.contains(" 2 "), "two attempts, last answered 500: {dead}");
    let dead_id = row.split_whitespace().next().unwrap_or_default().to_owned();
    let r = hooks(&s, &["deliveries", &id, &dead_id, "--json"]).await;
    let detail: Value = serde_json::from_str(&r.out).expect("one delivery as JSON");
    let log = detail["attemptLog"].as_array().cloned().unwrap_or_default();
    assert_eq!(log.len(), 2, "{detail}");
    assert!(log.iter().all(|a| a["statusCode"] == 500), "{detail}");

    // Replaying the dead letters sends the event again.
    let r = hooks(&s, &["replay", &id, "--dead"]).await;
    assert!(r.ok, "{}", r.err);
    assert_eq!(r.out.trim(), "Replayed 1 dead delivery.");
    let line = l.wait_for(Stream::Out, |_| true, 20).await;
    assert!(line.contains(&uuid), "the same event again: {line}");

    // Okta errors name the code and the causes, and fail the command.
    let r = hooks(&s, &["trigger", &id, "no.such.type"]).await;
    assert!(!r.ok);
    assert!(r.err.contains("E0000001: ") && r.err.contains("no.such.type"), "{}", r.err);
    let r = hooks(&s, &["deliveries", "whoNoSuchHook"]).await;
    assert!(!r.ok && r.err.contains("E0000007"), "{}", r.err);

    assert!(l.terminate().success());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_and_bad_tokens() {
    let s = TestServer::start(Backend::Sqlite).await;

    // An invalid token: Okta's E0000011, a non-zero exit.
    let dir = Dir::new("cli-bad");
    let r = haken_in(&dir.0, &["hooks", "list", "--url", &s.base, "--token", "not-a-token"], &[]).await;
    assert!(!r.ok);
    assert!(r.err.contains("E0000011"), "{}", r.err);
    let closed = format!("http://127.0.0.1:{}", free_port());
    let r = haken_in(&dir.0, &["hooks", "list", "--url", &closed, "--token", TOKEN], &[]).await;
    assert!(!r.ok && r.err.contains("cannot reach Haken"), "{}", r.err);
    let r = haken_in(&dir.0, &["hooks", "listen", "--secret", "whsec_not base64!"], &[]).await;
    assert!(!r.ok && r.err.contains("--secret"), "{}", r.err);

    // A signed hook: the listener checks every delivery with the secret.
    let port = free_port();
    let mut body = hook_body("signed", &format!("http://127.0.0.1:{port}/"), &["user.lifecycle.create"]);
    body["signing"] = json!({ "enabled": true });
    let hook = create_hook(&s, body).await;
    let id = hook["id"].as_str().unwrap_or_default().to_owned();
    let secret = hook["signing"]["secret"].as_str().unwrap_or_default().to_owned();
    let mut l = Listener::start_on(port, &["--secret", &secret]).await;
    let r = hooks(&s, &["verify", &id]).await;
    assert!(r.ok, "{}", r.err);
    s.create_user("signed@example.org", "Sig", "Ned").await;
    let valid = l.wait_for(Stream::Out, |line| line.starts_with("signature"), 15).await;
    assert!(valid.starts_with("signature valid"), "{valid}");
    l.wait_for(Stream::Out, |line| line.contains("user.lifecycle.create"), 5).await;
    hooks_until(&s, &["deliveries", &id, "--status", "DELIVERED"], |out| out.contains("DELIVERED"), 10).await;

    // A forged POST is refused with 401 and reported.
    let forged = s
        .http
        .post(&l.url)
        .header("webhook-id", "msg_forged")
        .header("webhook-timestamp", haken_core::Timestamp::now().millis() / 1000)
        .header("webhook-signature", "v1,bm90IGEgc2lnbmF0dXJl")
        .body(r#"{"data":{"events":[]}}"#)
        .send()
        .await
        .expect("the listener answers");
    assert_eq!(forged.status().as_u16(), 401);
    let invalid = l.wait_for(Stream::Out, |line| line.starts_with("signature"), 5).await;
    assert!(invalid.starts_with("signature INVALID"), "{invalid}");

    assert!(l.terminate().success());
    s.stop().await;
}
