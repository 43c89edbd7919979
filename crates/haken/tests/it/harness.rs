//! The test harness: start a server on a backend, call it, read its System Log.

use std::sync::OnceLock;

use haken_server::ServerConfig;
use haken_server::config::Secret;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn pg_admin_url() -> String {
    std::env::var("HAKEN_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn loud(msg: &str) {
    use std::io::Write;
    // Written past the test harness's capture on purpose: a skipped half must be seen.
    let _ = writeln!(std::io::stderr(), "\n!!!!! {msg} !!!!!\n");
}

/// Whether the PostgreSQL half runs. Without a server it is skipped loudly, and it is a
/// failure when `HAKEN_REQUIRE_POSTGRES=1` (as in CI).
pub async fn postgres_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    if let Some(v) = AVAILABLE.get() {
        if !v {
            loud("PostgreSQL half SKIPPED: no server");
        }
        return *v;
    }
    let ok = haken_store::scratch::reachable(&pg_admin_url()).await;
    let _ = AVAILABLE.set(ok);
    if !ok {
        assert!(
            std::env::var("HAKEN_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "PostgreSQL is required (HAKEN_REQUIRE_POSTGRES=1) but {} does not answer",
            haken_store::redact_url(&pg_admin_url())
        );
        loud(&format!("PostgreSQL half SKIPPED: {} does not answer", haken_store::redact_url(&pg_admin_url())));
    }
    ok
}

/// Runs each listed test function on both backends: `both!(module_fn, ...)`.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::harness::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::harness::postgres_available().await {
                        super::$name($crate::harness::Backend::Postgres).await
                    }
                }
            )*
        }
    };
}

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A server under test and a client for it.
pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    running: Option<haken_server::Running>,
    _dir: tempdir::Dir,
    pg_url: Option<String>,
}

pub mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);

    impl Dir {
        pub fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!("haken-it-{tag}-{}", haken_core::id::random_base62(10)));
            let _ = std::fs::create_dir_all(&p);
            Dir(p)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// An answer: status, headers and JSON body (Null when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn links(&self) -> Vec<String> {
        self.headers.get_all("link").iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
    }

    /// The URL of the `rel="next"` link.
    pub fn next_link(&self) -> Option<String> {
        self.links().into_iter().find(|l| l.ends_with("rel=\"next\"")).and_then(|l| {
            let start = l.find('<')? + 1;
            let end = l.find('>')?;
            Some(l[start..end].to_owned())
        })
    }

    /// Asserts an Okta error with this status and code; returns the body.
    pub fn expect_error(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.body);
        assert_eq!(self.body["errorCode"], code, "unexpected error: {}", self.body);
        assert_eq!(self.body["errorLink"], code);
        assert!(self.body["errorId"].as_str().is_some_and(|s| !s.is_empty()), "errorId missing");
        assert!(self.body["errorSummary"].as_str().is_some_and(|s| !s.is_empty()), "errorSummary missing");
        &self.body
    }

    pub fn ok(&self) -> &Value {
        assert!(self.status.is_success(), "expected success, got {}: {}", self.status, self.body);
        &self.body
    }

    /// The `errorCauses[].errorSummary` strings.
    pub fn causes(&self) -> Vec<String> {
        self.body["errorCauses"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["errorSummary"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempdir::Dir::new("srv");
        let pg_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(
                haken_store::scratch::create_database(&pg_admin_url(), "haken_test").await.expect("scratch database"),
            ),
        };
        let mut cfg = ServerConfig {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.0.clone(),
            database_url: pg_url.clone().map(Secret::new),
            bootstrap_token: Some(Secret::new(TOKEN)),
            insecure_hooks: true,
            ..ServerConfig::default()
        };
        tweak(&mut cfg);
        let running = haken_server::start(cfg).await.expect("server starts");
        TestServer {
            base: running.public_url.clone(),
            http: reqwest::Client::builder().build().expect("client"),
            running: Some(running),
            _dir: dir,
            pg_url,
        }
    }

    /// The scratch PostgreSQL database of this server, if it runs on PostgreSQL.
    pub fn database_url(&self) -> Option<String> {
        self.pg_url.clone()
    }

    /// Where this server's store is, for a second store on it (its SQLite file or its
    /// scratch PostgreSQL database).
    pub fn store_url(&self) -> String {
        self.pg_url.clone().unwrap_or_else(|| format!("sqlite://{}", self._dir.0.join("haken.db").display()))
    }

    pub fn store(&self) -> &haken_store::Store {
        &self.running.as_ref().expect("running").store
    }

    /// Shuts down like [`TestServer::stop`] but leaves the PostgreSQL database for the caller
    /// to read (and drop, with [`drop_database`]).
    pub async fn stop_keeping_database(mut self) -> Option<String> {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
        self.pg_url.take()
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
        if let Some(url) = self.pg_url.take() {
            let _ = haken_store::scratch::drop_database(&pg_admin_url(), &url).await;
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Answer {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{}", self.base, path) };
        let mut req = self.http.request(method, url);
        if let Some(t) = token {
            req = req.header("Authorization", format!("SSWS {t}"));
        }
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.expect("request is answered");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Answer { status, headers, body }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let bytes = body.map(|b| serde_json::to_vec(&b).expect("json"));
        let ct = bytes.as_ref().map(|_| "application/json");
        self.send(method, path, Some(TOKEN), bytes, ct).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates an active user with a password; returns its JSON.
    pub async fn create_user(&self, login: &str, first: &str, last: &str) -> Value {
        self.post(
            "/api/v1/users?activate=true",
            json!({
                "profile": { "login": login, "email": login, "firstName": first, "lastName": last },
                "credentials": { "password": { "value": "Corr3ct-Horse-Battery" } }
            }),
        )
        .await
        .ok()
        .clone()
    }

    /// All System Log events (bounded query over the last hour), oldest first.
    pub async fn events(&self) -> Vec<Value> {
        let since = haken_core::Timestamp(haken_core::Timestamp::now().millis() - 3_600_000).to_rfc3339();
        let until = haken_core::Timestamp(haken_core::Timestamp::now().millis() + 60_000).to_rfc3339();
        let mut url = format!("/api/v1/logs?limit=1000&since={since}&until={until}");
        let mut out = Vec::new();
        loop {
            let a = self.get(&url).await;
            out.extend(a.ok().as_array().cloned().unwrap_or_default());
            match a.next_link() {
                Some(n) => url = n,
                None => return out,
            }
        }
    }

    /// Polls `url` (a polling System Log query) until `done` accepts the collected events,
    /// following `next` links (a poller may see an event a moment after its commit).
    pub async fn poll_logs(&self, url: &str, done: impl Fn(&[Value]) -> bool) -> (Vec<Value>, String) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut url = url.to_owned();
        let mut seen = Vec::new();
        loop {
            let a = self.get(&url).await;
            seen.extend(a.ok().as_array().cloned().unwrap_or_default());
            url = a.next_link().expect("polling queries always have a next link");
            if done(&seen) {
                return (seen, url);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "polling did not deliver in time; seen {} events",
                seen.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Creates an active inline hook of `hook_type` calling `uri` with a header secret; returns
    /// its JSON.
    pub async fn create_inline_hook(&self, name: &str, hook_type: &str, uri: &str) -> Value {
        let a = self
            .post(
                "/api/v1/inlineHooks",
                json!({
                    "name": name,
                    "type": hook_type,
                    "version": "1.0.0",
                    "channel": {
                        "type": "HTTP",
                        "version": "1.0.0",
                        "config": {
                            "uri": uri,
                            "headers": [{ "key": "X-Test", "value": "yes" }],
                            "authScheme": { "type": "HEADER", "key": "Authorization", "value": "Bearer hook-secret" }
                        }
                    }
                }),
            )
            .await;
        assert_eq!(a.status, 200, "inline hook created: {}", a.body);
        a.body
    }

    /// Events of one type.
    pub async fn events_of(&self, event_type: &str) -> Vec<Value> {
        self.events().await.into_iter().filter(|e| e["eventType"] == event_type).collect()
    }
}

/// Drops a database a test kept (see [`TestServer::stop_keeping_database`]).
pub async fn drop_database(url: &str) {
    let _ = haken_store::scratch::drop_database(&pg_admin_url(), url).await;
}
