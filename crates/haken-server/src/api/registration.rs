//! Self-service endpoints, reachable without an API token: `POST /api/v1/registration` (sign
//! up with a JSON body) and `POST /api/v1/registration/profile` (progressive profile update with
//! a `sessionToken`), plus the hosted sign-up page (`signup.rs`). They share one per-client-IP
//! budget of `registration_per_minute`, since each may call the registration inline hook and
//! hash a password.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use haken_core::{ApiError, ErrorCode, Timestamp};
use haken_flows::registration::{self, SignUp};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::api::{render, signup};
use crate::error::{ApiResult, Failure};
use crate::extract::{Caller, OktaJson};
use crate::ratelimit::{Quota, RateLimiter};
use crate::state::AppState;

/// The budget of the self-service endpoints (per client address, per node).
#[derive(Clone)]
pub struct SelfServiceLimiter(pub Arc<RateLimiter>);

impl SelfServiceLimiter {
    /// Counts one request from the caller's address.
    pub fn check(&self, req_addr: Option<&ConnectInfo<SocketAddr>>) -> Quota {
        let ip = req_addr.map(|c| c.0.ip().to_string()).unwrap_or_default();
        self.0.check(&format!("self-service:{ip}"))
    }
}

/// Okta's rate-limit headers for `q`.
pub fn quota_headers(q: Quota) -> HeaderMap {
    q.headers()
}

/// The self-service routes (JSON API and hosted page), with their shared budget.
pub fn router(state: &AppState) -> Router<AppState> {
    let limiter = SelfServiceLimiter(Arc::new(RateLimiter::new(state.config.registration_per_minute)));
    let api = Router::new()
        .route("/api/v1/registration", post(register))
        .route("/api/v1/registration/profile", post(update_profile))
        .route_layer(from_fn_with_state(limiter.clone(), limit_json));
    api.merge(signup::router()).layer(Extension(limiter))
}

/// The JSON endpoints answer 429 `E0000047` past the budget; every answer carries the headers.
async fn limit_json(State(limiter): State<SelfServiceLimiter>, req: Request, next: Next) -> Response {
    let q = limiter.check(req.extensions().get::<ConnectInfo<SocketAddr>>());
    let mut resp =
        if q.allowed { next.run(req).await } else { Failure(ApiError::new(ErrorCode::RateLimited)).into_response() };
    resp.headers_mut().extend(quota_headers(q));
    resp
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegistrationBody {
    user_profile: Option<Map<String, Value>>,
    credentials: Option<CredentialsBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsBody {
    password: Option<PasswordBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    value: Option<String>,
}

async fn register(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    OktaJson(body): OktaJson<RegistrationBody>,
) -> ApiResult<Response> {
    let profile = body
        .user_profile
        .ok_or_else(|| Failure(ApiError::validation("userProfile", "The field cannot be left blank")))?;
    let password =
        body.credentials.and_then(|c| c.password).and_then(|p| p.value).filter(|p| !p.is_empty()).ok_or_else(|| {
            Failure(ApiError::validation("credentials.password.value", "The field cannot be left blank"))
        })?;
    let req = SignUp { profile, password, request_url: "/api/v1/registration".to_owned() };
    let user = registration::register(&state.store, &state.inline, &ctx, req, Timestamp::now()).await?;
    Ok(Json(render::user(&user, &state.public_url)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileBody {
    profile: Option<Map<String, Value>>,
}

/// `Authorization: Bearer <sessionToken>`.
fn session_token(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let scheme = v.get(..7)?;
    scheme.eq_ignore_ascii_case("Bearer ").then(|| v[7..].trim().to_owned()).filter(|t| !t.is_empty())
}

async fn update_profile(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    headers: HeaderMap,
    OktaJson(body): OktaJson<ProfileBody>,
) -> ApiResult<Response> {
    let token = session_token(&headers).ok_or_else(|| Failure(ApiError::new(ErrorCode::InvalidToken)))?;
    let delta =
        body.profile.ok_or_else(|| Failure(ApiError::validation("profile", "The field cannot be left blank")))?;
    let user = registration::update_profile(
        &state.store,
        &state.inline,
        &ctx,
        &token,
        delta,
        "/api/v1/registration/profile",
        Timestamp::now(),
    )
    .await?;
    Ok(Json(render::user(&user, &state.public_url)).into_response())
}
