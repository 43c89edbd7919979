//! The management API. One module per resource, each ending in `router()`; this module joins
//! them, adds authentication and Okta's 404/405 answers.

pub mod apps;
pub mod authn;
pub mod event_hooks;
pub mod groups;
pub mod inline_hooks;
pub mod listing;
pub mod logs;
pub mod policies;
pub mod registration;
pub mod render;
pub mod schemas;
pub mod signup;
pub mod users;

use axum::Router;
use axum::http::Method;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, extract::DefaultBodyLimit};
use haken_core::{ApiError, ErrorCode};
use serde_json::json;

use crate::error::Failure;
use crate::middleware::{authenticate, request_context};
use crate::state::AppState;

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let management = Router::new()
        .merge(users::router())
        .merge(apps::router())
        .merge(groups::router())
        .merge(event_hooks::router())
        .merge(inline_hooks::router())
        .merge(logs::router())
        .merge(schemas::router())
        .merge(policies::router())
        .route_layer(from_fn_with_state(state.clone(), authenticate));
    // Self-service registration is for people without an API token.
    let self_service = registration::router(&state);
    Router::new()
        .merge(management)
        // Unauthenticated: the caller signs in with a password instead of an API token.
        .merge(authn::router())
        .merge(self_service)
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(from_fn(request_context))
        .with_state(state)
}

async fn health(axum::extract::State(state): axum::extract::State<AppState>) -> axum::response::Response {
    match state.store.get_setting("cursor_key").await {
        Ok(_) => Json(json!({ "status": "ok", "backend": state.store.backend_name() })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "Health check failed.");
            Failure(ApiError::new(ErrorCode::ServiceUnavailable)).into_response()
        }
    }
}

/// Prometheus metrics (delivery counters per hook, queue depth and age, attempt latency).
async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> axum::response::Response {
    match &state.metrics {
        Some(h) => ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], h.render()).into_response(),
        None => {
            Failure(ApiError::with_summary(ErrorCode::ServiceUnavailable, "Metrics are not available in this process"))
                .into_response()
        }
    }
}

async fn not_found(method: Method) -> Failure {
    let _ = method;
    Failure(ApiError::new(ErrorCode::PathNotFound))
}

async fn method_not_allowed() -> Failure {
    Failure(ApiError::new(ErrorCode::MethodNotAllowed))
}
