//! Cursor paging as Okta does it: opaque `after` cursors taken only from `link` headers, with
//! `rel="self"` always and `rel="next"` while more may follow. Cursors are signed, so a
//! tampered one is answered 400 `E0000029` instead of being trusted.

use axum::http::header::LINK;
use axum::http::{HeaderMap, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use haken_core::{ApiError, ErrorCode};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::Failure;

const TAG_LEN: usize = 12;

/// The key that signs cursors (shared by all nodes through the store).
pub struct CursorKey(Vec<u8>);

impl CursorKey {
    pub fn new(key: &[u8]) -> Self {
        CursorKey(key.to_vec())
    }

    fn tag(&self, kind: &str, payload: &str) -> Vec<u8> {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return Vec::new();
        };
        mac.update(kind.as_bytes());
        mac.update(b"\0");
        mac.update(payload.as_bytes());
        mac.finalize().into_bytes().iter().take(TAG_LEN).copied().collect()
    }

    /// An opaque cursor for `payload` in the listing `kind`.
    pub fn seal(&self, kind: &str, payload: &str) -> String {
        let mut raw = self.tag(kind, payload);
        raw.extend_from_slice(payload.as_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The payload of a cursor made by [`CursorKey::seal`] for the same `kind`.
    pub fn open(&self, kind: &str, cursor: &str) -> Result<String, Failure> {
        let bad = || {
            Failure(ApiError::with_summary(
                ErrorCode::InvalidPaging,
                "Invalid paging request: the after cursor is not valid.",
            ))
        };
        let raw = URL_SAFE_NO_PAD.decode(cursor.trim()).map_err(|_| bad())?;
        if raw.len() < TAG_LEN {
            return Err(bad());
        }
        let (tag, payload) = raw.split_at(TAG_LEN);
        let payload = std::str::from_utf8(payload).map_err(|_| bad())?;
        let expected = self.tag(kind, payload);
        // Constant-time comparison: the tag is a MAC.
        let diff = expected.iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 || expected.len() != tag.len() {
            return Err(bad());
        }
        Ok(payload.to_owned())
    }
}

/// Query parameters in their original order, so links can repeat them.
#[derive(Debug, Clone, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(raw: Option<&str>) -> Self {
        Params(form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).into_owned().collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A boolean parameter (`true`/`false`), with a clear error for anything else.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, Failure> {
        match self.get(name) {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(Failure(ApiError::validation(name, format!("expected true or false, got '{v}'")))),
        }
    }

    /// `limit`, within `1..=max` (Okta clamps large values to the maximum).
    pub fn limit(&self, default: i64, max: i64) -> Result<i64, Failure> {
        match self.get("limit") {
            None => Ok(default),
            Some(v) => match v.trim().parse::<i64>() {
                Ok(n) if n >= 1 => Ok(n.min(max)),
                _ => Err(Failure(ApiError::validation("limit", format!("must be a whole number from 1 to {max}")))),
            },
        }
    }

    /// These parameters with `after` replaced (or removed).
    pub fn with_after(&self, after: Option<&str>) -> String {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.0 {
            if k != "after" {
                ser.append_pair(k, v);
            }
        }
        if let Some(a) = after {
            ser.append_pair("after", a);
        }
        ser.finish()
    }

    pub fn to_query(&self) -> String {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.0 {
            ser.append_pair(k, v);
        }
        ser.finish()
    }
}

/// `link` headers for a page: `self` with the request's parameters, `next` with the cursor.
pub fn link_headers(base: &str, path: &str, params: &Params, next: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    let url = |q: String| if q.is_empty() { format!("{base}{path}") } else { format!("{base}{path}?{q}") };
    if let Ok(v) = HeaderValue::from_str(&format!("<{}>; rel=\"self\"", url(params.to_query()))) {
        h.append(LINK, v);
    }
    if let Some(after) = next
        && let Ok(v) = HeaderValue::from_str(&format!("<{}>; rel=\"next\"", url(params.with_after(Some(after)))))
    {
        h.append(LINK, v);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_detect_tampering() {
        let k = CursorKey::new(b"secret");
        let c = k.seal("users", "42");
        assert_eq!(k.open("users", &c).ok().as_deref(), Some("42"));
        assert!(k.open("groups", &c).is_err(), "a cursor of another listing is refused");
        let mut t = c.clone().into_bytes();
        if let Some(last) = t.last_mut() {
            *last = if *last == b'A' { b'B' } else { b'A' };
        }
        assert!(k.open("users", &String::from_utf8(t).unwrap_or_default()).is_err());
        assert!(k.open("users", "garbage!").is_err());
    }

    #[test]
    fn links_keep_parameters() {
        let p = Params::parse(Some("limit=2&filter=status%20eq%20%22ACTIVE%22&after=old"));
        let h = link_headers("http://h", "/api/v1/users", &p, Some("NEW"));
        let links: Vec<&str> = h.get_all(LINK).iter().filter_map(|v| v.to_str().ok()).collect();
        assert_eq!(links.len(), 2);
        assert!(links[1].contains("after=NEW"));
        assert!(links[1].contains("filter=status+eq+%22ACTIVE%22"));
        assert!(!links[1].contains("old"));
        assert!(links[1].ends_with("rel=\"next\""));
    }
}
