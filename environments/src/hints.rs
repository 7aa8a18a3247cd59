//! What to do about a failure: the cause previewd recognises in a `Failed` environment's
//! reason, and a hint for the person who can act on it. Reasons are written by this crate
//! (rollout failures, configuration problems, template and DNS errors), each starting with a
//! fixed phrase; the tests below build each failure with its real type and check that its text
//! is recognised, so a reworded message cannot silently lose its hint.

/// A recognised cause and its hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint {
    /// `image_pull`, `quota`, `admission`, `crash_loop`, `job`, `timeout`, `dns`, `config`, `template`.
    pub cause: &'static str,
    pub what_to_do: &'static str,
}

/// (phrase the reason contains, hint). The first match wins.
const HINTS: &[(&str, Hint)] = &[
    (
        "the platform's environment template failed",
        Hint {
            cause: "template",
            what_to_do: "the platform's template set cannot render this environment: the platform team fixes the template; nothing in the pull request causes it",
        },
    ),
    (
        "image cannot be pulled",
        Hint {
            cause: "image_pull",
            what_to_do: "check that CI pushed the image for this commit and that the tag in `.preview.yaml` (`image`, with `{sha}`) names it; previewd retries by itself while CI may still be pushing",
        },
    ),
    (
        "namespace quota exceeded",
        Hint {
            cause: "quota",
            what_to_do: "ask for less in `.preview.yaml` (`resources`, `replicas`) or ask the platform team for a larger quota",
        },
    ),
    (
        "admission refused the pods",
        Hint {
            cause: "admission",
            what_to_do: "the cluster's admission policies refuse the pods (Pod Security `restricted`): run as a non-root user without privileges; a retry will not help",
        },
    ),
    (
        "the container keeps crashing",
        Hint {
            cause: "crash_loop",
            what_to_do: "the application exits at start: read the container's log (`kubectl logs` in the environment's namespace) and check its `env` and secrets",
        },
    ),
    (
        "the job failed",
        Hint {
            cause: "job",
            what_to_do: "the database's seed failed: read its log (`kubectl logs job/<name>` in the environment's namespace), fix `database.seed` or the data, push, and run `/preview reset-db` to seed a new database",
        },
    ),
    (
        "not ready after",
        Hint {
            cause: "timeout",
            what_to_do: "the pods did not become ready in time: check `health_check` in `.preview.yaml` (path and port) and how long the application takes to start",
        },
    ),
    (
        "Dns",
        Hint {
            cause: "dns",
            what_to_do: "the preview's hostname could not be published or does not resolve yet: the platform team checks the DNS settings of the policy (`dns`) and the DNS server",
        },
    ),
    (
        ".preview.yaml",
        Hint {
            cause: "config",
            what_to_do: "fix `.preview.yaml` at the pull request's head as the message says, and push",
        },
    ),
];

/// The hint for a failure's `reason`, if previewd recognises it.
pub fn hint(reason: &str) -> Option<Hint> {
    HINTS.iter().find(|(phrase, _)| reason.contains(phrase)).map(|(_, hint)| *hint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::rollout::{RolloutFailure, WorkloadFailure};
    use crate::repo_config::RepoConfigError;

    fn cause(reason: &str) -> Option<&'static str> {
        hint(reason).map(|h| h.cause)
    }

    #[test]
    fn every_rollout_failure_has_its_hint() {
        let failures = [
            (RolloutFailure::ImagePull("ErrImagePull".into()), "image_pull"),
            (RolloutFailure::QuotaExceeded("pods".into()), "quota"),
            (RolloutFailure::AdmissionRefused("runAsNonRoot".into()), "admission"),
            (RolloutFailure::CrashLoop("exit 1".into()), "crash_loop"),
            (RolloutFailure::Timeout { seconds: 300, detail: "0/1 ready".into() }, "timeout"),
            (RolloutFailure::JobFailed("BackoffLimitExceeded".into()), "job"),
        ];
        for (failure, expected) in failures {
            let kind = crate::cluster::rollout::WorkloadKind::Deployment;
            let reason = WorkloadFailure { kind, workload: "app".into(), failure }.to_string();
            assert_eq!(cause(&reason), Some(expected), "{reason}");
        }
    }

    #[test]
    fn configuration_problems_point_at_the_file() {
        assert_eq!(cause(&RepoConfigError::Missing.to_string()), Some("config"));
        assert_eq!(cause("something nobody wrote"), None);
    }
}
