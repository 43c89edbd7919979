//! Okta's event-hook envelope (`com.okta.event_hook`). The body of a delivery depends only on
//! what the delivery stores (its id, `eventTime`, events), so every retry sends the same bytes.

use haken_core::LogEvent;
use haken_core::hook::Delivery;
use serde_json::{Value, json};

/// The request body of `delivery` to the hook at `source` (`<public url>/api/v1/eventHooks/<id>`).
pub fn body(delivery: &Delivery, source: &str, events: &[LogEvent]) -> Vec<u8> {
    let v = json!({
        "eventType": "com.okta.event_hook",
        "eventTypeVersion": "1.0",
        "cloudEventsVersion": "0.1",
        "source": source,
        "eventId": delivery.id,
        "eventTime": delivery.event_time,
        "contentType": "application/json",
        "data": { "events": events },
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The `source` of a hook's envelopes.
pub fn source(public_url: &str, hook_id: &str) -> String {
    format!("{public_url}/api/v1/eventHooks/{hook_id}")
}

/// The `uuid`s of the events in a body (for receivers and tests).
pub fn event_uuids(body: &Value) -> Vec<String> {
    body.pointer("/data/events")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|e| e["uuid"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}
