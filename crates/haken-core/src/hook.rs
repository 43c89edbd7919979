//! Event hooks as Haken keeps them. The wire shape of `/api/v1/eventHooks` is built by the
//! server; this is the domain value, including the secrets it never shows.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HookStatus {
    Active,
    Inactive,
}

impl HookStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HookStatus::Active => "ACTIVE",
            HookStatus::Inactive => "INACTIVE",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VerificationStatus {
    Verified,
    Unverified,
}

impl VerificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VerificationStatus::Verified => "VERIFIED",
            VerificationStatus::Unverified => "UNVERIFIED",
        }
    }
}

/// How failed deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetryPolicy {
    /// Okta's rule: one retry after a timeout or a 5xx, none after a 4xx.
    Okta,
    /// Exponential backoff with jitter over more than a day; 410 stops the hook.
    Durable,
}

impl RetryPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RetryPolicy::Okta => "okta",
            RetryPolicy::Durable => "durable",
        }
    }
}

/// Delivery settings (a Haken extension of the Okta object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverySettings {
    pub retry_policy: RetryPolicy,
    pub timeout_ms: u64,
    /// Requests in flight to this hook at once (per node).
    pub max_in_flight: u32,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings { retry_policy: RetryPolicy::Durable, timeout_ms: 3_000, max_in_flight: 4 }
    }
}

/// `channel.config.authScheme`: a header sent with every request. The value is a secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthScheme {
    /// `HEADER` (as the admin spelled it).
    pub kind: String,
    pub key: String,
    pub value: String,
}

impl std::fmt::Debug for AuthScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthScheme").field("kind", &self.kind).field("key", &self.key).field("value", &"***").finish()
    }
}

/// A Standard Webhooks signing secret. During a rotation the old one signs too, until it
/// expires.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningSecret {
    /// `whsec_<base64>`.
    pub secret: String,
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningSecret")
            .field("secret", &"***")
            .field("created", &self.created)
            .field("expires", &self.expires)
            .finish()
    }
}

/// One `events.filter.eventFilterMap[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter {
    pub event: String,
    pub expression: String,
}

/// An event hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventHook {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub status: HookStatus,
    pub verification_status: VerificationStatus,
    pub created: Timestamp,
    pub created_by: Option<String>,
    pub last_updated: Timestamp,
    /// `events.items`.
    pub event_types: Vec<String>,
    /// `events.filter`; `None` when the hook has no filter object.
    pub filters: Option<Vec<EventFilter>>,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub auth: Option<AuthScheme>,
    #[serde(default)]
    pub delivery: DeliverySettings,
    #[serde(default)]
    pub signing: Vec<SigningSecret>,
}

impl EventHook {
    /// Whether deliveries go out: only hooks both active and verified receive events.
    pub fn receives(&self) -> bool {
        self.status == HookStatus::Active && self.verification_status == VerificationStatus::Verified
    }

    /// The signing secrets still valid at `now`.
    pub fn live_secrets(&self, now: Timestamp) -> impl Iterator<Item = &SigningSecret> {
        self.signing.iter().filter(move |s| s.expires.is_none_or(|e| e > now))
    }
}

/// State of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryStatus {
    /// Waiting for its first or next attempt.
    Pending,
    Delivered,
    /// Retries exhausted or refused by the receiver: a dead letter, until replayed.
    Dead,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "PENDING",
            DeliveryStatus::Delivered => "DELIVERED",
            DeliveryStatus::Dead => "DEAD",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PENDING" => Some(DeliveryStatus::Pending),
            "DELIVERED" => Some(DeliveryStatus::Delivered),
            "DEAD" => Some(DeliveryStatus::Dead),
            _ => None,
        }
    }
}

/// One request to a hook (its `eventId`), with up to 50 events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The envelope's `eventId`: stable across retries.
    pub id: String,
    pub hook_id: String,
    /// `event` (routed System Log events), `test` (a sample from `trigger`), `backfill`.
    pub kind: String,
    pub status: DeliveryStatus,
    /// Attempts since the delivery was created or last replayed.
    pub attempts: u32,
    pub event_count: u32,
    pub created: Timestamp,
    /// The envelope's `eventTime`: fixed at creation so every attempt sends the same body.
    pub event_time: Timestamp,
    pub next_attempt_at: Timestamp,
    pub last_attempt_at: Option<Timestamp>,
    pub delivered_at: Option<Timestamp>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// One HTTP attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub delivery_id: String,
    pub hook_id: String,
    pub attempt: u32,
    pub started: Timestamp,
    pub latency_ms: u64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response_snippet: Option<String>,
    pub node: String,
}

/// What became of a delivery after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    Retry { at: Timestamp },
    Dead { reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(signing: Vec<SigningSecret>) -> EventHook {
        EventHook {
            id: "who1".into(),
            name: "crm".into(),
            description: None,
            status: HookStatus::Active,
            verification_status: VerificationStatus::Verified,
            created: Timestamp(0),
            created_by: None,
            last_updated: Timestamp(0),
            event_types: vec!["user.lifecycle.create".into()],
            filters: None,
            uri: "https://hooks.example.org/okta".into(),
            headers: vec![("x-team".into(), "crm".into())],
            auth: Some(AuthScheme {
                kind: "HEADER".into(),
                key: "Authorization".into(),
                value: "Bearer s3cr3t-auth".into(),
            }),
            delivery: DeliverySettings::default(),
            signing,
        }
    }

    fn secret(name: &str, expires: Option<i64>) -> SigningSecret {
        SigningSecret { secret: format!("whsec_{name}"), created: Timestamp(0), expires: expires.map(Timestamp) }
    }

    #[test]
    fn debug_output_carries_no_secret() {
        // Anything that logs a hook (or its parts) with `{:?}` goes through these impls.
        let h = hook(vec![secret("b2xkLXNlY3JldA", Some(5_000)), secret("bmV3LXNlY3JldA", None)]);
        for text in [format!("{h:?}"), format!("{:?}", h.auth), format!("{:?}", h.signing)] {
            assert!(!text.contains("s3cr3t-auth"), "auth value in {text}");
            assert!(!text.contains("whsec_"), "signing secret in {text}");
            assert!(text.contains("***"), "redaction marker missing in {text}");
        }
        // What is not secret stays readable.
        assert!(format!("{h:?}").contains("Authorization"));
    }

    #[test]
    fn an_old_secret_signs_until_its_overlap_ends() {
        let h = hook(vec![secret("old", Some(5_000)), secret("new", None)]);
        let live = |at: i64| h.live_secrets(Timestamp(at)).map(|s| s.secret.clone()).collect::<Vec<_>>();
        assert_eq!(live(4_999), ["whsec_old", "whsec_new"], "both sign during the overlap");
        assert_eq!(live(5_000), ["whsec_new"], "the old one stops at its expiry");
        assert_eq!(live(90_000), ["whsec_new"]);
        let none = hook(vec![secret("gone", Some(10))]);
        assert_eq!(none.live_secrets(Timestamp(10)).count(), 0, "an expired secret alone signs nothing");
    }
}
