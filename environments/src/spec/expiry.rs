//! When an environment expires and when its author is warned: the arithmetic every TTL
//! decision (the reconcile's, `previewd render`'s) goes through.

use crate::time::{Millis, millis};
use std::time::Duration;

/// When an environment whose last activity was at `last_activity_ms` expires: `ttl` later, but
/// never more than `max` later.
pub fn expires_at(last_activity_ms: Millis, ttl: Duration, max: Duration) -> Millis {
    last_activity_ms.saturating_add(millis(ttl.min(max)))
}

/// When to warn that an environment expiring at `expires_at_ms` is about to go, or `None` when the
/// policy sends no warnings (`warn_before: 0s`).
pub fn warn_at(expires_at_ms: Millis, warn_before: Duration) -> Option<Millis> {
    (!warn_before.is_zero()).then(|| expires_at_ms.saturating_sub(millis(warn_before)))
}
