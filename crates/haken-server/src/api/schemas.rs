//! `/api/v1/meta/schemas/user/default`: read the user profile schema, add or remove custom
//! attributes.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use haken_core::Timestamp;
use serde_json::Value;

use crate::error::ApiResult;
use crate::extract::OktaJson;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/meta/schemas/user/default", get(get_user_schema).post(update_user_schema))
}

async fn get_user_schema(State(state): State<AppState>) -> ApiResult<Response> {
    let schema = haken_flows::schema::load(&state.store).await?;
    Ok(Json(schema.to_json(&state.public_url)).into_response())
}

async fn update_user_schema(State(state): State<AppState>, OktaJson(body): OktaJson<Value>) -> ApiResult<Response> {
    let schema = haken_flows::schema::update(&state.store, &body, Timestamp::now()).await?;
    Ok(Json(schema.to_json(&state.public_url)).into_response())
}
