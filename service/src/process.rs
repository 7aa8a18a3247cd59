//! What queued jobs do: the handler behind every job kind.
//!
//! - `github_event` and `resync_event`: an event previewd acts on, routed here to its handler.
//!   Pull request events go through the policy's trigger rules and the planner, which set the
//!   environment's desired state, and a reconcile is queued (`pulls`); commands are checked
//!   against the author's permission and carried out (`commands`); installation events change
//!   which repositories previewd serves (`installations`); CI results wake environments waiting
//!   for their checks.
//! - `reconcile_environment`: the reconciler.
//! - `report_environment`: the environment's state shown on its pull request.

mod commands;
mod installations;
mod pulls;

use pulls::Activity;

use crate::github::client::GitHubError;
use crate::github::events::{Event, PrAction};
use crate::github::report::{GitHubSide, ReportError};
use crate::lifecycle::run_reconcile;
use crate::worker::{JobError, JobHandler};
use previewd_environments::cluster::watch::RolloutWatches;
use previewd_environments::model::{
    Cause, CloseReason, CommitSha, EnvironmentState, InstallationId, PullRequest, Repo,
};
use previewd_environments::planner::{Gate, Plan, PrEvent, plan};
use previewd_environments::policy::ForkPolicy;
use previewd_environments::reconcile::Engine;
use previewd_environments::spec::{self, Commands};
use previewd_environments::store::{
    ClaimedJob, EnvironmentJob, JobKind, NewJob, ReconcileRecord, Scope, Store, StoreError,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub struct JobRunner {
    store: Store,
    /// `None` when no policy is configured: desired states are recorded, nothing is reconciled.
    engine: Option<Arc<Engine>>,
    /// `None` without GitHub credentials: nothing is reported or asked of GitHub.
    github: Option<Arc<GitHubSide>>,
    /// The rollout watches reconciles open and close (with the engine).
    watches: Option<Arc<RolloutWatches>>,
    max_attempts: i64,
}

fn transient(error: StoreError) -> JobError {
    if error.is_retryable() { JobError::Transient(error.to_string()) } else { JobError::Permanent(error.to_string()) }
}

fn github_failed(error: GitHubError) -> JobError {
    match error.retry_after() {
        Some(after) => JobError::RetryAfter(error.to_string(), after),
        None if error.is_transient() => JobError::Transient(error.to_string()),
        None => JobError::Permanent(error.to_string()),
    }
}

fn report_failed(error: ReportError) -> JobError {
    match error {
        ReportError::GitHub(error) => github_failed(error),
        ReportError::Store(error) => transient(error),
        ReportError::Busy => JobError::RetryAfter(error.to_string(), std::time::Duration::from_secs(2)),
        // A template that renders at start but not with these values: the platform team's to fix.
        ReportError::Texts(error) => JobError::Permanent(error.to_string()),
    }
}

impl JobRunner {
    pub fn new(
        store: Store,
        engine: Option<Arc<Engine>>,
        github: Option<Arc<GitHubSide>>,
        watches: Option<Arc<RolloutWatches>>,
        max_attempts: i64,
    ) -> Self {
        JobRunner { store, engine, github, watches, max_attempts }
    }

    /// Whether the policy's allow-list lets previewd serve `repo`.
    fn serves(&self, repo: &Repo) -> bool {
        let allowed = self.engine.as_ref().is_none_or(|e| e.policy.allows_repository(&repo.owner, &repo.name));
        if !allowed {
            tracing::info!(repo = %repo.full_name(), "delivery ignored: the repository is not in the policy's `allow` list");
        }
        allowed
    }

    async fn process(&self, event: Event) -> Result<(), JobError> {
        match event {
            Event::PullRequest {
                action,
                pull_request,
                merged,
                label,
                sender,
                updated_at,
                installation,
                title,
                private,
            } => {
                if !self.serves(&pull_request.repo) {
                    return Ok(());
                }
                self.store.upsert_repository(&pull_request.repo, installation, true).await.map_err(transient)?;
                if let Some(private) = private {
                    self.store.set_repository_private(pull_request.repo.id, private).await.map_err(transient)?;
                }
                // GitHub's time of the change, which no push of this head came after: what
                // `/preview approve` compares with the comment's time.
                if let Some(at) = updated_at {
                    let (repo, number) = (pull_request.repo.id, pull_request.number);
                    self.store.observe_head(repo, number, &pull_request.head_sha, at).await.map_err(transient)?;
                    if let Some(title) = &title {
                        self.store.observe_title(repo, number, title, at).await.map_err(transient)?;
                    }
                }
                let approve_label = self.approve_label(&pull_request);
                let cause = Cause::Event { event: format!("pull_request.{}", action.name()), sender: sender.clone() };
                match action {
                    PrAction::Closed => {
                        let reason = if merged { CloseReason::Merged } else { CloseReason::Closed };
                        self.closed(&pull_request, reason, &cause).await
                    }
                    PrAction::Labeled
                        if approve_label
                            .as_deref()
                            .is_some_and(|a| label.as_deref().is_some_and(|l| same_label(a, l))) =>
                    {
                        self.label_approval(
                            &pull_request,
                            approve_label.as_deref().unwrap_or_default(),
                            sender.as_deref(),
                        )
                        .await
                    }
                    PrAction::Synchronize => {
                        // An approval holds for one commit: the label goes, so a writer can set it again.
                        if let Some(approve) = approve_label.as_deref()
                            && pull_request.labels.iter().any(|l| same_label(l, approve))
                        {
                            self.remove_label(&pull_request, approve).await?;
                        }
                        self.consider(&pull_request, Activity::Renewing, &cause).await
                    }
                    PrAction::Opened | PrAction::Reopened | PrAction::ReadyForReview => {
                        self.consider(&pull_request, Activity::Renewing, &cause).await
                    }
                    PrAction::Labeled | PrAction::Unlabeled | PrAction::ConvertedToDraft | PrAction::Edited => {
                        self.consider(&pull_request, Activity::Revisit, &cause).await
                    }
                }
            }
            Event::Command { repo, number, comment_id, author, body, created_at, installation } => {
                if !self.serves(&repo) {
                    return Ok(());
                }
                self.store.upsert_repository(&repo, installation, true).await.map_err(transient)?;
                self.command(&repo, number, comment_id, &author, &body, created_at).await
            }
            Event::Installation { action, installation, account, repositories } => {
                self.installation(&action, installation, &account, &repositories, &[]).await
            }
            Event::InstallationRepositories { action, installation, added, removed } => {
                self.installation(&action, installation, "", &added, &removed).await
            }
            Event::Ci { repo, head_sha, name, conclusion, .. } => self.ci(&repo, &head_sha, &name, &conclusion).await,
        }
    }

    /// A CI result: environments waiting on that commit are reconciled now instead of at their
    /// next poll.
    async fn ci(&self, repo: &Repo, head_sha: &CommitSha, name: &str, conclusion: &str) -> Result<(), JobError> {
        let waiting = self.store.environments_in(&[EnvironmentState::Pending]).await.map_err(transient)?;
        for env in waiting.iter().filter(|e| e.repo_id == repo.id.0 && e.head_sha == head_sha.0) {
            tracing::info!(environment = env.id, check = name, conclusion, "CI result for a waiting environment");
            self.queue_reconcile(env.id).await?;
        }
        Ok(())
    }

    async fn queue_reconcile(&self, id: i64) -> Result<(), JobError> {
        if self.engine.is_some() {
            self.store.enqueue(&NewJob::reconcile(id, self.max_attempts)).await.map_err(transient)?;
        }
        Ok(())
    }

    async fn report(&self, environment: i64) -> Result<(), JobError> {
        let Some(side) = &self.github else {
            // Without GitHub access there is nobody to tell.
            return Ok(());
        };
        side.report(environment).await.map_err(report_failed)
    }
}

/// GitHub compares label names without regard to case.
fn same_label(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl JobHandler for JobRunner {
    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send + 'a>> {
        Box::pin(async move {
            let bad_payload = |e: serde_json::Error| JobError::Permanent(format!("bad {} job payload: {e}", job.kind));
            match job.kind {
                JobKind::GitHubEvent | JobKind::ResyncEvent => {
                    self.process(job.payload_as().map_err(bad_payload)?).await
                }
                JobKind::Reconcile => {
                    let EnvironmentJob { environment } = job.payload_as().map_err(bad_payload)?;
                    match &self.engine {
                        Some(engine) => {
                            run_reconcile(engine, self.watches.as_deref(), environment, self.max_attempts).await
                        }
                        None => Err(JobError::Permanent(
                            "no policy_file configured: environments are not reconciled".into(),
                        )),
                    }
                }
                JobKind::Report => {
                    let EnvironmentJob { environment } = job.payload_as().map_err(bad_payload)?;
                    self.report(environment).await
                }
            }
        })
    }
}
