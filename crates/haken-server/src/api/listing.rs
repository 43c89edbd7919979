//! Listing with filters: the store narrows by what its indexes serve, the full filter is
//! evaluated here on the wire JSON, and a scan budget bounds the work of one page (a page may
//! then hold fewer items than asked, with a `next` link to go on — clients follow links).

use std::future::Future;

use haken_core::filter::{Filter, Op};
use haken_core::{ApiError, ErrorCode, Timestamp};
use haken_store::StoreError;
use serde_json::Value;

use crate::error::Failure;

/// Rows one request may examine before it answers with what it found.
pub const SCAN_BUDGET: usize = 10_000;

/// One page of a listing and where the next starts.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<i64>,
}

/// Reads rows after `after` through `fetch(after, batch)` and keeps those `keep` accepts,
/// until `limit` items (plus proof of one more), the end, or the scan budget.
pub async fn scan<T, F, Fut, K>(mut after: i64, limit: usize, mut fetch: F, keep: K) -> Result<Page<T>, Failure>
where
    F: FnMut(i64, i64) -> Fut,
    Fut: Future<Output = Result<Vec<(i64, T)>, StoreError>>,
    K: Fn(&T) -> bool,
{
    let batch = (limit + 1).clamp(50, 1000);
    let mut items = Vec::with_capacity(limit.min(1000));
    let mut last_included = after;
    let mut scanned = 0usize;
    loop {
        let rows = fetch(after, batch as i64).await?;
        let n = rows.len();
        for (seq, item) in rows {
            scanned += 1;
            if keep(&item) {
                if items.len() == limit {
                    return Ok(Page { items, next: Some(last_included) });
                }
                items.push(item);
                last_included = seq;
            }
            after = seq;
            if scanned >= SCAN_BUDGET {
                return Ok(Page { items, next: Some(after) });
            }
        }
        if n < batch {
            return Ok(Page { items, next: None });
        }
    }
}

/// A 400 for a filter that does not parse or names what cannot be filtered.
pub fn bad_filter(code: ErrorCode, param: &str, msg: impl std::fmt::Display) -> Failure {
    Failure(
        ApiError::with_summary(code, format!("{}: {param}", code.summary().trim_end_matches('.')))
            .with_cause(format!("{param}: {msg}")),
    )
}

/// Parses a listing's `filter` (the System Log syntax) and refuses attributes outside `allowed`.
pub fn parse_filter(text: &str, allowed: &[&str]) -> Result<Filter, Failure> {
    let f = haken_core::filter::parse(text, haken_core::filter::Syntax::LOGS)
        .map_err(|e| bad_filter(ErrorCode::InvalidSearch, "filter", e))?;
    if let Some(p) = f.paths().into_iter().find(|p| !allowed.contains(p)) {
        return Err(bad_filter(ErrorCode::InvalidSearch, "filter", format!("'{p}' is not a filterable attribute")));
    }
    Ok(f)
}

/// `status` values a filter requires at its top level, if it pins them (`status eq "A"`, or
/// an `or` of such terms).
pub fn pinned_statuses(f: &Filter) -> Option<Vec<String>> {
    match f {
        Filter::Compare { path, op: Op::Eq, value: Value::String(s) } if path == "status" => Some(vec![s.clone()]),
        Filter::Or(a, b) => {
            let mut v = pinned_statuses(a)?;
            v.extend(pinned_statuses(b)?);
            Some(v)
        }
        _ => None,
    }
}

/// Millisecond bounds on a time attribute from a top-level comparison.
pub fn time_bound(f: &Filter, attr: &str) -> (Option<i64>, Option<i64>) {
    if let Filter::Compare { path, op, value: Value::String(s) } = f
        && path == attr
        && let Some(t) = Timestamp::parse(s)
    {
        let t = t.millis();
        return match op {
            Op::Gt => (Some(t + 1), None),
            Op::Ge => (Some(t), None),
            Op::Lt => (None, Some(t - 1)),
            Op::Le => (None, Some(t)),
            Op::Eq => (Some(t), Some(t)),
            _ => (None, None),
        };
    }
    (None, None)
}

/// The string a top-level `attr eq "..."` term pins.
pub fn pinned_eq<'a>(f: &'a Filter, attr: &str) -> Option<&'a str> {
    match f {
        Filter::Compare { path, op: Op::Eq, value: Value::String(s) } if path == attr => Some(s),
        _ => None,
    }
}
