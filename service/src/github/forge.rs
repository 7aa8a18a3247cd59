//! The engine's view of the code host, over GitHub: `.preview.yaml` and the files it names at
//! the head commit, and the results of the required checks.

use super::client::GitHubError;
use super::report::GitHubSide;
use super::report::ReportError;
use previewd_environments::forge::{Checks, FileBytes, Forge, ForgeError};
use previewd_environments::model::{CommitSha, Repo};
use previewd_environments::repo_config::RepoFile;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub struct GitHubForge(pub Arc<GitHubSide>);

impl Forge for GitHubForge {
    fn fetch<'a>(
        &'a self,
        repo: &'a Repo,
        sha: &'a CommitSha,
    ) -> Pin<Box<dyn Future<Output = Result<Option<RepoFile>, ForgeError>> + Send + 'a>> {
        Box::pin(async move {
            let side = &self.0;
            let who = side.installation_for(repo).await.map_err(from_report)?;
            side.github.repo_file(who, repo, &side.repo_config_path, sha).await.map_err(from_github)
        })
    }

    fn fetch_file<'a>(
        &'a self,
        repo: &'a Repo,
        sha: &'a CommitSha,
        path: &'a str,
        max_bytes: usize,
    ) -> Pin<Box<dyn Future<Output = Result<Option<FileBytes>, ForgeError>> + Send + 'a>> {
        Box::pin(async move {
            let side = &self.0;
            let who = side.installation_for(repo).await.map_err(from_report)?;
            side.github.repo_file_bytes(who, repo, path, sha, max_bytes).await.map_err(from_github)
        })
    }

    fn checks<'a>(
        &'a self,
        repo: &'a Repo,
        sha: &'a CommitSha,
        required: &'a [String],
    ) -> Pin<Box<dyn Future<Output = Result<Checks, ForgeError>> + Send + 'a>> {
        Box::pin(async move {
            let side = &self.0;
            let who = side.installation_for(repo).await.map_err(from_report)?;
            let results = side.github.commit_checks(who, repo, &sha.0).await.map_err(from_github)?;
            Ok(evaluate(required, &results))
        })
    }
}

/// GitHub's answer as the engine branches on it: a rate limit's wait kept, a refusal no retry
/// mends marked permanent.
fn from_github(error: GitHubError) -> ForgeError {
    match error.retry_after() {
        Some(after) => ForgeError::retry_after(error.to_string(), after),
        None if error.is_transient() => ForgeError::transient(error.to_string()),
        None => ForgeError::permanent(error.to_string()),
    }
}

fn from_report(error: ReportError) -> ForgeError {
    match error {
        ReportError::GitHub(error) => from_github(error),
        other => ForgeError::transient(other.to_string()),
    }
}

/// Where the required checks stand. A check reported several times (re-runs) counts by its
/// best result: a success anywhere passes it, and it fails only if every run failed.
pub fn evaluate(required: &[String], results: &[super::api::CheckResult]) -> Checks {
    let mut checks = Checks::default();
    for name in required {
        let runs: Vec<&super::api::CheckResult> = results.iter().filter(|r| r.name == *name).collect();
        let passed = |c: &str| matches!(c, "success" | "neutral" | "skipped");
        if runs.iter().any(|r| r.conclusion.as_deref().is_some_and(passed)) {
            continue;
        }
        match runs.iter().find_map(|r| r.conclusion.clone()) {
            Some(conclusion) if runs.iter().all(|r| r.conclusion.is_some()) => {
                checks.failed.push((name.clone(), conclusion));
            }
            _ => checks.waiting.push(name.clone()),
        }
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::github::api::CheckResult;
    use std::time::Duration;

    fn result(name: &str, conclusion: Option<&str>) -> CheckResult {
        CheckResult { name: name.to_owned(), conclusion: conclusion.map(str::to_owned) }
    }

    #[test]
    fn github_errors_keep_what_the_engine_branches_on() {
        let limited = GitHubError::RateLimited { what: "installation 7".into(), retry_after: Duration::from_secs(90) };
        assert_eq!(from_github(limited).retry_after, Some(Duration::from_secs(90)));
        let down =
            from_github(GitHubError::Unavailable { call: "GET contents".into(), status: 502, message: "x".into() });
        assert!(!down.permanent && down.retry_after.is_none());
        let refused = GitHubError::Refused {
            call: "GET contents".into(),
            status: 403,
            message: "Resource not accessible by integration".into(),
        };
        let refused = from_github(refused);
        assert!(refused.permanent, "{refused}");
        assert!(refused.message.contains("Resource not accessible by integration"));
        assert!(from_github(GitHubError::NoInstallation("acme/app".into())).permanent);
    }

    #[test]
    fn missing_and_running_checks_are_waited_for() {
        let checks = evaluate(&["build".into(), "image".into()], &[result("image", None)]);
        assert_eq!(checks.waiting, vec!["build".to_owned(), "image".to_owned()]);
        assert!(checks.failed.is_empty());
    }

    #[test]
    fn a_failed_check_is_named_with_its_conclusion() {
        let checks = evaluate(&["build".into()], &[result("build", Some("failure")), result("lint", Some("failure"))]);
        assert_eq!(checks.failed, vec![("build".to_owned(), "failure".to_owned())]);
    }

    #[test]
    fn a_successful_rerun_passes() {
        let checks = evaluate(&["build".into()], &[result("build", Some("failure")), result("build", Some("success"))]);
        assert_eq!(checks, Checks::default());
    }
}
