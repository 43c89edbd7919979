//! Retry decisions. `okta`: one retry after a timeout, a transport error or a 5xx; none after
//! a 4xx. `durable`: a schedule over more than a day with ±20 % jitter, honouring
//! `Retry-After` within bounds; 4xx other than 408/429 are final; 410 also stops the hook.
//!
//! `Retry-After` only ever lengthens a wait: it says when a retry may come at the earliest,
//! and a receiver answering `Retry-After: 1` to every attempt must not use the whole schedule
//! up within seconds. So however the receiver answers, a durable delivery is retried for at
//! least [`DURABLE_MIN_SPAN_SECS`] before it becomes a dead letter.

use haken_core::Timestamp;
use haken_core::hook::RetryPolicy;

/// Delays after attempt 1, 2, … of the durable policy (seconds): about 32 hours in all, so
/// that even with every delay jittered down by a fifth the retries span more than a day.
pub const DURABLE_SCHEDULE: &[u64] = &[5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800, 28800];

/// The least time a durable delivery is retried for, whatever the jitter and `Retry-After`.
pub const DURABLE_MIN_SPAN_SECS: u64 = 24 * 3600;

/// Jitter: each scheduled delay is multiplied by a factor in this range.
const JITTER: (f64, f64) = (0.8, 1.2);

/// Delay before Okta's single retry.
pub const OKTA_RETRY_DELAY_MS: i64 = 2_000;

/// `Retry-After` is honoured between these bounds (seconds).
pub const RETRY_AFTER_MIN: u64 = 1;
pub const RETRY_AFTER_MAX: u64 = 3600;

/// How an attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Timeout, connection refused or reset, unreadable response.
    Transport,
    /// An HTTP status that is not 2xx.
    Status(u16),
    /// The URL policy refused the target.
    Policy,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    RetryAt(Timestamp),
    /// No more attempts: a dead letter.
    GiveUp,
    /// 410 Gone: a dead letter, and the hook is deactivated.
    StopHook,
}

/// Decides after failed attempt number `attempt` (1-based).
pub fn decide(
    policy: RetryPolicy,
    attempt: u32,
    failure: Failure,
    retry_after: Option<u64>,
    now: Timestamp,
) -> Decision {
    match (policy, failure) {
        (_, Failure::Policy) => Decision::GiveUp,
        (RetryPolicy::Durable, Failure::Status(410)) => Decision::StopHook,
        (RetryPolicy::Okta, f) => {
            let retryable = matches!(f, Failure::Transport) || matches!(f, Failure::Status(s) if s >= 500);
            if retryable && attempt < 2 {
                Decision::RetryAt(now.plus_millis(OKTA_RETRY_DELAY_MS))
            } else {
                Decision::GiveUp
            }
        }
        (RetryPolicy::Durable, f) => {
            let retryable = match f {
                Failure::Transport => true,
                Failure::Status(s) => s >= 500 || s == 408 || s == 429,
                Failure::Policy => false,
            };
            let Some(base) = DURABLE_SCHEDULE.get(attempt.saturating_sub(1) as usize) else {
                return Decision::GiveUp;
            };
            if !retryable {
                return Decision::GiveUp;
            }
            let scheduled = jitter(base * 1000);
            let delay_ms = match retry_after {
                Some(s) => scheduled.max(s.clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX) * 1000),
                None => scheduled,
            };
            Decision::RetryAt(now.plus_millis(i64::try_from(delay_ms).unwrap_or(i64::MAX)))
        }
    }
}

fn jitter(ms: u64) -> u64 {
    let factor: f64 = JITTER.0 + rand::random::<f64>() * (JITTER.1 - JITTER.0);
    (ms as f64 * factor) as u64
}

/// Reads `Retry-After` given in seconds (dates are ignored: receivers rarely send them and a
/// wrong clock would turn them into long stalls).
pub fn parse_retry_after(v: Option<&str>) -> Option<u64> {
    v?.trim().parse::<u64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_000_000);

    #[test]
    fn okta_policy_retries_once_on_timeout_and_5xx_only() {
        let p = RetryPolicy::Okta;
        assert_eq!(
            decide(p, 1, Failure::Transport, None, NOW),
            Decision::RetryAt(NOW.plus_millis(OKTA_RETRY_DELAY_MS))
        );
        assert_eq!(
            decide(p, 1, Failure::Status(503), None, NOW),
            Decision::RetryAt(NOW.plus_millis(OKTA_RETRY_DELAY_MS))
        );
        assert_eq!(decide(p, 2, Failure::Status(503), None, NOW), Decision::GiveUp);
        assert_eq!(decide(p, 1, Failure::Status(400), None, NOW), Decision::GiveUp);
        assert_eq!(decide(p, 1, Failure::Status(302), None, NOW), Decision::GiveUp);
    }

    #[test]
    fn durable_policy_backs_off_over_a_day() {
        let p = RetryPolicy::Durable;
        let total: u64 = DURABLE_SCHEDULE.iter().sum();
        assert!(total as f64 * JITTER.0 >= DURABLE_MIN_SPAN_SECS as f64, "even jittered down, the retries span a day");
        let Decision::RetryAt(first) = decide(p, 1, Failure::Status(500), None, NOW) else { panic!("retry") };
        assert!((4_000..=6_000).contains(&(first.millis() - NOW.millis())), "first retry within seconds");
        let Decision::RetryAt(later) = decide(p, 5, Failure::Transport, None, NOW) else { panic!("retry") };
        assert!(later.millis() - NOW.millis() >= 1_440_000);
        assert_eq!(decide(p, DURABLE_SCHEDULE.len() as u32 + 1, Failure::Status(500), None, NOW), Decision::GiveUp);
        assert_eq!(decide(p, 1, Failure::Status(404), None, NOW), Decision::GiveUp);
        assert_eq!(decide(p, 1, Failure::Status(400), None, NOW), Decision::GiveUp);
        assert_eq!(decide(p, 1, Failure::Status(307), None, NOW), Decision::GiveUp);
        assert_eq!(decide(p, 1, Failure::Policy, None, NOW), Decision::GiveUp);
        // A request timeout or a "too many requests" is worth another try; so is any 5xx.
        for status in [408, 429, 502] {
            assert!(matches!(decide(p, 1, Failure::Status(status), None, NOW), Decision::RetryAt(_)), "{status}");
        }
        assert_eq!(decide(p, 1, Failure::Status(410), None, NOW), Decision::StopHook);
        assert_eq!(
            decide(RetryPolicy::Okta, 1, Failure::Status(410), None, NOW),
            Decision::GiveUp,
            "410 stops durable hooks"
        );
        assert_eq!(
            decide(RetryPolicy::Okta, 1, Failure::Status(408), None, NOW),
            Decision::GiveUp,
            "okta: no retry on 4xx"
        );
        // Retry-After lengthens a wait up to an hour; it never shortens one.
        assert_eq!(decide(p, 1, Failure::Status(429), Some(9), NOW), Decision::RetryAt(NOW.plus_millis(9_000)));
        assert_eq!(
            decide(p, 1, Failure::Status(503), Some(999_999), NOW),
            Decision::RetryAt(NOW.plus_millis(3_600_000))
        );
        let Decision::RetryAt(soon) = decide(p, 1, Failure::Status(503), Some(0), NOW) else { panic!("retry") };
        assert!(soon.millis() - NOW.millis() >= 4_000, "a Retry-After of 0 waits the scheduled delay");
    }

    #[test]
    fn a_receiver_asking_for_quick_retries_does_not_end_the_schedule_early() {
        // Every attempt answered 503 with Retry-After: 1, retried as soon as allowed.
        let mut at = NOW;
        let mut attempt = 1;
        while let Decision::RetryAt(next) = decide(RetryPolicy::Durable, attempt, Failure::Status(503), Some(1), at) {
            at = next;
            attempt += 1;
        }
        assert_eq!(attempt as usize, DURABLE_SCHEDULE.len() + 1, "every scheduled retry was made");
        let span_secs = (at.millis() - NOW.millis()) / 1000;
        assert!(span_secs >= DURABLE_MIN_SPAN_SECS as i64, "retried for {span_secs} s, less than a day");
    }
}
