//! Fuzzes the event hook filter language: parsing any UTF-8 input must return `Ok` or `Err`
//! without panicking, and a parsed expression must evaluate against an event without
//! panicking or running away.
//!
//! Corpus files are plain expression text, so seeds such as
//! `event.target.?[type eq 'UserGroup' && displayName eq 'Sales'].size() > 0` can be dropped
//! into `corpus/event_filter/` as they are.

#![no_main]

use haken_core::expr::Expression;
use libfuzzer_sys::fuzz_target;

#[path = "sample.rs"]
mod sample;

use sample::EVENT;
use serde_json::Value;

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
