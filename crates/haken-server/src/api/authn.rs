//! `POST /api/v1/authn`: Okta's classic primary authentication. It takes no API token; the
//! caller proves who it is with a username and password and gets an authentication
//! transaction with a `sessionToken`. Every failure is the same 401, so the answer never
//! tells whether a username exists. Calls are rate-limited per client address.

use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use haken_core::{ApiError, ErrorCode, Timestamp, User};
use haken_flows::signin::{self, Credentials, Policy, SignedIn};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::Failure;
use crate::extract::{Caller, OktaJson};
use crate::middleware::with_quota;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/authn", post(authenticate_user))
}

/// The request. `options` and `context` are accepted (Okta's SDKs send them) and, like any
/// other extra property, not interpreted.
#[derive(Deserialize)]
struct AuthnBody {
    // Read as JSON values so a wrong type is reported without echoing what was sent.
    username: Option<Value>,
    password: Option<Value>,
}

fn required(v: Option<Value>, field: &str) -> Result<String, Failure> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(Failure(ApiError::validation(field, "The field cannot be left blank")))
        }
        Some(_) => Err(Failure(ApiError::validation(field, "Expected a value of type string"))),
    }
}

async fn authenticate_user(State(state): State<AppState>, Caller(ctx): Caller, req: Request) -> Response {
    // Sign-ins have their own window per client address: lockout is per user, and this bounds
    // how many users one address can try.
    let q = state.signin_limiter.check(&format!("signin:{}", ctx.client_ip.as_deref().unwrap_or_default()));
    if !q.allowed {
        return with_quota(Failure(ApiError::new(ErrorCode::RateLimited)).into_response(), q);
    }
    let resp = match sign_in(&state, &ctx, req).await {
        Ok(body) => Json(body).into_response(),
        Err(f) => f.into_response(),
    };
    let mut resp = with_quota(resp, q);
    // The body carries a bearer credential.
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn sign_in(state: &AppState, ctx: &haken_core::log_event::EventContext, req: Request) -> Result<Value, Failure> {
    let OktaJson(body) = OktaJson::<AuthnBody>::from_request(req, state).await?;
    let creds =
        Credentials { username: required(body.username, "username")?, password: required(body.password, "password")? };
    let policy = Policy { lockout_attempts: state.config.lockout_attempts };
    let now = Timestamp::now();
    match signin::sign_in(&state.store, &state.inline, ctx, creds, policy, now).await? {
        SignedIn::Session { user, session, token } => Ok(json!({
            "expiresAt": session.expires_at,
            "status": "SUCCESS",
            "sessionToken": token,
            "_embedded": { "user": embedded_user(&user) },
        })),
        // No change-password step exists yet; the state tells the client why no session
        // came back (the password was right, so this reveals nothing to a guesser).
        SignedIn::PasswordExpired { user } => Ok(json!({
            "expiresAt": now.plus_millis(5 * 60 * 1000),
            "status": "PASSWORD_EXPIRED",
            "_embedded": { "user": embedded_user(&user) },
        })),
    }
}

/// `_embedded.user` of an authentication transaction: a few profile attributes only.
fn embedded_user(u: &User) -> Value {
    let attr = |name: &str| u.profile.get(name).cloned().unwrap_or(Value::Null);
    let or = |name: &str, default: &str| match u.profile.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Value::String(s.clone()),
        _ => Value::String(default.to_owned()),
    };
    json!({
        "id": u.id,
        "passwordChanged": u.password_changed,
        "profile": {
            "login": attr("login"),
            "firstName": attr("firstName"),
            "lastName": attr("lastName"),
            // Okta's org defaults when the profile has none.
            "locale": or("locale", "en_US"),
            "timeZone": or("timezone", "America/Los_Angeles"),
        },
    })
}
