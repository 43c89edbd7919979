//! Fuzzes the event hook filter language: parsing any UTF-8 input must return `Ok` or `Err`
//! without panicking, and a parsed expression must evaluate against an event without
//! panicking or running away.
//!
//! Corpus files are plain expression text, so seeds such as
//! `event.target.?[type eq 'UserGroup' && displayName eq 'Sales'].size() > 0` can be dropped
//! into `corpus/event_filter/` as they are.

#![no_main]

use std::sync::LazyLock;

use haken_core::expr::Expression;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// A LogEvent with every kind of JSON value somewhere, including nulls where the filter
/// language has to be null-safe and a target list with odd elements.
static EVENT: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "uuid": "5b9d2b1c-1c1a-11ef-9a4d-0242ac120002",
        "published": "2026-05-01T10:00:00.000Z",
        "eventType": "group.user_membership.add",
        "version": "0",
        "severity": "INFO",
        "displayMessage": "Add user to group membership",
        "actor": {"id": "00uadmin1", "type": "User", "alternateId": "admin@example.org", "displayName": "Zoë Admin"},
        "client": null,
        "outcome": {"result": "SUCCESS", "reason": null},
        "target": [
            {"id": "00u1abc", "type": "User", "alternateId": "lee@example.org", "displayName": "Lee Chen"},
            {"id": "00g1sales", "type": "UserGroup", "alternateId": "unknown", "displayName": "Sales"},
            {"id": "0oa1", "type": "AppInstance", "alternateId": "My Bookmark App", "displayName": null},
            null,
            42
        ],
        "debugContext": {"debugData": {
            "changedAttributes": "email,manager",
            "targetEventHookIds": ["who1", "who2"],
            "numbers": [1, -1.5, 18446744073709551615u64]
        }},
        "securityContext": {"isProxy": false, "asNumber": 64512}
    })
});

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(expr) = Expression::parse(input) {
        assert_eq!(expr.source(), input);
        let _ = expr.matches(&EVENT);
        let _ = expr.matches(&Value::Null);
    }
});
