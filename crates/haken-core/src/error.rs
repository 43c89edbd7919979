//! The one error vocabulary of the management API. Each [`ErrorCode`] maps, in the table below
//! and nowhere else, to its HTTP status, Okta `errorCode` and default summary.

use serde::Serialize;

macro_rules! error_codes {
    ($($variant:ident => ($status:expr, $code:expr, $summary:expr);)*) => {
        /// Okta error codes that Haken answers with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode { $($variant,)* }

        impl ErrorCode {
            /// HTTP status code.
            pub fn status(self) -> u16 { match self { $(ErrorCode::$variant => $status,)* } }
            /// Okta's `errorCode` (also used as `errorLink`).
            pub fn code(self) -> &'static str { match self { $(ErrorCode::$variant => $code,)* } }
            /// Okta's default `errorSummary`.
            pub fn summary(self) -> &'static str { match self { $(ErrorCode::$variant => $summary,)* } }
        }
    };
}

error_codes! {
    ValidationFailed => (400, "E0000001", "Api validation failed");
    MalformedJson => (400, "E0000003", "The request body was not well-formed.");
    AuthenticationFailed => (401, "E0000004", "Authentication failed");
    NoPermission => (403, "E0000006", "You do not have permission to perform the requested action");
    NotFound => (404, "E0000007", "Not found: Resource not found");
    PathNotFound => (404, "E0000008", "The requested path was not found");
    Internal => (500, "E0000009", "Internal Server Error");
    InvalidToken => (401, "E0000011", "Invalid token provided");
    AlreadyActive => (403, "E0000016", "Activation failed because the user is already active");
    MethodNotAllowed => (405, "E0000022", "The endpoint does not support the provided HTTP method");
    InvalidPaging => (400, "E0000029", "Invalid paging request.");
    InvalidSearch => (400, "E0000031", "Invalid search criteria.");
    WrongStatus => (403, "E0000038", "This operation is not allowed in the user's current status.");
    RateLimited => (429, "E0000047", "API call exceeded rate limit due to too many requests.");
    InvalidParameter => (400, "E0000053", "Invalid parameter");
    PayloadTooLarge => (413, "E0000001", "Api validation failed: request body is too large");
    UnsupportedMediaType => (415, "E0000001", "Api validation failed: Content-Type must be application/json");
    ServiceUnavailable => (503, "E0000009", "The service is temporarily unavailable");
}

/// An error the API reports to its caller in Okta's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    /// `errorSummary`; defaults to the code's summary.
    pub summary: String,
    /// `errorCauses[].errorSummary`.
    pub causes: Vec<String>,
    /// Causes with more than a summary (an inline hook's `reason`, `location`, ...). When set,
    /// `errorCauses` is rendered from these instead of `causes`.
    pub detailed_causes: Vec<DetailedCause>,
}

/// An `errorCauses[]` entry carried as its author sent it (fields it left out stay out).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DetailedCause {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode) -> Self {
        ApiError { code, summary: code.summary().to_owned(), causes: Vec::new(), detailed_causes: Vec::new() }
    }

    pub fn with_summary(code: ErrorCode, summary: impl Into<String>) -> Self {
        ApiError { code, summary: summary.into(), causes: Vec::new(), detailed_causes: Vec::new() }
    }

    /// `E0000001` naming one field: `Api validation failed: login` with the cause
    /// `login: <message>`.
    pub fn validation(field: &str, message: impl std::fmt::Display) -> Self {
        ApiError {
            code: ErrorCode::ValidationFailed,
            summary: format!("Api validation failed: {field}"),
            causes: vec![format!("{field}: {message}")],
            detailed_causes: Vec::new(),
        }
    }

    /// `E0000001` with several causes (one per field).
    pub fn validation_many(summary_subject: &str, causes: Vec<String>) -> Self {
        ApiError {
            code: ErrorCode::ValidationFailed,
            summary: format!("Api validation failed: {summary_subject}"),
            causes,
            detailed_causes: Vec::new(),
        }
    }

    /// `E0000007` in Okta's `Not found: Resource not found: <id> (<Type>)` form.
    pub fn not_found(id: &str, kind: &str) -> Self {
        ApiError::with_summary(ErrorCode::NotFound, format!("Not found: Resource not found: {id} ({kind})"))
    }

    pub fn internal() -> Self {
        ApiError::new(ErrorCode::Internal)
    }

    pub fn with_cause(mut self, cause: impl Into<String>) -> Self {
        self.causes.push(cause.into());
        self
    }

    /// Replaces the causes with detailed ones (their summaries also become `causes`, for logs).
    pub fn with_detailed_causes(mut self, causes: Vec<DetailedCause>) -> Self {
        self.causes = causes.iter().filter_map(|c| c.error_summary.clone()).collect();
        self.detailed_causes = causes;
        self
    }

    /// The body Okta sends, given the per-request `errorId`.
    pub fn body<'a>(&'a self, error_id: &'a str) -> ErrorBody<'a> {
        ErrorBody {
            error_code: self.code.code(),
            error_summary: &self.summary,
            error_link: self.code.code(),
            error_id,
            error_causes: if self.detailed_causes.is_empty() {
                self.causes.iter().map(|c| ErrorCause::Summary { error_summary: c }).collect()
            } else {
                self.detailed_causes.iter().map(ErrorCause::Detailed).collect()
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code.code(), self.summary)?;
        for c in &self.causes {
            write!(f, "; {c}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// Okta's error object.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody<'a> {
    pub error_code: &'a str,
    pub error_summary: &'a str,
    pub error_link: &'a str,
    pub error_id: &'a str,
    pub error_causes: Vec<ErrorCause<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ErrorCause<'a> {
    #[serde(rename_all = "camelCase")]
    Summary {
        error_summary: &'a str,
    },
    Detailed(&'a DetailedCause),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_error_names_the_field() {
        let e = ApiError::validation("login", "An object with this field already exists");
        let body = serde_json::to_value(e.body("abc")).unwrap_or_default();
        assert_eq!(body["errorCode"], "E0000001");
        assert_eq!(body["errorLink"], "E0000001");
        assert_eq!(body["errorSummary"], "Api validation failed: login");
        assert_eq!(body["errorCauses"][0]["errorSummary"], "login: An object with this field already exists");
        assert_eq!(ErrorCode::RateLimited.status(), 429);
    }

    #[test]
    fn detailed_causes_keep_what_was_sent() {
        let e = ApiError::with_summary(ErrorCode::ValidationFailed, "No.").with_detailed_causes(vec![
            DetailedCause {
                error_summary: Some("Use a work address.".into()),
                reason: Some("INVALID_EMAIL_DOMAIN".into()),
                location: Some("data.userProfile.email".into()),
                ..DetailedCause::default()
            },
            DetailedCause { reason: Some("X".into()), ..DetailedCause::default() },
        ]);
        let body = serde_json::to_value(e.body("abc")).unwrap_or_default();
        assert_eq!(
            body["errorCauses"],
            serde_json::json!([
                { "errorSummary": "Use a work address.", "reason": "INVALID_EMAIL_DOMAIN", "location": "data.userProfile.email" },
                { "reason": "X" }
            ])
        );
        assert_eq!(e.causes, vec!["Use a work address.".to_owned()]);
    }
}
