//! Whether a pull request gets an environment: the trigger, fork and draft rules, and the
//! concurrent-environment limits (which the store's serialised admission pass applies).

use crate::model::PullRequest;
use crate::policy::{EffectivePolicy, ForkPolicy, TriggerMode, WhenFull};

/// Live environments, not counting the one being decided on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveCounts {
    /// Across every repository.
    pub global: u64,
    /// Across the repositories of the pull request's owner.
    pub organization: u64,
    /// In the pull request's repository.
    pub repository: u64,
}

/// Whether a new environment fits the concurrent-environment limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitDecision {
    Allowed,
    /// Over a limit; the reason names the limit and the current count.
    Rejected {
        reason: String,
    },
    /// Over a limit, and the policy queues: the environment waits for a slot.
    Queued {
        reason: String,
    },
}

/// Checks a new environment against the limits, the repository's first: that is the one its
/// author can do something about (close an old pull request).
pub fn check_limits(policy: &EffectivePolicy, counts: LiveCounts) -> LimitDecision {
    let l = &policy.limits;
    let reason = if counts.repository >= u64::from(l.per_repository) {
        format!(
            "repository limit reached: {} already has {} live environments (limit {})",
            policy.full_name(),
            counts.repository,
            l.per_repository
        )
    } else if counts.organization >= u64::from(l.per_organization) {
        format!(
            "organization limit reached: {} already has {} live environments (limit {})",
            policy.owner, counts.organization, l.per_organization
        )
    } else if counts.global >= u64::from(l.global) {
        format!("global limit reached: {} environments are live (limit {})", counts.global, l.global)
    } else {
        return LimitDecision::Allowed;
    };
    match l.when_full {
        WhenFull::Reject => LimitDecision::Rejected { reason },
        WhenFull::Queue => LimitDecision::Queued { reason },
    }
}

/// Commands given on the pull request by someone allowed to give them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Commands {
    /// `/preview deploy`: asks for an environment whatever the trigger mode or draft state.
    pub deploy: bool,
    /// `/preview approve` on a fork's pull request, by someone with write access.
    pub approve_fork: bool,
}

/// The reason fork pull requests get nothing under `forks: deny`.
pub const FORK_DENIED: &str =
    "pull requests from forks get no environment by default: their code would see the environment's secrets";

/// Whether the pull request should have an environment, or why not (for the pull request
/// comment). A `/preview deploy` command overrides the trigger mode and the draft rule, because a
/// person asked; it never overrides the fork rule, which protects the platform from the code.
pub fn trigger_allows(policy: &EffectivePolicy, pr: &PullRequest, commands: Commands) -> Result<(), String> {
    if pr.from_fork {
        match policy.forks {
            ForkPolicy::Deny => return Err(FORK_DENIED.to_owned()),
            ForkPolicy::Approve if !commands.approve_fork => {
                return Err(format!(
                    "pull requests from forks get an environment once someone with write access comments \
                     `/preview approve` or adds the label `{}`, for each new commit: their code runs in the environment",
                    policy.approve_label
                ));
            }
            ForkPolicy::Approve => {}
        }
    }
    if commands.deploy {
        return Ok(());
    }
    if pr.draft && !policy.drafts {
        return Err("draft pull requests get no environment until they are ready for review; \
                    comment `/preview deploy` to get one now"
            .to_owned());
    }
    match policy.trigger.mode {
        TriggerMode::EveryPullRequest => Ok(()),
        TriggerMode::Label => {
            if pr.labels.iter().any(|l| l.eq_ignore_ascii_case(&policy.trigger.label)) {
                Ok(())
            } else {
                Err(format!(
                    "this repository gives environments to pull requests labelled `{}`; add the label or comment `/preview deploy`",
                    policy.trigger.label
                ))
            }
        }
        TriggerMode::Command => {
            Err("this repository gives environments on request: comment `/preview deploy`".to_owned())
        }
    }
}
