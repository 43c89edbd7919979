//! Managing event hooks: validation of what an administrator asks for, and the lifecycle
//! (create, replace, activate, deactivate, verify, delete, signing-secret rotation) with the
//! `event_hook.*` System Log events. The HTTP layer maps its request bodies to [`HookSpec`].

use haken_core::expr::Expression;
use haken_core::hook::{
    AuthScheme, DeliverySettings, EventFilter, EventHook, HookStatus, RetryPolicy, SigningSecret, VerificationStatus,
};
use haken_core::id::{IdKind, new_id};
use haken_core::log_event::{EventContext, LogEvent, Target};
use haken_core::{ApiError, ErrorCode, Timestamp, catalog};
use haken_store::{Change, Store, StoreError};

use crate::client::{OutboundClient, UrlPolicy};

/// The resource name in not-found answers.
const HOOK: &str = "EventHook";

/// Event types one hook may subscribe to.
pub const MAX_EVENT_TYPES: usize = 300;
/// Event hooks per server (Okta allows 25 active and verified; Haken counts all).
pub const MAX_HOOKS: usize = 100;
/// How long the previous signing secret keeps signing after a rotation.
pub const ROTATION_OVERLAP_MS: i64 = 24 * 3600 * 1000;

/// What an administrator asks for (create or replace).
#[derive(Debug, Clone, Default)]
pub struct HookSpec {
    pub name: Option<String>,
    pub description: Option<String>,
    pub events_type: Option<String>,
    pub items: Option<Vec<String>>,
    /// `Some(None)`: `filter: null`.
    pub filter: Option<Option<FilterSpec>>,
    pub channel_type: Option<String>,
    pub channel_version: Option<String>,
    pub uri: Option<String>,
    pub headers: Vec<(String, String)>,
    pub auth: Option<AuthSpec>,
    pub retry_policy: Option<String>,
    pub timeout_ms: Option<u64>,
    pub max_in_flight: Option<u32>,
    /// Extension: ask for a signing secret at creation.
    pub signing: bool,
}

#[derive(Debug, Clone, Default)]
pub struct FilterSpec {
    pub kind: Option<String>,
    pub map: Vec<(Option<String>, Option<String>)>,
}

#[derive(Debug, Clone, Default)]
pub struct AuthSpec {
    pub kind: Option<String>,
    pub key: Option<String>,
    pub value: Option<String>,
}

fn invalid(field: &str, msg: impl std::fmt::Display) -> ApiError {
    ApiError::validation(field, msg)
}

/// Whether two URIs reach the same server (scheme, host and port).
pub(crate) fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

pub(crate) fn valid_header_name(k: &str) -> bool {
    !k.is_empty() && k.len() <= 256 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(crate) fn valid_header_value(v: &str) -> bool {
    v.len() <= 4096 && v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Headers Haken sets itself; a hook may not override them.
pub(crate) const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "accept",
    "x-okta-verification-challenge",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// Checks a spec and builds the hook's configurable parts onto `base`. `previous_auth` keeps
/// a secret the administrator did not repeat (GET never shows it, so a round-tripped PUT
/// cannot carry it).
fn apply(
    spec: HookSpec,
    base: &mut EventHook,
    policy: UrlPolicy,
    previous_auth: Option<&AuthScheme>,
) -> Result<(), ApiError> {
    let name = spec.name.map(|n| n.trim().to_owned()).unwrap_or_default();
    if name.is_empty() || name.chars().count() > 255 {
        return Err(invalid("name", "must be 1 to 255 characters"));
    }
    if let Some(d) = &spec.description
        && d.chars().count() > 1024
    {
        return Err(invalid("description", "must be at most 1024 characters"));
    }
    match spec.events_type.as_deref() {
        Some("EVENT_TYPE") => {}
        Some(other) => return Err(invalid("events.type", format!("'{other}' is not supported; use EVENT_TYPE"))),
        None => return Err(invalid("events.type", "The field cannot be left blank")),
    }
    let items = spec.items.ok_or_else(|| invalid("events.items", "The field cannot be left blank"))?;
    if items.is_empty() {
        return Err(invalid("events.items", "subscribe to at least one event type"));
    }
    if items.len() > MAX_EVENT_TYPES {
        return Err(invalid("events.items", format!("at most {MAX_EVENT_TYPES} event types per hook")));
    }
    let mut seen = std::collections::HashSet::new();
    for t in &items {
        if !catalog::is_hook_eligible(t) {
            return Err(invalid("events.items", format!("'{t}' is not an event type eligible for event hooks")));
        }
        if !seen.insert(t.as_str()) {
            return Err(invalid("events.items", format!("'{t}' is listed twice")));
        }
    }
    let filters = match spec.filter {
        None | Some(None) => None,
        Some(Some(f)) => {
            match f.kind.as_deref() {
                Some("EXPRESSION_LANGUAGE") => {}
                other => {
                    return Err(invalid(
                        "events.filter.type",
                        format!("'{}' is not supported; use EXPRESSION_LANGUAGE", other.unwrap_or("")),
                    ));
                }
            }
            let mut out = Vec::new();
            for (i, (event, expression)) in f.map.into_iter().enumerate() {
                let field = format!("events.filter.eventFilterMap[{i}]");
                let event =
                    event.ok_or_else(|| invalid(&format!("{field}.event"), "The field cannot be left blank"))?;
                if !items.contains(&event) {
                    return Err(invalid(&format!("{field}.event"), format!("'{event}' is not in events.items")));
                }
                if out.iter().any(|f: &EventFilter| f.event == event) {
                    return Err(invalid(&format!("{field}.event"), format!("'{event}' has two filters")));
                }
                let expression = expression.ok_or_else(|| {
                    invalid(&format!("{field}.condition.expression"), "The field cannot be left blank")
                })?;
                Expression::parse(&expression).map_err(|e| invalid(&format!("{field}.condition.expression"), e))?;
                out.push(EventFilter { event, expression });
            }
            Some(out)
        }
    };
    match spec.channel_type.as_deref() {
        Some("HTTP") => {}
        other => return Err(invalid("channel.type", format!("'{}' is not supported; use HTTP", other.unwrap_or("")))),
    }
    match spec.channel_version.as_deref() {
        Some("1.0.0") => {}
        other => {
            return Err(invalid("channel.version", format!("'{}' is not supported; use 1.0.0", other.unwrap_or(""))));
        }
    }
    let uri = spec.uri.ok_or_else(|| invalid("channel.config.uri", "The field cannot be left blank"))?;
    policy.check(&uri).map_err(|m| invalid("channel.config.uri", m))?;
    for (k, v) in &spec.headers {
        if !valid_header_name(k) {
            return Err(invalid("channel.config.headers", format!("'{k}' is not a valid header name")));
        }
        if RESERVED_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
            return Err(invalid("channel.config.headers", format!("'{k}' is set by Haken and cannot be configured")));
        }
        if !valid_header_value(v) {
            return Err(invalid("channel.config.headers", format!("the value of '{k}' is not a valid header value")));
        }
    }
    let auth = match spec.auth {
        None => None,
        Some(a) => {
            let kind = a.kind.unwrap_or_else(|| "HEADER".to_owned());
            if !kind.eq_ignore_ascii_case("HEADER") {
                return Err(invalid("channel.config.authScheme.type", "only HEADER is supported"));
            }
            let key =
                a.key.ok_or_else(|| invalid("channel.config.authScheme.key", "The field cannot be left blank"))?;
            if !valid_header_name(&key) || RESERVED_HEADERS.contains(&key.to_ascii_lowercase().as_str()) {
                return Err(invalid(
                    "channel.config.authScheme.key",
                    format!("'{key}' cannot be used as the auth header"),
                ));
            }
            // A kept secret stays with the server it was given for: pointing the hook elsewhere
            // needs the value again, or anyone with a token could send it there.
            let same_server = same_origin(&base.uri, &uri);
            let value = match a.value {
                Some(v) => v,
                None => match previous_auth {
                    Some(p) if p.key.eq_ignore_ascii_case(&key) && same_server => p.value.clone(),
                    Some(_) if !same_server => {
                        return Err(invalid(
                            "channel.config.authScheme.value",
                            "give the secret again when the hook's URI points at another server",
                        ));
                    }
                    _ => return Err(invalid("channel.config.authScheme.value", "The field cannot be left blank")),
                },
            };
            if value.is_empty() || !valid_header_value(&value) {
                return Err(invalid("channel.config.authScheme.value", "must be a non-empty, valid header value"));
            }
            Some(AuthScheme { kind, key, value })
        }
    };
    // Each header is sent once: no custom header twice, none that is also the auth header.
    for (i, (k, _)) in spec.headers.iter().enumerate() {
        if spec.headers[..i].iter().any(|(earlier, _)| earlier.eq_ignore_ascii_case(k)) {
            return Err(invalid("channel.config.headers", format!("'{k}' is given more than once")));
        }
        if auth.as_ref().is_some_and(|a| a.key.eq_ignore_ascii_case(k)) {
            return Err(invalid("channel.config.headers", format!("'{k}' is the auth header (authScheme.key)")));
        }
    }
    // Settings the request does not mention keep their value (Okta clients never send them).
    let mut delivery = base.delivery;
    if let Some(p) = spec.retry_policy {
        delivery.retry_policy = match p.as_str() {
            "okta" => RetryPolicy::Okta,
            "durable" => RetryPolicy::Durable,
            other => return Err(invalid("delivery.retryPolicy", format!("'{other}' is not okta or durable"))),
        };
    }
    if let Some(t) = spec.timeout_ms {
        if !(100..=30_000).contains(&t) {
            return Err(invalid("delivery.timeoutMs", "must be between 100 and 30000"));
        }
        delivery.timeout_ms = t;
    }
    if let Some(n) = spec.max_in_flight {
        if !(1..=64).contains(&n) {
            return Err(invalid("delivery.maxInFlight", "must be between 1 and 64"));
        }
        delivery.max_in_flight = n;
    }
    base.name = name;
    base.description = spec.description;
    base.event_types = items;
    base.filters = filters;
    base.uri = uri;
    base.headers = spec.headers;
    base.auth = auth;
    base.delivery = delivery;
    Ok(())
}

fn target(hook: &EventHook) -> Target {
    Target {
        id: hook.id.clone(),
        kind: "EventHook".into(),
        alternate_id: Some(hook.name.clone()),
        display_name: Some(hook.name.clone()),
        detail_entry: None,
        change_details: None,
    }
}

fn event(ctx: &EventContext, kind: &str, msg: &str, hook: &EventHook, now: Timestamp) -> LogEvent {
    ctx.event(kind, msg, now).with_target(target(hook))
}

/// A store failure as the caller is told it; `kind` names the resource (`EventHook`, ...).
pub(crate) fn store_error(e: StoreError, id: &str, kind: &str) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found(id, kind),
        StoreError::Conflict(_) => {
            invalid("name", "An object with this field already exists in the current organization")
        }
        other => {
            tracing::error!(error = %other, "Store operation failed.");
            ApiError::internal()
        }
    }
}

/// A failure inside a store closure: an answer for the caller, or the store's own.
pub(crate) enum Fail {
    Api(ApiError),
    Store(StoreError),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Self {
        Fail::Api(e)
    }
}

pub(crate) fn fail(e: Fail, id: &str, kind: &str) -> ApiError {
    match e {
        Fail::Api(a) => a,
        Fail::Store(s) => store_error(s, id, kind),
    }
}

/// A hook just created; `signing_secret` is shown this once.
#[derive(Debug, Clone)]
pub struct Created {
    pub hook: EventHook,
    pub signing_secret: Option<String>,
}

pub async fn create(
    store: &Store,
    ctx: &EventContext,
    spec: HookSpec,
    policy: UrlPolicy,
    now: Timestamp,
) -> Result<Created, ApiError> {
    let count = store.list_event_hooks().await.map_err(|e| store_error(e, "-", HOOK))?.len();
    if count >= MAX_HOOKS {
        return Err(invalid("eventHooks", format!("at most {MAX_HOOKS} event hooks")));
    }
    let signing = spec.signing;
    let mut hook = EventHook {
        id: new_id(IdKind::EventHook),
        name: String::new(),
        description: None,
        status: HookStatus::Active,
        verification_status: VerificationStatus::Unverified,
        created: now,
        created_by: ctx.api_token_id.clone(),
        last_updated: now,
        event_types: Vec::new(),
        filters: None,
        uri: String::new(),
        headers: Vec::new(),
        auth: None,
        delivery: DeliverySettings::default(),
        signing: Vec::new(),
    };
    apply(spec, &mut hook, policy, None)?;
    let secret = signing.then(crate::signing::new_secret);
    if let Some(s) = &secret {
        hook.signing.push(SigningSecret { secret: s.clone(), created: now, expires: None });
    }
    let ev = event(ctx, "event_hook.created", "Event hook created", &hook, now);
    store.insert_event_hook(&hook, &[ev]).await.map_err(|e| store_error(e, &hook.id, HOOK))?;
    Ok(Created { hook, signing_secret: secret })
}

pub async fn get(store: &Store, id: &str) -> Result<EventHook, ApiError> {
    store
        .get_event_hook(id)
        .await
        .map_err(|e| store_error(e, id, HOOK))?
        .ok_or_else(|| ApiError::not_found(id, "EventHook"))
}

/// `PUT`: replaces the configuration; a changed channel needs verifying again.
pub async fn replace(
    store: &Store,
    ctx: &EventContext,
    id: &str,
    spec: HookSpec,
    policy: UrlPolicy,
    now: Timestamp,
) -> Result<EventHook, ApiError> {
    let ctx = ctx.clone();
    store
        .update_event_hook::<Fail, _>(id, move |mut hook| {
            let before = hook.clone();
            let previous_auth = hook.auth.clone();
            apply(spec, &mut hook, policy, previous_auth.as_ref())?;
            if hook.uri != before.uri || hook.headers != before.headers || hook.auth != before.auth {
                hook.verification_status = VerificationStatus::Unverified;
            }
            if hook == before {
                return Ok(None);
            }
            hook.last_updated = now;
            let ev = event(&ctx, "event_hook.updated", "Event hook updated", &hook, now);
            Ok(Some(Change { value: hook, events: vec![ev] }))
        })
        .await
        .map_err(|e| fail(e, id, HOOK))
}

/// Activate or deactivate (idempotent).
pub async fn set_status(
    store: &Store,
    ctx: &EventContext,
    id: &str,
    status: HookStatus,
    now: Timestamp,
) -> Result<EventHook, ApiError> {
    let ctx = ctx.clone();
    store
        .update_event_hook::<Fail, _>(id, move |mut hook| {
            if hook.status == status {
                return Ok(None);
            }
            hook.status = status;
            hook.last_updated = now;
            let (kind, msg) = match status {
                HookStatus::Active => ("event_hook.activated", "Event hook activated"),
                HookStatus::Inactive => ("event_hook.deactivated", "Event hook deactivated"),
            };
            let ev = event(&ctx, kind, msg, &hook, now);
            Ok(Some(Change { value: hook, events: vec![ev] }))
        })
        .await
        .map_err(|e| fail(e, id, HOOK))
}

/// Deletes an `INACTIVE` hook with its queue and delivery log.
pub async fn delete(store: &Store, ctx: &EventContext, id: &str, now: Timestamp) -> Result<(), ApiError> {
    let ctx = ctx.clone();
    store
        .delete_event_hook::<Fail, _>(id, move |hook| {
            if hook.status != HookStatus::Inactive {
                return Err(invalid("status", "only INACTIVE event hooks can be deleted; deactivate it first").into());
            }
            Ok(vec![event(&ctx, "event_hook.deleted", "Event hook deleted", hook, now)])
        })
        .await
        .map_err(|e| fail(e, id, HOOK))
}

/// Runs the verification request and records the result (an `event_hook.verified` event for
/// every attempt, successful or not). A failure answers 400 with the reason.
pub async fn verify(
    store: &Store,
    client: &OutboundClient,
    ctx: &EventContext,
    id: &str,
    now: Timestamp,
) -> Result<EventHook, ApiError> {
    let hook = get(store, id).await?;
    let result = crate::verify::verify(client, &hook).await;
    let failed = |reason: &str| {
        let reason: String = reason.chars().take(255).collect();
        event(ctx, "event_hook.verified", "Event hook verification", &hook, now).with_outcome("FAILURE", Some(&reason))
    };
    if let Err(reason) = result {
        // A failed verification changes nothing about the hook; it is only logged.
        store.append_events(&[failed(&reason)]).await.map_err(|e| store_error(e, id, HOOK))?;
        return Err(ApiError::with_summary(
            ErrorCode::ValidationFailed,
            "Api validation failed: Verification of the event hook endpoint failed",
        )
        .with_cause(format!("channel.config.uri: {reason}")));
    }
    let success = event(ctx, "event_hook.verified", "Event hook verification", &hook, now);
    let asked = (hook.uri.clone(), hook.headers.clone(), hook.auth.clone());
    let updated = store
        .update_event_hook::<Fail, _>(id, move |mut h| {
            // The channel may have been replaced while the challenge was on the wire: only the
            // channel that answered becomes verified.
            if (&h.uri, &h.headers, &h.auth) != (&asked.0, &asked.1, &asked.2) {
                return Ok(None);
            }
            h.verification_status = VerificationStatus::Verified;
            h.last_updated = now;
            Ok(Some(Change { value: h, events: vec![success] }))
        })
        .await
        .map_err(|e| fail(e, id, HOOK))?;
    // Verified, and by this answer: another verification of a newer channel may have won.
    let same = (&updated.uri, &updated.headers, &updated.auth) == (&hook.uri, &hook.headers, &hook.auth);
    if updated.verification_status == VerificationStatus::Verified && same {
        return Ok(updated);
    }
    const CHANGED: &str = "the channel changed during verification; verify again";
    store.append_events(&[failed(CHANGED)]).await.map_err(|e| store_error(e, id, HOOK))?;
    Err(ApiError::validation("channel", CHANGED))
}

/// Starts signing with a new secret; the previous ones keep signing for the overlap window.
/// Returns the new secret (shown this once).
pub async fn rotate_secret(
    store: &Store,
    ctx: &EventContext,
    id: &str,
    now: Timestamp,
) -> Result<(EventHook, String), ApiError> {
    let secret = crate::signing::new_secret();
    let s = secret.clone();
    let ctx = ctx.clone();
    let hook = store
        .update_event_hook::<Fail, _>(id, move |mut h| {
            let overlap_end = now.plus_millis(ROTATION_OVERLAP_MS);
            for old in h.signing.iter_mut() {
                if old.expires.is_none_or(|e| e > overlap_end) {
                    old.expires = Some(overlap_end);
                }
            }
            h.signing.retain(|old| old.expires.is_none_or(|e| e > now));
            h.signing.push(SigningSecret { secret: s, created: now, expires: None });
            h.last_updated = now;
            let ev = event(&ctx, "event_hook.updated", "Event hook signing secret rotated", &h, now);
            Ok(Some(Change { value: h, events: vec![ev] }))
        })
        .await
        .map_err(|e| fail(e, id, HOOK))?;
    Ok((hook, secret))
}
