//! Shared state of the HTTP handlers.

use std::sync::Arc;

use haken_core::id::random_base62;
use haken_store::{Store, StoreError};

use crate::config::ServerConfig;
use crate::paging::CursorKey;
use crate::ratelimit::RateLimiter;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<ServerConfig>,
    /// Base URL for links, without a trailing slash.
    pub public_url: Arc<str>,
    pub cursors: Arc<CursorKey>,
    pub limiter: Arc<RateLimiter>,
    /// Sign-in attempts per client address (`signin_per_minute`).
    pub signin_limiter: Arc<RateLimiter>,
    /// The one outbound HTTP client (hook calls), with the URL policy.
    pub outbound: haken_hooks::OutboundClient,
    /// Renders `/metrics`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The inline-hook callout engine shared by every flow.
    pub inline: Arc<haken_hooks::inline::InlineCaller>,
}

impl AppState {
    /// Builds the state; the cursor signing key is shared by all nodes through the store.
    pub async fn new(
        store: Store,
        config: ServerConfig,
        public_url: String,
        outbound: haken_hooks::OutboundClient,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> Result<Self, StoreError> {
        let key = store.setting_or_insert("cursor_key", &random_base62(43)).await?;
        let inline = Arc::new(haken_hooks::inline::InlineCaller::new(
            outbound.clone(),
            store.clone(),
            public_url.clone(),
            config.inline_max_in_flight,
        ));
        Ok(AppState {
            inline,
            outbound,
            metrics,
            store,
            limiter: Arc::new(RateLimiter::new(config.rate_limit_per_minute)),
            signin_limiter: Arc::new(RateLimiter::new(config.signin_per_minute)),
            config: Arc::new(config),
            public_url: public_url.into(),
            cursors: Arc::new(CursorKey::new(key.as_bytes())),
        })
    }
}
