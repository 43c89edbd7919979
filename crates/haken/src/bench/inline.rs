//! `haken bench inline`: what the inline-hook engine and each flow add on top of a handler's
//! own round trip. A trivial handler runs on 127.0.0.1; in the same run a plain HTTP client
//! measures its raw round trip (the baseline), then the engine (`InlineCaller::run`, with each
//! type's validation) and the flows over the real API (registration with and without its hook,
//! first sign-in through the password import hook against a local-password sign-in, and user
//! import with and without its hook) call the same handler.

use axum::serve::ListenerExt as _;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::extract::State;
use haken_core::hook::HookStatus;
use haken_core::inline_hook::{InlineChannel, InlineHook, InlineHookType};
use haken_core::log_event::EventContext;
use haken_hooks::inline::commands::{self, RegistrationKind};
use haken_hooks::inline::{Decision, InlineCaller};
use haken_hooks::{OutboundClient, UrlPolicy};
use serde_json::json;

use super::percentile;

#[derive(Debug, clap::Args)]
pub struct InlineBench {
    /// Store to measure: sqlite or postgres.
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// PostgreSQL server to create a scratch database on.
    #[arg(long, env = "HAKEN_BENCH_PG_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
    /// Calls per measurement (sequential, so latency is not queueing).
    #[arg(long, default_value_t = 2000)]
    calls: usize,
}

/// The trivial handler: answers by hook type, the way a real one would when it changes nothing.
async fn handler(
    State(answer): State<Arc<str>>,
    _body: axum::body::Bytes,
) -> ([(&'static str, &'static str); 1], String) {
    ([("content-type", "application/json")], answer.to_string())
}

async fn start_handler(answer: &str) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route("/hook", axum::routing::post(handler)).with_state(Arc::<str>::from(answer));
    tokio::spawn(async move {
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/hook"))
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lat {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
}

impl Lat {
    fn of(mut ms: Vec<f64>) -> Lat {
        ms.sort_by(|a, b| a.total_cmp(b));
        Lat { p50: percentile(&ms, 0.5), p99: percentile(&ms, 0.99) }
    }

    fn minus(self, other: Lat) -> Lat {
        Lat { p50: self.p50 - other.p50, p99: self.p99 - other.p99 }
    }
}

/// Times `n` sequential runs of `op` (after a short warm-up).
async fn time_each<F, Fut>(n: usize, mut op: F) -> anyhow::Result<Lat>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    for i in 0..(n / 10).max(10) {
        op(usize::MAX - i).await?;
    }
    let mut ms = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        op(i).await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(Lat::of(ms))
}

/// Runs `n` pairs of `op(i, with_hook)` (after `warmup` unmeasured pairs), each pair in
/// alternating order: whichever request of a pair runs second is slower on this machine (the
/// first one's after-work), and interleaving puts drift in the machine's load on both sides.
/// `op` returns the milliseconds it measured. Returns (without the hook, with it).
async fn interleaved<F, Fut>(n: usize, warmup: usize, mut op: F) -> anyhow::Result<(Lat, Lat)>
where
    F: FnMut(usize, bool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<f64>>,
{
    let (mut without, mut with) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + warmup {
        let mut pair = [0.0f64; 2];
        for step in 0..2 {
            let hooked = (step == 0) == (i % 2 == 1);
            pair[usize::from(hooked)] = op(i, hooked).await?;
        }
        if i >= warmup {
            without.push(pair[0]);
            with.push(pair[1]);
        }
    }
    Ok((Lat::of(without), Lat::of(with)))
}

fn hook(hook_type: InlineHookType, uri: &str) -> InlineHook {
    let now = haken_core::Timestamp::now();
    InlineHook {
        id: haken_core::id::new_id(haken_core::id::IdKind::InlineHook),
        name: "bench".into(),
        hook_type,
        version: "1.0.0".into(),
        status: HookStatus::Active,
        channel: InlineChannel {
            uri: uri.to_owned(),
            headers: vec![("X-Bench".into(), "1".into())],
            auth: None,
            oauth: None,
        },
        created: now,
        last_updated: now,
        fail_mode: None,
        shadow: false,
        timeout_ms: None,
        metadata: None,
    }
}

pub async fn run(args: InlineBench) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("haken-bench-inline-{}", haken_core::id::random_base62(8)));
    std::fs::create_dir_all(&dir)?;
    let (url, scratch) = match args.backend.as_str() {
        "sqlite" => (format!("sqlite://{}", dir.join("bench.db").display()), None),
        "postgres" => {
            let url = haken_store::scratch::create_database(&args.pg_url, "haken_bench")
                .await
                .with_context(|| format!("creating a scratch database on {}", haken_store::redact_url(&args.pg_url)))?;
            (url.clone(), Some(url))
        }
        other => anyhow::bail!("unknown backend {other}: use sqlite or postgres"),
    };
    let result = measure(&args, &url).await;
    if let Some(u) = scratch {
        let _ = haken_store::scratch::drop_database(&args.pg_url, &u).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(args: &InlineBench, url: &str) -> anyhow::Result<()> {
    let n = args.calls.max(100);
    let answers = [
        (
            InlineHookType::Registration,
            r#"{"commands":[{"type":"com.okta.user.profile.update","value":{"nickName":"bench"}}]}"#,
        ),
        (
            InlineHookType::PasswordImport,
            r#"{"commands":[{"type":"com.okta.action.update","value":{"credential":"VERIFIED"}}]}"#,
        ),
        (
            InlineHookType::Import,
            r#"{"commands":[{"type":"com.okta.action.update","value":{"result":"CREATE_USER"}}]}"#,
        ),
    ];
    let store = haken_store::Store::connect(&haken_store::StoreOptions::new(url)).await?;
    let schema = haken_flows::schema::load(&store).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let outbound = OutboundClient::new(UrlPolicy { allow_insecure: true }).map_err(|e| anyhow::anyhow!(e))?;
    let caller = InlineCaller::new(outbound, store.clone(), "http://127.0.0.1", 64);
    let ctx = EventContext::system("bench");
    let raw_client = reqwest::Client::builder().pool_max_idle_per_host(4).tcp_nodelay(true).build()?;
    let mut summary = Vec::new();
    println!("{} sequential calls per measurement, trivial handler on 127.0.0.1, {} store", n, args.backend);
    for (hook_type, answer) in answers {
        let uri = start_handler(answer).await?;
        let h = hook(hook_type, &uri);
        let data = match hook_type {
            InlineHookType::Registration => {
                json!({ "context": { "request": { "id": "r", "method": "POST", "url": { "value": "/api/v1/registration" }, "ipAddress": "127.0.0.1" } },
                "userProfile": { "login": "bench@example.org", "email": "bench@example.org", "firstName": "Bench", "lastName": "User" }, "action": "ALLOW" })
            }
            InlineHookType::PasswordImport => {
                json!({ "context": { "request": { "id": "r", "method": "POST", "url": { "value": "/api/v1/authn" }, "ipAddress": "127.0.0.1" },
                "credential": { "username": "bench@example.org", "password": "Tr0ub4dor&3-bench" } }, "action": { "credential": "UNVERIFIED" } })
            }
            _ => {
                json!({ "context": { "conflicts": [], "application": { "name": "haken_import", "id": "0oabench", "label": "Bench", "status": "ACTIVE" },
                "job": { "id": "job", "type": "import:users" }, "matches": [], "policy": ["EMAIL"] }, "action": { "result": "CREATE_USER" },
                "appUser": { "profile": { "userName": "bench", "email": "bench@example.org" } }, "user": { "profile": { "login": "bench@example.org" } } })
            }
        };
        let request_type = (hook_type == InlineHookType::Registration).then_some("self.service.registration");
        let payload = caller.envelope(&h, request_type, data, haken_core::Timestamp::now());
        let body = serde_json::to_vec(&payload)?;
        // Baseline: the same body to the same handler with a plain client.
        let raw = time_each(n, |_| {
            let (c, u, b) = (raw_client.clone(), uri.clone(), body.clone());
            async move {
                let r = c.post(u).header("content-type", "application/json").body(b).send().await?;
                anyhow::ensure!(r.status().is_success(), "handler answered {}", r.status());
                r.bytes().await?;
                Ok(())
            }
        })
        .await?;
        // The engine: envelope, call, parse, validate, decide, build the events.
        let engine = time_each(n, |_| {
            let (caller, h, ctx, schema) = (&caller, &h, &ctx, &schema);
            let data = payload["data"].clone();
            async move {
                let payload = caller.envelope(h, request_type, data, haken_core::Timestamp::now());
                let ok = match hook_type {
                    InlineHookType::Registration => {
                        let ex = caller
                            .run(h, ctx, &payload, |r| commands::registration(r, RegistrationKind::SelfService, schema))
                            .await;
                        matches!(ex.decision, Decision::Apply(_))
                    }
                    InlineHookType::PasswordImport => {
                        matches!(
                            caller.run(h, ctx, &payload, commands::password_import).await.decision,
                            Decision::Apply(_)
                        )
                    }
                    _ => matches!(
                        caller.run(h, ctx, &payload, |r| commands::import(r, schema)).await.decision,
                        Decision::Apply(_)
                    ),
                };
                anyhow::ensure!(ok, "the engine did not apply the handler's answer");
                Ok(())
            }
        })
        .await?;
        let added = engine.minus(raw);
        let name = match hook_type {
            InlineHookType::Registration => "registration",
            InlineHookType::PasswordImport => "password_import",
            _ => "import",
        };
        println!(
            "{name:>15}: raw round trip p50 {:.3} ms p99 {:.3} ms; engine p50 {:.3} ms p99 {:.3} ms; engine adds p50 {:.3} ms p99 {:.3} ms",
            raw.p50, raw.p99, engine.p50, engine.p99, added.p50, added.p99
        );
        summary.push(format!(
            "{name}_raw_p50_ms={:.3} {name}_raw_p99_ms={:.3} {name}_engine_added_p50_ms={:.3} {name}_engine_added_p99_ms={:.3}",
            raw.p50, raw.p99, added.p50, added.p99
        ));
    }
    store.close().await;
    flows(n, url, &raw_client, &mut summary).await?;
    println!("{}", summary.join(" "));
    Ok(())
}

/// The flows over the real API, each with its hook and without, against the same handler.
/// Password hashing (Argon2id) dominates both sides of each pair; the difference is what the
/// hook costs the flow.
async fn flows(n: usize, url: &str, raw_client: &reqwest::Client, summary: &mut Vec<String>) -> anyhow::Result<()> {
    let n = (n / 10).max(50);
    let token = format!("bench-{}", haken_core::id::random_base62(24));
    let dir = std::env::temp_dir().join(format!("haken-bench-flows-{}", haken_core::id::random_base62(8)));
    let cfg = haken_server::ServerConfig {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.clone(),
        database_url: Some(haken_server::config::Secret::new(url.to_owned())),
        bootstrap_token: Some(haken_server::config::Secret::new(token.clone())),
        insecure_hooks: true,
        rate_limit_per_minute: u32::MAX,
        registration_per_minute: u32::MAX,
        signin_per_minute: u32::MAX,
        lockout_attempts: 0,
        ..haken_server::ServerConfig::default()
    };
    let server = haken_server::start(cfg).await?;
    let base = server.public_url.clone();
    let auth = format!("SSWS {token}");
    let c = raw_client.clone();
    let api = |method: reqwest::Method, path: String, body: serde_json::Value| {
        let (c, auth, base) = (c.clone(), auth.clone(), base.clone());
        async move {
            let r = c.request(method, format!("{base}{path}")).header("Authorization", auth).json(&body).send().await?;
            let status = r.status();
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            anyhow::ensure!(status.is_success(), "{path} answered {status}: {v}");
            Ok::<_, anyhow::Error>(v)
        }
    };
    let hook_body = |name: &str, t: &str, uri: &str| {
        json!({ "name": name, "type": t, "version": "1.0.0",
            "channel": { "type": "HTTP", "version": "1.0.0", "config": { "uri": uri, "headers": [],
                "authScheme": { "type": "HEADER", "key": "Authorization", "value": "bench" } } } })
    };

    // Registration: attached hook vs no hook.
    let reg_uri =
        start_handler(r#"{"commands":[{"type":"com.okta.user.profile.update","value":{"nickName":"bench"}}]}"#).await?;
    let reg = api(
        reqwest::Method::POST,
        "/api/v1/inlineHooks".into(),
        hook_body("bench-reg", "com.okta.user.pre-registration", &reg_uri),
    )
    .await?;
    let policies = api(reqwest::Method::GET, "/api/v1/policies?type=PROFILE_ENROLLMENT".into(), json!(null)).await;
    let policies = match policies {
        Ok(p) => p,
        Err(_) => {
            c.get(format!("{base}/api/v1/policies?type=PROFILE_ENROLLMENT"))
                .header("Authorization", format!("SSWS {token}"))
                .send()
                .await?
                .json()
                .await?
        }
    };
    let policy_id = policies[0]["id"].as_str().unwrap_or_default().to_owned();
    let rules: serde_json::Value = c
        .get(format!("{base}/api/v1/policies/{policy_id}/rules"))
        .header("Authorization", format!("SSWS {token}"))
        .send()
        .await?
        .json()
        .await?;
    let rule = rules[0].clone();
    let rule_path = format!("/api/v1/policies/{policy_id}/rules/{}", rule["id"].as_str().unwrap_or_default());
    let attach = |hook: Option<&str>| {
        let mut r = rule.clone();
        r["actions"]["profileEnrollment"]["preRegistrationInlineHooks"] =
            hook.map(|h| json!([{ "inlineHookId": h }])).unwrap_or(json!(null));
        r
    };
    let register = |tag: &'static str| {
        let (c, base) = (c.clone(), base.clone());
        move |i: usize| {
            let (c, base) = (c.clone(), base.clone());
            async move {
                let login = format!("{tag}{i}-{}@example.org", haken_core::id::random_base62(6));
                let r = c
                    .post(format!("{base}/api/v1/registration"))
                    .json(&json!({ "userProfile": { "email": login, "firstName": "Bench", "lastName": "User" },
                        "credentials": { "password": { "value": "Tr0ub4dor&3-bench" } } }))
                    .send()
                    .await?;
                anyhow::ensure!(
                    r.status().is_success(),
                    "registration answered {}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                );
                Ok(())
            }
        }
    };
    let (plain, hooked_reg) = (register("plain"), register("hooked"));
    let (without, with) = interleaved(n, 10, |i, hooked| {
        let attached = attach(if hooked { reg["id"].as_str() } else { None });
        let (api, rule_path) = (&api, rule_path.clone());
        let op = if hooked { hooked_reg(i) } else { plain(i) };
        async move {
            // Attaching or detaching the hook is not part of what is timed.
            api(reqwest::Method::PUT, rule_path, attached).await?;
            let t = Instant::now();
            op.await?;
            Ok(t.elapsed().as_secs_f64() * 1000.0)
        }
    })
    .await?;
    // The hook call as the engine timed it inside the server (handler round trip included).
    let since = haken_core::Timestamp(haken_core::Timestamp::now().millis() - 3_600_000).to_rfc3339();
    let mut in_server = Vec::new();
    let mut next =
        Some(format!("{base}/api/v1/logs?limit=1000&since={since}&filter=eventType%20eq%20%22inline_hook.executed%22"));
    while let Some(u) = next.take() {
        let r = c.get(&u).header("Authorization", format!("SSWS {token}")).send().await?;
        let link = r
            .headers()
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|l| l.ends_with("rel=\"next\""))
            .and_then(|l| Some(l[l.find('<')? + 1..l.find('>')?].to_owned()));
        let page: Vec<serde_json::Value> = r.json().await?;
        if page.is_empty() {
            break;
        }
        in_server.extend(
            page.iter()
                .filter_map(|e| e.pointer("/debugContext/debugData/elapsedMs").and_then(serde_json::Value::as_f64)),
        );
        next = link;
    }
    let hook_call = Lat::of(in_server);
    println!(
        "registration hook call inside the server (engine-timed, handler included): p50 {:.3} ms p99 {:.3} ms",
        hook_call.p50, hook_call.p99
    );
    summary.push(format!(
        "registration_hook_call_p50_ms={:.3} registration_hook_call_p99_ms={:.3}",
        hook_call.p50, hook_call.p99
    ));
    let added = with.minus(without);
    println!(
        "registration flow ({n} sign-ups each): without hook p50 {:.3} ms p99 {:.3} ms; with hook p50 {:.3} ms p99 {:.3} ms; the hook adds p50 {:.3} ms p99 {:.3} ms (Argon2id dominates both)",
        without.p50, without.p99, with.p50, with.p99, added.p50, added.p99
    );
    summary.push(format!(
        "registration_flow_added_p50_ms={:.3} registration_flow_added_p99_ms={:.3}",
        added.p50, added.p99
    ));

    // Password import: first sign-in through the hook (verify, then hash and store) against a
    // sign-in with a local password (verify only) of the same cost class.
    let pwd_uri =
        start_handler(r#"{"commands":[{"type":"com.okta.action.update","value":{"credential":"VERIFIED"}}]}"#).await?;
    api(
        reqwest::Method::POST,
        "/api/v1/inlineHooks".into(),
        hook_body("bench-pwd", "com.okta.user.credential.password.import", &pwd_uri),
    )
    .await?;
    let mut hooked = Vec::new();
    let mut local = Vec::new();
    for i in 0..n {
        let h = format!("imp{i}@example.org");
        api(
            reqwest::Method::POST,
            "/api/v1/users?activate=true".into(),
            json!({ "profile": { "login": h, "email": h, "firstName": "I", "lastName": "U" },
            "credentials": { "password": { "hook": { "type": "default" } } } }),
        )
        .await?;
        hooked.push(h);
        let l = format!("loc{i}@example.org");
        api(
            reqwest::Method::POST,
            "/api/v1/users?activate=true".into(),
            json!({ "profile": { "login": l, "email": l, "firstName": "L", "lastName": "U" },
            "credentials": { "password": { "value": "Tr0ub4dor&3-bench" } } }),
        )
        .await?;
        local.push(l);
    }
    let sign_in = |logins: Vec<String>| {
        let (c, base) = (c.clone(), base.clone());
        let logins = Arc::new(logins);
        move |i: usize| {
            let (c, base, logins) = (c.clone(), base.clone(), logins.clone());
            async move {
                let login = if i >= logins.len() { return Ok(()) } else { logins[i].clone() };
                let r = c
                    .post(format!("{base}/api/v1/authn"))
                    .json(&json!({ "username": login, "password": "Tr0ub4dor&3-bench" }))
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "sign-in answered {}", r.status());
                Ok(())
            }
        }
    };
    let (local_op, hooked_op) = (sign_in(local), sign_in(hooked));
    let (local_lat, import_lat) = interleaved(n, 0, |i, hooked| {
        let op = if hooked { hooked_op(i) } else { local_op(i) };
        async move {
            let t = Instant::now();
            op.await?;
            Ok(t.elapsed().as_secs_f64() * 1000.0)
        }
    })
    .await?;
    let added = import_lat.minus(local_lat);
    println!(
        "password import ({n} first sign-ins): local password p50 {:.3} ms p99 {:.3} ms; through the hook p50 {:.3} ms p99 {:.3} ms; difference p50 {:.3} ms p99 {:.3} ms (hash vs verify, plus the hook)",
        local_lat.p50, local_lat.p99, import_lat.p50, import_lat.p99, added.p50, added.p99
    );
    summary.push(format!(
        "password_import_flow_added_p50_ms={:.3} password_import_flow_added_p99_ms={:.3}",
        added.p50, added.p99
    ));

    // User import: the same file through an app with the import hook, and through one without.
    let imp_uri =
        start_handler(r#"{"commands":[{"type":"com.okta.user.profile.update","value":{"nickName":"imported"}}]}"#)
            .await?;
    let imp = api(
        reqwest::Method::POST,
        "/api/v1/inlineHooks".into(),
        hook_body("bench-import", "com.okta.import.transform", &imp_uri),
    )
    .await?;
    let rows = IMPORT_ROWS;
    let mut rates = Vec::new();
    for (tag, hook_id) in [("hooked", imp["id"].clone()), ("plain", serde_json::Value::Null)] {
        let mut import = json!({ "matching": ["LOGIN"] });
        if !hook_id.is_null() {
            import["inlineHookId"] = hook_id;
        }
        let app = api(
            reqwest::Method::POST,
            "/api/v1/apps".into(),
            json!({ "name": "haken_import", "label": format!("bench {tag}"),
            "signOnMode": "BOOKMARK", "settings": { "import": import } }),
        )
        .await?;
        let app_id = app["id"].as_str().unwrap_or_default().to_owned();
        let mut csv = String::from("userName,email,firstName,lastName\n");
        for i in 0..rows {
            csv.push_str(&format!("{tag}{i}@example.org,{tag}{i}@example.org,Row,Number{i}\n"));
        }
        let started = Instant::now();
        let r = c
            .post(format!("{base}/api/v1/apps/{app_id}/imports"))
            .header("Authorization", format!("SSWS {token}"))
            .header("Content-Type", "text/csv")
            .body(csv)
            .send()
            .await?;
        let mut job: serde_json::Value = r.json().await?;
        let url = format!("{base}/api/v1/apps/{app_id}/imports/{}", job["id"].as_str().unwrap_or_default());
        while job["status"] == "RUNNING" {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            job = c.get(&url).header("Authorization", format!("SSWS {token}")).send().await?.json().await?;
        }
        anyhow::ensure!(job["status"] == "COMPLETED", "the import did not complete: {job}");
        let created = job["counts"]["created"].as_u64().unwrap_or(0);
        anyhow::ensure!(created == rows as u64, "the import created {created} of {rows} users: {job}");
        rates.push(created as f64 / started.elapsed().as_secs_f64());
    }
    println!(
        "user import ({rows} rows, upload included): with the hook {:.0} users/s; without a hook {:.0} users/s",
        rates[0], rates[1]
    );
    summary.push(format!("import_users/s={:.0} import_without_hook_users/s={:.0}", rates[0], rates[1]));
    server.shutdown().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Rows of the import measured by `haken bench inline` (`haken bench import` goes to 100,000).
const IMPORT_ROWS: usize = 20_000;
