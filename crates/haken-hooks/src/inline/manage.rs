//! Managing inline hooks and hook keys: validation of what an administrator asks for (spec 5.3,
//! 5.4 and the limits of section 7), the lifecycle with its `inline_hook.*` System Log events,
//! and `execute`, the preview call. The HTTP layer maps request bodies to [`InlineHookSpec`].

use base64::Engine as _;
use haken_core::hook::{AuthScheme, HookStatus};
use haken_core::id::{IdKind, new_id, random_base62};
use haken_core::inline_hook::{
    FailMode, HookKey, InlineChannel, InlineHook, InlineHookType, MAX_TIMEOUT_MS, OAuthAuthType, OAuthConfig,
};
use haken_core::log_event::{EventContext, LogEvent, Target};
use haken_core::schema::UserSchema;
use haken_core::{ApiError, ErrorCode, Timestamp};
use haken_store::{Change, Store};
use serde_json::{Map, Value};

use super::commands::{self, RegistrationKind};
use super::{FailureKind, InlineCaller};
use crate::client::UrlPolicy;
use crate::manage::{Fail, RESERVED_HEADERS, fail, store_error, valid_header_name, valid_header_value};

/// Inline hooks per server, all types together (spec 7).
pub const MAX_INLINE_HOOKS: i64 = 100;
/// Hook keys per server (spec 5.4).
pub const MAX_HOOK_KEYS: i64 = 50;

/// What an administrator asks for. `None` means "not given"; the HTTP layer merges a partial
/// update over the current hook before building this, so validation always sees a whole hook.
#[derive(Debug, Clone, Default)]
pub struct InlineHookSpec {
    pub name: Option<String>,
    pub hook_type: Option<String>,
    pub version: Option<String>,
    pub channel_type: Option<String>,
    pub channel_version: Option<String>,
    pub uri: Option<String>,
    pub method: Option<String>,
    pub headers: Vec<(String, String)>,
    pub auth: Option<AuthSpec>,
    pub oauth: OAuthSpec,
    pub fail_mode: Option<String>,
    pub shadow: Option<bool>,
    pub timeout_ms: Option<u64>,
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Default)]
pub struct AuthSpec {
    pub kind: Option<String>,
    pub key: Option<String>,
    pub value: Option<String>,
}

/// The `OAUTH` channel fields (all absent for an `HTTP` channel).
#[derive(Debug, Clone, Default)]
pub struct OAuthSpec {
    pub auth_type: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub hook_key_id: Option<String>,
    pub token_url: Option<String>,
    pub scope: Option<String>,
}

impl OAuthSpec {
    fn is_empty(&self) -> bool {
        self.auth_type.is_none()
            && self.client_id.is_none()
            && self.client_secret.is_none()
            && self.hook_key_id.is_none()
            && self.token_url.is_none()
    }
}

fn invalid(field: &str, msg: impl std::fmt::Display) -> ApiError {
    ApiError::validation(field, msg)
}

fn blank(field: &str) -> ApiError {
    invalid(field, "The field cannot be left blank")
}

fn check_headers(headers: &[(String, String)], auth_key: Option<&str>) -> Result<(), ApiError> {
    for (k, v) in headers {
        if !valid_header_name(k) {
            return Err(invalid("channel.config.headers", format!("'{k}' is not a valid header name")));
        }
        let lower = k.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) || lower == "authorization" && auth_key.is_none() {
            return Err(invalid("channel.config.headers", format!("'{k}' is set by Haken and cannot be configured")));
        }
        if auth_key.is_some_and(|a| a.eq_ignore_ascii_case(k)) {
            return Err(invalid("channel.config.headers", format!("'{k}' is the auth header; set it in authScheme")));
        }
        if !valid_header_value(v) {
            return Err(invalid("channel.config.headers", format!("the value of '{k}' is not a valid header value")));
        }
    }
    Ok(())
}

/// Checks a whole spec and builds the hook's configurable parts onto `base`. `previous` keeps
/// secrets the administrator did not repeat (GET never shows them, so a round-tripped PUT
/// cannot carry them).
async fn apply(
    store: &Store,
    spec: InlineHookSpec,
    base: &mut InlineHook,
    policy: UrlPolicy,
    previous: Option<&InlineChannel>,
) -> Result<(), ApiError> {
    let name = spec.name.map(|n| n.trim().to_owned()).unwrap_or_default();
    if name.is_empty() || name.chars().count() > 255 {
        return Err(invalid("name", "must be 1 to 255 characters"));
    }
    let hook_type = match spec.hook_type.as_deref() {
        None => return Err(blank("type")),
        Some(t) => InlineHookType::parse(t).ok_or_else(|| {
            invalid(
                "type",
                format!(
                    "'{t}' is not an inline hook type (one of {})",
                    InlineHookType::ALL.map(InlineHookType::as_str).join(", ")
                ),
            )
        })?,
    };
    match spec.version.as_deref() {
        Some("1.0.0") => {}
        None => return Err(blank("version")),
        Some(v) => return Err(invalid("version", format!("'{v}' is not supported; use 1.0.0"))),
    }
    match spec.channel_version.as_deref() {
        Some("1.0.0") => {}
        None => return Err(blank("channel.version")),
        Some(v) => return Err(invalid("channel.version", format!("'{v}' is not supported; use 1.0.0"))),
    }
    match spec.method.as_deref() {
        None | Some("POST") => {}
        Some(m) => return Err(invalid("channel.config.method", format!("'{m}' is not supported; use POST"))),
    }
    let uri = spec.uri.ok_or_else(|| blank("channel.config.uri"))?;
    policy.check(&uri).map_err(|m| invalid("channel.config.uri", m))?;
    let channel = match spec.channel_type.as_deref() {
        Some("HTTP") => {
            if !spec.oauth.is_empty() {
                return Err(invalid(
                    "channel.config",
                    "authType, clientId, clientSecret, hookKeyId and tokenUrl belong to OAUTH channels",
                ));
            }
            let auth = match spec.auth {
                None => None,
                Some(a) => {
                    let kind = a.kind.unwrap_or_else(|| "HEADER".to_owned());
                    if kind != "HEADER" {
                        return Err(invalid(
                            "channel.config.authScheme.type",
                            format!("'{kind}' is not supported; use HEADER"),
                        ));
                    }
                    let key = a.key.ok_or_else(|| blank("channel.config.authScheme.key"))?;
                    if !valid_header_name(&key) || RESERVED_HEADERS.contains(&key.to_ascii_lowercase().as_str()) {
                        return Err(invalid(
                            "channel.config.authScheme.key",
                            format!("'{key}' cannot be used as the auth header"),
                        ));
                    }
                    // A kept secret stays with the server it was given for: pointing the hook
                    // elsewhere needs the value again, or anyone with a token could send it there.
                    let same_origin = previous.is_some_and(|p| crate::manage::same_origin(&p.uri, &uri));
                    let value = match a.value {
                        Some(v) => v,
                        None => match previous.and_then(|p| p.auth.as_ref()) {
                            Some(p) if p.key.eq_ignore_ascii_case(&key) && same_origin => p.value.clone(),
                            Some(_) if !same_origin => {
                                return Err(invalid(
                                    "channel.config.authScheme.value",
                                    "give the secret again when the hook's URI points at another server",
                                ));
                            }
                            _ => return Err(blank("channel.config.authScheme.value")),
                        },
                    };
                    if value.is_empty() || !valid_header_value(&value) {
                        return Err(invalid(
                            "channel.config.authScheme.value",
                            "must be a non-empty, valid header value",
                        ));
                    }
                    Some(AuthScheme { kind, key, value })
                }
            };
            if hook_type == InlineHookType::Telephony && auth.is_none() {
                return Err(invalid("channel.config.authScheme", "telephony hooks must have an authScheme"));
            }
            check_headers(&spec.headers, auth.as_ref().map(|a| a.key.as_str()))?;
            InlineChannel { uri, headers: spec.headers, auth, oauth: None }
        }
        Some("OAUTH") => {
            if spec.auth.is_some() {
                return Err(invalid("channel.config.authScheme", "must be null for OAUTH channels"));
            }
            check_headers(&spec.headers, None)?;
            let o = spec.oauth;
            let auth_type = match o.auth_type.as_deref() {
                None => return Err(blank("channel.config.authType")),
                Some(t) => OAuthAuthType::parse(t).ok_or_else(|| {
                    invalid("channel.config.authType", format!("'{t}' is not client_secret_post or private_key_jwt"))
                })?,
            };
            let client_id =
                o.client_id.filter(|c| !c.trim().is_empty()).ok_or_else(|| blank("channel.config.clientId"))?;
            if client_id.len() > 255 {
                return Err(invalid("channel.config.clientId", "must be at most 255 characters"));
            }
            let token_url = o.token_url.ok_or_else(|| blank("channel.config.tokenUrl"))?;
            policy.check(&token_url).map_err(|m| invalid("channel.config.tokenUrl", m))?;
            let scope = o.scope.filter(|s| !s.trim().is_empty());
            let prev = previous.and_then(|p| p.oauth.as_ref());
            let (client_secret, hook_key_id) = match auth_type {
                OAuthAuthType::ClientSecretPost => {
                    if o.hook_key_id.is_some() {
                        return Err(invalid("channel.config.hookKeyId", "is only used with private_key_jwt"));
                    }
                    let secret = match o.client_secret {
                        Some(s) => s,
                        None => match prev {
                            Some(p)
                                if p.client_id == client_id
                                    && p.token_url == token_url
                                    && p.client_secret.is_some() =>
                            {
                                p.client_secret.clone().unwrap_or_default()
                            }
                            Some(p) if p.client_secret.is_some() => {
                                return Err(invalid(
                                    "channel.config.clientSecret",
                                    "give the client secret again when clientId or tokenUrl change",
                                ));
                            }
                            _ => return Err(blank("channel.config.clientSecret")),
                        },
                    };
                    if secret.is_empty() {
                        return Err(blank("channel.config.clientSecret"));
                    }
                    (Some(secret), None)
                }
                OAuthAuthType::PrivateKeyJwt => {
                    if o.client_secret.is_some() {
                        return Err(invalid("channel.config.clientSecret", "must be null for private_key_jwt"));
                    }
                    let key_id = o.hook_key_id.ok_or_else(|| blank("channel.config.hookKeyId"))?;
                    let exists =
                        store.get_doc::<HookKey>(&key_id).await.map_err(|e| store_error(e, &key_id, "HookKey"))?;
                    if exists.is_none() {
                        return Err(invalid("channel.config.hookKeyId", format!("hook key '{key_id}' does not exist")));
                    }
                    (None, Some(key_id))
                }
            };
            InlineChannel {
                uri,
                headers: spec.headers,
                auth: None,
                oauth: Some(OAuthConfig { auth_type, client_id, client_secret, hook_key_id, token_url, scope }),
            }
        }
        None => return Err(blank("channel.type")),
        Some(t) => return Err(invalid("channel.type", format!("'{t}' is not supported; use HTTP or OAUTH"))),
    };
    if hook_type == InlineHookType::Telephony && channel.oauth.is_some() {
        return Err(invalid("channel.type", "telephony hooks use an HTTP channel with an authScheme"));
    }
    let fail_mode =
        match spec.fail_mode.as_deref() {
            None => base.fail_mode,
            Some("default") => None,
            Some(m) => Some(FailMode::parse(m).ok_or_else(|| {
                invalid("execution.failMode", format!("'{m}' is not failOpen, failClosed or default"))
            })?),
        };
    if let Some(t) = spec.timeout_ms
        && !(100..=MAX_TIMEOUT_MS).contains(&t)
    {
        return Err(invalid("execution.timeoutMs", format!("must be between 100 and {MAX_TIMEOUT_MS}")));
    }
    base.name = name;
    base.hook_type = hook_type;
    base.version = "1.0.0".to_owned();
    base.channel = channel;
    base.fail_mode = fail_mode;
    if let Some(s) = spec.shadow {
        base.shadow = s;
    }
    if spec.timeout_ms.is_some() {
        base.timeout_ms = spec.timeout_ms;
    }
    if spec.metadata.is_some() {
        base.metadata = spec.metadata;
    }
    Ok(())
}

fn target(hook: &InlineHook) -> Target {
    Target {
        id: hook.id.clone(),
        kind: "InlineHook".into(),
        alternate_id: Some(hook.hook_type.as_str().to_owned()),
        display_name: Some(hook.name.clone()),
        detail_entry: None,
        change_details: None,
    }
}

fn event(ctx: &EventContext, kind: &str, msg: &str, hook: &InlineHook, now: Timestamp) -> LogEvent {
    ctx.event(kind, msg, now).with_target(target(hook))
}

/// A failed hook write as the caller is told it: a taken lookup key is one of the per-type
/// limits (checked first, and enforced by the store for concurrent writers).
fn hook_write_failed(e: Fail, hook_type: InlineHookType, id: &str) -> ApiError {
    match e {
        Fail::Store(haken_store::StoreError::Conflict("lookup")) => limit_error(hook_type),
        other => fail(other, id, "InlineHook"),
    }
}

fn limit_error(hook_type: InlineHookType) -> ApiError {
    match hook_type {
        InlineHookType::Telephony => invalid("type", "only one telephony inline hook may be ACTIVE"),
        _ => invalid("type", "only one password import inline hook may exist"),
    }
}

/// The per-type limits that depend on the other hooks (spec 5.3 and 7): one password import
/// hook; one active telephony hook.
async fn check_type_limits(store: &Store, hook: &InlineHook) -> Result<(), ApiError> {
    let all: Vec<InlineHook> = store.all_docs().await.map_err(|e| store_error(e, &hook.id, "InlineHook"))?;
    let others: Vec<&InlineHook> = all.iter().filter(|h| h.id != hook.id && h.hook_type == hook.hook_type).collect();
    match hook.hook_type {
        InlineHookType::PasswordImport if !others.is_empty() => Err(limit_error(hook.hook_type)),
        InlineHookType::Telephony if hook.is_active() && others.iter().any(|h| h.is_active()) => {
            Err(limit_error(hook.hook_type))
        }
        _ => Ok(()),
    }
}

/// Creates an `ACTIVE` hook.
pub async fn create(
    store: &Store,
    ctx: &EventContext,
    spec: InlineHookSpec,
    policy: UrlPolicy,
    now: Timestamp,
) -> Result<InlineHook, ApiError> {
    let count = store.count_docs::<InlineHook>().await.map_err(|e| store_error(e, "-", "InlineHook"))?;
    if count >= MAX_INLINE_HOOKS {
        return Err(invalid("inlineHooks", format!("at most {MAX_INLINE_HOOKS} inline hooks")));
    }
    let mut hook = InlineHook {
        id: new_id(IdKind::InlineHook),
        name: String::new(),
        hook_type: InlineHookType::Registration,
        version: "1.0.0".into(),
        status: HookStatus::Active,
        channel: InlineChannel { uri: String::new(), headers: Vec::new(), auth: None, oauth: None },
        created: now,
        last_updated: now,
        fail_mode: None,
        shadow: false,
        timeout_ms: None,
        metadata: None,
    };
    apply(store, spec, &mut hook, policy, None).await?;
    check_type_limits(store, &hook).await?;
    let ev = event(ctx, "inline_hook.created", "Inline hook created", &hook, now);
    store.insert_doc(&hook, &[ev]).await.map_err(|e| hook_write_failed(Fail::Store(e), hook.hook_type, &hook.id))?;
    Ok(hook)
}

pub async fn get(store: &Store, id: &str) -> Result<InlineHook, ApiError> {
    store
        .get_doc::<InlineHook>(id)
        .await
        .map_err(|e| store_error(e, id, "InlineHook"))?
        .ok_or_else(|| ApiError::not_found(id, "InlineHook"))
}

/// The active hook of a type that allows only one (password import), if any.
pub async fn active_of_type(store: &Store, hook_type: InlineHookType) -> Result<Option<InlineHook>, ApiError> {
    let all: Vec<InlineHook> = store.all_docs().await.map_err(|e| store_error(e, "-", "InlineHook"))?;
    Ok(all.into_iter().find(|h| h.hook_type == hook_type && h.is_active()))
}

/// Replaces the configuration (`PUT`, or a partial `POST` already merged into a whole spec).
/// The type cannot change.
/// `read` is the hook as the caller saw it (a partial update merged its patch over it); the
/// update is refused if the hook changed since, so no concurrent change is lost.
#[allow(clippy::too_many_arguments)]
pub async fn replace(
    store: &Store,
    caller: &InlineCaller,
    ctx: &EventContext,
    id: &str,
    spec: InlineHookSpec,
    policy: UrlPolicy,
    read: Option<InlineHook>,
    now: Timestamp,
) -> Result<InlineHook, ApiError> {
    let current = match read {
        Some(h) => h,
        None => get(store, id).await?,
    };
    if let Some(t) = &spec.hook_type
        && t != current.hook_type.as_str()
    {
        return Err(invalid("type", "the type of an inline hook cannot be changed"));
    }
    let mut next = current.clone();
    apply(store, spec, &mut next, policy, Some(&current.channel)).await?;
    check_type_limits(store, &next).await?;
    let ctx = ctx.clone();
    let expected = current.clone();
    let updated = store
        .update_doc::<InlineHook, Fail, _>(id, move |stored| {
            if stored != expected {
                return Err(invalid("inlineHook", "the hook changed while this update was checked; try again").into());
            }
            if next == stored {
                return Ok(None);
            }
            next.last_updated = now;
            let ev = event(&ctx, "inline_hook.updated", "Inline hook updated", &next, now);
            Ok(Some(Change { value: next, events: vec![ev] }))
        })
        .await
        .map_err(|e| hook_write_failed(e, current.hook_type, id))?;
    if updated.channel != current.channel {
        caller.forget_token(&current);
    }
    Ok(updated)
}

/// Activate or deactivate (idempotent).
pub async fn set_status(
    store: &Store,
    ctx: &EventContext,
    id: &str,
    status: HookStatus,
    now: Timestamp,
) -> Result<InlineHook, ApiError> {
    let current = get(store, id).await?;
    if status == HookStatus::Active && current.status != status {
        let mut probe = current.clone();
        probe.status = status;
        check_type_limits(store, &probe).await?;
    }
    let ctx = ctx.clone();
    store
        .update_doc::<InlineHook, Fail, _>(id, move |mut hook| {
            if hook.status == status {
                return Ok(None);
            }
            hook.status = status;
            hook.last_updated = now;
            let (kind, msg) = match status {
                HookStatus::Active => ("inline_hook.activated", "Inline hook activated"),
                HookStatus::Inactive => ("inline_hook.deactivated", "Inline hook deactivated"),
            };
            let ev = event(&ctx, kind, msg, &hook, now);
            Ok(Some(Change { value: hook, events: vec![ev] }))
        })
        .await
        .map_err(|e| hook_write_failed(e, current.hook_type, id))
}

/// Deletes an `INACTIVE` hook.
pub async fn delete(store: &Store, ctx: &EventContext, id: &str, now: Timestamp) -> Result<(), ApiError> {
    let ctx = ctx.clone();
    store
        .delete_doc::<InlineHook, Fail, _>(id, move |hook| {
            if hook.status != HookStatus::Inactive {
                return Err(invalid("status", "only INACTIVE inline hooks can be deleted; deactivate it first").into());
            }
            Ok(vec![event(&ctx, "inline_hook.deleted", "Inline hook deleted", hook, now)])
        })
        .await
        .map_err(|e| fail(e, id, "InlineHook"))
}

/// `execute`: sends the caller's request payload through the hook's channel (with the type's
/// retry rule) and returns the handler's answer if it meets the type's contract. The call is
/// recorded (`inline_hook.executed`, marked as a preview) but touches no flow.
pub async fn execute(
    store: &Store,
    caller: &InlineCaller,
    ctx: &EventContext,
    id: &str,
    payload: Value,
    schema: &UserSchema,
) -> Result<Value, ApiError> {
    let hook = get(store, id).await?;
    if !payload.is_object() {
        return Err(invalid("body", "must be a complete inline hook request object"));
    }
    if let Some(t) = payload.get("eventType").and_then(Value::as_str)
        && t != hook.hook_type.as_str()
    {
        return Err(invalid("eventType", format!("this hook is of type {}, not {t}", hook.hook_type.as_str())));
    }
    let report = caller.call(&hook, &payload).await;
    let now = Timestamp::now();
    let mut events = vec![super::executed_event(ctx, &hook, &report, now).with_debug("preview", Value::Bool(true))];
    let outcome = match &report.result {
        Err(f) => Err(f.clone()),
        Ok(resp) => {
            let checked = match hook.hook_type {
                InlineHookType::Registration => {
                    let kind = if payload.get("requestType").and_then(Value::as_str) == Some("progressive.profile") {
                        RegistrationKind::Progressive
                    } else {
                        RegistrationKind::SelfService
                    };
                    commands::registration(resp, kind, schema).map(|_| ())
                }
                InlineHookType::Import => commands::import(resp, schema).map(|_| ()),
                InlineHookType::PasswordImport => commands::password_import(resp).map(|_| ()),
                other => super::validate_generic(other, resp),
            };
            events.push(
                super::processed_event(ctx, &hook, resp, checked.as_ref().err(), now)
                    .with_debug("preview", Value::Bool(true)),
            );
            checked.map(|()| resp.body.clone()).map_err(|why| super::CallFailure::new(FailureKind::Invalid, why))
        }
    };
    if let Err(e) = store.append_events(&events).await {
        tracing::error!(error = %e, "Recording an inline hook preview failed.");
    }
    match outcome {
        Ok(Value::Null) => Ok(Value::Object(Map::new())),
        Ok(body) => Ok(body),
        Err(f) => Err(ApiError::with_summary(
            ErrorCode::ValidationFailed,
            format!("Api validation failed: the inline hook call did not succeed ({})", f.kind.as_str()),
        )
        .with_cause(f.message)),
    }
}

// ---- hook keys ----

/// Creates a hook key; the RSA key pair is generated here and the private half never leaves.
pub async fn create_key(store: &Store, name: Option<String>, now: Timestamp) -> Result<HookKey, ApiError> {
    let name = name.map(|n| n.trim().to_owned()).unwrap_or_default();
    if name.is_empty() || name.chars().count() > 255 {
        return Err(invalid("name", "must be 1 to 255 characters"));
    }
    let count = store.count_docs::<HookKey>().await.map_err(|e| store_error(e, "-", "HookKey"))?;
    if count >= MAX_HOOK_KEYS {
        return Err(invalid("hookKeys", format!("at most {MAX_HOOK_KEYS} hook keys")));
    }
    let key_id = format!("{}-{}", random_base62(8), random_base62(8)).to_lowercase();
    let kid = key_id.clone();
    // RSA key generation takes a noticeable moment: keep it off the async workers.
    let generated = tokio::task::spawn_blocking(move || crate::oauth::generate_rsa_key(&kid))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|e| {
            tracing::error!(error = %e, "Hook key generation failed.");
            ApiError::internal()
        })?;
    let key = HookKey {
        id: new_id(IdKind::HookKey),
        key_id,
        name,
        private_key: base64::engine::general_purpose::STANDARD.encode(&generated.private_pkcs8_der),
        public_jwk: generated.public_jwk,
        created: now,
        last_updated: now,
    };
    store.insert_doc(&key, &[]).await.map_err(|e| store_error(e, &key.id, "HookKey"))?;
    Ok(key)
}

pub async fn get_key(store: &Store, id: &str) -> Result<HookKey, ApiError> {
    store
        .get_doc::<HookKey>(id)
        .await
        .map_err(|e| store_error(e, id, "HookKey"))?
        .ok_or_else(|| ApiError::not_found(id, "HookKey"))
}

/// A key by its public alias (`keyId`).
pub async fn get_key_by_alias(store: &Store, key_id: &str) -> Result<HookKey, ApiError> {
    store
        .doc_by_lookup::<HookKey>(key_id)
        .await
        .map_err(|e| store_error(e, key_id, "HookKey"))?
        .ok_or_else(|| ApiError::not_found(key_id, "HookKey"))
}

/// Whether an inline hook uses the key.
pub async fn key_in_use(store: &Store, id: &str) -> Result<bool, ApiError> {
    let hooks: Vec<InlineHook> = store.all_docs().await.map_err(|e| store_error(e, id, "HookKey"))?;
    Ok(hooks.iter().any(|h| h.channel.oauth.as_ref().and_then(|o| o.hook_key_id.as_deref()) == Some(id)))
}

pub async fn rename_key(store: &Store, id: &str, name: Option<String>, now: Timestamp) -> Result<HookKey, ApiError> {
    let name = name.map(|n| n.trim().to_owned()).unwrap_or_default();
    if name.is_empty() || name.chars().count() > 255 {
        return Err(invalid("name", "must be 1 to 255 characters"));
    }
    store
        .update_doc::<HookKey, Fail, _>(id, move |mut key| {
            if key.name == name {
                return Ok(None);
            }
            key.name = name;
            key.last_updated = now;
            Ok(Some(Change { value: key, events: Vec::new() }))
        })
        .await
        .map_err(|e| fail(e, id, "HookKey"))
}

/// Deletes a key no inline hook uses.
pub async fn delete_key(store: &Store, id: &str) -> Result<(), ApiError> {
    get_key(store, id).await?;
    if key_in_use(store, id).await? {
        return Err(invalid("hookKey", "the key is used by an inline hook; change the hook first"));
    }
    store.delete_doc::<HookKey, Fail, _>(id, |_| Ok(Vec::new())).await.map_err(|e| fail(e, id, "HookKey"))
}
