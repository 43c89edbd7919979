//! The hosted sign-up page: `GET /signup` renders a form with the attributes the
//! profile-enrollment policy collects plus a password; `POST /signup` (form-encoded) registers
//! through the same flow as `POST /api/v1/registration`. A denial shows each hook cause whose
//! `location` is `data.userProfile.<attr>` next to that field and the others at the top; what
//! was typed is kept, except the password.
//!
//! Server-rendered HTML without JavaScript, built by hand: every value goes through [`escape`].
//! The page forbids framing and any script (`Content-Security-Policy`), and can only submit to
//! itself.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use haken_core::policy::ProfileEnrollment;
use haken_core::schema::{AttrType, UserSchema};
use haken_core::{ApiError, Timestamp};
use haken_flows::registration::{self, SignUp};
use serde_json::{Map, Value};

use crate::api::registration::{SelfServiceLimiter, quota_headers};
use crate::extract::Caller;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/signup", get(show_form).post(submit_form))
}

/// Largest form body accepted.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn page_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"),
    );
    h.insert(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"));
    h.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
    h.insert(HeaderName::from_static("referrer-policy"), HeaderValue::from_static("no-referrer"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#222}\
label{display:block;margin-top:1rem;font-weight:600}\
input{width:100%;padding:.5rem;box-sizing:border-box;font-size:1rem}\
.error{color:#b00020;margin:.25rem 0}\
.alert{border:1px solid #b00020;background:#fdecee;padding:.75rem;margin:1rem 0}\
button{margin-top:1.5rem;padding:.6rem 1.2rem;font-size:1rem}";

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n",
        escape(title)
    );
    (status, page_headers(), html).into_response()
}

/// What a re-rendered form shows.
#[derive(Default)]
struct FormState {
    values: HashMap<String, String>,
    /// Messages next to a field (`password` included).
    field_errors: HashMap<String, Vec<String>>,
    /// Messages at the top.
    top: Vec<String>,
}

fn input_type(name: &str, schema: &UserSchema) -> &'static str {
    match schema.attribute(name) {
        Some(a) if a.email_format => "email",
        Some(a) if matches!(a.kind, AttrType::Number | AttrType::Integer) => "number",
        _ => "text",
    }
}

fn render_form(enrollment: &ProfileEnrollment, schema: &UserSchema, state: &FormState) -> String {
    let mut out = String::from("<h1>Create an account</h1>\n");
    if !state.top.is_empty() {
        out.push_str("<div class=\"alert\" role=\"alert\">");
        for m in &state.top {
            out.push_str(&format!("<p class=\"error\">{}</p>", escape(m)));
        }
        out.push_str("</div>\n");
    }
    out.push_str("<form method=\"post\" action=\"/signup\">\n");
    let field = |out: &mut String, name: &str, label: &str, kind: &str, required: bool, value: &str| {
        let id = format!("f-{name}");
        out.push_str(&format!(
            "<label for=\"{}\">{}{}</label>",
            escape(&id),
            escape(label),
            if required { " *" } else { "" }
        ));
        out.push_str(&format!(
            "<input id=\"{}\" name=\"{}\" type=\"{kind}\" value=\"{}\"{}>",
            escape(&id),
            escape(name),
            escape(value),
            if required { " required" } else { "" }
        ));
        for m in state.field_errors.get(name).into_iter().flatten() {
            out.push_str(&format!("<p class=\"error\" data-field=\"{}\">{}</p>", escape(name), escape(m)));
        }
        out.push('\n');
    };
    for a in &enrollment.profile_attributes {
        let value = state.values.get(&a.name).map(String::as_str).unwrap_or_default();
        field(&mut out, &a.name, &a.label, input_type(&a.name, schema), a.required, value);
    }
    // The password is never echoed back.
    field(&mut out, "password", "Password", "password", true, "");
    out.push_str("<button type=\"submit\">Sign up</button>\n</form>");
    out
}

async fn show_form(State(state): State<AppState>) -> Response {
    match load(&state).await {
        Ok((enrollment, schema)) if enrollment.registration_enabled() => {
            page(StatusCode::OK, "Sign up", &render_form(&enrollment, &schema, &FormState::default()))
        }
        Ok(_) => disabled(),
        Err(e) => failure_page(&e),
    }
}

fn disabled() -> Response {
    page(StatusCode::FORBIDDEN, "Sign up", "<h1>Sign up</h1><p>Self-service registration is not available.</p>")
}

fn failure_page(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    page(status, "Sign up", &format!("<h1>Sign up</h1><p class=\"error\">{}</p>", escape(&e.summary)))
}

async fn load(state: &AppState) -> Result<(ProfileEnrollment, std::sync::Arc<UserSchema>), ApiError> {
    let (_, rule) = registration::enrollment_policy(&state.store).await?;
    let schema = haken_flows::schema::load(&state.store).await?;
    Ok((rule.enrollment, schema))
}

/// A typed-in value as the schema's type wants it; a value that does not convert is passed on
/// as text, so validation names the field.
fn convert(text: &str, kind: Option<AttrType>) -> Value {
    let t = text.trim();
    match kind {
        Some(AttrType::Integer) => t.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::String(t.into())),
        Some(AttrType::Number) => t
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(t.into())),
        Some(AttrType::Boolean) => match t {
            "true" | "on" | "yes" => Value::Bool(true),
            "false" | "off" | "no" => Value::Bool(false),
            _ => Value::String(t.into()),
        },
        Some(AttrType::Array) => Value::Array(
            t.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.into())).collect(),
        ),
        _ => Value::String(t.into()),
    }
}

/// Places an error's messages: hook causes by `location`, validation causes by field name.
fn place_errors(e: &ApiError, enrollment: &ProfileEnrollment, st: &mut FormState) {
    let is_field = |name: &str| name == "password" || enrollment.attribute(name).is_some();
    let mut placed_any = false;
    if e.detailed_causes.is_empty() {
        for c in &e.causes {
            match c.split_once(": ") {
                Some((field, msg)) if is_field(field) => {
                    st.field_errors.entry(field.to_owned()).or_default().push(msg.to_owned());
                    placed_any = true;
                }
                _ => st.top.push(c.clone()),
            }
        }
    } else {
        for c in &e.detailed_causes {
            let msg = c.error_summary.clone().or_else(|| c.reason.clone()).unwrap_or_default();
            match c.location.as_deref().and_then(|l| l.strip_prefix("data.userProfile.")) {
                Some(attr) if is_field(attr) => {
                    st.field_errors.entry(attr.to_owned()).or_default().push(msg);
                    placed_any = true;
                }
                _ if msg.is_empty() => {}
                _ => st.top.push(msg),
            }
        }
    }
    // Okta's generic "Api validation failed: <fields>" helps nobody at the top of a form.
    let summary = if e.summary.starts_with("Api validation failed") {
        if placed_any { "Please correct the fields marked below." } else { "Please correct the form." }.to_owned()
    } else {
        e.summary.clone()
    };
    st.top.insert(0, summary);
}

async fn submit_form(
    State(state): State<AppState>,
    Extension(limiter): Extension<SelfServiceLimiter>,
    Caller(ctx): Caller,
    req: Request,
) -> Response {
    let q = limiter.check(req.extensions().get::<ConnectInfo<SocketAddr>>());
    let mut resp = submit(state, ctx, req, q.allowed).await;
    resp.headers_mut().extend(quota_headers(q));
    resp
}

async fn submit(state: AppState, ctx: haken_core::log_event::EventContext, req: Request, allowed: bool) -> Response {
    if !allowed {
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            "Sign up",
            "<h1>Sign up</h1><p class=\"error\">Too many attempts. Please wait a minute and try again.</p>",
        );
    }
    let form_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return page(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Sign up",
            "<h1>Sign up</h1><p class=\"error\">The form must be sent as application/x-www-form-urlencoded.</p>",
        );
    }
    let Ok(bytes) = axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES).await else {
        return page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Sign up",
            "<h1>Sign up</h1><p class=\"error\">The form is too large.</p>",
        );
    };
    let (enrollment, schema) = match load(&state).await {
        Ok((e, _)) if !e.registration_enabled() => return disabled(),
        Ok(v) => v,
        Err(e) => return failure_page(&e),
    };
    let mut st = FormState::default();
    let mut password = String::new();
    for (k, v) in form_urlencoded::parse(&bytes) {
        if k == "password" {
            password = v.into_owned();
        } else if enrollment.attribute(&k).is_some() {
            st.values.insert(k.into_owned(), v.into_owned());
        }
    }
    let mut profile = Map::new();
    for (k, v) in &st.values {
        if !v.trim().is_empty() {
            profile.insert(k.clone(), convert(v, schema.attribute(k).map(|a| a.kind)));
        }
    }
    if password.is_empty() {
        st.field_errors.entry("password".into()).or_default().push("The field cannot be left blank".into());
        st.top.push("Please correct the fields marked below.".into());
        return page(StatusCode::BAD_REQUEST, "Sign up", &render_form(&enrollment, &schema, &st));
    }
    let req = SignUp { profile, password, request_url: "/signup".to_owned() };
    match registration::register(&state.store, &state.inline, &ctx, req, Timestamp::now()).await {
        Ok(user) => page(
            StatusCode::OK,
            "Account created",
            &format!(
                "<h1>Account created</h1><p>Your account was created. You can now sign in as <strong>{}</strong>.</p>",
                escape(user.login())
            ),
        ),
        Err(e) => {
            let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::BAD_REQUEST);
            place_errors(&e, &enrollment, &mut st);
            page(status, "Sign up", &render_form(&enrollment, &schema, &st))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haken_core::error::DetailedCause;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn places_hook_causes_by_location() {
        let e = ApiError::with_summary(haken_core::ErrorCode::ValidationFailed, "No.").with_detailed_causes(vec![
            DetailedCause {
                error_summary: Some("Use a work address".into()),
                location: Some("data.userProfile.email".into()),
                ..DetailedCause::default()
            },
            DetailedCause { error_summary: Some("Elsewhere".into()), ..DetailedCause::default() },
        ]);
        let mut st = FormState::default();
        place_errors(&e, &ProfileEnrollment::default_actions(), &mut st);
        assert_eq!(st.field_errors.get("email"), Some(&vec!["Use a work address".to_owned()]));
        assert_eq!(st.top, vec!["No.".to_owned(), "Elsewhere".to_owned()]);
    }

    #[test]
    fn converts_form_values() {
        assert_eq!(convert("42", Some(AttrType::Integer)), Value::from(42));
        assert_eq!(convert("x", Some(AttrType::Integer)), Value::String("x".into()));
        assert_eq!(convert("on", Some(AttrType::Boolean)), Value::Bool(true));
        assert_eq!(convert("a, b", Some(AttrType::Array)), serde_json::json!(["a", "b"]));
    }
}
