//! `haken hooks`: the developer loop for event hooks. `listen` runs a local receiver that
//! answers Okta's verification challenge and prints every event it is sent (checking Standard
//! Webhooks signatures when given the secret); `list`, `verify`, `trigger`, `deliveries` and
//! `replay` call the server's event-hook API (`--url`, `--token`) and print what it answers.

use axum::serve::ListenerExt as _;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use clap::{ArgGroup, Args, Subcommand};
use haken_core::Timestamp;
use reqwest::Url;
use serde_json::{Value, json};

/// Where the token comes from when neither `--token` nor `HAKEN_TOKEN` is given: the file
/// `haken serve` writes on its first start, relative to the working directory.
const TOKEN_FILE: &str = "haken-data/bootstrap-token";

/// The header carrying Okta's one-time verification challenge.
const CHALLENGE_HEADER: &str = "x-okta-verification-challenge";

/// Standard Webhooks receivers refuse messages whose timestamp is further off than this.
const SIGNATURE_TOLERANCE_SECS: i64 = 5 * 60;

/// The server to talk to; used by every `hooks` command except `listen`.
#[derive(Debug, Args)]
pub struct ApiFlags {
    /// Base URL of the Haken server (API commands).
    #[arg(long, global = true, env = "HAKEN_URL", hide_env_values = true, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API token, sent as `Authorization: SSWS <token>` (API commands)
    /// [default: the contents of ./haken-data/bootstrap-token].
    #[arg(long, global = true, env = "HAKEN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum HooksAction {
    /// Run a local receiver: answer verification and print each event it receives.
    Listen(ListenArgs),
    /// List event hooks.
    List,
    /// Verify a hook: the server sends the challenge to the hook's URL.
    Verify {
        /// The event hook's id (`haken hooks list`).
        #[arg(value_name = "HOOK_ID")]
        hook_id: String,
    },
    /// Send a realistic sample event of a type to one hook (a test delivery).
    Trigger {
        /// The event hook's id (`haken hooks list`).
        #[arg(value_name = "HOOK_ID")]
        hook_id: String,
        /// An event type eligible for event hooks, e.g. user.lifecycle.create.
        #[arg(value_name = "EVENT_TYPE")]
        event_type: String,
    },
    /// Show a hook's delivery log (newest first), or one delivery with its attempts.
    Deliveries(DeliveriesArgs),
    /// Queue deliveries again: one delivery, every dead letter (--dead), or the System Log's
    /// matching events in a time range (--since).
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8787)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The hook's signing secret: check the Standard Webhooks signature of every POST and answer
    /// 401 when it does not match.
    #[arg(long, value_name = "whsec_…")]
    secret: Option<String>,
    /// Print each event as one JSON line on stdout (everything else goes to stderr).
    #[arg(long)]
    json: bool,
    /// HTTP status to answer POSTs with (to simulate a failing receiver).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(200..=599))]
    status: u16,
}

#[derive(Debug, Args)]
pub struct DeliveriesArgs {
    /// The event hook's id (`haken hooks list`).
    #[arg(value_name = "HOOK_ID")]
    hook_id: String,
    /// Show this delivery with its attempt log instead of the list.
    #[arg(value_name = "DELIVERY_ID")]
    delivery_id: Option<String>,
    /// Only deliveries in this state.
    #[arg(long, ignore_case = true, conflicts_with = "delivery_id",
          value_parser = clap::builder::PossibleValuesParser::new(["PENDING", "DELIVERED", "DEAD"]))]
    status: Option<String>,
    /// Print at most this many deliveries (following the API's `next` links).
    #[arg(long, default_value_t = 20, conflicts_with = "delivery_id",
          value_parser = clap::value_parser!(u64).range(1..))]
    limit: u64,
    /// Print JSON: one delivery per line, or the one delivery.
    #[arg(long)]
    json: bool,
    /// Deliveries asked for per request.
    #[arg(long, hide = true, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    page_size: u64,
}

#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("what").required(true).args(["delivery_id", "dead", "since"])),
    override_usage = "haken hooks replay <HOOK_ID> <DELIVERY_ID>\n       \
                      haken hooks replay <HOOK_ID> --dead\n       \
                      haken hooks replay <HOOK_ID> --since <RFC3339> [--until <RFC3339>] [--resend]"
)]
pub struct ReplayArgs {
    /// The event hook's id (`haken hooks list`).
    #[arg(value_name = "HOOK_ID")]
    hook_id: String,
    /// Replay this delivery (same eventId, same events).
    #[arg(value_name = "DELIVERY_ID")]
    delivery_id: Option<String>,
    /// Replay every dead letter of the hook.
    #[arg(long)]
    dead: bool,
    /// Queue the hook's matching System Log events published since this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    since: Option<String>,
    /// End of the --since range (RFC 3339) [default: now].
    #[arg(long, value_name = "RFC3339", requires = "since")]
    until: Option<String>,
    /// With --since: also the events the hook already had (by default they are not sent twice).
    #[arg(long, requires = "since")]
    resend: bool,
}

pub async fn run(api: ApiFlags, action: HooksAction) -> anyhow::Result<()> {
    match action {
        HooksAction::Listen(args) => listen(args).await,
        HooksAction::List => list(&Api::new(api)?).await,
        HooksAction::Verify { hook_id } => verify(&Api::new(api)?, &hook_id).await,
        HooksAction::Trigger { hook_id, event_type } => trigger(&Api::new(api)?, &hook_id, &event_type).await,
        HooksAction::Deliveries(args) => deliveries(&Api::new(api)?, args).await,
        HooksAction::Replay(args) => replay(&Api::new(api)?, args).await,
    }
}

// ---- the local receiver ----

struct Receiver {
    secret: Option<String>,
    json: bool,
    status: StatusCode,
}

/// One line of receiver output: events go to stdout; notes go to stdout too, except with
/// `--json`, where stdout carries only events (one JSON document per line).
enum Line {
    Event(String),
    Note(String),
}

impl Receiver {
    fn print(&self, lines: &[Line]) {
        // One lock for the whole request keeps its lines together; a closed pipe is not an error.
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        for line in lines {
            let _ = match line {
                Line::Event(s) => writeln!(out, "{s}"),
                Line::Note(s) if self.json => writeln!(err, "{s}"),
                Line::Note(s) => writeln!(out, "{s}"),
            };
        }
        let _ = out.flush();
    }
}

async fn listen(args: ListenArgs) -> anyhow::Result<()> {
    if let Some(secret) = &args.secret
        && haken_hooks::signing::sign(secret, "probe", 0, b"").is_none()
    {
        bail!("--secret is not a signing secret (expected whsec_ followed by base64, as the API shows it)");
    }
    let status = StatusCode::from_u16(args.status).with_context(|| format!("--status {}", args.status))?;
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await.with_context(|| {
        format!("cannot listen on {}:{} (is something else using the port? try --port)", args.host, args.port)
    })?;
    let addr = listener.local_addr().context("reading the listening address")?;
    let receiver = Arc::new(Receiver { secret: args.secret, json: args.json, status });
    receiver.print(&banner(addr, &receiver));

    let app =
        Router::new().fallback(receive).layer(DefaultBodyLimit::max(64 * 1024 * 1024)).with_state(receiver.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(async move {
        axum::serve(
            listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            app,
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.await;
        })
        .await
    });
    tokio::select! {
        ended = &mut server => {
            ended.context("the receiver task failed")?.context("serving")?;
            return Ok(());
        }
        () = crate::wait_for_signal() => {}
    }
    let _ = stop.send(());
    // Requests in flight get a moment to finish; idle keep-alive connections do not hold us.
    if let Ok(ended) = tokio::time::timeout(Duration::from_secs(3), server).await {
        ended.context("the receiver task failed")?.context("serving")?;
    }
    receiver.print(&[Line::Note("Stopped.".to_owned())]);
    Ok(())
}

fn banner(addr: SocketAddr, r: &Receiver) -> Vec<Line> {
    let url = if addr.ip().is_unspecified() {
        format!("http://127.0.0.1:{}/ (listening on all interfaces: use this machine's address)", addr.port())
    } else {
        format!("http://{addr}/")
    };
    let mut lines = vec![
        format!("Receiving event hooks at {url}"),
        "  Register that URL as the hook's channel.config.uri. The server only calls http:// and".to_owned(),
        "  loopback targets when it runs with --insecure-hooks (HAKEN_INSECURE_HOOKS=true).".to_owned(),
        "  Then run `haken hooks verify <hookId>`: this receiver answers the challenge.".to_owned(),
    ];
    if r.secret.is_some() {
        lines.push("  Checking Standard Webhooks signatures with the given secret (401 when invalid).".to_owned());
    }
    if r.status != StatusCode::OK {
        lines.push(format!("  Answering every POST with HTTP {}.", r.status.as_u16()));
    }
    lines.push("  Ctrl-C stops.".to_owned());
    lines.into_iter().map(Line::Note).collect()
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    match method {
        Method::GET => match headers.get(CHALLENGE_HEADER).map(|v| v.to_str()) {
            Some(Ok(challenge)) => {
                r.print(&[Line::Note(format!("verified: answered the verification challenge (GET {path})"))]);
                axum::Json(json!({ "verification": challenge })).into_response()
            }
            Some(Err(_)) => {
                r.print(&[Line::Note(format!("GET {path}: the verification challenge is not readable text"))]);
                StatusCode::BAD_REQUEST.into_response()
            }
            None => (StatusCode::OK, "haken hooks listen: POST event hooks here\n").into_response(),
        },
        Method::POST => receive_post(&r, &path, &headers, &body),
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

fn receive_post(r: &Receiver, path: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let mut lines = Vec::new();
    let signature = r.secret.as_deref().map(|secret| check_signature(secret, headers, body, Timestamp::now()));
    match &signature {
        Some(Ok(id)) => lines.push(Line::Note(format!("signature valid (webhook-id {id})"))),
        Some(Err(why)) => lines.push(Line::Note(format!("signature INVALID: {why}; answering 401"))),
        None => {}
    }
    let envelope: Option<Value> = serde_json::from_slice(body).ok();
    match envelope.as_ref().and_then(|e| e.pointer("/data/events")).and_then(Value::as_array) {
        Some(events) => {
            let event_id = envelope.as_ref().and_then(|e| e.get("eventId")).map(text).unwrap_or_else(|| "-".into());
            if events.is_empty() {
                lines.push(Line::Note(format!("POST {path}: an envelope without events (eventId {event_id})")));
            }
            for event in events {
                lines.push(Line::Event(if r.json { event.to_string() } else { event_line(event, &event_id) }));
            }
        }
        None => lines.push(Line::Note(format!(
            "POST {path}: {} bytes that are not an Okta event-hook envelope (no data.events)",
            body.len()
        ))),
    }
    if matches!(signature, Some(Err(_))) {
        r.print(&lines);
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({ "error": "invalid signature" }))).into_response();
    }
    if !r.status.is_success() {
        lines.push(Line::Note(format!("answered HTTP {} (--status)", r.status.as_u16())));
    }
    r.print(&lines);
    r.status.into_response()
}

/// One event as a line: time, type, message, first target, and the envelope's eventId.
fn event_line(event: &Value, event_id: &str) -> String {
    let target = event.pointer("/target/0").map_or_else(
        || "-".to_owned(),
        |t| {
            let mut s = format!("{}:{}", text(&t["type"]), text(&t["id"]));
            if let Some(alt) = t["alternateId"].as_str() {
                s.push_str(&format!(" ({alt})"));
            }
            s
        },
    );
    format!(
        "{}  {}  {}  {}  eventId={}",
        text(&event["published"]),
        text(&event["eventType"]),
        text(&event["displayMessage"]),
        target,
        event_id
    )
}

/// Checks the Standard Webhooks headers; the message id when valid, why not otherwise.
fn check_signature(secret: &str, headers: &HeaderMap, body: &[u8], now: Timestamp) -> Result<String, String> {
    let header = |name: &str| -> Result<&str, String> {
        headers
            .get(name)
            .ok_or_else(|| format!("no {name} header"))?
            .to_str()
            .map_err(|_| format!("the {name} header is not text"))
    };
    let id = header("webhook-id")?;
    let timestamp: i64 =
        header("webhook-timestamp")?.parse().map_err(|_| "webhook-timestamp is not a number".to_owned())?;
    let signature = header("webhook-signature")?;
    if !haken_hooks::signing::verify(secret, id, timestamp, body, signature) {
        return Err("no signature in webhook-signature matches the secret".to_owned());
    }
    let skew = now.millis() / 1000 - timestamp;
    if skew.abs() > SIGNATURE_TOLERANCE_SECS {
        return Err(format!("webhook-timestamp is {skew} s away from this machine's clock"));
    }
    Ok(id.to_owned())
}

// ---- the API client ----

pub(crate) struct Api {
    pub(crate) base: Url,
    pub(crate) token: String,
    /// Where the token came from, for the hint after a 401.
    token_source: &'static str,
    pub(crate) http: reqwest::Client,
}

impl Api {
    pub(crate) fn new(flags: ApiFlags) -> anyhow::Result<Api> {
        let base = Url::parse(&flags.url).with_context(|| format!("--url {} is not a URL", flags.url))?;
        if !matches!(base.scheme(), "http" | "https") {
            bail!("--url {} must be an http:// or https:// URL", flags.url);
        }
        let (token, token_source) = match flags.token {
            Some(t) => (t, "--token or HAKEN_TOKEN"),
            None => match std::fs::read_to_string(TOKEN_FILE) {
                Ok(t) => (t, "./haken-data/bootstrap-token"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                    "no API token: pass --token, set HAKEN_TOKEN, or run where haken-data/bootstrap-token is \
                     (create one with `haken token create`)"
                ),
                Err(e) => return Err(e).with_context(|| format!("reading ./{TOKEN_FILE}")),
            },
        };
        let token = token.trim().to_owned();
        if token.is_empty() {
            bail!("the API token from {token_source} is empty");
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("haken-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Api { base, token, token_source, http })
    }

    /// `<base>/api/v1/<segments…>`, each segment percent-encoded.
    pub(crate) fn url(&self, segments: &[&str]) -> anyhow::Result<Url> {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .map_err(|()| anyhow!("--url {} cannot take a path", self.base))?
            .pop_if_empty()
            .extend(["api", "v1"])
            .extend(segments);
        Ok(url)
    }

    /// `<base>/api/v1/eventHooks/<segments…>`.
    fn hooks_url(&self, segments: &[&str]) -> anyhow::Result<Url> {
        self.url(&[&["eventHooks"], segments].concat())
    }

    pub(crate) async fn get(&self, url: Url) -> anyhow::Result<(HeaderMap, Value)> {
        self.call(reqwest::Method::GET, url, None).await
    }

    pub(crate) async fn post(&self, url: Url, body: Option<Value>) -> anyhow::Result<Value> {
        Ok(self.call(reqwest::Method::POST, url, body).await?.1)
    }

    /// One request; an answer that is not 2xx becomes an error naming Okta's code and causes.
    async fn call(&self, method: reqwest::Method, url: Url, body: Option<Value>) -> anyhow::Result<(HeaderMap, Value)> {
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .header("Authorization", format!("SSWS {}", self.token))
            .header("Accept", "application/json");
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach Haken at {} (is it running?)", self.base))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.with_context(|| format!("reading the answer to {method} {url}"))?;
        let value: Option<Value> =
            if bytes.is_empty() { Some(Value::Null) } else { serde_json::from_slice(&bytes).ok() };
        if !status.is_success() {
            return Err(self.error(status, value.as_ref(), &bytes));
        }
        let value = value.ok_or_else(|| anyhow!("{method} {url} answered {status} with a body that is not JSON"))?;
        Ok((headers, value))
    }

    pub(crate) fn error(&self, status: reqwest::StatusCode, body: Option<&Value>, bytes: &[u8]) -> anyhow::Error {
        let Some(code) = body.and_then(|b| b["errorCode"].as_str()) else {
            let snippet: String = String::from_utf8_lossy(bytes).chars().take(300).collect();
            return anyhow!("the server answered {status}: {snippet}");
        };
        let body = body.unwrap_or(&Value::Null);
        let mut msg = format!("{code}: {}", text(&body["errorSummary"]));
        for cause in body["errorCauses"].as_array().into_iter().flatten() {
            msg.push_str(&format!("\n  - {}", text(&cause["errorSummary"])));
        }
        if let Some(id) = body["errorId"].as_str() {
            msg.push_str(&format!("\n  (errorId {id})"));
        }
        if code == "E0000011" {
            msg.push_str(&format!("\n  The token came from {}; is it a token of {}?", self.token_source, self.base));
        }
        anyhow!(msg)
    }
}

// ---- the API commands ----

async fn list(api: &Api) -> anyhow::Result<()> {
    let (_, hooks) = api.get(api.hooks_url(&[])?).await?;
    let hooks = hooks.as_array().cloned().unwrap_or_default();
    if hooks.is_empty() {
        eprintln!("No event hooks.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = hooks
        .iter()
        .map(|h| {
            vec![
                text(&h["id"]),
                text(&h["name"]),
                text(&h["status"]),
                text(&h["verificationStatus"]),
                text(&h["channel"]["config"]["uri"]),
            ]
        })
        .collect();
    print!("{}", table(&["ID", "NAME", "STATUS", "VERIFICATION", "URI"], &rows));
    Ok(())
}

async fn verify(api: &Api, hook_id: &str) -> anyhow::Result<()> {
    let hook = api.post(api.hooks_url(&[hook_id, "lifecycle", "verify"])?, None).await?;
    let status = text(&hook["verificationStatus"]);
    if status != "VERIFIED" {
        bail!("hook {hook_id} is {status} after verification");
    }
    println!(
        "Hook {} ({}) is VERIFIED: {} answered the challenge.",
        hook_id,
        text(&hook["name"]),
        text(&hook["channel"]["config"]["uri"])
    );
    Ok(())
}

async fn trigger(api: &Api, hook_id: &str, event_type: &str) -> anyhow::Result<()> {
    let answer = api.post(api.hooks_url(&[hook_id, "trigger"])?, Some(json!({ "eventType": event_type }))).await?;
    let delivery = text(&answer["delivery"]["id"]);
    println!(
        "Queued test delivery {delivery} with a sample {} event {}.",
        text(&answer["event"]["eventType"]),
        text(&answer["event"]["uuid"])
    );
    eprintln!("Follow it with: haken hooks deliveries {hook_id} {delivery}");
    Ok(())
}

async fn deliveries(api: &Api, args: DeliveriesArgs) -> anyhow::Result<()> {
    if let Some(delivery_id) = &args.delivery_id {
        let (_, d) = api.get(api.hooks_url(&[&args.hook_id, "deliveries", delivery_id])?).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&d).context("rendering JSON")?);
        } else {
            print!("{}", delivery_detail(&d));
        }
        return Ok(());
    }
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let mut url = api.hooks_url(&[&args.hook_id, "deliveries"])?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("limit", &args.page_size.min(args.limit).to_string());
        if let Some(s) = &args.status {
            q.append_pair("status", &s.to_ascii_uppercase());
        }
    }
    let mut rows: Vec<Value> = Vec::new();
    loop {
        let (headers, page) = api.get(url).await?;
        let page = page.as_array().cloned().unwrap_or_default();
        let empty = page.is_empty();
        rows.extend(page.into_iter().take(limit - rows.len()));
        let next = next_link(&headers);
        match next {
            Some(next) if rows.len() < limit && !empty => {
                url = api.base.join(&next).with_context(|| format!("following the next link {next}"))?;
            }
            _ => break,
        }
    }
    if args.json {
        let mut out = std::io::stdout().lock();
        for d in &rows {
            let _ = writeln!(out, "{d}");
        }
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!("No deliveries.");
        return Ok(());
    }
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|d| {
            vec![
                text(&d["id"]),
                text(&d["kind"]),
                text(&d["status"]),
                text(&d["attempts"]),
                text(&d["eventCount"]),
                text(&d["lastStatusCode"]),
                clip(&text(&d["lastError"]), 60),
                text(&d["created"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["ID", "KIND", "STATUS", "ATTEMPTS", "EVENTS", "LAST STATUS", "LAST ERROR", "CREATED"], &table_rows)
    );
    Ok(())
}

fn delivery_detail(d: &Value) -> String {
    let mut out = String::new();
    for (label, key) in [
        ("id", "id"),
        ("hook", "hookId"),
        ("kind", "kind"),
        ("status", "status"),
        ("attempts", "attempts"),
        ("events", "eventCount"),
        ("created", "created"),
        ("eventTime", "eventTime"),
        ("nextAttemptAt", "nextAttemptAt"),
        ("lastAttemptAt", "lastAttemptAt"),
        ("deliveredAt", "deliveredAt"),
        ("lastStatusCode", "lastStatusCode"),
        ("lastError", "lastError"),
    ] {
        out.push_str(&format!("{label:<15} {}\n", text(&d[key])));
    }
    let attempts = d["attemptLog"].as_array().cloned().unwrap_or_default();
    if attempts.is_empty() {
        out.push_str("\nNo attempts yet.\n");
        return out;
    }
    let rows: Vec<Vec<String>> = attempts
        .iter()
        .map(|a| {
            vec![
                text(&a["attempt"]),
                text(&a["started"]),
                a["latencyMs"].as_i64().map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
                text(&a["statusCode"]),
                clip(&text(&a["error"]), 60),
                text(&a["node"]),
                clip(&text(&a["responseSnippet"]).replace(['\n', '\r'], " "), 60),
            ]
        })
        .collect();
    out.push_str("\nattemptLog:\n");
    out.push_str(&table(&["ATTEMPT", "STARTED", "LATENCY", "STATUS", "ERROR", "NODE", "RESPONSE"], &rows));
    out
}

async fn replay(api: &Api, args: ReplayArgs) -> anyhow::Result<()> {
    let hook = args.hook_id.as_str();
    if let Some(delivery_id) = &args.delivery_id {
        let d = api.post(api.hooks_url(&[hook, "deliveries", delivery_id, "replay"])?, None).await?;
        println!("Replaying delivery {} ({}).", text(&d["id"]), text(&d["status"]));
    } else if args.dead {
        let answer = api.post(api.hooks_url(&[hook, "deliveries", "replay"])?, None).await?;
        let n = answer["replayed"].as_u64().unwrap_or(0);
        println!("Replayed {n} dead {}.", if n == 1 { "delivery" } else { "deliveries" });
    } else if let Some(since) = &args.since {
        let mut body = json!({ "since": since });
        if let Some(until) = &args.until {
            body["until"] = json!(until);
        }
        if args.resend {
            body["resend"] = json!(true);
        }
        let answer = api.post(api.hooks_url(&[hook, "backfill"])?, Some(body)).await?;
        let n = answer["queued"].as_u64().unwrap_or(0);
        println!("Queued {n} {} for delivery.", if n == 1 { "event" } else { "events" });
    }
    Ok(())
}

// ---- formatting ----

/// A JSON value as a table cell: strings as they are, null or absent as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The target of the `rel="next"` link among `link` headers, if any.
fn next_link(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(reqwest::header::LINK) {
        let Ok(mut rest) = value.to_str() else { continue };
        while let Some(start) = rest.find('<') {
            let after = &rest[start + 1..];
            let end = after.find('>')?;
            let target = &after[..end];
            let tail = &after[end + 1..];
            let params_end = tail.find('<').unwrap_or(tail.len());
            let is_next = tail[..params_end].split(';').any(|p| {
                let p = p.trim().trim_end_matches(',').trim();
                p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
            });
            if is_next {
                return Some(target.to_owned());
            }
            rest = &tail[params_end..];
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_are_found_in_separate_and_joined_headers() {
        let mut h = HeaderMap::new();
        h.append("link", "<http://h/a?limit=1>; rel=\"self\"".parse().expect("header"));
        h.append("link", "<http://h/a?after=X&limit=1>; rel=\"next\"".parse().expect("header"));
        assert_eq!(next_link(&h).as_deref(), Some("http://h/a?after=X&limit=1"));
        let mut joined = HeaderMap::new();
        joined.append("link", "<http://h/a>; rel=\"self\", <http://h/b,c>; rel=\"next\"".parse().expect("header"));
        assert_eq!(next_link(&joined).as_deref(), Some("http://h/b,c"));
        let mut none = HeaderMap::new();
        none.append("link", "<http://h/a>; rel=\"self\"".parse().expect("header"));
        assert_eq!(next_link(&none), None);
    }

    #[test]
    fn event_lines_name_type_message_target_and_envelope() {
        let ev = json!({
            "published": "2026-01-02T03:04:05.000Z",
            "eventType": "user.lifecycle.create",
            "displayMessage": "Create Okta user",
            "target": [ { "id": "00u1", "type": "User", "alternateId": "lee@example.org" } ],
        });
        assert_eq!(
            event_line(&ev, "abc"),
            "2026-01-02T03:04:05.000Z  user.lifecycle.create  Create Okta user  User:00u1 (lee@example.org)  eventId=abc"
        );
        assert!(event_line(&json!({}), "x").contains("-  -  -  -  eventId=x"));
    }

    #[test]
    fn signatures_are_checked_with_the_secret_and_the_clock() {
        let secret = haken_hooks::signing::new_secret();
        let now = Timestamp::now();
        let ts = now.millis() / 1000;
        let signed = haken_hooks::signing::headers(std::iter::once(secret.as_str()), "msg1", ts, b"{}");
        let mut h = HeaderMap::new();
        for (k, v) in &signed {
            h.insert(axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"), v.parse().expect("value"));
        }
        assert_eq!(check_signature(&secret, &h, b"{}", now).as_deref(), Ok("msg1"));
        assert!(check_signature(&secret, &h, b"{ }", now).is_err(), "another body");
        assert!(check_signature(&haken_hooks::signing::new_secret(), &h, b"{}", now).is_err(), "another secret");
        assert!(check_signature(&secret, &h, b"{}", Timestamp(now.millis() + 600_000)).is_err(), "too old");
        assert!(check_signature(&secret, &HeaderMap::new(), b"{}", now).is_err_and(|e| e.contains("webhook-id")));
    }

    #[test]
    fn tables_align_and_clip() {
        let t = table(&["A", "LONGER"], &[vec!["wide cell".into(), "x".into()], vec!["b".into(), "y".into()]]);
        assert_eq!(t, "A          LONGER\nwide cell  x\nb          y\n");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
        assert_eq!(text(&json!(null)), "-");
        assert_eq!(text(&json!(200)), "200");
    }
}
