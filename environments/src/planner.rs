//! The planner turns a pull request event into the desired state of that pull request's
//! environment. It decides only; the caller stores the decision and the reconciler converges
//! the cluster on it. Pure, so every rule is unit-tested without a database.

use crate::model::{CloseReason, EnvironmentState, PullRequest};

/// Whether the policy lets a pull request have an environment now (the trigger mode, drafts,
/// forks and commands: `spec::trigger_allows`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Allowed,
    /// Not now, and why. `announce` says the author should be told on the pull request (a fork,
    /// say); otherwise previewd stays silent (a pull request without the trigger label).
    Refused {
        reason: String,
        announce: bool,
    },
}

/// What happened to a pull request, in previewd's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrEvent {
    /// Opened, reopened, or marked ready for review.
    Opened(PullRequest),
    /// New commits: the head SHA moved.
    Pushed(PullRequest),
    Closed(PullRequest, CloseReason),
    /// Its time to live ran out (the periodic pass).
    Expired(PullRequest),
}

/// Why an expired environment is torn down, on the pull request and in its history.
pub const EXPIRED_REASON: &str = "expired: its time to live ran out";

impl PrEvent {
    pub fn pull_request(&self) -> &PullRequest {
        match self {
            Self::Opened(pr) | Self::Pushed(pr) | Self::Closed(pr, _) | Self::Expired(pr) => pr,
        }
    }
}

/// The planner's decision for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Store the pull request's details and move its environment to `state`.
    Record { state: EnvironmentState, reason: Option<String> },
    /// Nothing to change, and why (for the log).
    Nothing { why: &'static str },
}

/// Decides the environment's next desired state from its current one (`None` if previewd has
/// never seen the pull request), the event, and whether the policy lets it have one.
pub fn plan(current: Option<EnvironmentState>, event: &PrEvent, gate: &Gate) -> Plan {
    use EnvironmentState::*;
    match event {
        PrEvent::Opened(_) | PrEvent::Pushed(_) => match gate {
            // A push to a pull request previewd never saw (it started late, or missed the opening
            // delivery) is as good as an opening. A pull request reopened while its environment
            // is being torn down wants it back: the reconciler waits until the old namespace is
            // gone, then provisions.
            Gate::Allowed => Plan::Record { state: Pending, reason: None },
            Gate::Refused { reason, announce } => match current {
                // The trigger label was removed, a fork pushed an unapproved commit, ...
                Some(Pending | Provisioning | Ready | Sleeping | Failed) => {
                    Plan::Record { state: Deleting, reason: Some(reason.clone()) }
                }
                Some(Deleting) => Plan::Nothing { why: "the environment is already being torn down" },
                None | Some(Deleted | Rejected) if *announce => {
                    Plan::Record { state: Rejected, reason: Some(reason.clone()) }
                }
                None | Some(Deleted | Rejected) => {
                    Plan::Nothing { why: "the pull request does not ask for an environment" }
                }
            },
        },
        PrEvent::Closed(_, reason) => match current {
            None => Plan::Nothing { why: "no environment was ever created for this pull request" },
            Some(Deleted) => Plan::Nothing { why: "the environment is already gone" },
            Some(Deleting) => Plan::Nothing { why: "the environment is already being torn down" },
            Some(Rejected) => Plan::Nothing { why: "the pull request never had an environment" },
            Some(_) => Plan::Record { state: Deleting, reason: Some(reason.to_string()) },
        },
        PrEvent::Expired(_) => match current {
            Some(Pending | Provisioning | Ready | Sleeping | Failed) => {
                Plan::Record { state: Deleting, reason: Some(EXPIRED_REASON.to_owned()) }
            }
            _ => Plan::Nothing { why: "the environment is not live" },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CommitSha, PrNumber, Repo, RepoId};

    const OK: Gate = Gate::Allowed;

    fn fork_refused() -> Gate {
        Gate::Refused { reason: "forks get no environment".into(), announce: true }
    }

    fn pr(fork: bool) -> PullRequest {
        PullRequest {
            repo: Repo { id: RepoId(1), owner: "o".into(), name: "r".into() },
            number: PrNumber(7),
            head_sha: CommitSha("a".repeat(40)),
            head_branch: "feature".into(),
            author: "dev".into(),
            from_fork: fork,
            draft: false,
            labels: vec![],
        }
    }

    #[test]
    fn expiry_tears_down_a_live_environment_and_nothing_else() {
        for state in EnvironmentState::ALL {
            let planned = plan(Some(state), &PrEvent::Expired(pr(false)), &OK);
            if state.is_live() {
                assert_eq!(
                    planned,
                    Plan::Record { state: EnvironmentState::Deleting, reason: Some(EXPIRED_REASON.into()) }
                );
            } else {
                assert!(matches!(planned, Plan::Nothing { .. }), "{state}: {planned:?}");
            }
        }
        assert!(matches!(plan(None, &PrEvent::Expired(pr(false)), &OK), Plan::Nothing { .. }));
    }

    #[test]
    fn opening_creates_a_pending_environment() {
        assert_eq!(
            plan(None, &PrEvent::Opened(pr(false)), &OK),
            Plan::Record { state: EnvironmentState::Pending, reason: None }
        );
    }

    #[test]
    fn push_to_a_ready_environment_makes_it_pending_again() {
        assert_eq!(
            plan(Some(EnvironmentState::Ready), &PrEvent::Pushed(pr(false)), &OK),
            Plan::Record { state: EnvironmentState::Pending, reason: None }
        );
    }

    #[test]
    fn reopening_during_teardown_wants_the_environment_back() {
        assert_eq!(
            plan(Some(EnvironmentState::Deleting), &PrEvent::Opened(pr(false)), &OK),
            Plan::Record { state: EnvironmentState::Pending, reason: None }
        );
    }

    #[test]
    fn forks_are_rejected_with_a_reason() {
        let Plan::Record { state, reason } = plan(None, &PrEvent::Opened(pr(true)), &fork_refused()) else {
            panic!("expected a rejection");
        };
        assert_eq!(state, EnvironmentState::Rejected);
        assert!(reason.unwrap_or_default().contains("forks"));
    }

    #[test]
    fn a_silent_refusal_records_nothing_but_tears_down_a_live_environment() {
        let quiet = Gate::Refused { reason: "add the label `preview`".into(), announce: false };
        assert!(matches!(plan(None, &PrEvent::Opened(pr(false)), &quiet), Plan::Nothing { .. }));
        assert_eq!(
            plan(Some(EnvironmentState::Ready), &PrEvent::Pushed(pr(false)), &quiet),
            Plan::Record { state: EnvironmentState::Deleting, reason: Some("add the label `preview`".into()) }
        );
    }

    #[test]
    fn closing_tears_down_a_live_environment_and_says_why() {
        assert_eq!(
            plan(Some(EnvironmentState::Ready), &PrEvent::Closed(pr(false), CloseReason::Merged), &OK),
            Plan::Record { state: EnvironmentState::Deleting, reason: Some("pull request merged".into()) }
        );
    }

    #[test]
    fn closing_an_unknown_or_gone_environment_does_nothing() {
        assert!(matches!(plan(None, &PrEvent::Closed(pr(false), CloseReason::Closed), &OK), Plan::Nothing { .. }));
        assert!(matches!(
            plan(Some(EnvironmentState::Deleted), &PrEvent::Closed(pr(false), CloseReason::Closed), &OK),
            Plan::Nothing { .. }
        ));
    }

    #[test]
    fn every_planned_state_is_reachable_from_the_current_one() {
        for current in EnvironmentState::ALL {
            for event in [
                PrEvent::Opened(pr(false)),
                PrEvent::Pushed(pr(false)),
                PrEvent::Closed(pr(false), CloseReason::Merged),
            ] {
                for gate in [OK, fork_refused(), Gate::Refused { reason: "no label".into(), announce: false }] {
                    if let Plan::Record { state, .. } = plan(Some(current), &event, &gate) {
                        assert!(current.can_become(state), "{current} -> {state} planned but not allowed");
                    }
                }
            }
        }
    }
}
