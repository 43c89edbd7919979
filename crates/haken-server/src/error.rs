//! Okta-shaped error responses. A handler returns [`Failure`]; the response carries the
//! error object with a fresh `errorId`, and the request log line repeats that id.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use haken_core::id::{IdKind, new_id};
use haken_core::{ApiError, ErrorCode};

/// An error answered to the caller.
#[derive(Debug)]
pub struct Failure(pub ApiError);

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure(e)
    }
}

impl From<haken_store::StoreError> for Failure {
    fn from(e: haken_store::StoreError) -> Self {
        tracing::error!(error = %e, "Store operation failed.");
        Failure(ApiError::internal())
    }
}

impl From<ErrorCode> for Failure {
    fn from(code: ErrorCode) -> Self {
        Failure(ApiError::new(code))
    }
}

/// Put on error responses so the request logger can name the error.
#[derive(Debug, Clone)]
pub struct ErrorNote {
    pub error_id: String,
    pub code: &'static str,
    pub summary: String,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let error_id = new_id(IdKind::Request);
        let status = StatusCode::from_u16(self.0.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_value(self.0.body(&error_id)).unwrap_or_default();
        let mut resp = (status, Json(body)).into_response();
        resp.extensions_mut().insert(ErrorNote { error_id, code: self.0.code.code(), summary: self.0.summary.clone() });
        resp
    }
}

pub type ApiResult<T> = Result<T, Failure>;
