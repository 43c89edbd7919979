//! Retry decisions. `okta`: one retry after a timeout, a transport error or a 5xx; none after
//! a 4xx. `durable`: a schedule over more than a day with ±20 % jitter, honouring
//! `Retry-After` within bounds; 4xx other than 408/429 are final; 410 also stops the hook.

use haken_core::Timestamp;
use haken_core::hook::RetryPolicy;

/// Delays after attempt 1, 2, … of the durable policy (seconds): about 27 hours in all.
pub const DURABLE_SCHEDULE: &[u64] = &[5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800, 14400];

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
            let delay_ms = match retry_after {
                Some(s) => s.clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX) * 1000,
                None => jitter(base * 1000),
            };
            Decision::RetryAt(now.plus_millis(i64::try_from(delay_ms).unwrap_or(i64::MAX)))
        }
    }
}

fn jitter(ms: u64) -> u64 {
    let factor: f64 = 0.8 + rand::random::<f64>() * 0.4;
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
        assert!(total >= 24 * 3600, "the schedule spans at least 24 h");
        let Decision::RetryAt(first) = decide(p, 1, Failure::Status(500), None, NOW) else { panic!("retry") };
        assert!((4_000..=6_000).contains(&(first.millis() - NOW.millis())), "first retry within seconds");
        let Decision::RetryAt(later) = decide(p, 5, Failure::Transport, None, NOW) else { panic!("retry") };
        assert!(later.millis() - NOW.millis() >= 1_440_000);
        assert_eq!(decide(p, DURABLE_SCHEDULE.len() as u32 + 1, Failure::Status(500), None, NOW), Decision::GiveUp);
        assert_eq!(decide(p, 1, Failure::Status(404), None, NOW), Decision::GiveUp);
        assert_eq!(decide(p, 1, Failure::Status(410), None, NOW), Decision::StopHook);
        assert_eq!(decide(p, 1, Failure::Status(429), Some(7), NOW), Decision::RetryAt(NOW.plus_millis(7_000)));
        assert_eq!(
            decide(p, 1, Failure::Status(503), Some(999_999), NOW),
            Decision::RetryAt(NOW.plus_millis(3_600_000))
        );
        assert_eq!(decide(p, 1, Failure::Status(503), Some(0), NOW), Decision::RetryAt(NOW.plus_millis(1_000)));
    }
}
