//! Delivery metrics, as typed specs: metric names are constants and labels are bounded (the
//! hook id, and an outcome from a fixed set). Recorded through the `metrics` facade; the server
//! installs the Prometheus recorder and serves `/metrics`.

/// Deliveries that reached the receiver (labels: `hook`).
pub const DELIVERED: &str = "haken_event_hook_deliveries_delivered_total";
/// Deliveries that became dead letters (labels: `hook`).
pub const FAILED: &str = "haken_event_hook_deliveries_failed_total";
/// Failed attempts that were rescheduled (labels: `hook`).
pub const RETRIED: &str = "haken_event_hook_attempts_retried_total";
/// Deliveries a write leased to this node and handed to its dispatcher at commit, sent without
/// a lease round (labels: `hook`).
pub const HANDED_OVER: &str = "haken_event_hook_deliveries_handed_over_total";
/// Events delivered (labels: `hook`).
pub const EVENTS_DELIVERED: &str = "haken_event_hook_events_delivered_total";
/// Attempt latency in seconds (labels: `hook`, `outcome` = success | failure).
pub const ATTEMPT_SECONDS: &str = "haken_event_hook_attempt_duration_seconds";
/// Routed events not yet delivered, of hooks that are being sent to (labels: `hook`). An
/// inactive or unverified hook's backlog waits without alarming anyone: its series reads 0.
pub const QUEUE_DEPTH: &str = "haken_event_hook_queue_depth";
/// Age in seconds of the oldest event not yet delivered (0 when none; labels: `hook`).
pub const OLDEST_PENDING_SECONDS: &str = "haken_event_hook_oldest_pending_seconds";

/// Buckets of the attempt-latency histogram (seconds).
pub const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

pub fn delivered(hook: &str, events: u64) {
    metrics::counter!(DELIVERED, "hook" => hook.to_owned()).increment(1);
    metrics::counter!(EVENTS_DELIVERED, "hook" => hook.to_owned()).increment(events);
}

pub fn handed_over(hook: &str) {
    metrics::counter!(HANDED_OVER, "hook" => hook.to_owned()).increment(1);
}

pub fn failed(hook: &str) {
    metrics::counter!(FAILED, "hook" => hook.to_owned()).increment(1);
}

pub fn retried(hook: &str) {
    metrics::counter!(RETRIED, "hook" => hook.to_owned()).increment(1);
}

pub fn attempt(hook: &str, seconds: f64, success: bool) {
    let outcome = if success { "success" } else { "failure" };
    metrics::histogram!(ATTEMPT_SECONDS, "hook" => hook.to_owned(), "outcome" => outcome).record(seconds);
}

pub fn queue(hook: &str, depth: i64, oldest_age_seconds: f64) {
    metrics::gauge!(QUEUE_DEPTH, "hook" => hook.to_owned()).set(depth as f64);
    metrics::gauge!(OLDEST_PENDING_SECONDS, "hook" => hook.to_owned()).set(oldest_age_seconds);
}
