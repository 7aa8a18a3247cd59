//! The engine's view of the code host, over GitHub: `.preview.yaml` at the head commit and
//! the results of the required checks.

use super::report::GitHubSide;
use previewd_environments::model::{CommitSha, Repo};
use previewd_environments::reconcile::{Checks, Forge};
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
    ) -> Pin<Box<dyn Future<Output = Result<Option<RepoFile>, String>> + Send + 'a>> {
        Box::pin(async move {
            let side = &self.0;
            let who = side.installation_for(repo).await.map_err(|e| e.to_string())?;
            side.github.repo_file(who, repo, &side.repo_config_path, sha).await.map_err(|e| e.to_string())
        })
    }

    fn checks<'a>(
        &'a self,
        repo: &'a Repo,
        sha: &'a CommitSha,
        required: &'a [String],
    ) -> Pin<Box<dyn Future<Output = Result<Checks, String>> + Send + 'a>> {
        Box::pin(async move {
            let side = &self.0;
            let who = side.installation_for(repo).await.map_err(|e| e.to_string())?;
            let results = side.github.commit_checks(who, repo, &sha.0).await.map_err(|e| e.to_string())?;
            Ok(evaluate(required, &results))
        })
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

    fn result(name: &str, conclusion: Option<&str>) -> CheckResult {
        CheckResult { name: name.to_owned(), conclusion: conclusion.map(str::to_owned) }
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
