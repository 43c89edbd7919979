//! `/api/v1/eventHooks`: Okta's Event Hooks API (create, list, get, replace, delete,
//! activate, deactivate, verify), and Haken's extensions under each hook: the delivery log,
//! replay, backfill, test deliveries (`trigger`) and signing-secret rotation.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use haken_core::hook::{Delivery, DeliveryStatus, EventHook, HookStatus};
use haken_core::{ApiError, ErrorCode, Timestamp, catalog};
use haken_hooks::manage::{self, AuthSpec, FilterSpec, HookSpec};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{ApiResult, Failure};
use crate::extract::{Caller, OktaJson};
use crate::paging::{Params, link_headers};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/eventHooks", get(list_event_hooks).post(create_event_hook))
        .route("/api/v1/eventHooks/{id}", get(get_event_hook).put(replace_event_hook).delete(delete_event_hook))
        .route("/api/v1/eventHooks/{id}/lifecycle/{op}", post(event_hook_lifecycle))
        .route("/api/v1/eventHooks/{id}/deliveries", get(list_deliveries))
        .route("/api/v1/eventHooks/{id}/deliveries/replay", post(replay_dead_letters))
        .route("/api/v1/eventHooks/{id}/deliveries/{delivery_id}", get(get_delivery))
        .route("/api/v1/eventHooks/{id}/deliveries/{delivery_id}/replay", post(replay_delivery))
        .route("/api/v1/eventHooks/{id}/backfill", post(backfill_event_hook))
        .route("/api/v1/eventHooks/{id}/trigger", post(trigger_event_hook))
        .route("/api/v1/eventHooks/{id}/signing/rotate", post(rotate_signing_secret))
}

// ---- request bodies ----

const READ_ONLY: &[&str] =
    &["id", "status", "verificationStatus", "created", "createdBy", "lastUpdated", "_links", "signing"];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HookBody {
    name: Option<String>,
    description: Option<String>,
    events: Option<EventsBody>,
    channel: Option<ChannelBody>,
    delivery: Option<DeliveryBody>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventsBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    items: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    filter: Option<Option<FilterBody>>,
}

/// Tells `"filter": null` (present) from an absent filter.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Some(Option::deserialize(d)?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    event_filter_map: Vec<FilterEntry>,
}

#[derive(Debug, Deserialize)]
struct FilterEntry {
    event: Option<String>,
    condition: Option<Condition>,
}

#[derive(Debug, Deserialize)]
struct Condition {
    expression: Option<String>,
    #[allow(dead_code)]
    version: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChannelBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    version: Option<String>,
    config: Option<ChannelConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ChannelConfig {
    uri: Option<String>,
    headers: Option<Vec<HeaderBody>>,
    auth_scheme: Option<AuthBody>,
    #[allow(dead_code)]
    method: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderBody {
    key: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    key: Option<String>,
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeliveryBody {
    retry_policy: Option<String>,
    timeout_ms: Option<u64>,
    max_in_flight: Option<u32>,
}

impl HookBody {
    fn into_spec(self) -> Result<HookSpec, Failure> {
        let mut signing = false;
        for (k, v) in &self.rest {
            if k == "signing" {
                signing = v.get("enabled").and_then(Value::as_bool).unwrap_or(false);
            } else if !READ_ONLY.contains(&k.as_str()) {
                return Err(Failure(ApiError::validation(k, "unknown property")));
            }
        }
        let events =
            self.events.ok_or_else(|| Failure(ApiError::validation("events", "The field cannot be left blank")))?;
        let channel =
            self.channel.ok_or_else(|| Failure(ApiError::validation("channel", "The field cannot be left blank")))?;
        let config = channel
            .config
            .ok_or_else(|| Failure(ApiError::validation("channel.config", "The field cannot be left blank")))?;
        Ok(HookSpec {
            name: self.name,
            description: self.description,
            events_type: events.kind,
            items: events.items,
            filter: events.filter.map(|f| {
                f.map(|f| FilterSpec {
                    kind: f.kind,
                    map: f
                        .event_filter_map
                        .into_iter()
                        .map(|e| (e.event, e.condition.and_then(|c| c.expression)))
                        .collect(),
                })
            }),
            channel_type: channel.kind,
            channel_version: channel.version,
            uri: config.uri,
            headers: config.headers.unwrap_or_default().into_iter().map(|h| (h.key, h.value)).collect(),
            auth: config.auth_scheme.map(|a| AuthSpec { kind: a.kind, key: a.key, value: a.value }),
            retry_policy: self.delivery.as_ref().and_then(|d| d.retry_policy.clone()),
            timeout_ms: self.delivery.as_ref().and_then(|d| d.timeout_ms),
            max_in_flight: self.delivery.as_ref().and_then(|d| d.max_in_flight),
            signing,
        })
    }
}

// ---- rendering ----

fn link(href: String, post: bool) -> Value {
    if post { json!({ "href": href, "hints": { "allow": ["POST"] } }) } else { json!({ "href": href }) }
}

/// An event hook as the API shows it: never the auth value or signing secrets.
pub fn render(h: &EventHook, base: &str) -> Value {
    let me = format!("{base}/api/v1/eventHooks/{}", h.id);
    let filter = h.filters.as_ref().map(|fs| {
        json!({
            "type": "EXPRESSION_LANGUAGE",
            "eventFilterMap": fs.iter().map(|f| json!({ "event": f.event, "condition": { "version": null, "expression": f.expression } })).collect::<Vec<_>>(),
        })
    });
    let mut links = Map::new();
    links.insert("self".into(), link(me.clone(), false));
    links.insert("verify".into(), link(format!("{me}/lifecycle/verify"), true));
    match h.status {
        HookStatus::Active => links.insert("deactivate".into(), link(format!("{me}/lifecycle/deactivate"), true)),
        HookStatus::Inactive => links.insert("activate".into(), link(format!("{me}/lifecycle/activate"), true)),
    };
    links.insert("deliveries".into(), link(format!("{me}/deliveries"), false));
    let now = Timestamp::now();
    json!({
        "id": h.id,
        "name": h.name,
        "description": h.description,
        "status": h.status.as_str(),
        "verificationStatus": h.verification_status.as_str(),
        "created": h.created,
        "createdBy": h.created_by,
        "lastUpdated": h.last_updated,
        "events": { "type": "EVENT_TYPE", "items": h.event_types, "filter": filter },
        "channel": {
            "type": "HTTP",
            "version": "1.0.0",
            "config": {
                "uri": h.uri,
                "headers": h.headers.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect::<Vec<_>>(),
                "method": "POST",
                "authScheme": h.auth.as_ref().map(|a| json!({ "type": a.kind, "key": a.key })),
            }
        },
        "delivery": {
            "retryPolicy": h.delivery.retry_policy.as_str(),
            "timeoutMs": h.delivery.timeout_ms,
            "maxInFlight": h.delivery.max_in_flight,
        },
        "signing": {
            "enabled": h.live_secrets(now).next().is_some(),
            "secrets": h.live_secrets(now).map(|s| json!({ "created": s.created, "expires": s.expires })).collect::<Vec<_>>(),
        },
        "_links": links,
    })
}

fn render_delivery(d: &Delivery, base: &str) -> Value {
    json!({
        "id": d.id,
        "hookId": d.hook_id,
        "kind": d.kind,
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "eventCount": d.event_count,
        "created": d.created,
        "eventTime": d.event_time,
        "nextAttemptAt": (d.status == DeliveryStatus::Pending).then_some(d.next_attempt_at),
        "lastAttemptAt": d.last_attempt_at,
        "deliveredAt": d.delivered_at,
        "lastStatusCode": d.last_status,
        "lastError": d.last_error,
        "_links": {
            "self": { "href": format!("{base}/api/v1/eventHooks/{}/deliveries/{}", d.hook_id, d.id) },
            "replay": link(format!("{base}/api/v1/eventHooks/{}/deliveries/{}/replay", d.hook_id, d.id), true),
        }
    })
}

// ---- handlers ----

async fn list_event_hooks(State(state): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let hooks = state.store.list_event_hooks().await?;
    let params = Params::parse(raw.as_deref());
    let headers = link_headers(&state.public_url, "/api/v1/eventHooks", &params, None);
    Ok((headers, Json(Value::Array(hooks.iter().map(|h| render(h, &state.public_url)).collect()))).into_response())
}

async fn create_event_hook(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    OktaJson(body): OktaJson<HookBody>,
) -> ApiResult<Response> {
    let spec = body.into_spec()?;
    let created = manage::create(&state.store, &ctx, spec, state.outbound.policy(), Timestamp::now()).await?;
    let mut v = render(&created.hook, &state.public_url);
    if let Some(secret) = created.signing_secret {
        // Shown only in this answer (and on rotation).
        v["signing"]["secret"] = Value::String(secret);
    }
    Ok(Json(v).into_response())
}

async fn get_event_hook(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let hook = manage::get(&state.store, &id).await?;
    Ok(Json(render(&hook, &state.public_url)).into_response())
}

async fn replace_event_hook(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path(id): Path<String>,
    OktaJson(body): OktaJson<HookBody>,
) -> ApiResult<Response> {
    let spec = body.into_spec()?;
    let hook = manage::replace(&state.store, &ctx, &id, spec, state.outbound.policy(), Timestamp::now()).await?;
    Ok(Json(render(&hook, &state.public_url)).into_response())
}

async fn delete_event_hook(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    manage::delete(&state.store, &ctx, &id, Timestamp::now()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn event_hook_lifecycle(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path((id, op)): Path<(String, String)>,
) -> ApiResult<Response> {
    let now = Timestamp::now();
    let hook = match op.as_str() {
        "activate" => manage::set_status(&state.store, &ctx, &id, HookStatus::Active, now).await?,
        "deactivate" => manage::set_status(&state.store, &ctx, &id, HookStatus::Inactive, now).await?,
        "verify" => manage::verify(&state.store, &state.outbound, &ctx, &id, now).await?,
        _ => return Err(Failure(ApiError::new(ErrorCode::PathNotFound))),
    };
    Ok(Json(render(&hook, &state.public_url)).into_response())
}

async fn list_deliveries(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let hook = manage::get(&state.store, &id).await?;
    let params = Params::parse(raw.as_deref());
    let limit = params.limit(100, 1000)?;
    let status = match params.get("status") {
        None => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            Failure(ApiError::validation("status", format!("'{s}' is not PENDING, DELIVERED or DEAD")))
        })?),
    };
    let kind = format!("deliveries:{}", hook.id);
    let before = match params.get("after") {
        Some(c) => state
            .cursors
            .open(&kind, c)?
            .parse::<i64>()
            .map_err(|_| Failure(ApiError::new(ErrorCode::InvalidPaging)))?,
        None => 0,
    };
    let mut rows = state.store.list_deliveries(&hook.id, status, before, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = if more { rows.last().map(|(seq, _)| state.cursors.seal(&kind, &seq.to_string())) } else { None };
    let headers =
        link_headers(&state.public_url, &format!("/api/v1/eventHooks/{id}/deliveries"), &params, next.as_deref());
    let items: Vec<Value> = rows.iter().map(|(_, d)| render_delivery(d, &state.public_url)).collect();
    Ok((headers, Json(Value::Array(items))).into_response())
}

async fn get_delivery(
    State(state): State<AppState>,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (d, attempts) = state
        .store
        .get_delivery(&id, &delivery_id)
        .await?
        .ok_or_else(|| Failure(ApiError::not_found(&delivery_id, "EventHookDelivery")))?;
    let mut v = render_delivery(&d, &state.public_url);
    v["attemptLog"] = Value::Array(
        attempts
            .iter()
            .map(|a| {
                json!({
                    "attempt": a.attempt,
                    "started": a.started,
                    "latencyMs": a.latency_ms,
                    "statusCode": a.status_code,
                    "error": a.error,
                    "responseSnippet": a.response_snippet,
                    "node": a.node,
                })
            })
            .collect(),
    );
    Ok(Json(v).into_response())
}

async fn replay_delivery(
    State(state): State<AppState>,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (current, _) = state
        .store
        .get_delivery(&id, &delivery_id)
        .await?
        .ok_or_else(|| Failure(ApiError::not_found(&delivery_id, "EventHookDelivery")))?;
    if current.status == DeliveryStatus::Pending {
        return Err(Failure(ApiError::validation(
            "status",
            "the delivery is already pending; it will be sent without a replay",
        )));
    }
    let n = state.store.replay_deliveries(&id, Some(&delivery_id), Timestamp::now().millis()).await?;
    if n == 0 {
        return Err(Failure(ApiError::validation(
            "status",
            "the delivery became pending meanwhile; it will be sent without a replay",
        )));
    }
    let (d, _) = state.store.get_delivery(&id, &delivery_id).await?.ok_or_else(|| Failure(ApiError::internal()))?;
    Ok(Json(render_delivery(&d, &state.public_url)).into_response())
}

async fn replay_dead_letters(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let hook = manage::get(&state.store, &id).await?;
    let n = state.store.replay_deliveries(&hook.id, None, Timestamp::now().millis()).await?;
    Ok(Json(json!({ "replayed": n })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackfillBody {
    since: String,
    until: Option<String>,
    /// Queue events the hook already had too (by default they are not sent twice).
    #[serde(default)]
    resend: bool,
}

async fn backfill_event_hook(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OktaJson(body): OktaJson<BackfillBody>,
) -> ApiResult<Response> {
    let hook = manage::get(&state.store, &id).await?;
    let since = Timestamp::parse(&body.since)
        .ok_or_else(|| Failure(ApiError::validation("since", "must be an RFC 3339 time stamp")))?;
    let until = match &body.until {
        Some(u) => Timestamp::parse(u)
            .ok_or_else(|| Failure(ApiError::validation("until", "must be an RFC 3339 time stamp")))?,
        None => Timestamp::now(),
    };
    if since > until {
        return Err(Failure(ApiError::validation("since", "must not be after until")));
    }
    let matcher = haken_hooks::router::Matcher::new(&hook);
    let n = state
        .store
        .backfill(&hook.id, (since.millis(), until.millis()), Timestamp::now().millis(), body.resend, move |ev| {
            matcher.matches(ev)
        })
        .await?;
    Ok(Json(json!({ "queued": n })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TriggerBody {
    event_type: String,
}

async fn trigger_event_hook(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OktaJson(body): OktaJson<TriggerBody>,
) -> ApiResult<Response> {
    let hook = manage::get(&state.store, &id).await?;
    if !hook.receives() {
        return Err(Failure(ApiError::validation(
            "status",
            "the hook must be ACTIVE and VERIFIED to receive deliveries; verify it first",
        )));
    }
    let now = Timestamp::now();
    let event = catalog::sample_event(&body.event_type, now)
        .filter(|_| catalog::is_hook_eligible(&body.event_type))
        .ok_or_else(|| {
            Failure(ApiError::validation(
                "eventType",
                format!("'{}' is not an event type eligible for event hooks", body.event_type),
            ))
        })?;
    let delivery = Delivery {
        id: haken_core::log_event::new_uuid(),
        hook_id: hook.id.clone(),
        kind: "test".into(),
        status: DeliveryStatus::Pending,
        attempts: 0,
        event_count: 1,
        created: now,
        event_time: now,
        next_attempt_at: now,
        last_attempt_at: None,
        delivered_at: None,
        last_status: None,
        last_error: None,
    };
    state.store.insert_test_delivery(&delivery, std::slice::from_ref(&event)).await?;
    Ok(Json(json!({ "delivery": render_delivery(&delivery, &state.public_url), "event": event })).into_response())
}

async fn rotate_signing_secret(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (hook, secret) = manage::rotate_secret(&state.store, &ctx, &id, Timestamp::now()).await?;
    let mut v = render(&hook, &state.public_url);
    v["signing"]["secret"] = Value::String(secret);
    Ok(Json(v).into_response())
}
