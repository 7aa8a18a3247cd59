//! Timestamps as milliseconds since the Unix epoch: one integer type that both SQLite and
//! Postgres store and compare the same way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The current time. A clock before 1970 is treated as the epoch rather than a panic.
pub fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis().try_into().unwrap_or(Millis::MAX)
}

/// A duration as milliseconds, saturating instead of overflowing.
pub fn millis(d: Duration) -> Millis {
    d.as_millis().try_into().unwrap_or(Millis::MAX)
}

/// `ms` as an RFC 3339 UTC timestamp with whole seconds (`2026-12-07T05:30:00Z`); a time
/// before the epoch is shown as the epoch.
pub fn rfc3339(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Parses an RFC 3339 UTC timestamp (`2026-12-07T05:30:00Z`, fractions allowed; humantime reads
/// only `Z` times, the form previewd writes) into
/// milliseconds since the epoch.
pub fn parse_rfc3339(text: &str) -> Result<Millis, humantime::TimestampError> {
    let at = humantime::parse_rfc3339_weak(text)?;
    Ok(at.duration_since(UNIX_EPOCH).map_or(0, millis))
}
