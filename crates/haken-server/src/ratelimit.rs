//! Per-token request limits with Okta's headers: a fixed one-minute window per key, so
//! `X-Rate-Limit-Remaining` and `X-Rate-Limit-Reset` mean exactly what Okta documents.
//! Limits are per node; account lockout (a security control) lives in the store instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The verdict for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    /// Epoch seconds when the window resets.
    pub reset: u64,
    pub allowed: bool,
}

pub struct RateLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<String, (u64, u32)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter { per_minute: per_minute.max(1), windows: Mutex::new(HashMap::new()) }
    }

    /// Counts one request for `key` at the current time.
    pub fn check(&self, key: &str) -> Quota {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.check_at(key, now)
    }

    pub fn check_at(&self, key: &str, now_secs: u64) -> Quota {
        let window = now_secs - now_secs % 60;
        let mut map = match self.windows.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if map.len() > 50_000 {
            map.retain(|_, (w, _)| *w == window);
        }
        let entry = map.entry(key.to_owned()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        let allowed = entry.1 < self.per_minute;
        if allowed {
            entry.1 += 1;
        }
        Quota { limit: self.per_minute, remaining: self.per_minute - entry.1, reset: window + 60, allowed }
    }
}

impl Quota {
    /// Okta's rate-limit headers for this quota.
    pub fn headers(self) -> axum::http::HeaderMap {
        use axum::http::{HeaderName, HeaderValue};
        let mut h = axum::http::HeaderMap::new();
        h.insert(HeaderName::from_static("x-rate-limit-limit"), HeaderValue::from(self.limit));
        h.insert(HeaderName::from_static("x-rate-limit-remaining"), HeaderValue::from(self.remaining));
        h.insert(HeaderName::from_static("x-rate-limit-reset"), HeaderValue::from(self.reset));
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_window() {
        let rl = RateLimiter::new(2);
        let a = rl.check_at("t", 120);
        assert!(a.allowed);
        assert_eq!((a.limit, a.remaining, a.reset), (2, 1, 180));
        assert!(rl.check_at("t", 130).allowed);
        let c = rl.check_at("t", 179);
        assert!(!c.allowed);
        assert_eq!(c.remaining, 0);
        assert!(rl.check_at("other", 179).allowed, "keys are independent");
        assert!(rl.check_at("t", 180).allowed, "a new window starts fresh");
    }
}
