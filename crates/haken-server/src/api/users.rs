//! `/api/v1/users`: create, read, list (paging, `q`, `filter`, `search`), partial update,
//! replace, the lifecycle operations, Okta's two-step delete and a user's groups.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use haken_core::filter::{self, Filter, Syntax};
use haken_core::user::Lifecycle;
use haken_core::{ApiError, ErrorCode, Timestamp};
use haken_flows::directory::{self, NewUser, UserUpdate};
use haken_store::UserQuery;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::listing::{bad_filter, pinned_eq, pinned_statuses, scan, time_bound};
use crate::api::render;
use crate::error::{ApiResult, Failure};
use crate::extract::{Caller, OktaJson};
use crate::paging::{Params, link_headers};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{id}", get(get_user).post(update_user).put(replace_user).delete(delete_user))
        .route("/api/v1/users/{id}/groups", get(list_user_groups))
        .route("/api/v1/users/{id}/lifecycle/{op}", post(user_lifecycle))
}

/// Read-only user properties clients send back when they round-trip a whole user object;
/// they are accepted and ignored. Any other unknown property is an error.
const READ_ONLY_FIELDS: &[&str] = &[
    "id",
    "status",
    "created",
    "activated",
    "statusChanged",
    "lastLogin",
    "lastUpdated",
    "passwordChanged",
    "transitioningToStatus",
    "_links",
    "_embedded",
    "realmId",
    "type",
];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserBody {
    profile: Option<Map<String, Value>>,
    credentials: Option<CredentialsBody>,
    group_ids: Option<Vec<String>>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsBody {
    password: Option<PasswordBody>,
    recovery_question: Option<RecoveryBody>,
    provider: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    value: Option<String>,
    hook: Option<HookMarker>,
    hash: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct HookMarker {
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoveryBody {
    question: Option<String>,
    answer: Option<String>,
}

struct Credentials {
    password: Option<String>,
    hook: bool,
    recovery: Option<(String, String)>,
}

impl UserBody {
    fn check_unknown(&self) -> Result<(), Failure> {
        let unknown: Vec<&String> = self.rest.keys().filter(|k| !READ_ONLY_FIELDS.contains(&k.as_str())).collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            let causes = unknown.iter().map(|k| format!("{k}: unknown property")).collect();
            Err(Failure(ApiError::validation_many(
                &unknown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                causes,
            )))
        }
    }

    fn credentials(&mut self) -> Result<Credentials, Failure> {
        let mut out = Credentials { password: None, hook: false, recovery: None };
        let Some(c) = self.credentials.take() else { return Ok(out) };
        if let Some(p) = c.password {
            if p.hash.is_some() {
                return Err(Failure(ApiError::validation(
                    "credentials.password.hash",
                    "importing password hashes is not supported; use credentials.password.hook and the password import hook",
                )));
            }
            if let Some(h) = p.hook {
                if h.kind.as_deref().unwrap_or("default") != "default" {
                    return Err(Failure(ApiError::validation("credentials.password.hook.type", "must be \"default\"")));
                }
                out.hook = true;
            }
            out.password = p.value;
        }
        if let Some(r) = c.recovery_question {
            match (r.question, r.answer) {
                (Some(q), Some(a)) if !q.trim().is_empty() && a.chars().count() >= 4 => out.recovery = Some((q, a)),
                _ => {
                    return Err(Failure(ApiError::validation(
                        "credentials.recovery_question",
                        "needs a question and an answer of at least 4 characters",
                    )));
                }
            }
        }
        let _ = c.provider;
        Ok(out)
    }
}

fn ok_json(v: impl serde::Serialize) -> Response {
    Json(v).into_response()
}

async fn create_user(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    RawQuery(raw): RawQuery,
    OktaJson(mut body): OktaJson<UserBody>,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref());
    body.check_unknown()?;
    let activate = params.flag("activate", true)?;
    let provider = params.flag("provider", false)?;
    let expire_password = match params.get("nextLogin") {
        None => false,
        Some("changePassword") => true,
        Some(other) => {
            return Err(Failure(ApiError::validation(
                "nextLogin",
                format!("unsupported value '{other}'; only changePassword"),
            )));
        }
    };
    let creds = body.credentials()?;
    let profile = body
        .profile
        .take()
        .ok_or_else(|| Failure(ApiError::validation("profile", "The field cannot be left blank")))?;
    let req = NewUser {
        profile,
        password: creds.password,
        password_hook: creds.hook,
        recovery_question: creds.recovery,
        group_ids: body.group_ids.unwrap_or_default(),
        activate,
        provider,
        expire_password,
    };
    let user = directory::create_user(&state.store, &ctx, req, Timestamp::now()).await?;
    Ok(ok_json(render::UserView::new(&user, &state.public_url)))
}

async fn get_user(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    if id == "me" {
        return Err(Failure(ApiError::with_summary(
            ErrorCode::NotFound,
            "Not found: Resource not found: me (User). API tokens are not tied to a user.",
        )));
    }
    let user = directory::get_user(&state.store, &id).await?;
    Ok(ok_json(render::UserView::new(&user, &state.public_url)))
}

async fn change_user(
    state: AppState,
    ctx: haken_core::log_event::EventContext,
    id: String,
    mut body: UserBody,
    replace: bool,
) -> ApiResult<Response> {
    body.check_unknown()?;
    if body.group_ids.is_some() {
        return Err(Failure(ApiError::validation(
            "groupIds",
            "group memberships are changed through /api/v1/groups/{groupId}/users",
        )));
    }
    let creds = body.credentials()?;
    if creds.hook {
        return Err(Failure(ApiError::validation(
            "credentials.password.hook",
            "can only be set when the user is created",
        )));
    }
    let req = UserUpdate {
        profile: body.profile.take(),
        password: creds.password,
        recovery_question: creds.recovery,
        replace,
    };
    let user = directory::update_user(&state.store, &ctx, &id, req, Timestamp::now()).await?;
    Ok(ok_json(render::UserView::new(&user, &state.public_url)))
}

async fn update_user(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path(id): Path<String>,
    OktaJson(body): OktaJson<UserBody>,
) -> ApiResult<Response> {
    change_user(state, ctx, id, body, false).await
}

async fn replace_user(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path(id): Path<String>,
    OktaJson(body): OktaJson<UserBody>,
) -> ApiResult<Response> {
    change_user(state, ctx, id, body, true).await
}

async fn delete_user(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    directory::delete_user(&state.store, &ctx, &id, Timestamp::now()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn user_lifecycle(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path((id, op)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref());
    let lifecycle = Lifecycle::parse(&op).ok_or_else(|| Failure(ApiError::new(ErrorCode::PathNotFound)))?;
    let send_email = params.flag("sendEmail", true)?;
    let outcome = directory::lifecycle(&state.store, &ctx, &id, lifecycle, Timestamp::now()).await?;
    match (lifecycle, outcome.activation_token) {
        (Lifecycle::ExpirePassword, _) => Ok(ok_json(render::UserView::new(&outcome.user, &state.public_url))),
        // No mail is sent by Haken: with sendEmail=false the caller delivers the link.
        (Lifecycle::Activate | Lifecycle::Reactivate, Some(token)) if !send_email => Ok(ok_json(json!({
            "activationUrl": format!("{}/welcome/{token}", state.public_url),
            "activationToken": token,
        }))),
        _ => Ok(ok_json(json!({}))),
    }
}

async fn list_user_groups(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let user = directory::get_user(&state.store, &id).await?;
    let groups = state.store.user_groups(&user.id).await?;
    let base = &state.public_url;
    Ok(ok_json(Value::Array(groups.iter().map(|g| render::group(g, base)).collect())))
}

const FILTER_ATTRIBUTES: &[&str] = &[
    "id",
    "status",
    "created",
    "activated",
    "statusChanged",
    "lastLogin",
    "lastUpdated",
    "passwordChanged",
    "type.id",
];

async fn list_users(State(state): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref());
    let q = params.get("q").map(str::to_lowercase).filter(|s| !s.is_empty());
    let limit = params.limit(if q.is_some() { 10 } else { 200 }, 200)?;
    let filter = match (params.get("filter"), params.get("search")) {
        (Some(_), Some(_)) => {
            return Err(Failure(ApiError::validation("search", "use either filter or search, not both")));
        }
        (Some(f), None) => Some(parse_user_filter(&state, f, "filter", Syntax::USERS).await?),
        (None, Some(s)) => Some(parse_user_filter(&state, s, "search", Syntax::LOGS).await?),
        (None, None) => None,
    };
    let after = match params.get("after") {
        Some(c) => state
            .cursors
            .open("users", c)?
            .parse::<i64>()
            .map_err(|_| Failure(ApiError::new(ErrorCode::InvalidPaging)))?,
        None => 0,
    };
    let mut query = UserQuery { limit, ..Default::default() };
    if let Some(f) = &filter {
        for term in f.conjuncts() {
            if let Some(st) = pinned_statuses(term) {
                query.statuses = Some(st);
            }
            if let Some(id) = pinned_eq(term, "id") {
                query.id = Some(id.to_owned());
            }
            if let Some(login) = pinned_eq(term, "profile.login") {
                query.login_lower = Some(login.to_lowercase());
            }
            let (from, to) = time_bound(term, "lastUpdated");
            if from.is_some() {
                query.updated_from = from;
            }
            if to.is_some() {
                query.updated_to = to;
            }
        }
    }
    let base = state.public_url.clone();
    let store = state.store.clone();
    let page = scan(
        after,
        limit as usize,
        |after, batch| {
            let mut qq = query.clone();
            qq.after_seq = after;
            qq.limit = batch;
            let store = store.clone();
            let base = base.clone();
            async move {
                let rows = store.list_users(&qq).await?;
                Ok(rows.into_iter().map(|(seq, u)| (seq, render::user(&u, &base))).collect())
            }
        },
        |doc: &Value| filter.as_ref().is_none_or(|f| f.matches(doc)) && q.as_deref().is_none_or(|q| matches_q(doc, q)),
    )
    .await?;
    let next = page.next.map(|seq| state.cursors.seal("users", &seq.to_string()));
    let headers = link_headers(&state.public_url, "/api/v1/users", &params, next.as_deref());
    Ok((headers, Json(Value::Array(page.items))).into_response())
}

/// `q`: a case-insensitive prefix of first name, last name or email.
fn matches_q(doc: &Value, q: &str) -> bool {
    ["firstName", "lastName", "email"].iter().any(|k| {
        doc.get("profile")
            .and_then(|p| p.get(*k))
            .and_then(Value::as_str)
            .is_some_and(|v| v.to_lowercase().starts_with(q))
    })
}

async fn parse_user_filter(state: &AppState, text: &str, param: &str, syntax: Syntax) -> Result<Filter, Failure> {
    let f = filter::parse(text, syntax).map_err(|e| bad_filter(ErrorCode::InvalidSearch, param, e))?;
    let schema = haken_flows::schema::load(&state.store).await?;
    for path in f.paths() {
        let ok = FILTER_ATTRIBUTES.contains(&path)
            || path.strip_prefix("profile.").is_some_and(|attr| schema.attribute(attr).is_some());
        if !ok {
            return Err(bad_filter(ErrorCode::InvalidSearch, param, format!("'{path}' is not a filterable attribute")));
        }
    }
    Ok(f)
}
