//! `haken bench inline`: what the inline-hook engine and each flow add on top of a handler's
//! own round trip. A trivial handler runs on 127.0.0.1; in the same run a plain HTTP client
//! measures its raw round trip (the baseline), then the engine (`InlineCaller::run`, with each
//! type's validation) and the flows over the real API (registration with and without its hook,
//! first sign-in through the password import hook against a local-password sign-in, and user
//! import with and without its hook) call the same handler.

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
    println!("{}", summary.join(" "));
    Ok(())
}
