//! Fuzzes the SCIM-style filter language of `GET /api/v1/logs?filter=`: parsing any UTF-8
//! input must return `Ok` or `Err` without panicking; a parsed filter must evaluate against a
//! LogEvent, and its `Display` form must parse back to the same tree, as `Filter` documents.
//!
//! Corpus files are plain filter text, such as
//! `eventType eq "user.session.start" and outcome.result eq "SUCCESS"`.

#![no_main]

use std::sync::LazyLock;

use haken_core::filter::{self, MAX_FILTER_LEN, Syntax};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// The same LogEvent as the event filter target uses: nested objects, arrays, nulls, numbers
/// and a time stamp for the ordering comparisons.
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
    let Ok(parsed) = filter::parse(input, Syntax::LOGS) else {
        return;
    };
    let _ = parsed.matches(&EVENT);
    let _ = parsed.matches(&Value::Null);
    let _ = parsed.conjuncts();
    let _ = parsed.paths();
    // Rendering can lengthen a filter (escapes, a spelled-out number), so only a rendering
    // that still fits the input limit is required to parse back.
    let rendered = parsed.to_string();
    if rendered.len() <= MAX_FILTER_LEN {
        match filter::parse(&rendered, Syntax::LOGS) {
            Ok(again) => assert_eq!(again, parsed, "{input:?} rendered as {rendered:?}"),
            Err(e) => panic!("{input:?} rendered as {rendered:?}, which does not parse: {e}"),
        }
    }
});
