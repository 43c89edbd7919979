//! `/api/v1/groups`: create, read, list (`q`, `filter`, paging), replace, delete, members.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use haken_core::{ApiError, ErrorCode, Timestamp};
use haken_flows::directory;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::api::listing::{parse_filter, scan};
use crate::api::render;
use crate::error::{ApiResult, Failure};
use crate::extract::{Caller, OktaJson};
use crate::paging::{Params, link_headers};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/groups", get(list_groups).post(create_group))
        .route("/api/v1/groups/{id}", get(get_group).put(replace_group).delete(delete_group))
        .route("/api/v1/groups/{id}/users", get(list_group_users))
        .route("/api/v1/groups/{id}/users/{user_id}", put(add_group_user).delete(remove_group_user))
        .route("/api/v1/groups/{id}/apps", get(list_group_apps))
}

const READ_ONLY_FIELDS: &[&str] =
    &["id", "created", "lastUpdated", "lastMembershipUpdated", "objectClass", "type", "_links", "_embedded"];

#[derive(Debug, Deserialize)]
struct GroupBody {
    profile: Option<Map<String, Value>>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

impl GroupBody {
    fn into_profile(self) -> Result<Map<String, Value>, Failure> {
        if let Some(k) = self.rest.keys().find(|k| !READ_ONLY_FIELDS.contains(&k.as_str())) {
            return Err(Failure(ApiError::validation(k, "unknown property")));
        }
        self.profile.ok_or_else(|| Failure(ApiError::validation("profile", "The field cannot be left blank")))
    }
}

async fn create_group(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    OktaJson(body): OktaJson<GroupBody>,
) -> ApiResult<Response> {
    let group = directory::create_group(&state.store, &ctx, body.into_profile()?, Timestamp::now()).await?;
    Ok(Json(render::group(&group, &state.public_url)).into_response())
}

async fn get_group(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let group = directory::get_group(&state.store, &id).await?;
    Ok(Json(render::group(&group, &state.public_url)).into_response())
}

async fn replace_group(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path(id): Path<String>,
    OktaJson(body): OktaJson<GroupBody>,
) -> ApiResult<Response> {
    let group = directory::replace_group(&state.store, &ctx, &id, body.into_profile()?, Timestamp::now()).await?;
    Ok(Json(render::group(&group, &state.public_url)).into_response())
}

async fn delete_group(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    directory::delete_group(&state.store, &ctx, &id, Timestamp::now()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn add_group_user(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path((id, user_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    directory::add_member(&state.store, &ctx, &id, &user_id, Timestamp::now()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove_group_user(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path((id, user_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    directory::remove_member(&state.store, &ctx, &id, &user_id, Timestamp::now()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_group_apps(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    // Applications arrive with the app resource; until then no group has any.
    directory::get_group(&state.store, &id).await?;
    Ok(Json(Value::Array(Vec::new())).into_response())
}

fn after_param(state: &AppState, params: &Params, kind: &str) -> Result<i64, Failure> {
    match params.get("after") {
        Some(c) => {
            state.cursors.open(kind, c)?.parse::<i64>().map_err(|_| Failure(ApiError::new(ErrorCode::InvalidPaging)))
        }
        None => Ok(0),
    }
}

const GROUP_FILTER_ATTRIBUTES: &[&str] =
    &["id", "type", "created", "lastUpdated", "lastMembershipUpdated", "profile.name", "profile.description"];

async fn list_groups(State(state): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref());
    let limit = params.limit(10_000, 10_000)?;
    let after = after_param(&state, &params, "groups")?;
    let prefix = params.get("q").map(str::to_owned).filter(|s| !s.is_empty());
    let filter = match params.get("filter").or(params.get("search")) {
        Some(text) => Some(parse_filter(text, GROUP_FILTER_ATTRIBUTES)?),
        None => None,
    };
    let store = state.store.clone();
    let base = state.public_url.clone();
    let page = scan(
        after,
        limit as usize,
        |after, batch| {
            let store = store.clone();
            let base = base.clone();
            let prefix = prefix.clone();
            async move {
                let rows = store.list_groups(after, batch, prefix.as_deref()).await?;
                Ok(rows.into_iter().map(|(seq, g)| (seq, render::group(&g, &base))).collect())
            }
        },
        |doc: &Value| filter.as_ref().is_none_or(|f| f.matches(doc)),
    )
    .await?;
    let next = page.next.map(|seq| state.cursors.seal("groups", &seq.to_string()));
    let headers = link_headers(&state.public_url, "/api/v1/groups", &params, next.as_deref());
    Ok((headers, Json(Value::Array(page.items))).into_response())
}

async fn list_group_users(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref());
    let limit = params.limit(1000, 10_000)?;
    let kind = format!("members:{id}");
    let after = after_param(&state, &params, &kind)?;
    let group = directory::get_group(&state.store, &id).await?;
    let store = state.store.clone();
    let base = state.public_url.clone();
    let page = scan(
        after,
        limit as usize,
        |after, batch| {
            let store = store.clone();
            let base = base.clone();
            let gid = group.id.clone();
            async move {
                let rows = store.list_members(&gid, after, batch).await?;
                Ok(rows.into_iter().map(|(seq, u)| (seq, render::user(&u, &base))).collect())
            }
        },
        |_: &Value| true,
    )
    .await?;
    let next = page.next.map(|seq| state.cursors.seal(&kind, &seq.to_string()));
    let headers = link_headers(&state.public_url, &format!("/api/v1/groups/{id}/users"), &params, next.as_deref());
    Ok((headers, Json(Value::Array(page.items))).into_response())
}
