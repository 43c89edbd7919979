//! Time stamps as Okta writes them: RFC 3339, UTC, millisecond precision (`…T09:26:53.000Z`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        Timestamp((now.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// Parses any RFC 3339 time stamp (with or without fractional seconds, any offset).
    pub fn parse(s: &str) -> Option<Self> {
        let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        Some(Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }

    pub fn plus_millis(self, ms: i64) -> Self {
        Timestamp(self.0.saturating_add(ms))
    }

    /// Okta's format: `2025-03-14T09:26:53.000Z`.
    pub fn to_rfc3339(self) -> String {
        let mut buf = [0u8; 24];
        self.write_rfc3339(&mut buf).to_owned()
    }

    /// Writes Okta's format into `buf` and returns it as text. Every write of an event or a
    /// user formats several time stamps, so this builds the digits directly.
    fn write_rfc3339(self, buf: &mut [u8; 24]) -> &str {
        const EPOCH: &str = "1970-01-01T00:00:00.000Z";
        let t = match OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000) {
            Ok(t) if (0..=9999).contains(&t.year()) => t,
            _ => return EPOCH,
        };
        buf.copy_from_slice(EPOCH.as_bytes());
        let mut put = |at: usize, width: usize, mut v: u32| {
            for k in (at..at + width).rev() {
                buf[k] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, t.year().unsigned_abs());
        put(5, 2, u32::from(u8::from(t.month())));
        put(8, 2, u32::from(t.day()));
        put(11, 2, u32::from(t.hour()));
        put(14, 2, u32::from(t.minute()));
        put(17, 2, u32::from(t.second()));
        put(20, 3, u32::from(t.millisecond()));
        std::str::from_utf8(buf).unwrap_or(EPOCH)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 24];
        s.serialize_str(self.write_rfc3339(&mut buf))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 time stamp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis_and_round_trips() {
        let t = Timestamp(1_741_944_411_120);
        assert_eq!(t.to_rfc3339(), "2025-03-14T09:26:51.120Z");
        assert_eq!(Timestamp::parse(&t.to_rfc3339()), Some(t));
        assert_eq!(Timestamp::parse("2025-03-14T10:26:51.12+01:00"), Some(t));
        assert_eq!(Timestamp::parse("yesterday"), None);
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(253_402_300_799_999).to_rfc3339(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Timestamp(-1).to_rfc3339(), "1969-12-31T23:59:59.999Z");
        // Outside the four-digit years there is no RFC 3339 form: the epoch stands in.
        assert_eq!(Timestamp(i64::MAX).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(-62_167_219_200_001).to_rfc3339(), "1970-01-01T00:00:00.000Z");
    }
}
