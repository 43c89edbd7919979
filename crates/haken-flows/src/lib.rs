//! Haken's identity flows. Each function here is one thing a caller can do to the directory:
//! it validates, applies Okta's rules, builds the System Log events and hands the change to the
//! store, which commits change and events together. HTTP handlers and the CLI both call these.

pub mod apps;
pub mod credentials;
pub mod directory;
pub mod import;
pub mod registration;
pub mod schema;
pub mod signin;
pub mod tokens;

use haken_core::ApiError;
use haken_store::StoreError;

/// Internal error of a flow: either an answer for the caller or a store failure still to be
/// put in context.
#[derive(Debug)]
pub(crate) enum FlowError {
    Api(ApiError),
    Store(StoreError),
}

impl From<StoreError> for FlowError {
    fn from(e: StoreError) -> Self {
        FlowError::Store(e)
    }
}

impl From<ApiError> for FlowError {
    fn from(e: ApiError) -> Self {
        FlowError::Api(e)
    }
}

/// Maps a store failure to what the caller is told; `kind` and `id` name the resource.
pub(crate) fn store_error(e: StoreError, kind: &str, id: &str) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found(id, kind),
        StoreError::Conflict(field) => {
            let field = if field == "login" { "login" } else { field };
            ApiError::validation(field, "An object with this field already exists in the current organization")
        }
        StoreError::MissingReference(r) => ApiError::not_found(&r, "Resource"),
        other => {
            let error_id = haken_core::id::new_id(haken_core::id::IdKind::Request);
            tracing::error!(error = %other, %error_id, "Store operation failed.");
            internal_error()
        }
    }
}

pub(crate) fn internal_error() -> ApiError {
    ApiError::internal()
}

pub(crate) fn flow_error(e: FlowError, kind: &str, id: &str) -> ApiError {
    match e {
        FlowError::Api(a) => a,
        FlowError::Store(s) => store_error(s, kind, id),
    }
}
