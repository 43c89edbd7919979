//! The sample LogEvent both fuzz targets evaluate against: every kind of JSON value
//! somewhere, nulls where the filter languages must be null-safe, a target list with odd
//! elements, and a time stamp for ordering comparisons.

use std::sync::LazyLock;

use serde_json::{Value, json};

/// A LogEvent with every kind of JSON value somewhere, including nulls where the filter
/// language has to be null-safe and a target list with odd elements.
pub static EVENT: LazyLock<Value> = LazyLock::new(|| {
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
