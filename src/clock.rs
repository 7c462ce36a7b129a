//! Wall-clock timestamps as stored in documents: RFC 3339, UTC, microseconds.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, in Unix microseconds.
pub fn now_micros() -> i128 {
    OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000
}

/// Now, as RFC 3339 in UTC with microseconds (e.g. `2026-11-26T18:35:29.123456Z`).
pub fn now_rfc3339() -> String {
    micros_to_rfc3339(now_micros() as u64)
}

/// Unix microseconds as RFC 3339 in UTC.
pub fn micros_to_rfc3339(us: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// Parses RFC 3339 (any offset) into Unix microseconds; `None` if invalid or
/// before 1970.
pub fn parse_rfc3339_micros(text: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_round_trip_through_rfc3339() {
        let us = 1_764_182_129_123_456;
        let text = micros_to_rfc3339(us);
        assert_eq!(text, "2025-11-26T18:35:29.123456Z");
        assert_eq!(parse_rfc3339_micros(&text), Some(us));
        assert_eq!(
            parse_rfc3339_micros("2025-11-26T19:35:29.123456+01:00"),
            Some(us)
        );
        assert_eq!(parse_rfc3339_micros("yesterday"), None);
    }
}
