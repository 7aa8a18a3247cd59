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
