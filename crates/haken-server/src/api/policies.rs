//! `/api/v1/policies`: the profile-enrollment policy in Okta's shapes — list, read, its rule,
//! and `PUT` of the rule (attach or detach the registration inline hook, turn registration
//! off, choose the collected attributes and the groups new users join).
//!
//! Haken has only the `PROFILE_ENROLLMENT` type: listing another type Okta knows answers an
//! empty array (so SDK code that lists every type keeps working); an unknown type is `E0000001`.

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use haken_core::policy::{Access, PROFILE_ENROLLMENT, Policy, PolicyRule};
use haken_core::{ApiError, Timestamp};
use haken_flows::registration::{self, RuleUpdate};
use serde_json::{Map, Value, json};

use crate::error::{ApiResult, Failure};
use crate::extract::{Caller, OktaJson};
use crate::paging::Params;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/policies", get(list_policies))
        .route("/api/v1/policies/{id}", get(get_policy))
        .route("/api/v1/policies/{id}/rules", get(list_policy_rules))
        .route("/api/v1/policies/{id}/rules/{rule_id}", get(get_policy_rule).put(replace_policy_rule))
}

/// Policy types of Okta's API that Haken does not have (listing them answers `[]`).
const OTHER_TYPES: &[&str] = &[
    "OKTA_SIGN_ON",
    "PASSWORD",
    "MFA_ENROLL",
    "IDP_DISCOVERY",
    "ACCESS_POLICY",
    "POST_AUTH_SESSION",
    "ENTITY_RISK",
    "DEVICE_SIGNAL_COLLECTION",
];

fn policy_json(p: &Policy, base: &str) -> Value {
    json!({
        "id": p.id,
        "status": p.status.as_str(),
        "name": p.name,
        "description": p.description,
        "priority": p.priority,
        "system": p.system,
        "conditions": null,
        "created": p.created,
        "lastUpdated": p.last_updated,
        "type": p.policy_type,
        "_links": {
            "self": { "href": format!("{base}/api/v1/policies/{}", p.id), "hints": { "allow": ["GET"] } },
            "rules": { "href": format!("{base}/api/v1/policies/{}/rules", p.id), "hints": { "allow": ["GET"] } },
        },
    })
}

fn rule_json(r: &PolicyRule, base: &str) -> Value {
    let e = &r.enrollment;
    let hooks = e.inline_hook_id.as_ref().map(|id| json!([{ "inlineHookId": id }]));
    let attributes: Vec<Value> = e
        .profile_attributes
        .iter()
        .map(|a| json!({ "name": a.name, "label": a.label, "required": a.required }))
        .collect();
    let groups = (!e.target_group_ids.is_empty()).then(|| json!(e.target_group_ids));
    json!({
        "id": r.id,
        "status": r.status.as_str(),
        "name": r.name,
        "priority": r.priority,
        "created": r.created,
        "lastUpdated": r.last_updated,
        "system": r.system,
        "conditions": null,
        "actions": {
            "profileEnrollment": {
                "access": e.access.as_str(),
                "preRegistrationInlineHooks": hooks,
                "profileAttributes": attributes,
                "targetGroupIds": groups,
                "unknownUserAction": e.unknown_user_action,
                "activationRequirements": { "emailVerification": e.email_verification },
            }
        },
        "type": r.rule_type,
        "_links": {
            "self": {
                "href": format!("{base}/api/v1/policies/{}/rules/{}", r.policy_id, r.id),
                "hints": { "allow": ["GET", "PUT"] },
            },
        },
    })
}

async fn list_policies(State(state): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref());
    match params.get("type") {
        Some(PROFILE_ENROLLMENT) => {}
        Some(t) if OTHER_TYPES.contains(&t) => return Ok(Json(json!([])).into_response()),
        Some(t) => {
            return Err(Failure(ApiError::validation("type", format!("'{t}' is not a policy type"))));
        }
        None => return Err(Failure(ApiError::validation("type", "The field cannot be left blank"))),
    }
    let (policy, _) = registration::enrollment_policy(&state.store).await?;
    Ok(Json(json!([policy_json(&policy, &state.public_url)])).into_response())
}

async fn get_policy(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let (policy, _) = registration::get_policy(&state.store, &id).await?;
    Ok(Json(policy_json(&policy, &state.public_url)).into_response())
}

async fn list_policy_rules(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let (_, rule) = registration::get_policy(&state.store, &id).await?;
    Ok(Json(json!([rule_json(&rule, &state.public_url)])).into_response())
}

async fn get_policy_rule(
    State(state): State<AppState>,
    Path((id, rule_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (_, rule) = registration::get_rule(&state.store, &id, &rule_id).await?;
    Ok(Json(rule_json(&rule, &state.public_url)).into_response())
}

async fn replace_policy_rule(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path((id, rule_id)): Path<(String, String)>,
    OktaJson(body): OktaJson<Value>,
) -> ApiResult<Response> {
    let req = parse_rule(&body)?;
    let (_, rule) = registration::update_rule(&state.store, &ctx, &id, &rule_id, req, Timestamp::now()).await?;
    Ok(Json(rule_json(&rule, &state.public_url)).into_response())
}

// ---- the PUT body ----

fn bad(field: &str, message: impl std::fmt::Display) -> Failure {
    Failure(ApiError::validation(field, message))
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, Failure> {
    v.as_object().ok_or_else(|| bad(field, "must be an object"))
}

fn string(v: &Value, field: &str) -> Result<String, Failure> {
    v.as_str().map(str::to_owned).ok_or_else(|| bad(field, "must be a string"))
}

fn only_known(m: &Map<String, Value>, known: &[&str], prefix: &str) -> Result<(), Failure> {
    match m.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(bad(&format!("{prefix}{k}"), "unknown or unsupported property")),
        None => Ok(()),
    }
}

/// Reads a rule as Okta's `PUT /api/v1/policies/{id}/rules/{ruleId}` takes it. Read-only
/// properties a client sends back (`id`, `created`, `_links`, ...) are ignored.
fn parse_rule(body: &Value) -> Result<RuleUpdate, Failure> {
    let top = object(body, "body")?;
    only_known(
        top,
        &[
            "id",
            "status",
            "name",
            "priority",
            "system",
            "type",
            "conditions",
            "actions",
            "created",
            "lastUpdated",
            "_links",
            "_embedded",
        ],
        "",
    )?;
    let mut req = RuleUpdate::default();
    if let Some(t) = top.get("type").filter(|v| !v.is_null())
        && t.as_str() != Some(PROFILE_ENROLLMENT)
    {
        return Err(bad("type", "must be PROFILE_ENROLLMENT"));
    }
    if let Some(s) = top.get("status").filter(|v| !v.is_null())
        && s.as_str() != Some("ACTIVE")
    {
        return Err(bad("status", "the catch-all rule of a system policy is always ACTIVE"));
    }
    if top.get("conditions").is_some_and(|c| !c.is_null()) {
        return Err(bad("conditions", "the catch-all rule has no conditions"));
    }
    if let Some(n) = top.get("name").filter(|v| !v.is_null()) {
        req.name = Some(string(n, "name")?);
    }
    let Some(actions) = top.get("actions").filter(|v| !v.is_null()) else { return Ok(req) };
    let actions = object(actions, "actions")?;
    only_known(actions, &["profileEnrollment"], "actions.")?;
    let Some(pe) = actions.get("profileEnrollment").filter(|v| !v.is_null()) else { return Ok(req) };
    const P: &str = "actions.profileEnrollment";
    let pe = object(pe, P)?;
    only_known(
        pe,
        &[
            "access",
            "preRegistrationInlineHooks",
            "profileAttributes",
            "targetGroupIds",
            "unknownUserAction",
            "activationRequirements",
        ],
        &format!("{P}."),
    )?;
    if let Some(a) = pe.get("access").filter(|v| !v.is_null()) {
        let field = format!("{P}.access");
        req.access = Some(Access::parse(&string(a, &field)?).ok_or_else(|| bad(&field, "must be ALLOW or DENY"))?);
    }
    if let Some(hooks) = pe.get("preRegistrationInlineHooks") {
        let field = format!("{P}.preRegistrationInlineHooks");
        req.inline_hook_ids = Some(match hooks {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .map(|h| {
                    h.get("inlineHookId")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| bad(&field, "each entry must be { \"inlineHookId\": \"<id>\" }"))
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(bad(&field, "must be an array or null")),
        });
    }
    if let Some(attrs) = pe.get("profileAttributes").filter(|v| !v.is_null()) {
        let field = format!("{P}.profileAttributes");
        let items = attrs.as_array().ok_or_else(|| bad(&field, "must be an array"))?;
        let mut out = Vec::with_capacity(items.len());
        for (i, a) in items.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let a = object(a, &f)?;
            only_known(a, &["name", "label", "required"], &format!("{f}."))?;
            let name = string(a.get("name").unwrap_or(&Value::Null), &format!("{f}.name"))?;
            let label = match a.get("label") {
                None | Some(Value::Null) => None,
                Some(l) => Some(string(l, &format!("{f}.label"))?),
            };
            let required = match a.get("required") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(bad(&format!("{f}.required"), "must be a boolean")),
            };
            out.push((name, label, required));
        }
        req.profile_attributes = Some(out);
    }
    if let Some(groups) = pe.get("targetGroupIds") {
        let field = format!("{P}.targetGroupIds");
        req.target_group_ids = Some(match groups {
            Value::Null => Vec::new(),
            Value::Array(items) => items.iter().map(|g| string(g, &field)).collect::<Result<_, _>>()?,
            _ => return Err(bad(&field, "must be an array of group ids or null")),
        });
    }
    if let Some(u) = pe.get("unknownUserAction").filter(|v| !v.is_null()) {
        req.unknown_user_action = Some(string(u, &format!("{P}.unknownUserAction"))?);
    }
    if let Some(ar) = pe.get("activationRequirements").filter(|v| !v.is_null()) {
        let field = format!("{P}.activationRequirements");
        let ar = object(ar, &field)?;
        only_known(ar, &["emailVerification"], &format!("{field}."))?;
        match ar.get("emailVerification") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => req.email_verification = Some(*b),
            Some(_) => return Err(bad(&format!("{field}.emailVerification"), "must be a boolean")),
        }
    }
    Ok(req)
}
