//! `/api/v1/inlineHooks` (Okta's Inline Hooks API: create, list by type, get, partial update,
//! replace, delete, activate, deactivate, execute) and `/api/v1/hook-keys` (the keys of
//! `private_key_jwt` channels). Haken's extension on the hook object is `execution`
//! (`failMode`, `shadow`, `timeoutMs`).

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use haken_core::hook::HookStatus;
use haken_core::inline_hook::{HookKey, InlineHook, InlineHookType};
use haken_core::{ApiError, ErrorCode, Timestamp};
use haken_hooks::inline::manage::{self, AuthSpec, InlineHookSpec, OAuthSpec};
use serde_json::{Map, Value, json};

use crate::error::{ApiResult, Failure};
use crate::extract::{Caller, OktaJson};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/inlineHooks", get(list_inline_hooks).post(create_inline_hook))
        .route(
            "/api/v1/inlineHooks/{id}",
            get(get_inline_hook).post(update_inline_hook).put(replace_inline_hook).delete(delete_inline_hook),
        )
        .route("/api/v1/inlineHooks/{id}/lifecycle/{op}", post(inline_hook_lifecycle))
        .route("/api/v1/inlineHooks/{id}/execute", post(execute_inline_hook))
        .route("/api/v1/hook-keys", get(list_hook_keys).post(create_hook_key))
        .route("/api/v1/hook-keys/public/{key_id}", get(get_public_key))
        .route("/api/v1/hook-keys/{id}", get(get_hook_key).put(rename_hook_key).delete(delete_hook_key))
}

// ---- request bodies ----

const READ_ONLY: &[&str] = &["id", "status", "created", "lastUpdated", "_links"];
const TOP: &[&str] = &["name", "type", "version", "channel", "execution", "metadata"];
const CHANNEL: &[&str] = &["type", "version", "config"];
const CONFIG: &[&str] = &[
    "uri",
    "method",
    "headers",
    "authScheme",
    "authType",
    "clientId",
    "clientSecret",
    "hookKeyId",
    "tokenUrl",
    "scope",
];
const EXECUTION: &[&str] = &["failMode", "shadow", "timeoutMs"];

fn bad(field: &str, msg: impl std::fmt::Display) -> Failure {
    Failure(ApiError::validation(field, msg))
}

fn object<'a>(v: &'a Value, field: &str) -> Result<Option<&'a Map<String, Value>>, Failure> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => Ok(Some(m)),
        _ => Err(bad(field, "must be an object")),
    }
}

fn known(m: &Map<String, Value>, allowed: &[&str], extra: &[&str], prefix: &str) -> Result<(), Failure> {
    for k in m.keys() {
        if !allowed.contains(&k.as_str()) && !extra.contains(&k.as_str()) {
            return Err(bad(&format!("{prefix}{k}"), "unknown property"));
        }
    }
    Ok(())
}

fn string(m: &Map<String, Value>, k: &str, field: &str) -> Result<Option<String>, Failure> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(field, "must be a string")),
    }
}

/// Reads a whole hook body (create, replace, or a partial update merged over the current hook).
fn spec_from_json(body: &Value) -> Result<InlineHookSpec, Failure> {
    let top = object(body, "body")?.ok_or_else(|| bad("body", "must be an inline hook object"))?;
    known(top, TOP, READ_ONLY, "")?;
    let mut spec = InlineHookSpec {
        name: string(top, "name", "name")?,
        hook_type: string(top, "type", "type")?,
        version: string(top, "version", "version")?,
        ..InlineHookSpec::default()
    };
    if let Some(ch) = object(top.get("channel").unwrap_or(&Value::Null), "channel")? {
        known(ch, CHANNEL, &[], "channel.")?;
        spec.channel_type = string(ch, "type", "channel.type")?;
        spec.channel_version = string(ch, "version", "channel.version")?;
        if let Some(cfg) = object(ch.get("config").unwrap_or(&Value::Null), "channel.config")? {
            known(cfg, CONFIG, &[], "channel.config.")?;
            spec.uri = string(cfg, "uri", "channel.config.uri")?;
            spec.method = string(cfg, "method", "channel.config.method")?;
            match cfg.get("headers") {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for (i, h) in items.iter().enumerate() {
                        let field = format!("channel.config.headers[{i}]");
                        let h = object(h, &field)?.ok_or_else(|| bad(&field, "must be {key, value}"))?;
                        known(h, &["key", "value"], &[], &format!("{field}."))?;
                        let key =
                            string(h, "key", &format!("{field}.key"))?.ok_or_else(|| bad(&field, "key is required"))?;
                        let value = string(h, "value", &format!("{field}.value"))?.unwrap_or_default();
                        spec.headers.push((key, value));
                    }
                }
                Some(_) => return Err(bad("channel.config.headers", "must be an array")),
            }
            if let Some(a) = object(cfg.get("authScheme").unwrap_or(&Value::Null), "channel.config.authScheme")? {
                known(a, &["type", "key", "value"], &[], "channel.config.authScheme.")?;
                spec.auth = Some(AuthSpec {
                    kind: string(a, "type", "channel.config.authScheme.type")?,
                    key: string(a, "key", "channel.config.authScheme.key")?,
                    value: string(a, "value", "channel.config.authScheme.value")?,
                });
            }
            spec.oauth = OAuthSpec {
                auth_type: string(cfg, "authType", "channel.config.authType")?,
                client_id: string(cfg, "clientId", "channel.config.clientId")?,
                client_secret: string(cfg, "clientSecret", "channel.config.clientSecret")?,
                hook_key_id: string(cfg, "hookKeyId", "channel.config.hookKeyId")?,
                token_url: string(cfg, "tokenUrl", "channel.config.tokenUrl")?,
                scope: string(cfg, "scope", "channel.config.scope")?,
            };
        }
    }
    if let Some(ex) = object(top.get("execution").unwrap_or(&Value::Null), "execution")? {
        known(ex, EXECUTION, &[], "execution.")?;
        spec.fail_mode = match ex.get("failMode") {
            Some(Value::Null) => Some("default".to_owned()),
            _ => string(ex, "failMode", "execution.failMode")?,
        };
        spec.shadow = match ex.get("shadow") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(bad("execution.shadow", "must be true or false")),
        };
        spec.timeout_ms = match ex.get("timeoutMs") {
            None | Some(Value::Null) => None,
            Some(v) => {
                Some(v.as_u64().ok_or_else(|| bad("execution.timeoutMs", "must be a whole number of milliseconds"))?)
            }
        };
    }
    spec.metadata = match top.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err(bad("metadata", "must be an object")),
    };
    Ok(spec)
}

/// Lays `patch` over `base`: objects merge key by key, anything else (arrays, `null`) replaces.
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

// ---- rendering ----

fn link(href: String, post: bool) -> Value {
    if post { json!({ "href": href, "hints": { "allow": ["POST"] } }) } else { json!({ "href": href }) }
}

/// An inline hook as the API shows it: never the auth value or client secret.
pub fn render(h: &InlineHook, base: &str) -> Value {
    let me = format!("{base}/api/v1/inlineHooks/{}", h.id);
    let mut links = Map::new();
    links.insert("self".into(), link(me.clone(), false));
    match h.status {
        HookStatus::Active => {
            links.insert("deactivate".into(), link(format!("{me}/lifecycle/deactivate"), true));
        }
        HookStatus::Inactive => {
            links.insert("activate".into(), link(format!("{me}/lifecycle/activate"), true));
            links.insert("delete".into(), json!({ "href": me, "hints": { "allow": ["DELETE"] } }));
        }
    }
    links.insert("execute".into(), link(format!("{me}/execute"), true));
    let ch = &h.channel;
    let mut config = Map::new();
    config.insert("uri".into(), Value::String(ch.uri.clone()));
    config.insert(
        "headers".into(),
        Value::Array(ch.headers.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect()),
    );
    config.insert("method".into(), Value::String("POST".into()));
    config.insert(
        "authScheme".into(),
        ch.auth.as_ref().map(|a| json!({ "type": a.kind, "key": a.key })).unwrap_or(Value::Null),
    );
    if let Some(o) = &ch.oauth {
        config.insert("authType".into(), Value::String(o.auth_type.as_str().into()));
        config.insert("clientId".into(), Value::String(o.client_id.clone()));
        config.insert("tokenUrl".into(), Value::String(o.token_url.clone()));
        config.insert("scope".into(), o.scope.clone().map(Value::String).unwrap_or(Value::Null));
        if let Some(k) = &o.hook_key_id {
            config.insert("hookKeyId".into(), Value::String(k.clone()));
        }
    }
    let mut v = json!({
        "id": h.id,
        "status": h.status.as_str(),
        "name": h.name,
        "type": h.hook_type.as_str(),
        "version": h.version,
        "channel": { "type": ch.kind(), "version": "1.0.0", "config": config },
        "execution": {
            "failMode": h.fail_mode().as_str(),
            "failModeOverridden": h.fail_mode.is_some(),
            "shadow": h.shadow,
            "timeoutMs": h.timeout_ms(),
        },
        "created": h.created,
        "lastUpdated": h.last_updated,
        "_links": links,
    });
    if let Some(m) = &h.metadata {
        v["metadata"] = Value::Object(m.clone());
    }
    v
}

fn render_key(k: &HookKey, in_use: bool, expand: bool, base: &str) -> Value {
    let mut v = json!({
        "id": k.id,
        "keyId": k.key_id,
        "name": k.name,
        "isUsed": if in_use { "true" } else { "false" },
        "created": k.created,
        "lastUpdated": k.last_updated,
        "_links": { "self": { "href": format!("{base}/api/v1/hook-keys/{}", k.id) } },
    });
    if expand {
        v["_embedded"] = k.public_jwk.clone();
    }
    v
}

// ---- inline hook handlers ----

async fn list_inline_hooks(State(state): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let mut wanted = None;
    for (k, v) in form_urlencoded::parse(raw.as_deref().unwrap_or_default().as_bytes()) {
        if k == "type" {
            wanted = Some(InlineHookType::parse(&v).ok_or_else(|| {
                Failure(ApiError::with_summary(
                    ErrorCode::InvalidParameter,
                    format!("Invalid parameter: type '{v}' is not an inline hook type"),
                ))
            })?);
        }
    }
    let hooks: Vec<InlineHook> = state.store.all_docs().await?;
    let out: Vec<Value> = hooks
        .iter()
        .filter(|h| wanted.is_none_or(|t| h.hook_type == t))
        .map(|h| render(h, &state.public_url))
        .collect();
    Ok(Json(Value::Array(out)).into_response())
}

async fn create_inline_hook(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    OktaJson(body): OktaJson<Value>,
) -> ApiResult<Response> {
    let spec = spec_from_json(&body)?;
    let hook = manage::create(&state.store, &ctx, spec, state.outbound.policy(), Timestamp::now()).await?;
    Ok(Json(render(&hook, &state.public_url)).into_response())
}

async fn get_inline_hook(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let hook = manage::get(&state.store, &id).await?;
    Ok(Json(render(&hook, &state.public_url)).into_response())
}

/// `POST`: only the properties given change.
async fn update_inline_hook(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path(id): Path<String>,
    OktaJson(body): OktaJson<Value>,
) -> ApiResult<Response> {
    if !body.is_object() {
        return Err(bad("body", "must be an inline hook object"));
    }
    let current = manage::get(&state.store, &id).await?;
    let mut whole = render(&current, &state.public_url);
    if let Some(m) = whole.as_object_mut() {
        m.retain(|k, _| TOP.contains(&k.as_str()));
    }
    // `failModeOverridden` is output only; an inherited mode stays inherited.
    if let Some(ex) = whole.get_mut("execution").and_then(Value::as_object_mut) {
        ex.remove("failModeOverridden");
        if current.fail_mode.is_none() {
            ex.remove("failMode");
        }
        if current.timeout_ms.is_none() {
            ex.remove("timeoutMs");
        }
    }
    // A change of channel type starts from a clean config.
    let new_type = body.pointer("/channel/type").and_then(Value::as_str);
    if new_type.is_some_and(|t| t != current.channel.kind())
        && let Some(cfg) = whole.pointer_mut("/channel/config").and_then(Value::as_object_mut)
    {
        cfg.retain(|k, _| k == "uri" || k == "headers" || k == "method");
    }
    merge(&mut whole, &body);
    let spec = spec_from_json(&whole)?;
    let policy = state.outbound.policy();
    let hook =
        manage::replace(&state.store, &state.inline, &ctx, &id, spec, policy, Some(current), Timestamp::now()).await?;
    Ok(Json(render(&hook, &state.public_url)).into_response())
}

async fn replace_inline_hook(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path(id): Path<String>,
    OktaJson(body): OktaJson<Value>,
) -> ApiResult<Response> {
    let spec = spec_from_json(&body)?;
    let policy = state.outbound.policy();
    let hook = manage::replace(&state.store, &state.inline, &ctx, &id, spec, policy, None, Timestamp::now()).await?;
    Ok(Json(render(&hook, &state.public_url)).into_response())
}

async fn delete_inline_hook(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    manage::delete(&state.store, &ctx, &id, Timestamp::now()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn inline_hook_lifecycle(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path((id, op)): Path<(String, String)>,
) -> ApiResult<Response> {
    let status = match op.as_str() {
        "activate" => HookStatus::Active,
        "deactivate" => HookStatus::Inactive,
        _ => return Err(Failure(ApiError::new(ErrorCode::PathNotFound))),
    };
    let hook = manage::set_status(&state.store, &ctx, &id, status, Timestamp::now()).await?;
    Ok(Json(render(&hook, &state.public_url)).into_response())
}

async fn execute_inline_hook(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path(id): Path<String>,
    OktaJson(body): OktaJson<Value>,
) -> ApiResult<Response> {
    let schema = haken_flows::schema::load(&state.store).await?;
    let answer = manage::execute(&state.store, &state.inline, &ctx, &id, body, &schema).await?;
    Ok(Json(answer).into_response())
}

// ---- hook key handlers ----

fn name_of(body: &Value) -> Result<Option<String>, Failure> {
    let m = object(body, "body")?.ok_or_else(|| bad("body", "must be an object"))?;
    known(m, &["name"], &["id", "keyId", "isUsed", "created", "lastUpdated", "_links", "_embedded"], "")?;
    string(m, "name", "name")
}

fn wants_public_key(raw: Option<&str>) -> bool {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .any(|(k, v)| k == "expand" && v.split(',').any(|e| e.trim() == "publickey"))
}

async fn list_hook_keys(State(state): State<AppState>) -> ApiResult<Response> {
    let keys: Vec<HookKey> = state.store.all_docs().await?;
    let hooks: Vec<InlineHook> = state.store.all_docs().await?;
    let used =
        |id: &str| hooks.iter().any(|h| h.channel.oauth.as_ref().and_then(|o| o.hook_key_id.as_deref()) == Some(id));
    let out: Vec<Value> = keys.iter().map(|k| render_key(k, used(&k.id), false, &state.public_url)).collect();
    Ok(Json(Value::Array(out)).into_response())
}

async fn create_hook_key(State(state): State<AppState>, OktaJson(body): OktaJson<Value>) -> ApiResult<Response> {
    let key = manage::create_key(&state.store, name_of(&body)?, Timestamp::now()).await?;
    Ok(Json(render_key(&key, false, true, &state.public_url)).into_response())
}

async fn get_hook_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let key = manage::get_key(&state.store, &id).await?;
    let used = manage::key_in_use(&state.store, &id).await?;
    Ok(Json(render_key(&key, used, wants_public_key(raw.as_deref()), &state.public_url)).into_response())
}

async fn get_public_key(State(state): State<AppState>, Path(key_id): Path<String>) -> ApiResult<Response> {
    let key = manage::get_key_by_alias(&state.store, &key_id).await?;
    Ok(Json(key.public_jwk).into_response())
}

async fn rename_hook_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OktaJson(body): OktaJson<Value>,
) -> ApiResult<Response> {
    let key = manage::rename_key(&state.store, &id, name_of(&body)?, Timestamp::now()).await?;
    let used = manage::key_in_use(&state.store, &id).await?;
    Ok(Json(render_key(&key, used, false, &state.public_url)).into_response())
}

async fn delete_hook_key(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    manage::delete_key(&state.store, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_updates_merge_objects_and_replace_the_rest() {
        let mut base = json!({ "name": "a", "channel": { "type": "HTTP", "config": { "uri": "u", "headers": [1] } } });
        merge(&mut base, &json!({ "channel": { "config": { "headers": [], "authScheme": null } } }));
        assert_eq!(
            base,
            json!({ "name": "a", "channel": { "type": "HTTP", "config": { "uri": "u", "headers": [], "authScheme": null } } })
        );
    }

    #[test]
    fn unknown_properties_are_named() {
        let e = spec_from_json(&json!({ "name": "x", "channel": { "config": { "url": "https://x" } } })).err();
        let msg = e.map(|f| f.0.to_string()).unwrap_or_default();
        assert!(msg.contains("channel.config.url"), "{msg}");
    }
}
