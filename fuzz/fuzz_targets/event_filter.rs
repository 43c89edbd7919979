//! Fuzzes the event hook filter language: parsing any UTF-8 input must return `Ok` or `Err`
//! without panicking, and a parsed expression must evaluate against an event without
//! panicking or running away.
//!
//! Corpus files are plain expression text. `seeds/event_filter/` holds the nine examples of
//! the protocol's filter section; give it after the working corpus:
//! `cargo +nightly fuzz run event_filter corpus/event_filter seeds/event_filter`.

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
