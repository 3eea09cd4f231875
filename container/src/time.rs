//! Times in records and logs: RFC 3339 in UTC with nanoseconds
//! (`2026-11-29T22:19:10.123456789Z`), the form docker writes.

use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};

/// The current time as RFC 3339 with nanoseconds, UTC.
pub fn now_rfc3339() -> String {
    format_rfc3339(SystemTime::now())
}

/// `time` as `YYYY-MM-DDTHH:MM:SS.NNNNNNNNNZ`.
pub fn format_rfc3339(time: SystemTime) -> String {
    DateTime::<Utc>::from(time).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Parses an RFC 3339 time (any offset, fraction optional).
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| SystemTime::from(time.with_timezone(&Utc)))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn times_round_trip_through_rfc3339() {
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let leap = UNIX_EPOCH + Duration::new(951_782_400 + 3_723, 5);
        assert_eq!(format_rfc3339(leap), "2000-02-29T01:02:03.000000005Z");
        assert_eq!(parse_rfc3339("2000-02-29T01:02:03.000000005Z"), Some(leap));
        assert_eq!(
            parse_rfc3339("2000-02-29T01:02:03.5Z"),
            Some(UNIX_EPOCH + Duration::new(951_782_400 + 3_723, 500_000_000))
        );
        let now = SystemTime::now();
        assert_eq!(parse_rfc3339(&format_rfc3339(now)), Some(now));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
