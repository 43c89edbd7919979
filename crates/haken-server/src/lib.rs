//! Haken's HTTP server: the Okta-shaped management API under `/api/v1`, with API-token
//! authentication, per-token rate limits, request ids and Okta's error shape everywhere.
//!
//! Entry point: [`start`] binds, prepares the store and serves until shutdown; `main` and the
//! integration tests both use it.

pub mod api;
pub mod config;
pub mod error;
pub mod extract;
pub mod middleware;
pub mod paging;
pub mod ratelimit;
pub mod state;

use axum::serve::ListenerExt as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use haken_core::Timestamp;
use haken_store::{Store, StoreOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::ServerConfig;
pub use state::AppState;

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub public_url: String,
    pub store: Store,
    /// The token printed at first start of an empty store, if one was created.
    pub created_bootstrap_token: Option<String>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    dispatcher: Option<JoinHandle<()>>,
    /// Stops the dispatcher: only once the requests in flight are done, since a user change
    /// hands its deliveries to the dispatcher as it commits.
    stop_dispatcher: watch::Sender<bool>,
}

impl Running {
    /// Stops accepting requests, lets those in flight finish, and closes the store.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until the server has stopped (after a shutdown signal), then lets deliveries in
    /// flight finish and closes the store.
    pub async fn wait(self) -> std::io::Result<()> {
        let r = match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        };
        let _ = self.shutdown.send(true);
        let _ = self.stop_dispatcher.send(true);
        if let Some(d) = self.dispatcher {
            let _ = d.await;
        }
        self.store.close().await;
        r
    }

    /// A handle that triggers graceful shutdown.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    #[error("cannot open the store: {0}")]
    Store(#[from] haken_store::StoreError),
    #[error("cannot prepare the data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("{0}")]
    Setup(String),
}

/// Opens the store (applying migrations), makes sure an API token exists, binds and serves.
pub async fn start(config: ServerConfig) -> Result<Running, StartError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError::DataDir(config.data_dir.display().to_string(), e))?;
    let store = Store::connect(&StoreOptions::new(config.effective_database_url())).await?;
    let created_bootstrap_token = prepare_tokens(&store, &config).await?;
    let listener = TcpListener::bind(&config.listen).await.map_err(|e| StartError::Bind(config.listen.clone(), e))?;
    let addr = listener.local_addr().map_err(|e| StartError::Bind(config.listen.clone(), e))?;
    let public_url = config
        .public_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| format!("http://{addr}"));
    store.install_router(Arc::new(haken_hooks::HookRouter::new()));
    let outbound = haken_hooks::OutboundClient::new(haken_hooks::UrlPolicy { allow_insecure: config.insecure_hooks })
        .map_err(StartError::Setup)?;
    let workers = config.workers;
    let node_id = match &config.node_id {
        Some(id) => id.clone(),
        None => {
            node_id_of(&config.data_dir).map_err(|e| StartError::DataDir(config.data_dir.display().to_string(), e))?
        }
    };
    let lease = std::time::Duration::from_secs(config.delivery_lease_secs.max(1));
    let poll = std::time::Duration::from_millis(config.delivery_poll_ms.clamp(10, 60_000));
    let delivery_retention_days = config.delivery_retention_days;
    let log_retention_days = config.log_retention_days;
    let state = AppState::new(store.clone(), config, public_url.clone(), outbound.clone(), metrics_handle())
        .await
        .map_err(|e| StartError::Setup(e.to_string()))?;
    let app = api::router(state);
    let (tx, mut rx) = watch::channel(false);
    let (stop_dispatcher, dispatcher_stops) = watch::channel(false);
    let dispatcher = workers.then(|| {
        let mut cfg = haken_hooks::DispatcherConfig::new(public_url.clone());
        cfg.node_id = node_id;
        cfg.lease = lease;
        cfg.poll_interval = poll;
        haken_hooks::Dispatcher::new(store.clone(), outbound, cfg).spawn(dispatcher_stops)
    });
    if workers {
        spawn_retention(store.clone(), delivery_retention_days, log_retention_days, tx.subscribe());
    }
    let task = tokio::spawn(async move {
        // Without TCP_NODELAY a response written in two parts waits for the client's delayed
        // ACK (tens of milliseconds on Linux).
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|stop| *stop).await;
            })
            .await
    });
    tracing::info!(%addr, backend = store.backend_name(), %public_url, "Haken is serving.");
    Ok(Running { addr, public_url, store, created_bootstrap_token, shutdown: tx, task, dispatcher, stop_dispatcher })
}

/// The process-wide Prometheus recorder (installed once; several servers in one process, as
/// in the tests, share it).
fn metrics_handle() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(haken_hooks::metrics::ATTEMPT_SECONDS.to_owned()),
                    haken_hooks::metrics::LATENCY_BUCKETS,
                )
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .clone()
}

/// Applies `HAKEN_BOOTSTRAP_TOKEN`, or creates the first token of an empty store and writes it
/// to `<data-dir>/bootstrap-token` (mode 0600).
async fn prepare_tokens(store: &Store, config: &ServerConfig) -> Result<Option<String>, StartError> {
    let now = Timestamp::now();
    if let Some(value) = config.bootstrap_token.as_ref().map(|s| s.expose()) {
        if value.len() < 16 {
            return Err(StartError::Setup("HAKEN_BOOTSTRAP_TOKEN must be at least 16 characters".into()));
        }
        haken_flows::tokens::ensure_bootstrap(store, value, now).await.map_err(|e| StartError::Setup(e.to_string()))?;
        return Ok(None);
    }
    let tokens = store.list_tokens().await?;
    if !tokens.is_empty() {
        return Ok(None);
    }
    let ctx = haken_core::log_event::EventContext::system("bootstrap");
    let created = haken_flows::tokens::create(store, &ctx, "bootstrap", now)
        .await
        .map_err(|e| StartError::Setup(e.to_string()))?;
    write_secret_file(&config.data_dir.join("bootstrap-token"), &created.value)
        .map_err(|e| StartError::DataDir(config.data_dir.display().to_string(), e))?;
    Ok(Some(created.value))
}

/// The retention task: hourly (first a minute after start), drops delivered deliveries and
/// old System Log events as configured. Any node may run it; the deletes are idempotent.
fn spawn_retention(store: Store, delivery_days: u64, log_days: u64, mut stop: watch::Receiver<bool>) {
    const DAY_MS: i64 = 24 * 3600 * 1000;
    tokio::spawn(async move {
        let mut wait = std::time::Duration::from_secs(60);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            wait = std::time::Duration::from_secs(3600);
            let now = Timestamp::now().millis();
            let days = |d: u64| i64::try_from(d).unwrap_or(i64::MAX / DAY_MS).saturating_mul(DAY_MS);
            match store.purge(now - days(delivery_days), now - days(log_days)).await {
                Ok((0, 0)) => {}
                Ok((deliveries, events)) => {
                    tracing::info!(deliveries, events, "Retention removed old deliveries and System Log events.")
                }
                Err(e) => tracing::warn!(error = %e, "Retention run failed; it will run again."),
            }
        }
    });
}

/// This node's id, kept in the data directory across restarts.
fn node_id_of(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let id = format!("node-{}", haken_core::id::random_base62(10));
    std::fs::write(&path, format!("{id}\n"))?;
    Ok(id)
}

fn write_secret_file(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(value.as_bytes())?;
    f.write_all(b"\n")
}
