//! When an environment expires, when its author is warned, and how long it stays awake without
//! a visit: the arithmetic every TTL and sleep decision (the reconcile's, `previewd render`'s)
//! goes through.

use crate::policy::{SleepAfter, SleepPolicy};
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

/// How long an environment may go without a visit or a push before it sleeps (`None`: never),
/// from what the repository asks (`.preview.yaml` `sleep`) under the policy's `sleep`: at most
/// the policy's `after`, and `never` only where `allow_never` is set. The note says what was
/// not granted, for the pull request.
pub fn sleep_after(policy: &SleepPolicy, asked: Option<SleepAfter>) -> (Option<Duration>, Option<String>) {
    let platform = policy.after.duration();
    match (asked, platform) {
        (None, _) => (platform, None),
        (Some(SleepAfter::Never), None) => (None, None),
        (Some(SleepAfter::Never), Some(_)) if policy.allow_never => (None, None),
        (Some(SleepAfter::Never), Some(after)) => (
            Some(after),
            Some(format!(
                "`sleep: never` is not allowed by the platform (policy `sleep.allow_never`); it sleeps after {} without a visit",
                humantime::format_duration(after)
            )),
        ),
        (Some(SleepAfter::After(asked)), None) => (Some(asked), None),
        (Some(SleepAfter::After(asked)), Some(after)) if asked <= after => (Some(asked), None),
        (Some(SleepAfter::After(asked)), Some(after)) => (
            Some(after),
            Some(format!(
                "`sleep: {}` is longer than the platform's {}, which applies",
                humantime::format_duration(asked),
                humantime::format_duration(after)
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_may_ask_to_sleep_sooner_and_never_only_where_allowed() {
        let hour = Duration::from_secs(3600);
        let policy = SleepPolicy { after: SleepAfter::After(hour), allow_never: false };
        assert_eq!(sleep_after(&policy, None), (Some(hour), None));
        assert_eq!(sleep_after(&policy, Some(SleepAfter::After(hour / 4))), (Some(hour / 4), None));
        let (after, note) = sleep_after(&policy, Some(SleepAfter::After(2 * hour)));
        assert_eq!(
            (after, note.unwrap()),
            (Some(hour), "`sleep: 2h` is longer than the platform's 1h, which applies".to_owned())
        );
        let (after, note) = sleep_after(&policy, Some(SleepAfter::Never));
        assert_eq!(after, Some(hour));
        assert!(note.unwrap().contains("sleep.allow_never"));
        let allowing = SleepPolicy { allow_never: true, ..policy };
        assert_eq!(sleep_after(&allowing, Some(SleepAfter::Never)), (None, None));
        let never = SleepPolicy { after: SleepAfter::Never, allow_never: false };
        assert_eq!(sleep_after(&never, None), (None, None));
        assert_eq!(sleep_after(&never, Some(SleepAfter::After(hour))), (Some(hour), None));
    }
}
