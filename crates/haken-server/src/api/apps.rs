//! `/api/v1/apps`: Okta's application object (create, list with `q`/`filter` and paging, get,
//! replace, delete when inactive, `lifecycle/activate|deactivate`), and Haken's user import
//! extension under `/api/v1/apps/{appId}/imports`: upload a CSV or JSON Lines file (streamed
//! to the data directory, never held in memory), get the job's status, list the jobs.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use haken_core::app::{App, IMPORT_JOB_TYPE, ImportFormat, ImportJob, ImportSettings, MatchRule};
use haken_core::{ApiError, ErrorCode, Timestamp};
use haken_flows::apps::{self, AppInput};
use haken_flows::import::{self, ImportEnv, ImportOptions};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;

use crate::api::listing::{parse_filter, scan};
use crate::api::render;
use crate::error::{ApiResult, Failure};
use crate::extract::{Caller, OktaJson};
use crate::paging::{Params, link_headers};
use crate::state::AppState;

/// Largest import file accepted.
pub const MAX_IMPORT_BYTES: u64 = 1024 * 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/apps", get(list_apps).post(create_app))
        .route("/api/v1/apps/{id}", get(get_app).put(replace_app).delete(delete_app))
        .route("/api/v1/apps/{id}/lifecycle/activate", post(activate_app))
        .route("/api/v1/apps/{id}/lifecycle/deactivate", post(deactivate_app))
        // The upload is streamed to disk with its own cap; the JSON body limit does not apply.
        .route(
            "/api/v1/apps/{id}/imports",
            get(list_imports).post(start_import).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/api/v1/apps/{id}/imports/{job_id}", get(get_import))
}

// ---- wire shapes ----

fn href(base: &str, path: &str) -> Value {
    json!({ "href": format!("{base}{path}") })
}

fn href_post(base: &str, path: &str) -> Value {
    json!({ "href": format!("{base}{path}"), "hints": { "allow": ["POST"] } })
}

fn import_settings_json(s: &ImportSettings) -> Value {
    json!({
        "inlineHookId": s.inline_hook_id,
        "matching": s.matching.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "mapping": s.mapping,
        "activate": s.activate,
        "passwordHook": s.password_hook,
    })
}

/// An app as `/api/v1/apps` returns it.
fn app_json(app: &App, base: &str) -> Value {
    let id = &app.id;
    let mut settings = app.settings.clone();
    settings.entry("app").or_insert_with(|| json!({}));
    if let Some(imp) = &app.import {
        settings.insert("import".into(), import_settings_json(imp));
    }
    let mut links = Map::new();
    links.insert("self".into(), href(base, &format!("/api/v1/apps/{id}")));
    if app.is_active() {
        links.insert("deactivate".into(), href_post(base, &format!("/api/v1/apps/{id}/lifecycle/deactivate")));
    } else {
        links.insert("activate".into(), href_post(base, &format!("/api/v1/apps/{id}/lifecycle/activate")));
    }
    links.insert("imports".into(), href(base, &format!("/api/v1/apps/{id}/imports")));
    json!({
        "id": id,
        "name": app.name,
        "label": app.label,
        "status": app.status.as_str(),
        "signOnMode": app.sign_on_mode,
        "created": app.created,
        "lastUpdated": app.last_updated,
        "features": app.features,
        "settings": settings,
        "profile": app.profile,
        "_links": links,
    })
}

/// An import job; `full` adds the failed rows.
fn job_json(job: &ImportJob, base: &str, full: bool) -> Value {
    let c = job.counts;
    let mut v = json!({
        "id": job.id,
        "type": IMPORT_JOB_TYPE,
        "status": job.status.as_str(),
        "appId": job.app_id,
        "format": job.format.as_str(),
        "passwordHook": job.password_hook,
        "bytes": job.bytes,
        "created": job.created,
        "started": job.started,
        "finished": job.finished,
        "counts": { "rows": c.rows, "created": c.created, "linked": c.linked, "updated": c.updated, "skipped": c.skipped, "failed": c.failed },
        "rate": job.rate,
        "failedRowsOmitted": job.failed_rows_omitted,
        "error": job.error,
        "_links": {
            "self": href(base, &format!("/api/v1/apps/{}/imports/{}", job.app_id, job.id)),
            "app": href(base, &format!("/api/v1/apps/{}", job.app_id)),
        },
    });
    if full {
        v["failedRows"] =
            job.failed_rows.iter().map(|r| json!({ "row": r.row, "reason": r.reason, "login": r.login })).collect();
    }
    v
}

// ---- request bodies ----

const READ_ONLY_FIELDS: &[&str] = &["id", "status", "created", "lastUpdated", "_links", "_embedded"];
/// Sent by Okta's SDKs with every app; accepted and not interpreted.
const IGNORED_FIELDS: &[&str] = &["accessibility", "visibility", "licensing", "orn"];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppBody {
    name: Option<String>,
    label: Option<String>,
    sign_on_mode: Option<String>,
    features: Option<Vec<String>>,
    settings: Option<Map<String, Value>>,
    profile: Option<Map<String, Value>>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ImportBody {
    inline_hook_id: Option<String>,
    matching: Option<Vec<String>>,
    mapping: Option<BTreeMap<String, String>>,
    activate: Option<bool>,
    password_hook: Option<bool>,
}

fn parse_import(v: Value) -> Result<Option<ImportSettings>, Failure> {
    if v.is_null() {
        return Ok(None);
    }
    let body: ImportBody = serde_json::from_value(v).map_err(|e| {
        Failure(ApiError::validation("settings.import", e.to_string().split(" at line ").next().unwrap_or_default()))
    })?;
    let defaults = ImportSettings::default();
    let matching = match body.matching {
        None => defaults.matching,
        Some(names) => names
            .iter()
            .map(|n| {
                MatchRule::parse(n).ok_or_else(|| {
                    Failure(ApiError::validation(
                        "settings.import.matching",
                        format!("'{n}' is not a matching rule (LOGIN, EMAIL, FIRST_AND_LAST_NAME)"),
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(Some(ImportSettings {
        inline_hook_id: body.inline_hook_id.filter(|s| !s.is_empty()),
        matching,
        mapping: body.mapping.unwrap_or_default(),
        activate: body.activate.unwrap_or(defaults.activate),
        password_hook: body.password_hook.unwrap_or(defaults.password_hook),
    }))
}

impl AppBody {
    fn into_input(self) -> Result<AppInput, Failure> {
        if let Some(k) =
            self.rest.keys().find(|k| !READ_ONLY_FIELDS.contains(&k.as_str()) && !IGNORED_FIELDS.contains(&k.as_str()))
        {
            return Err(Failure(ApiError::validation(k, "unknown property")));
        }
        let blank = |f: &str| Failure(ApiError::validation(f, "The field cannot be left blank"));
        let mut settings = self.settings.unwrap_or_default();
        let import = parse_import(settings.remove("import").unwrap_or(Value::Null))?;
        if let Some(app) = settings.get("app")
            && !app.is_object()
        {
            return Err(Failure(ApiError::validation("settings.app", "must be an object")));
        }
        Ok(AppInput {
            name: self.name.ok_or_else(|| blank("name"))?,
            label: self.label.ok_or_else(|| blank("label"))?,
            sign_on_mode: self.sign_on_mode.ok_or_else(|| blank("signOnMode"))?,
            features: self.features.unwrap_or_default(),
            settings,
            import,
            profile: self.profile.unwrap_or_default(),
        })
    }
}

// ---- apps ----

async fn create_app(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    RawQuery(raw): RawQuery,
    OktaJson(body): OktaJson<AppBody>,
) -> ApiResult<Response> {
    let activate = Params::parse(raw.as_deref()).flag("activate", true)?;
    let app = apps::create_app(&state.store, &ctx, body.into_input()?, activate, Timestamp::now()).await?;
    Ok(Json(app_json(&app, &state.public_url)).into_response())
}

async fn get_app(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let app = apps::get_app(&state.store, &id).await?;
    Ok(Json(app_json(&app, &state.public_url)).into_response())
}

async fn replace_app(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path(id): Path<String>,
    OktaJson(body): OktaJson<AppBody>,
) -> ApiResult<Response> {
    let app = apps::replace_app(&state.store, &ctx, &id, body.into_input()?, Timestamp::now()).await?;
    Ok(Json(app_json(&app, &state.public_url)).into_response())
}

async fn delete_app(State(state): State<AppState>, Caller(ctx): Caller, Path(id): Path<String>) -> ApiResult<Response> {
    apps::delete_app(&state.store, &ctx, &id, Timestamp::now()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn activate_app(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    apps::set_status(&state.store, &ctx, &id, true, Timestamp::now()).await?;
    Ok(Json(json!({})).into_response())
}

async fn deactivate_app(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    apps::set_status(&state.store, &ctx, &id, false, Timestamp::now()).await?;
    Ok(Json(json!({})).into_response())
}

fn after_param(state: &AppState, params: &Params, kind: &str) -> Result<i64, Failure> {
    match params.get("after") {
        Some(c) => {
            state.cursors.open(kind, c)?.parse::<i64>().map_err(|_| Failure(ApiError::new(ErrorCode::InvalidPaging)))
        }
        None => Ok(0),
    }
}

const APP_FILTER_ATTRIBUTES: &[&str] = &["id", "name", "label", "status", "signOnMode", "created", "lastUpdated"];

async fn list_apps(State(state): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref());
    let limit = params.limit(20, 200)?;
    let after = after_param(&state, &params, "apps")?;
    let prefix = params.get("q").map(str::to_lowercase).filter(|s| !s.is_empty());
    let filter = match params.get("filter") {
        Some(text) => Some(parse_filter(text, APP_FILTER_ATTRIBUTES)?),
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
            async move {
                let rows = store.list_docs::<App>(None, after, batch).await?;
                Ok(rows.into_iter().map(|(seq, a)| (seq, app_json(&a, &base))).collect())
            }
        },
        |doc: &Value| {
            let label = doc["label"].as_str().unwrap_or_default().to_lowercase();
            prefix.as_ref().is_none_or(|p| label.starts_with(p.as_str()))
                && filter.as_ref().is_none_or(|f| f.matches(doc))
        },
    )
    .await?;
    let next = page.next.map(|seq| state.cursors.seal("apps", &seq.to_string()));
    let headers = link_headers(&state.public_url, "/api/v1/apps", &params, next.as_deref());
    Ok((headers, Json(Value::Array(page.items))).into_response())
}

// ---- imports ----

fn format_of(headers: &HeaderMap, params: &Params) -> Result<ImportFormat, Failure> {
    let by_name = |s: &str| match s {
        "csv" => Some(ImportFormat::Csv),
        "jsonl" | "ndjson" => Some(ImportFormat::Jsonl),
        _ => None,
    };
    if let Some(f) = params.get("format") {
        return by_name(f).ok_or_else(|| Failure(ApiError::validation("format", "must be csv or jsonl")));
    }
    let ct = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match essence.as_str() {
        "text/csv" => Ok(ImportFormat::Csv),
        "application/x-ndjson" | "application/jsonl" | "application/x-jsonlines" | "application/jsonlines" => {
            Ok(ImportFormat::Jsonl)
        }
        _ => Err(Failure(ApiError::with_summary(
            ErrorCode::UnsupportedMediaType,
            "Api validation failed: Content-Type must be text/csv or application/x-ndjson",
        ))),
    }
}

fn too_large() -> Failure {
    Failure(ApiError::with_summary(
        ErrorCode::PayloadTooLarge,
        format!("Api validation failed: an import file may be at most {MAX_IMPORT_BYTES} bytes"),
    ))
}

/// Writes the request body to `path`, at most [`MAX_IMPORT_BYTES`]; the size written.
async fn save_upload(req: Request, path: &std::path::Path) -> Result<u64, Failure> {
    let mut file = tokio::fs::File::create(path).await.map_err(|e| {
        tracing::error!(error = %e, path = %path.display(), "Cannot create the import upload file.");
        Failure(ApiError::internal())
    })?;
    let mut stream = req.into_body().into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| Failure(ApiError::validation("body", format!("the upload was interrupted: {e}"))))?;
        total += chunk.len() as u64;
        if total > MAX_IMPORT_BYTES {
            return Err(too_large());
        }
        file.write_all(&chunk).await.map_err(|e| {
            tracing::error!(error = %e, path = %path.display(), "Cannot write the import upload file.");
            Failure(ApiError::internal())
        })?;
    }
    file.flush().await.map_err(|_| Failure(ApiError::internal()))?;
    Ok(total)
}

async fn start_import(
    State(state): State<AppState>,
    Caller(ctx): Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    req: Request,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref());
    let app = apps::get_app(&state.store, &id).await?;
    let format = format_of(req.headers(), &params)?;
    let password_hook = match params.get("passwordHook") {
        Some(_) => Some(params.flag("passwordHook", false)?),
        None => None,
    };
    if !app.is_active() {
        return Err(Failure(ApiError::validation("status", "the app is INACTIVE; activate it to import users")));
    }
    if import::is_running(&app.id) {
        return Err(Failure(ApiError::validation("id", "an import of this app is running; wait for it to finish")));
    }
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_IMPORT_BYTES) {
        return Err(too_large());
    }
    let dir = state.config.data_dir.join("imports");
    tokio::fs::create_dir_all(&dir).await.map_err(|e| {
        tracing::error!(error = %e, dir = %dir.display(), "Cannot create the import directory.");
        Failure(ApiError::internal())
    })?;
    let job_id = import::new_job_id();
    let path = dir.join(format!("{job_id}.upload"));
    let bytes = match save_upload(req, &path).await {
        Ok(n) => n,
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
    };
    let opts = ImportOptions { format, password_hook };
    let started = match import::start_job(&state.store, &ctx, &app, job_id, &opts, bytes, Timestamp::now()).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e.into());
        }
    };
    let body = job_json(&started.job, &state.public_url, true);
    let base = state.public_url.clone();
    let env = ImportEnv {
        store: state.store.clone(),
        inline: state.inline.clone(),
        render_user: std::sync::Arc::new(move |u| render::user(u, &base)),
    };
    tokio::spawn(import::run_job(env, ctx, app, started, path));
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn get_import(State(state): State<AppState>, Path((id, job_id)): Path<(String, String)>) -> ApiResult<Response> {
    apps::get_app(&state.store, &id).await?;
    let job = import::get_job(&state.store, &id, &job_id).await?;
    Ok(Json(job_json(&job, &state.public_url, true)).into_response())
}

async fn list_imports(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref());
    let limit = params.limit(20, 200)?;
    let kind = format!("imports:{id}");
    let after = after_param(&state, &params, &kind)?;
    let app = apps::get_app(&state.store, &id).await?;
    let store = state.store.clone();
    let base = state.public_url.clone();
    let page = scan(
        after,
        limit as usize,
        |after, batch| {
            let store = store.clone();
            let base = base.clone();
            let app_id = app.id.clone();
            async move {
                let rows = store.list_docs::<ImportJob>(Some(&app_id), after, batch).await?;
                let now = Timestamp::now();
                Ok(rows.into_iter().map(|(seq, j)| (seq, job_json(&import::settled(j, now), &base, false))).collect())
            }
        },
        |_: &Value| true,
    )
    .await?;
    let next = page.next.map(|seq| state.cursors.seal(&kind, &seq.to_string()));
    let headers = link_headers(&state.public_url, &format!("/api/v1/apps/{id}/imports"), &params, next.as_deref());
    Ok((headers, Json(Value::Array(page.items))).into_response())
}
