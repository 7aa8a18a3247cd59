//! What a person may do to an environment (redeploy it, extend it, destroy it), whichever way
//! they ask: a `/preview` command on the pull request or the admin API. One place decides what
//! each means and writes it, so both ways change the desired state alike, say on the pull
//! request who did it, and wake the reconciler.

use crate::model::{Cause, EnvironmentState};
use crate::policy::Policy;
use crate::store::{NewJob, ReconcileRecord, Store, StoreError};
use crate::time::{Millis, millis, now_ms, rfc3339};
use std::time::Duration;

/// An action on a live environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Deploy the head commit again.
    Redeploy,
    /// Move the expiry later by this much.
    Extend(Duration),
    /// Tear the environment down now.
    Destroy,
    /// Replace the database with a new, empty one and seed it again, then deploy.
    ResetDatabase,
    /// Scale a sleeping environment back up.
    Wake,
}

impl Action {
    /// The verb, for messages.
    pub fn verb(self) -> &'static str {
        match self {
            Self::Redeploy => "redeploy",
            Self::Extend(_) => "extend",
            Self::Destroy => "destroy",
            Self::ResetDatabase => "reset-db",
            Self::Wake => "wake",
        }
    }

    /// The audit log's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Redeploy => "environment.redeploy",
            Self::Extend(_) => "environment.extend",
            Self::Destroy => "environment.destroy",
            Self::ResetDatabase => "environment.reset_db",
            Self::Wake => "environment.wake",
        }
    }
}

/// Who asked, as the pull request shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A `/preview` command by a GitHub user with write access.
    Command { login: String },
    /// An admin API token, by its name.
    Api { token: String },
    /// A person signed in to the dashboard (with write access to the repository).
    Dashboard { login: String },
    /// A visit to a sleeping preview, let through the forward-authentication endpoint: by a
    /// signed-in person, or with a bypass token.
    Visit { by: String },
}

impl From<&Actor> for Cause {
    fn from(actor: &Actor) -> Cause {
        match actor {
            Actor::Command { login } => Cause::Command { login: login.clone() },
            Actor::Api { token } => Cause::Api { token: token.clone() },
            Actor::Dashboard { login } => Cause::Dashboard { login: login.clone() },
            Actor::Visit { .. } => Cause::Previewd,
        }
    }
}

impl Actor {
    /// `@login with `/preview destroy`` or ``token `ci` via the API``.
    fn by(&self, action: Action) -> String {
        match self {
            Self::Command { login } => {
                format!("@{login} with `/preview {}`", action.verb())
            }
            Self::Api { token } => format!("token `{token}` via the API"),
            Self::Dashboard { login } => format!("@{login} via the dashboard"),
            Self::Visit { by } => format!("a visit by {by}"),
        }
    }
}

/// Why an action was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// Only live environments (Pending to Failed) can be acted on.
    #[error("the environment is {0}, not live: there is nothing to {1}")]
    NotLive(EnvironmentState, &'static str),
    /// Only a sleeping environment can be woken.
    #[error("the environment is {0}, not Sleeping: there is nothing to wake")]
    NotAsleep(EnvironmentState),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an action did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    Redeployed,
    /// The new expiry; `capped` when the policy's `ttl.max` (counted from now) cut it short.
    Extended {
        until: Millis,
        capped: bool,
    },
    Destroyed,
    /// The database's new generation.
    DatabaseReset {
        generation: i64,
    },
    Woken,
}

/// Takes `action` on `env` for `actor` under `policy`: writes the desired state through the
/// store (which holds to the state machine), notes it for the pull request comment, and queues
/// a reconcile with `max_attempts`.
pub async fn act(
    store: &Store,
    policy: &Policy,
    env: &ReconcileRecord,
    action: Action,
    actor: &Actor,
    max_attempts: i64,
) -> Result<Done, ActionError> {
    let state = env.state()?;
    if !state.is_live() {
        return Err(ActionError::NotLive(state, action.verb()));
    }
    let by = actor.by(action);
    let done = match action {
        Action::Redeploy => {
            store.record_environment(&env.pull_request(), EnvironmentState::Pending, None, &actor.into()).await?;
            store.touch_environment(env.id).await?;
            store.set_command_state(env.id, None, None, Some(&format!("redeploy asked by {by}"))).await?;
            Done::Redeployed
        }
        Action::Extend(by_duration) => {
            let max = policy.for_repository(&env.repo_owner, &env.repo_name).ttl.max;
            let (until, capped) = extended_expiry(env.expires_at, by_duration, max, now_ms());
            // The expiry and its note in one write: a reader never sees one without the other.
            store.set_expiry(env.id, until, Some(&format!("extended to {} by {by}", rfc3339(until)))).await?;
            Done::Extended { until, capped }
        }
        Action::ResetDatabase => {
            // The next generation renders a new StatefulSet and seed Job; the old ones, and the
            // old data, are pruned by the rollout the redeploy starts.
            let generation = store.reset_database(env.id).await?;
            store.record_environment(&env.pull_request(), EnvironmentState::Pending, None, &actor.into()).await?;
            store.touch_environment(env.id).await?;
            let note = format!("database reset (generation {generation}) by {by}");
            store.set_command_state(env.id, None, None, Some(&note)).await?;
            Done::DatabaseReset { generation }
        }
        Action::Wake => {
            if state != EnvironmentState::Sleeping {
                return Err(ActionError::NotAsleep(state));
            }
            // Not activity: waking does not extend the TTL.
            let reason = format!("waking up: asked by {by}");
            store
                .record_environment(&env.pull_request(), EnvironmentState::Pending, Some(&reason), &actor.into())
                .await?;
            Done::Woken
        }
        Action::Destroy => {
            let reason = format!("destroyed by {by}");
            store
                .record_environment(&env.pull_request(), EnvironmentState::Deleting, Some(&reason), &actor.into())
                .await?;
            store.set_command_state(env.id, Some(false), None, None).await?;
            Done::Destroyed
        }
    };
    // The namespace carries the expiry too, so an extension is reconciled like the others.
    store.enqueue(&NewJob::reconcile(env.id, max_attempts)).await?;
    Ok(done)
}

/// The expiry after extending `current` by `by` at `now`: from now if it has already passed, and
/// no later than `max` from now. Returns whether the cap applied.
pub fn extended_expiry(current: Option<Millis>, by: Duration, max: Duration, now: Millis) -> (Millis, bool) {
    let from = current.unwrap_or(now).max(now);
    let limit = now.saturating_add(millis(max));
    let wanted = from.saturating_add(millis(by));
    (wanted.min(limit), wanted > limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Millis = 3_600_000;

    #[test]
    fn an_extension_counts_from_the_later_of_now_and_the_expiry_and_stops_at_the_maximum() {
        let hour = Duration::from_secs(3600);
        assert_eq!(extended_expiry(Some(10 * H), 2 * hour, 48 * hour, 5 * H), (12 * H, false));
        // Already expired: from now.
        assert_eq!(extended_expiry(Some(H), 2 * hour, 48 * hour, 5 * H), (7 * H, false));
        assert_eq!(extended_expiry(None, 2 * hour, 48 * hour, 5 * H), (7 * H, false));
        // The policy's maximum from now.
        assert_eq!(extended_expiry(Some(52 * H), 2 * hour, 48 * hour, 5 * H), (53 * H, true));
    }

    #[test]
    fn the_pull_request_is_told_who_acted_and_how() {
        let command = Actor::Command { login: "dev".into() };
        assert_eq!(command.by(Action::Destroy), "@dev with `/preview destroy`");
        let api = Actor::Api { token: "ci".into() };
        assert_eq!(api.by(Action::Extend(Duration::ZERO)), "token `ci` via the API");
    }
}
