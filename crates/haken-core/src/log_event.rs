//! The System Log `LogEvent` (spec section 2). One type serves the System Log API and the event
//! hook payload, so it is also the wire shape: field names are Okta's, nulls are explicit.
//!
//! Events are built from an [`EventContext`] (who did it, from where, in which request) with
//! one constructor per kind of change, so every event of a type has the same shape.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::group::Group;
use crate::time::Timestamp;
use crate::user::User;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEvent {
    pub uuid: String,
    pub published: Timestamp,
    pub event_type: String,
    pub version: String,
    pub severity: String,
    pub legacy_event_type: Option<String>,
    pub display_message: Option<String>,
    pub actor: Actor,
    pub client: Option<Client>,
    pub device: Option<Value>,
    pub request: Request,
    pub outcome: Option<Outcome>,
    pub target: Option<Vec<Target>>,
    pub transaction: Option<Transaction>,
    pub debug_context: Option<DebugContext>,
    pub authentication_context: Option<AuthenticationContext>,
    pub security_context: Option<SecurityContext>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub alternate_id: Option<String>,
    pub display_name: Option<String>,
    pub detail_entry: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub alternate_id: Option<String>,
    pub display_name: Option<String>,
    pub detail_entry: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_details: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Client {
    pub id: Option<String>,
    pub user_agent: Option<UserAgent>,
    pub geographical_context: Option<Value>,
    pub zone: Option<String>,
    pub ip_address: Option<String>,
    pub device: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserAgent {
    pub raw_user_agent: Option<String>,
    pub os: Option<String>,
    pub browser: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub ip_chain: Vec<IpAddress>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddress {
    pub ip: Option<String>,
    pub geographical_context: Option<Value>,
    pub version: Option<String>,
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub result: String,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transaction {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub id: Option<String>,
    pub detail: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DebugContext {
    pub debug_data: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationContext {
    pub authentication_provider: Option<String>,
    pub credential_provider: Option<String>,
    pub credential_type: Option<String>,
    pub issuer: Option<Value>,
    pub external_session_id: Option<String>,
    pub interface: Option<String>,
    pub authentication_step: i64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    pub as_number: Option<i64>,
    pub as_org: Option<String>,
    pub isp: Option<String>,
    pub domain: Option<String>,
    pub is_proxy: Option<bool>,
}

/// Who caused a change, and through which request: everything an event needs besides the
/// change itself.
#[derive(Debug, Clone, PartialEq)]
pub struct EventContext {
    pub actor: Actor,
    /// `WEB` for an HTTP request, `JOB` for background work.
    pub transaction_type: &'static str,
    /// `X-Okta-Request-Id` of the request (or a job id).
    pub request_id: String,
    pub request_uri: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    /// The API token that authenticated the request, if any.
    pub api_token_id: Option<String>,
    /// `client.id`: the agent (token) or OAuth client.
    pub client_id: Option<String>,
    pub credential_type: Option<&'static str>,
}

impl EventContext {
    /// A background job acting as the system (CLI, start-up).
    pub fn system(job: &str) -> Self {
        EventContext {
            actor: Actor {
                id: "haken".to_owned(),
                kind: "PublicClientApp".to_owned(),
                alternate_id: Some("haken".to_owned()),
                display_name: Some(format!("Haken {job}")),
                detail_entry: None,
            },
            transaction_type: "JOB",
            request_id: crate::id::new_id(crate::id::IdKind::Request),
            request_uri: None,
            client_ip: None,
            user_agent: None,
            api_token_id: None,
            client_id: None,
            credential_type: None,
        }
    }

    /// Starts an event of `event_type` with this context.
    pub fn event(&self, event_type: &str, display_message: &str, now: Timestamp) -> LogEvent {
        let mut debug = Map::new();
        debug.insert("requestId".into(), Value::String(self.request_id.clone()));
        if let Some(uri) = &self.request_uri {
            debug.insert("requestUri".into(), Value::String(uri.clone()));
            debug.insert("url".into(), Value::String(uri.clone()));
        }
        let detail = self.api_token_id.as_ref().map(|t| {
            let mut m = Map::new();
            m.insert("requestApiTokenId".into(), Value::String(t.clone()));
            m
        });
        let ip_chain = self
            .client_ip
            .iter()
            .map(|ip| IpAddress {
                ip: Some(ip.clone()),
                geographical_context: None,
                version: Some(if ip.contains(':') { "V6" } else { "V4" }.to_owned()),
                source: None,
            })
            .collect();
        LogEvent {
            uuid: new_uuid(),
            published: now,
            event_type: event_type.to_owned(),
            version: "0".to_owned(),
            severity: "INFO".to_owned(),
            legacy_event_type: None,
            display_message: Some(display_message.to_owned()),
            actor: self.actor.clone(),
            client: Some(Client {
                id: self.client_id.clone(),
                user_agent: Some(UserAgent {
                    raw_user_agent: self.user_agent.clone(),
                    os: None,
                    browser: self.user_agent.as_ref().map(|_| "UNKNOWN".to_owned()),
                }),
                geographical_context: None,
                zone: Some("null".to_owned()),
                ip_address: self.client_ip.clone(),
                device: Some(if self.client_ip.is_some() { "Unknown" } else { "Computer" }.to_owned()),
            }),
            device: None,
            request: Request { ip_chain },
            outcome: Some(Outcome { result: "SUCCESS".to_owned(), reason: None }),
            target: Some(Vec::new()),
            transaction: Some(Transaction {
                kind: Some(self.transaction_type.to_owned()),
                id: Some(self.request_id.clone()),
                detail,
            }),
            debug_context: Some(DebugContext { debug_data: debug }),
            authentication_context: Some(AuthenticationContext {
                authentication_provider: None,
                credential_provider: None,
                credential_type: self.credential_type.map(str::to_owned),
                issuer: None,
                external_session_id: None,
                interface: None,
                authentication_step: 0,
            }),
            security_context: Some(SecurityContext::default()),
        }
    }

    /// An event about one user.
    pub fn user_event(&self, event_type: &str, message: &str, user: &User, now: Timestamp) -> LogEvent {
        self.event(event_type, message, now).with_target(Target::user(user))
    }

    /// An event about one group.
    pub fn group_event(&self, event_type: &str, message: &str, group: &Group, now: Timestamp) -> LogEvent {
        self.event(event_type, message, now).with_target(Target::group(group))
    }
}

impl LogEvent {
    pub fn with_target(mut self, target: Target) -> Self {
        self.target.get_or_insert_with(Vec::new).push(target);
        self
    }

    pub fn with_debug(mut self, key: &str, value: Value) -> Self {
        if let Some(dc) = self.debug_context.as_mut() {
            dc.debug_data.insert(key.to_owned(), value);
        }
        self
    }

    pub fn with_outcome(mut self, result: &str, reason: Option<&str>) -> Self {
        self.outcome = Some(Outcome { result: result.to_owned(), reason: reason.map(str::to_owned) });
        if result == "FAILURE" || result == "DENY" {
            self.severity = "WARN".to_owned();
        }
        self
    }

    /// The event as JSON (for filters, hooks and the API).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl Target {
    pub fn user(user: &User) -> Self {
        Target {
            id: user.id.clone(),
            kind: "User".to_owned(),
            alternate_id: Some(user.login().to_owned()),
            display_name: Some(user.display_name()),
            detail_entry: None,
            change_details: None,
        }
    }

    pub fn group(group: &Group) -> Self {
        Target {
            id: group.id.clone(),
            kind: "UserGroup".to_owned(),
            alternate_id: Some("unknown".to_owned()),
            display_name: Some(group.name().to_owned()),
            detail_entry: None,
            change_details: None,
        }
    }

    pub fn token(id: &str, name: &str) -> Self {
        Target {
            id: id.to_owned(),
            kind: "Token".to_owned(),
            alternate_id: Some(name.to_owned()),
            display_name: Some(name.to_owned()),
            detail_entry: None,
            change_details: None,
        }
    }

    pub fn with_change_details(mut self, from: Value, to: Value) -> Self {
        self.change_details = Some(json!({ "from": from, "to": to }));
        self
    }
}

/// A time-ordered (version 7) UUID in its usual text form.
pub fn new_uuid() -> String {
    // Version 7: the first 48 bits are the Unix time in milliseconds, the rest random. Events
    // are stored under a unique index on their uuid, and time-ordered keys append to the end of
    // it instead of landing on a random page of an ever larger index.
    let mut b: [u8; 16] = rand::random();
    let ms = crate::time::Timestamp::now().millis().max(0) as u64;
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut s = String::with_capacity(36);
    for (k, r) in [0..4, 4..6, 6..8, 8..10, 10..16].into_iter().enumerate() {
        if k > 0 {
            s.push('-');
        }
        crate::id::push_hex(&mut s, &b[r]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_has_every_top_level_field() {
        let ctx = EventContext::system("test");
        let ev = ctx.event("user.lifecycle.create", "Create okta user", Timestamp(0)).to_value();
        for f in [
            "uuid",
            "published",
            "eventType",
            "version",
            "severity",
            "legacyEventType",
            "displayMessage",
            "actor",
            "client",
            "device",
            "request",
            "outcome",
            "target",
            "transaction",
            "debugContext",
            "authenticationContext",
            "securityContext",
        ] {
            assert!(ev.as_object().is_some_and(|o| o.contains_key(f)), "missing {f}");
        }
        assert_eq!(ev["debugContext"]["debugData"]["requestId"], ev["transaction"]["id"]);
        let u = new_uuid();
        let groups: Vec<&str> = u.split('-').collect();
        assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{u}");
        assert!(u.bytes().all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{u}");
        assert!(groups[2].starts_with('7'), "version 7: {u}");
        assert!(matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'), "RFC 4122 variant: {u}");
    }
}
