//! Wall-clock timestamps as stored in documents.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, as RFC 3339 in UTC with microseconds (e.g. `2026-11-26T18:35:29.123456Z`).
pub fn now_rfc3339() -> String {
    let now = OffsetDateTime::now_utc();
    let micros = now
        .replace_nanosecond(now.microsecond() * 1000)
        .unwrap_or(now);
    micros
        .format(&Rfc3339)
        .expect("a UTC time within year 0..9999 always formats as RFC 3339")
}
