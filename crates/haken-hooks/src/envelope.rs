//! Okta's event-hook envelope (`com.okta.event_hook`). The body of a delivery depends only on
//! what the delivery stores (its id, `eventTime`, events), so every retry sends the same bytes.

use haken_core::Timestamp;
use haken_core::hook::Delivery;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    event_type: &'static str,
    event_type_version: &'static str,
    cloud_events_version: &'static str,
    source: &'a str,
    event_id: &'a str,
    event_time: Timestamp,
    content_type: &'static str,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    events: &'a [Box<RawValue>],
}

/// The request body of `delivery` to the hook at `source` (`<public url>/api/v1/eventHooks/<id>`).
/// `events` are the LogEvents as stored (JSON).
pub fn body(delivery: &Delivery, source: &str, events: &[Box<RawValue>]) -> Vec<u8> {
    let envelope = Envelope {
        event_type: "com.okta.event_hook",
        event_type_version: "1.0",
        cloud_events_version: "0.1",
        source,
        event_id: &delivery.id,
        event_time: delivery.event_time,
        content_type: "application/json",
        data: Data { events },
    };
    serde_json::to_vec(&envelope).unwrap_or_default()
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
