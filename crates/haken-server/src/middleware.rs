//! Cross-cutting request handling: the request id (`X-Okta-Request-Id`, also the System Log
//! `requestId`), the request log line, API-token authentication and rate-limit headers.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use haken_core::id::{IdKind, new_id};
use haken_core::{ApiError, ErrorCode};

use crate::error::{ErrorNote, Failure};
use crate::extract::AuthToken;
use crate::ratelimit::Quota;
use crate::state::AppState;

/// The id of the current request.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-okta-request-id");

/// Gives each request an id, returns it in `X-Okta-Request-Id`, and logs one line per request
/// (with the `errorId` of an error response).
pub async fn request_context(mut req: Request, next: Next) -> Response {
    let id = new_id(IdKind::Request);
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let status = resp.status().as_u16();
    match resp.extensions().get::<ErrorNote>() {
        Some(note) if status >= 500 => {
            tracing::error!(request_id = %id, %method, %path, status, latency_ms, error_id = %note.error_id, error_code = note.code, summary = %note.summary, "Request failed.")
        }
        Some(note) => {
            tracing::info!(request_id = %id, %method, %path, status, latency_ms, error_id = %note.error_id, error_code = note.code, "Request rejected.")
        }
        None => tracing::debug!(request_id = %id, %method, %path, status, latency_ms, "Request served."),
    }
    resp
}

fn client_key(req: &Request) -> String {
    let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_default();
    format!("ip:{ip}")
}

/// The response with Okta's rate-limit headers for `q`.
pub(crate) fn with_quota(mut resp: Response, q: Quota) -> Response {
    resp.headers_mut().extend(q.headers());
    resp
}

/// Requires `Authorization: SSWS <token>` and applies the caller's rate limit. A missing or
/// wrong token is answered 401 `E0000011`, and counted against the client address so guessing
/// tokens is throttled too.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // Okta's own Python SDK 3.x sends `SSWS<token>` without the space: accept both.
            let v = v.trim();
            let scheme = v.get(..4)?;
            scheme.eq_ignore_ascii_case("SSWS").then(|| v[4..].trim().to_owned())
        })
        .filter(|t| !t.is_empty() && t.len() <= 512);
    let token = match presented {
        Some(value) => match haken_flows::tokens::authenticate(&state.store, &value).await {
            Ok(t) => t,
            Err(e) => {
                let q = state.limiter.check(&client_key(&req));
                return with_quota(Failure::from(e).into_response(), q);
            }
        },
        None => None,
    };
    let Some(token) = token else {
        let q = state.limiter.check(&client_key(&req));
        if !q.allowed {
            return with_quota(Failure(ApiError::new(ErrorCode::RateLimited)).into_response(), q);
        }
        return with_quota(Failure(ApiError::new(ErrorCode::InvalidToken)).into_response(), q);
    };
    let q = state.limiter.check(&format!("token:{}", token.id));
    if !q.allowed {
        return with_quota(Failure(ApiError::new(ErrorCode::RateLimited)).into_response(), q);
    }
    req.extensions_mut().insert(AuthToken(token));
    with_quota(next.run(req).await, q)
}
