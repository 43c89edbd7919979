//! Request extractors that answer bad input in Okta's shape: [`OktaJson`] for bodies (size
//! limit, media type, syntax) and [`Caller`] for who is calling (the System Log context).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_TYPE, USER_AGENT};
use axum::http::request::Parts;
use haken_core::log_event::{Actor, EventContext};
use haken_core::token::ApiToken;
use haken_core::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;

use crate::error::Failure;
use crate::middleware::RequestId;
use crate::state::AppState;

/// A JSON body, parsed with Okta's errors: 413 past the size limit, 415 for another media
/// type, `E0000003` for malformed JSON, `E0000001` naming the field for a wrong shape.
#[derive(Debug)]
pub struct OktaJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for OktaJson<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
            if !ct.starts_with("application/json") && !ct.contains("+json") {
                return Err(ErrorCode::UnsupportedMediaType.into());
            }
        }
        let limit = state.config.max_body_bytes;
        let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| {
            Failure(ApiError::with_summary(
                ErrorCode::PayloadTooLarge,
                format!("Api validation failed: the request body is larger than {limit} bytes"),
            ))
        })?;
        parse_json(&bytes).map(OktaJson)
    }
}

/// Parses a body with the same errors as [`OktaJson`]; an empty body reads as `{}`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Failure> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => {
                let msg = e.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
                Failure(
                    ApiError::with_summary(ErrorCode::ValidationFailed, format!("Api validation failed: {msg}"))
                        .with_cause(msg),
                )
            }
            _ => Failure(ApiError::with_summary(
                ErrorCode::MalformedJson,
                format!("The request body was not well-formed: {e}"),
            )),
        }
    })
}

/// The authenticated token, put in the request by the auth middleware.
#[derive(Debug, Clone)]
pub struct AuthToken(pub ApiToken);

/// Who is calling and through which request: the context of every System Log event the
/// request writes.
#[derive(Debug, Clone)]
pub struct Caller(pub EventContext);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        let token = parts.extensions.get::<AuthToken>().map(|t| t.0.clone());
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
        let user_agent = parts.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let uri = parts.uri.path().to_owned();
        let actor = match &token {
            Some(t) => Actor {
                id: t.id.clone(),
                kind: "ApiToken".to_owned(),
                alternate_id: Some(t.name.clone()),
                display_name: Some(t.name.clone()),
                detail_entry: None,
            },
            None => Actor {
                id: "unknown".to_owned(),
                kind: "PublicClientApp".to_owned(),
                alternate_id: None,
                display_name: None,
                detail_entry: None,
            },
        };
        Ok(Caller(EventContext {
            actor,
            transaction_type: "WEB",
            request_id,
            request_uri: Some(uri),
            client_ip: ip,
            user_agent,
            api_token_id: token.as_ref().map(|t| t.id.clone()),
            client_id: token.as_ref().map(|t| t.id.clone()),
            credential_type: None,
        }))
    }
}
