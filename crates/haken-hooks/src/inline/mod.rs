//! The inline-hook callout engine that every hook type shares. A flow builds the type's
//! `data`, and [`InlineCaller::run`] does the rest: the envelope of spec 3.1, the channel's
//! authentication (header secret or an OAuth 2.0 access token), the time budget, the type's
//! retry rule, no redirects, the 256 KB response cap, a bound on calls in flight per hook,
//! parsing and command validation (all or nothing), the fail mode, shadow mode, and the
//! `inline_hook.executed` / `inline_hook.response.processed` System Log events. Flows get a
//! [`Decision`] and the events to commit with their change.

pub mod commands;
pub mod manage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use haken_core::inline_hook::{FailMode, HookKey, InlineHook, InlineHookType, OAuthAuthType};
use haken_core::log_event::{EventContext, LogEvent, Target};
use haken_core::{Timestamp, id};
use haken_store::Store;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use crate::client::{OutboundClient, OutboundRequest, SendError};
use crate::oauth::{ClientAuth, TokenCache};

/// Largest response accepted: Okta requires less than 256 KB.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Default bound on calls in flight to one hook (per node).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// One command of a hook's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Command {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: Value,
}

/// One `error.errorCauses[]` entry, kept as the handler sent it.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorCause {
    pub error_summary: Option<String>,
    pub reason: Option<String>,
    pub location_type: Option<String>,
    pub location: Option<String>,
    pub domain: Option<String>,
}

/// The `error` object of an answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookError {
    pub error_summary: Option<String>,
    pub error_causes: Vec<ErrorCause>,
}

/// A parsed answer (200 with a body, or 204).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HookResponse {
    pub status: u16,
    pub commands: Vec<Command>,
    pub error: Option<HookError>,
    pub debug_context: Option<Value>,
    /// The body as received (`execute` returns it verbatim); `Null` for 204.
    pub body: Value,
}

/// Why a call produced no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    Timeout,
    /// Connection refused or reset, TLS, DNS, URL policy.
    Transport,
    /// A status other than 2xx (redirects included: they are not followed).
    Status(u16),
    /// The body is 256 KB or more.
    Oversize,
    /// Not JSON, or not the response shape of spec 3.2.
    Malformed,
    /// Commands that the hook type does not allow, or values that break its rules.
    Invalid,
    /// The OAuth token endpoint failed, or the hook key is gone.
    Auth,
    /// Too many calls to this hook in flight.
    Overloaded,
}

impl FailureKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureKind::Timeout => "TIMEOUT",
            FailureKind::Transport => "TRANSPORT",
            FailureKind::Status(_) => "HTTP_STATUS",
            FailureKind::Oversize => "RESPONSE_TOO_LARGE",
            FailureKind::Malformed => "MALFORMED_RESPONSE",
            FailureKind::Invalid => "INVALID_RESPONSE",
            FailureKind::Auth => "AUTHENTICATION",
            FailureKind::Overloaded => "CONCURRENCY_LIMIT",
        }
    }
}

/// A failed call, with a reason a hook developer can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl CallFailure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        CallFailure { kind, message: message.into() }
    }
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

/// What the flow does after the hook was asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<E> {
    /// A valid answer: apply this effect.
    Apply(E),
    /// Carry on as if there were no hook: the call failed and the hook fails open, or the
    /// hook runs in shadow mode (what it would have done is in the events).
    Proceed,
    /// The call failed and the hook fails closed: the flow stops.
    Stop(CallFailure),
}

/// The result of [`InlineCaller::run`]: the decision, and the System Log events to commit
/// with the flow's change (or on their own when the flow writes nothing).
#[derive(Debug, Clone)]
pub struct Execution<E> {
    pub decision: Decision<E>,
    pub events: Vec<LogEvent>,
    /// Time spent in the engine, handler included.
    pub elapsed: Duration,
    /// The parsed answer, when there was one.
    pub response: Option<HookResponse>,
}

/// A raw call's outcome with its timing.
#[derive(Debug, Clone)]
pub struct CallReport {
    pub result: Result<HookResponse, CallFailure>,
    pub attempts: u32,
    pub elapsed: Duration,
}

/// The engine: one per process, shared by every flow.
pub struct InlineCaller {
    client: OutboundClient,
    store: Store,
    tokens: TokenCache,
    public_url: String,
    max_in_flight: usize,
    in_flight: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl std::fmt::Debug for InlineCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineCaller").field("public_url", &self.public_url).finish()
    }
}

impl InlineCaller {
    pub fn new(client: OutboundClient, store: Store, public_url: impl Into<String>, max_in_flight: usize) -> Self {
        InlineCaller {
            client,
            store,
            tokens: TokenCache::new(),
            public_url: public_url.into(),
            max_in_flight: max_in_flight.max(1),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    pub fn client(&self) -> &OutboundClient {
        &self.client
    }

    /// The `source` of a hook's requests.
    pub fn source(&self, hook: &InlineHook) -> String {
        format!("{}/api/v1/inlineHooks/{}", self.public_url, hook.id)
    }

    /// The request envelope of spec 3.1 around a type's `data`.
    pub fn envelope(&self, hook: &InlineHook, request_type: Option<&str>, data: Value, now: Timestamp) -> Value {
        let mut m = Map::new();
        m.insert("eventId".into(), Value::String(event_id()));
        // Okta sends second precision.
        m.insert("eventTime".into(), Value::String(Timestamp(now.millis() / 1000 * 1000).to_rfc3339()));
        m.insert("eventType".into(), Value::String(hook.hook_type.as_str().to_owned()));
        m.insert("eventTypeVersion".into(), Value::String("1.0".into()));
        m.insert("contentType".into(), Value::String("application/json".into()));
        m.insert("cloudEventVersion".into(), Value::String("0.1".into()));
        m.insert("source".into(), Value::String(self.source(hook)));
        if let Some(rt) = request_type {
            m.insert("requestType".into(), Value::String(rt.to_owned()));
        }
        m.insert("data".into(), data);
        Value::Object(m)
    }

    /// Asks the hook, validates its answer with `validate`, and decides per the hook's fail
    /// mode and shadow setting. `validate` sees only well-formed answers and returns the
    /// effect, or why the answer cannot be applied (then nothing of it is applied).
    pub async fn run<E, V>(&self, hook: &InlineHook, ctx: &EventContext, payload: &Value, validate: V) -> Execution<E>
    where
        E: std::fmt::Debug,
        V: FnOnce(&HookResponse) -> Result<E, String>,
    {
        let started = Instant::now();
        let report = self.call(hook, payload).await;
        let now = Timestamp::now();
        let mut events = vec![executed_event(ctx, hook, &report, now)];
        let (decision, response) = match report.result {
            Err(failure) => (self.fail(hook, failure), None),
            Ok(resp) => {
                let validated = validate(&resp);
                events.push(processed_event(ctx, hook, &resp, validated.as_ref().err(), now));
                let decision = match validated {
                    Ok(effect) if hook.shadow => {
                        if let Some(ev) = events.last_mut() {
                            *ev = ev.clone().with_debug("shadowEffect", Value::String(format!("{effect:?}")));
                        }
                        Decision::Proceed
                    }
                    Ok(effect) => Decision::Apply(effect),
                    Err(why) => self.fail(hook, CallFailure::new(FailureKind::Invalid, why)),
                };
                (decision, Some(resp))
            }
        };
        Execution { decision, events, elapsed: started.elapsed(), response }
    }

    fn fail<E>(&self, hook: &InlineHook, failure: CallFailure) -> Decision<E> {
        // Only the kind: the message may quote the handler's body, which may echo what it was
        // sent (a typed password). The whole reason is in the System Log event.
        tracing::warn!(hook_id = %hook.id, hook_type = hook.hook_type.as_str(), kind = failure.kind.as_str(), "Inline hook call failed.");
        if hook.shadow {
            return Decision::Proceed;
        }
        match hook.fail_mode() {
            FailMode::Open => Decision::Proceed,
            FailMode::Closed => Decision::Stop(failure),
        }
    }

    /// One call with the type's retry rule: a second attempt only after a timeout, a
    /// transport error or a 5xx, and never for token and telephony hooks.
    pub async fn call(&self, hook: &InlineHook, payload: &Value) -> CallReport {
        let started = Instant::now();
        let body = match serde_json::to_vec(payload) {
            Ok(b) => b,
            Err(e) => {
                return CallReport {
                    result: Err(CallFailure::new(FailureKind::Malformed, format!("request not serialisable: {e}"))),
                    attempts: 0,
                    elapsed: started.elapsed(),
                };
            }
        };
        let timeout = Duration::from_millis(hook.timeout_ms());
        let sem = self.semaphore(&hook.id);
        let _permit = match tokio::time::timeout(timeout, sem.acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => {
                return CallReport {
                    result: Err(CallFailure::new(
                        FailureKind::Overloaded,
                        format!(
                            "more than {} calls to this hook were in flight for {} ms",
                            self.max_in_flight,
                            timeout.as_millis()
                        ),
                    )),
                    attempts: 0,
                    elapsed: started.elapsed(),
                };
            }
        };
        let max_attempts = if hook.hook_type.retries() { 2 } else { 1 };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = self.attempt(hook, &body, timeout).await;
            let retryable = matches!(
                &result,
                Err(CallFailure { kind: FailureKind::Timeout | FailureKind::Transport, .. })
                    | Err(CallFailure { kind: FailureKind::Status(500..=599), .. })
            );
            if retryable && attempts < max_attempts {
                continue;
            }
            return CallReport { result, attempts, elapsed: started.elapsed() };
        }
    }

    fn semaphore(&self, hook_id: &str) -> Arc<Semaphore> {
        let mut map = match self.in_flight.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(hook_id.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(self.max_in_flight))).clone()
    }

    async fn attempt(&self, hook: &InlineHook, body: &[u8], timeout: Duration) -> Result<HookResponse, CallFailure> {
        let ch = &hook.channel;
        let mut headers: Vec<(String, String)> = Vec::with_capacity(ch.headers.len() + 3);
        headers.push(("Accept".into(), "application/json".into()));
        headers.push(("Content-Type".into(), "application/json".into()));
        headers.extend(ch.headers.iter().cloned());
        if let Some(oauth) = &ch.oauth {
            let token = self.access_token(hook, oauth, timeout).await?;
            headers.push(("Authorization".into(), format!("Bearer {token}")));
        } else if let Some(auth) = &ch.auth {
            headers.push((auth.key.clone(), auth.value.clone()));
        }
        let req = OutboundRequest {
            method: reqwest::Method::POST,
            url: ch.uri.clone(),
            headers,
            body: Some(body.to_vec()),
            timeout,
            // One byte short of the cap: a body of exactly 256 KB is already too large.
            max_response: MAX_RESPONSE_BYTES - 1,
        };
        let resp = self.client.send(req).await.map_err(|e| match e {
            SendError::Timeout => {
                CallFailure::new(FailureKind::Timeout, format!("no answer within {} ms", timeout.as_millis()))
            }
            other => CallFailure::new(FailureKind::Transport, other.to_string()),
        })?;
        if resp.status == 401
            && let Some(oauth) = &ch.oauth
        {
            // The token may have been revoked early: fetch a new one next time.
            self.tokens.invalidate(&token_cache_key(&hook.id, oauth));
        }
        // A password import hook is sent the typed password: a handler that echoes its request
        // in an error body must not put it into the System Log, so its bodies are never quoted.
        let quote = hook.hook_type != InlineHookType::PasswordImport;
        if resp.truncated && (200..300).contains(&resp.status) {
            return Err(CallFailure::new(
                FailureKind::Oversize,
                format!("the response body is {MAX_RESPONSE_BYTES} bytes or more (it must be under 256 KB)"),
            ));
        }
        parse(resp.status, &resp.body, quote)
    }

    async fn access_token(
        &self,
        hook: &InlineHook,
        oauth: &haken_core::inline_hook::OAuthConfig,
        timeout: Duration,
    ) -> Result<String, CallFailure> {
        let auth = match oauth.auth_type {
            OAuthAuthType::ClientSecretPost => {
                ClientAuth::SecretPost { secret: oauth.client_secret.clone().unwrap_or_default() }
            }
            OAuthAuthType::PrivateKeyJwt => {
                let key_id = oauth.hook_key_id.clone().unwrap_or_default();
                let key: HookKey = self
                    .store
                    .get_doc(&key_id)
                    .await
                    .map_err(|e| {
                        CallFailure::new(FailureKind::Auth, format!("hook key {key_id} could not be read: {e}"))
                    })?
                    .ok_or_else(|| CallFailure::new(FailureKind::Auth, format!("hook key {key_id} does not exist")))?;
                let der = base64::engine::general_purpose::STANDARD
                    .decode(&key.private_key)
                    .map_err(|_| CallFailure::new(FailureKind::Auth, format!("hook key {key_id} is unreadable")))?;
                ClientAuth::PrivateKeyJwt { private_pkcs8_der: der, kid: key.key_id }
            }
        };
        // The cache key covers everything the token depends on, so a changed channel never
        // reuses a token another node (or an earlier configuration) fetched.
        let cache_key = token_cache_key(&hook.id, oauth);
        self.tokens
            .access_token(
                &self.client,
                &cache_key,
                &oauth.token_url,
                &oauth.client_id,
                oauth.scope.as_deref(),
                &auth,
                timeout,
            )
            .await
            .map_err(|m| CallFailure::new(FailureKind::Auth, m))
    }

    /// Forgets a hook's cached access token (its channel changed).
    pub fn forget_token(&self, hook: &InlineHook) {
        if let Some(oauth) = &hook.channel.oauth {
            self.tokens.invalidate(&token_cache_key(&hook.id, oauth));
        }
    }
}

/// The hook and a digest of what its access token depends on.
fn token_cache_key(hook_id: &str, o: &haken_core::inline_hook::OAuthConfig) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for part in [
        o.token_url.as_str(),
        o.client_id.as_str(),
        o.scope.as_deref().unwrap_or(""),
        o.auth_type.as_str(),
        o.client_secret.as_deref().unwrap_or(""),
        o.hook_key_id.as_deref().unwrap_or(""),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let mut key = format!("{hook_id}:");
    haken_core::id::push_hex(&mut key, &d[..12]);
    key
}

/// A fresh `eventId`: 22 characters of URL-safe base64, as Okta sends.
fn event_id() -> String {
    let b: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let mut out: String = s.chars().take(200).collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// Reads an answer per spec 3.2: a JSON object with any 2xx, or 204 with no body; everything
/// else is a failure whose message quotes the body.
pub fn parse_response(status: u16, body: &[u8]) -> Result<HookResponse, CallFailure> {
    parse(status, body, true)
}

fn parse(status: u16, body: &[u8], quote: bool) -> Result<HookResponse, CallFailure> {
    let shown = |body: &[u8]| {
        if quote { snippet(body) } else { format!("({} bytes, not shown: they may echo the password)", body.len()) }
    };
    if !(200..300).contains(&status) {
        let what = if (300..400).contains(&status) { " (redirects are not followed)" } else { "" };
        return Err(CallFailure::new(
            FailureKind::Status(status),
            format!("the hook answered HTTP {status}{what}; body: {}", shown(body)),
        ));
    }
    if status == 204 {
        return Ok(HookResponse { status, ..HookResponse::default() });
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(CallFailure::new(
            FailureKind::Malformed,
            format!("HTTP {status} with an empty body; answer 204 No Content for \"no change\", or a JSON object"),
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        CallFailure::new(FailureKind::Malformed, format!("the response body is not valid JSON ({e}): {}", shown(body)))
    })?;
    let Value::Object(obj) = &value else {
        return Err(CallFailure::new(FailureKind::Malformed, "the response body must be a JSON object"));
    };
    let mut commands = Vec::new();
    match obj.get("commands") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let Some(kind) = item.get("type").and_then(Value::as_str) else {
                    return Err(CallFailure::new(
                        FailureKind::Malformed,
                        format!("commands[{i}].type is missing or not a string"),
                    ));
                };
                let value = item.get("value").cloned().unwrap_or(Value::Null);
                commands.push(Command { kind: kind.to_owned(), value });
            }
        }
        Some(_) => return Err(CallFailure::new(FailureKind::Malformed, "commands must be an array")),
    }
    let error = match obj.get("error") {
        None | Some(Value::Null) => None,
        Some(Value::Object(e)) => Some(parse_error(e)?),
        Some(_) => return Err(CallFailure::new(FailureKind::Malformed, "error must be an object")),
    };
    let debug_context = obj.get("debugContext").filter(|v| !v.is_null()).cloned();
    Ok(HookResponse { status, commands, error, debug_context, body: value })
}

fn parse_error(e: &Map<String, Value>) -> Result<HookError, CallFailure> {
    let text = |m: &Map<String, Value>, k: &str| -> Option<String> {
        match m.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        }
    };
    let mut causes = Vec::new();
    match e.get("errorCauses") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, c) in items.iter().enumerate() {
                let Value::Object(c) = c else {
                    return Err(CallFailure::new(
                        FailureKind::Malformed,
                        format!("error.errorCauses[{i}] must be an object"),
                    ));
                };
                causes.push(ErrorCause {
                    error_summary: text(c, "errorSummary"),
                    reason: text(c, "reason"),
                    location_type: text(c, "locationType"),
                    location: text(c, "location"),
                    domain: text(c, "domain"),
                });
            }
        }
        Some(_) => return Err(CallFailure::new(FailureKind::Malformed, "error.errorCauses must be an array")),
    }
    Ok(HookError { error_summary: text(e, "errorSummary"), error_causes: causes })
}

fn hook_target(hook: &InlineHook) -> Target {
    Target {
        id: hook.id.clone(),
        kind: "InlineHook".to_owned(),
        alternate_id: Some(hook.hook_type.as_str().to_owned()),
        display_name: Some(hook.name.clone()),
        detail_entry: None,
        change_details: None,
    }
}

pub(crate) fn executed_event(ctx: &EventContext, hook: &InlineHook, report: &CallReport, now: Timestamp) -> LogEvent {
    let mut ev = ctx
        .event("inline_hook.executed", "Inline hook executed", now)
        .with_target(hook_target(hook))
        .with_debug("inlineHookId", Value::String(hook.id.clone()))
        .with_debug("inlineHookType", Value::String(hook.hook_type.as_str().to_owned()))
        .with_debug("elapsedMs", json!(report.elapsed.as_secs_f64() * 1000.0))
        .with_debug("attempts", json!(report.attempts));
    match &report.result {
        Ok(resp) => {
            ev = ev.with_debug("httpStatus", json!(resp.status));
        }
        Err(f) => {
            if let FailureKind::Status(s) = f.kind {
                ev = ev.with_debug("httpStatus", json!(s));
            }
            ev = ev
                .with_outcome("FAILURE", Some(f.kind.as_str()))
                .with_debug("failureReason", Value::String(f.message.clone()));
        }
    }
    if hook.shadow {
        ev = ev.with_debug("shadow", Value::Bool(true));
    }
    ev
}

pub(crate) fn processed_event(
    ctx: &EventContext,
    hook: &InlineHook,
    resp: &HookResponse,
    invalid: Option<&String>,
    now: Timestamp,
) -> LogEvent {
    let mut ev = ctx
        .event("inline_hook.response.processed", "Inline hook response processed", now)
        .with_target(hook_target(hook))
        .with_debug("inlineHookId", Value::String(hook.id.clone()))
        .with_debug("inlineHookType", Value::String(hook.hook_type.as_str().to_owned()))
        .with_debug(
            "commands",
            Value::String(resp.commands.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>().join(",")),
        );
    if let Some(dc) = &resp.debug_context {
        ev = ev.with_debug("debugContext", dc.clone());
    }
    if let Some(err) = &resp.error {
        ev = ev.with_debug("errorSummary", json!(err.error_summary));
    }
    if let Some(why) = invalid {
        ev = ev
            .with_outcome("FAILURE", Some("INVALID_RESPONSE"))
            .with_debug("failureReason", Value::String(why.clone()));
    }
    if hook.shadow {
        ev = ev.with_debug("shadow", Value::Bool(true));
    }
    ev
}

/// A request id for a hook call's `data.context.request.id`.
pub fn request_id() -> String {
    id::new_id(id::IdKind::Request)
}

/// `data.context.request` of spec 3.1.
pub fn request_context(ctx: &EventContext, method: &str, url: &str) -> Value {
    json!({
        "id": ctx.request_id,
        "method": method,
        "url": { "value": url },
        "ipAddress": ctx.client_ip,
    })
}

/// Validation of the answer shape shared by the types (used by `execute` for the types this
/// module has no flow for yet).
pub fn validate_generic(hook_type: InlineHookType, resp: &HookResponse) -> Result<(), String> {
    for (i, c) in resp.commands.iter().enumerate() {
        if !c.kind.starts_with("com.okta.") {
            return Err(format!("commands[{i}].type '{}' is not a command of {}", c.kind, hook_type.as_str()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_answer_shapes() {
        let Ok(r) = parse_response(204, b"") else { panic!("204") };
        assert!(r.commands.is_empty() && r.error.is_none());
        let Ok(r) = parse_response(200, br#"{"commands":[{"type":"com.okta.action.update","value":{"registration":"DENY"}}],"error":{"errorSummary":"no","errorCauses":[{"errorSummary":"bad","location":"data.userProfile.email"}]},"debugContext":{"a":1},"extra":true}"#) else {
            panic!("200")
        };
        assert_eq!(r.commands.len(), 1);
        assert_eq!(r.commands[0].kind, "com.okta.action.update");
        let err = r.error.unwrap_or_default();
        assert_eq!(err.error_summary.as_deref(), Some("no"));
        assert_eq!(err.error_causes[0].location.as_deref(), Some("data.userProfile.email"));
        assert_eq!(r.debug_context, Some(json!({"a":1})));
    }

    #[test]
    fn refuses_bad_answers_with_reasons() {
        let kind = |s, b: &[u8]| parse_response(s, b).err().map(|f| f.kind);
        assert_eq!(kind(500, b"oops"), Some(FailureKind::Status(500)));
        assert_eq!(kind(302, b""), Some(FailureKind::Status(302)));
        assert_eq!(kind(200, b"{not json"), Some(FailureKind::Malformed));
        assert_eq!(kind(200, b"[1,2]"), Some(FailureKind::Malformed));
        assert_eq!(kind(200, br#"{"commands":{}}"#), Some(FailureKind::Malformed));
        assert_eq!(kind(200, br#"{"commands":[{"value":1}]}"#), Some(FailureKind::Malformed));
        assert_eq!(kind(200, br#"{"error":"x"}"#), Some(FailureKind::Malformed));
        // "No change" is 204; an empty body with another 2xx is not an answer.
        assert_eq!(kind(200, b""), Some(FailureKind::Malformed));
        assert_eq!(kind(202, b"  "), Some(FailureKind::Malformed));
        assert!(parse_response(204, b"").is_ok());
        let hidden = parse(500, b"{\"password\":\"hunter2\"}", false).err().map(|f| f.message).unwrap_or_default();
        assert!(!hidden.contains("hunter2") && hidden.contains("not shown"), "{hidden}");
        let msg = parse_response(302, b"").err().map(|f| f.message).unwrap_or_default();
        assert!(msg.contains("redirects are not followed"), "{msg}");
    }

    #[test]
    fn calls_can_run_on_any_worker() {
        fn is_send<T: Send>(_: &T) {}
        fn check(c: &InlineCaller, h: &InlineHook, v: &Value) {
            is_send(&c.call(h, v));
        }
        let _ = check;
    }

    #[test]
    fn event_ids_look_like_oktas() {
        let a = event_id();
        assert_eq!(a.len(), 22);
        assert_ne!(a, event_id());
    }
}
