//! Fuzzes the SCIM-style filter language of `GET /api/v1/logs?filter=`: parsing any UTF-8
//! input must return `Ok` or `Err` without panicking; a parsed filter must evaluate against a
//! LogEvent, and its `Display` form must parse back to the same tree, as `Filter` documents.
//!
//! Corpus files are plain filter text, such as
//! `eventType eq "user.session.start" and outcome.result eq "SUCCESS"`; seeds are in
//! `seeds/scim_filter/` (`cargo +nightly fuzz run scim_filter corpus/scim_filter seeds/scim_filter`).

#![no_main]

use haken_core::filter::{self, MAX_FILTER_LEN, Syntax};
use libfuzzer_sys::fuzz_target;

#[path = "sample.rs"]
mod sample;

use sample::EVENT;
use serde_json::Value;

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
