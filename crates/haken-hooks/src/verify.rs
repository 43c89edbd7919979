//! The one-time verification request (spec 1.2): a GET with `x-okta-verification-challenge`,
//! answered by `{"verification": "<challenge>"}`. Each attempt may take 3 s (whatever the
//! hook's delivery timeout); one retry after a timeout, a transport error or an error status.
//! A 2xx answer with the wrong body is final: the endpoint answered, and answered wrong.

use std::time::Duration;

use haken_core::hook::EventHook;
use serde_json::Value;

use crate::client::{OutboundClient, OutboundRequest};

pub const CHALLENGE_HEADER: &str = "x-okta-verification-challenge";

/// How long each verification attempt may take (spec 1.2).
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(3);

/// The headers every request to the hook carries: its auth header and custom headers.
pub fn hook_headers(hook: &EventHook) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = hook.headers.clone();
    if let Some(auth) = &hook.auth {
        h.push((auth.key.clone(), auth.value.clone()));
    }
    h
}

/// Runs the verification; `Err` explains, for the developer, why it failed.
pub async fn verify(client: &OutboundClient, hook: &EventHook) -> Result<(), String> {
    let challenge: String = (0..2).map(|_| format!("{:016x}", rand::random::<u64>())).collect();
    let mut last = String::new();
    for attempt in 1..=2 {
        let mut headers = hook_headers(hook);
        headers.push(("Accept".into(), "application/json".into()));
        headers.push((CHALLENGE_HEADER.into(), challenge.clone()));
        let req = OutboundRequest {
            method: reqwest::Method::GET,
            url: hook.uri.clone(),
            headers,
            body: None,
            timeout: VERIFY_TIMEOUT,
            max_response: 64 * 1024,
        };
        let retryable = match client.send(req).await {
            Err(e) => {
                last = format!("the endpoint did not answer: {e}");
                !matches!(e, crate::client::SendError::Policy(_))
            }
            Ok(resp) if !(200..300).contains(&resp.status) => {
                last = format!("the endpoint answered HTTP {} (expected 200)", resp.status);
                true
            }
            Ok(resp) => {
                let body: Option<Value> = serde_json::from_slice(&resp.body).ok();
                match body.as_ref().and_then(|b| b.get("verification")).and_then(Value::as_str) {
                    Some(v) if v == challenge => return Ok(()),
                    Some(_) => last = "the verification value in the response does not match the challenge".to_owned(),
                    None if body.is_none() => last = "the response body is not JSON".to_owned(),
                    None => last = "the response JSON has no string property \"verification\"".to_owned(),
                }
                false
            }
        };
        if !retryable || attempt == 2 {
            break;
        }
    }
    Err(last)
}
