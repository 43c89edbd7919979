//! `GET /api/v1/logs`: the System Log, in Okta's two modes. Polling queries (no `until`,
//! ascending) read in persistence order and always offer a `next` link, so a poller never
//! misses an event that committed late; bounded queries read in `published` order between
//! `since` and `until` and stop at the end.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use haken_core::filter::{self, Filter, Op, Syntax};
use haken_core::{ApiError, ErrorCode, LogEvent, Timestamp};
use haken_store::{LogCursor, LogQuery};
use serde_json::Value;

use crate::api::listing::{SCAN_BUDGET, bad_filter};
use crate::error::{ApiResult, Failure};
use crate::paging::{Params, link_headers};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/logs", get(list_logs))
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;
const MAX_KEYWORDS: usize = 10;
const MAX_KEYWORD_LEN: usize = 40;

fn invalid_param(name: &str, msg: impl std::fmt::Display) -> Failure {
    Failure(
        ApiError::with_summary(ErrorCode::InvalidParameter, format!("Invalid parameter: {name}"))
            .with_cause(format!("{name}: {msg}")),
    )
}

/// Where a page starts: the whole query state travels in the cursor, so `next` links only
/// carry `after`, `limit`, `filter`, `q` and `sortOrder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    PollFrom(i64),
    /// After (transaction id, seq) in commit order.
    PollAfter(i64, i64),
    Bounded {
        since: i64,
        until: i64,
        descending: bool,
        after: Option<(i64, i64)>,
    },
}

impl Position {
    fn encode(self) -> String {
        match self {
            Position::PollFrom(since) => format!("ps:{since}"),
            Position::PollAfter(txn, seq) => format!("p:{txn}:{seq}"),
            Position::Bounded { since, until, descending, after } => {
                let (p, s) = after.unwrap_or((i64::MIN, i64::MIN));
                format!("b:{since}:{until}:{}:{p}:{s}", if descending { "D" } else { "A" })
            }
        }
    }

    fn decode(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            ["ps", since] => Some(Position::PollFrom(since.parse().ok()?)),
            ["p", txn, seq] => Some(Position::PollAfter(txn.parse().ok()?, seq.parse().ok()?)),
            ["b", since, until, dir, p, seq] => {
                let p: i64 = p.parse().ok()?;
                let seq: i64 = seq.parse().ok()?;
                Some(Position::Bounded {
                    since: since.parse().ok()?,
                    until: until.parse().ok()?,
                    descending: *dir == "D",
                    after: (p != i64::MIN).then_some((p, seq)),
                })
            }
            _ => None,
        }
    }
}

fn parse_time(params: &Params, name: &str) -> Result<Option<i64>, Failure> {
    match params.get(name) {
        None => Ok(None),
        Some(v) => Timestamp::parse(v)
            .map(|t| Some(t.millis()))
            .ok_or_else(|| invalid_param(name, format!("'{v}' is not an RFC 3339 time stamp"))),
    }
}

fn parse_filter(text: &str) -> Result<Filter, Failure> {
    let f = filter::parse(text, Syntax::LOGS).map_err(|e| bad_filter(ErrorCode::InvalidParameter, "filter", e))?;
    check_filter(&f)?;
    Ok(f)
}

fn check_filter(f: &Filter) -> Result<(), Failure> {
    match f {
        Filter::And(a, b) | Filter::Or(a, b) => {
            check_filter(a)?;
            check_filter(b)
        }
        Filter::Not(a) => check_filter(a),
        Filter::Present { path } | Filter::Compare { path, .. } if path == "published" => Err(bad_filter(
            ErrorCode::InvalidParameter,
            "filter",
            "'published' cannot be filtered on; use since and until",
        )),
        Filter::Compare { path, op: Op::Co, .. }
            if path == "debugContext.debugData.url" || path == "debugContext.debugData.requestUri" =>
        {
            Err(bad_filter(ErrorCode::InvalidSearch, "filter", format!("the co operator is not supported on {path}")))
        }
        _ => Ok(()),
    }
}

fn parse_keywords(q: Option<&str>) -> Result<Vec<String>, Failure> {
    let Some(q) = q else { return Ok(Vec::new()) };
    let words: Vec<String> = q.split_whitespace().map(str::to_lowercase).collect();
    if words.len() > MAX_KEYWORDS {
        return Err(Failure(ApiError::validation("q", format!("at most {MAX_KEYWORDS} keywords"))));
    }
    if let Some(w) = words.iter().find(|w| w.chars().count() > MAX_KEYWORD_LEN) {
        return Err(Failure(ApiError::validation(
            "q",
            format!("keyword '{w}' is longer than {MAX_KEYWORD_LEN} characters"),
        )));
    }
    Ok(words)
}

/// Every keyword equals (ignoring case) some attribute value, some word of one, or some
/// hyphen-separated part of one.
fn matches_keywords(ev: &Value, keywords: &[String]) -> bool {
    if keywords.is_empty() {
        return true;
    }
    let mut terms = std::collections::HashSet::new();
    collect_terms(ev, &mut terms);
    keywords.iter().all(|k| terms.contains(k))
}

fn collect_terms(v: &Value, out: &mut std::collections::HashSet<String>) {
    match v {
        Value::String(s) => {
            let lower = s.to_lowercase();
            for word in lower.split_whitespace() {
                for part in word.split('-') {
                    if !part.is_empty() {
                        out.insert(part.to_owned());
                    }
                }
                out.insert(word.to_owned());
            }
            out.insert(lower);
        }
        Value::Number(n) => {
            out.insert(n.to_string());
        }
        Value::Array(a) => a.iter().for_each(|x| collect_terms(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_terms(x, out)),
        _ => {}
    }
}

async fn list_logs(State(state): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref());
    let limit = match params.get("limit") {
        None => 100,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if (0..=1000).contains(&n) => n,
            _ => return Err(invalid_param("limit", "must be a whole number from 0 to 1000")),
        },
    };
    let descending = match params.get("sortOrder") {
        None | Some("ASCENDING") => false,
        Some("DESCENDING") => true,
        Some(other) => return Err(invalid_param("sortOrder", format!("'{other}' is not ASCENDING or DESCENDING"))),
    };
    let filter = params.get("filter").map(parse_filter).transpose()?;
    let keywords = parse_keywords(params.get("q"))?;
    let now = Timestamp::now().millis();

    let start = match params.get("after") {
        Some(cursor) => {
            // The cursor carries the whole query; `since`/`until` repeated beside it (as SDKs
            // do when they re-send the first request's parameters) are ignored.
            let payload = state.cursors.open("logs", cursor)?;
            Position::decode(&payload).ok_or_else(|| Failure(ApiError::new(ErrorCode::InvalidPaging)))?
        }
        None => {
            let until = parse_time(&params, "until")?;
            let since = parse_time(&params, "since")?;
            let effective_until = until.unwrap_or(now);
            let since = since.unwrap_or(effective_until - 7 * DAY_MS);
            if since < now - 180 * DAY_MS {
                return Err(Failure(ApiError::with_summary(
                    ErrorCode::InvalidParameter,
                    "Invalid parameter: since parameter is over 180 days prior to the current day",
                )));
            }
            if since > effective_until {
                return Err(invalid_param("since", "must not be after until"));
            }
            if until.is_none() && !descending {
                Position::PollFrom(since)
            } else {
                Position::Bounded { since, until: effective_until, descending, after: None }
            }
        }
    };

    let keep = |ev: &Value| filter.as_ref().is_none_or(|f| f.matches(ev)) && matches_keywords(ev, &keywords);
    let (items, next) = read_page(&state, start, limit as usize, keep).await?;
    let next_cursor = next.map(|p| state.cursors.seal("logs", &p.encode()));
    let mut link_params = Vec::new();
    for key in ["limit", "filter", "q", "sortOrder"] {
        if let Some(v) = params.get(key) {
            link_params.push(format!("{key}={}", form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()));
        }
    }
    let next_params = Params::parse(Some(&link_params.join("&")));
    let mut headers = link_headers(&state.public_url, "/api/v1/logs", &params, None);
    if let Some(c) = next_cursor {
        let next_link = link_headers(&state.public_url, "/api/v1/logs", &next_params, Some(&c));
        if let Some(v) = next_link.get_all(axum::http::header::LINK).iter().nth(1) {
            headers.append(axum::http::header::LINK, v.clone());
        }
    }
    Ok((headers, Json(Value::Array(items))).into_response())
}

/// Reads events from `start` until `limit` matches (and proof of one more), the end, or the
/// scan budget. Returns the page and where the next one starts (always, when polling).
async fn read_page(
    state: &AppState,
    start: Position,
    limit: usize,
    keep: impl Fn(&Value) -> bool,
) -> Result<(Vec<Value>, Option<Position>), Failure> {
    let (polling, since, until, descending, mut cursor) = match start {
        Position::PollFrom(since) => (true, since, i64::MAX, false, None),
        Position::PollAfter(txn, seq) => (true, 0, i64::MAX, false, Some(LogCursor::Poll(txn, seq))),
        Position::Bounded { since, until, descending, after } => {
            (false, since, until, descending, after.map(|(p, s)| LogCursor::Published(p, s)))
        }
    };
    let position = |c: Option<LogCursor>| -> Position {
        match (polling, c) {
            (true, Some(LogCursor::Poll(t, s))) => Position::PollAfter(t, s),
            (true, Some(LogCursor::Published(_, s))) => Position::PollAfter(0, s),
            (true, None) => Position::PollFrom(since),
            (false, Some(LogCursor::Published(p, s))) => {
                Position::Bounded { since, until, descending, after: Some((p, s)) }
            }
            (false, _) => Position::Bounded { since, until, descending, after: None },
        }
    };
    let batch = (limit + 1).clamp(50, 1000) as i64;
    let mut items = Vec::new();
    let mut last_included = cursor;
    let mut scanned = 0usize;
    loop {
        let q = LogQuery { polling, since, until, after: cursor, descending, limit: batch };
        let rows: Vec<(LogCursor, LogEvent)> = state.store.list_logs(&q).await?;
        let n = rows.len() as i64;
        for (here, ev) in rows {
            scanned += 1;
            let doc = ev.to_value();
            if keep(&doc) {
                if items.len() == limit {
                    return Ok((items, Some(position(last_included))));
                }
                items.push(doc);
                last_included = Some(here);
            }
            cursor = Some(here);
            if scanned >= SCAN_BUDGET {
                return Ok((items, Some(position(cursor))));
            }
        }
        if n < batch {
            // The end of what is there now: a poller resumes after what it has seen.
            return Ok((items, polling.then(|| position(cursor))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn positions_round_trip() {
        for p in [
            Position::PollFrom(5),
            Position::PollAfter(7, 9),
            Position::Bounded { since: 1, until: 2, descending: true, after: Some((3, 4)) },
            Position::Bounded { since: 1, until: 2, descending: false, after: None },
        ] {
            assert_eq!(Position::decode(&p.encode()), Some(p));
        }
        assert_eq!(Position::decode("x:1"), None);
    }

    #[test]
    fn keywords_match_words_and_hyphen_parts() {
        let ev = json!({ "displayMessage": "Create okta user", "actor": { "id": "00uabc" }, "uuid": "a1b2-c3d4" });
        assert!(matches_keywords(&ev, &["create".into(), "okta".into()]));
        assert!(matches_keywords(&ev, &["c3d4".into()]));
        assert!(!matches_keywords(&ev, &["creat".into()]), "keywords match whole terms");
        assert!(parse_keywords(Some("a b c d e f g h i j k")).is_err());
        assert!(parse_keywords(Some(&"x".repeat(41))).is_err());
    }
}
