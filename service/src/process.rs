//! What queued jobs do: the handler behind every job kind.
//!
//! - `github_event`: a delivery previewd acts on. Pull request events go through the policy's
//!   trigger rules and the planner, which set the environment's desired state, and a reconcile
//!   is queued; commands are checked against the author's permission and carried out
//!   (`commands`);
//!   installation events change which repositories previewd serves; CI results wake
//!   environments waiting for their checks.
//! - `reconcile_environment`: the reconciler.
//! - `report_environment`: the environment's state shown on its pull request.

mod commands;

use crate::github::client::GitHubError;
use crate::github::events::{Event, PrAction};
use crate::github::report::{GitHubSide, ReportError};
use crate::lifecycle::run_reconcile;
use crate::worker::{JobError, JobHandler};
use previewd_environments::cluster::watch::RolloutWatches;
use previewd_environments::model::{CloseReason, CommitSha, EnvironmentState, InstallationId, PullRequest, Repo};
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

/// What started a change of a pull request's environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activity {
    /// Opened, reopened, ready for review, pushed: the TTL starts again.
    Renewing,
    /// Labels, draft state or description changed: the decision is revisited, the TTL kept.
    Revisit,
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
            Event::PullRequest { action, pull_request, merged, label, sender, updated_at, installation } => {
                if !self.serves(&pull_request.repo) {
                    return Ok(());
                }
                self.store.upsert_repository(&pull_request.repo, installation, true).await.map_err(transient)?;
                // GitHub's time of the change, which no push of this head came after: what
                // `/preview approve` compares with the comment's time.
                if let Some(at) = updated_at {
                    let (repo, number) = (pull_request.repo.id, pull_request.number);
                    self.store.observe_head(repo, number, &pull_request.head_sha, at).await.map_err(transient)?;
                }
                let approve_label = self.approve_label(&pull_request);
                match action {
                    PrAction::Closed => {
                        let reason = if merged { CloseReason::Merged } else { CloseReason::Closed };
                        self.closed(&pull_request, reason).await
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
                        self.consider(&pull_request, Activity::Renewing).await
                    }
                    PrAction::Opened | PrAction::Reopened | PrAction::ReadyForReview => {
                        self.consider(&pull_request, Activity::Renewing).await
                    }
                    PrAction::Labeled | PrAction::Unlabeled | PrAction::ConvertedToDraft | PrAction::Edited => {
                        self.consider(&pull_request, Activity::Revisit).await
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

    async fn installation(
        &self,
        action: &str,
        installation: InstallationId,
        account: &str,
        added: &[Repo],
        removed: &[Repo],
    ) -> Result<(), JobError> {
        // Not served any more: deactivated first, so the reports of the teardowns below do not
        // try to reach GitHub through an installation that is gone.
        if matches!(action, "deleted" | "suspend") {
            let count = self.store.deactivate_installation(installation).await.map_err(transient)?;
            tracing::info!(%installation, account, action, repositories = count, "installation gone: its repositories are no longer served");
            return self.tear_down_all(Scope::Installation(installation), CloseReason::Uninstalled).await;
        }
        for repo in added.iter().filter(|r| self.serves(r)) {
            self.store.upsert_repository(repo, Some(installation), true).await.map_err(transient)?;
        }
        for repo in removed {
            self.store.upsert_repository(repo, Some(installation), false).await.map_err(transient)?;
            self.tear_down_all(Scope::Repository(repo.id), CloseReason::RepositoryRemoved).await?;
        }
        tracing::info!(%installation, account, action, added = added.len(), removed = removed.len(), "installation repositories updated");
        Ok(())
    }

    /// Tears down every live environment in `scope`, through the planner as a close would.
    async fn tear_down_all(&self, scope: Scope, reason: CloseReason) -> Result<(), JobError> {
        for env in self.store.live_environments_of(scope).await.map_err(transient)? {
            self.closed(&env.pull_request(), reason).await?;
        }
        Ok(())
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

    pub(crate) async fn closed(&self, pr: &PullRequest, reason: CloseReason) -> Result<(), JobError> {
        self.apply(pr, &PrEvent::Closed(pr.clone(), reason), &Gate::Allowed, Activity::Renewing).await.map(drop)
    }

    /// The label that approves `pr`'s head commit, if `pr` is a fork's and its repository lets
    /// forks in after approval.
    fn approve_label(&self, pr: &PullRequest) -> Option<String> {
        let engine = self.engine.as_ref().filter(|_| pr.from_fork && self.github.is_some())?;
        let policy = engine.policy.for_repository(&pr.repo.owner, &pr.repo.name);
        (policy.forks == ForkPolicy::Approve).then_some(policy.approve_label)
    }

    async fn remove_label(&self, pr: &PullRequest, label: &str) -> Result<(), JobError> {
        let Some(side) = &self.github else { return Ok(()) };
        let who = side.installation_for(&pr.repo).await.map_err(report_failed)?;
        side.github.remove_label(who, &pr.repo, pr.number, label).await.map_err(github_failed)?;
        tracing::info!(repo = %pr.repo.full_name(), pr = %pr.number, label, "label removed: it approved an earlier commit");
        Ok(())
    }

    /// Whether the policy lets `pr` have an environment, given what commands said about it
    /// (stored, or `granted` by the command being carried out).
    fn gate(&self, pr: &PullRequest, current: Option<&ReconcileRecord>, granted: Commands) -> Gate {
        let Some(engine) = &self.engine else {
            return Gate::Allowed;
        };
        let policy = engine.policy.for_repository(&pr.repo.owner, &pr.repo.name);
        let commands = Commands {
            deploy: granted.deploy || current.is_some_and(|e| e.requested),
            approve_fork: granted.approve_fork
                || current.is_some_and(|e| e.approved_sha.as_deref() == Some(pr.head_sha.0.as_str())),
        };
        match spec::trigger_allows(&policy, pr, commands) {
            Ok(()) => Gate::Allowed,
            Err(reason) => Gate::Refused { reason, announce: pr.from_fork },
        }
    }

    /// Revisits `pr`'s environment after a change of the pull request.
    async fn consider(&self, pr: &PullRequest, activity: Activity) -> Result<(), JobError> {
        self.consider_with(pr, activity, Commands::default()).await.map(drop)
    }

    /// [`Self::consider`] with what a command grants; the environment's id if it has one.
    async fn consider_with(
        &self,
        pr: &PullRequest,
        activity: Activity,
        granted: Commands,
    ) -> Result<Option<i64>, JobError> {
        let current = self.store.reconcile_record_for(pr.repo.id, pr.number).await.map_err(transient)?;
        let gate = self.gate(pr, current.as_ref(), granted);
        let state = current.as_ref().map(ReconcileRecord::state).transpose().map_err(transient)?;
        // Labels or the description changed on a live environment of the same commit: keep
        // it, but store the labels (the keep label changes its expiry).
        if activity == Activity::Revisit
            && gate == Gate::Allowed
            && let Some(env) = &current
            && state.is_some_and(EnvironmentState::is_live)
            && env.head_sha == pr.head_sha.0
        {
            let state = state.unwrap_or(EnvironmentState::Pending);
            self.store.record_environment(pr, state, env.reason.as_deref()).await.map_err(transient)?;
            self.queue_reconcile(env.id).await?;
            return Ok(Some(env.id));
        }
        // A new environment only for a repository that configures previews.
        if gate == Gate::Allowed
            && !state.is_some_and(EnvironmentState::is_live)
            && let Some(side) = &self.github
            && self.engine.is_some()
        {
            let who = side.installation_for(&pr.repo).await.map_err(report_failed)?;
            let file = side.github.repo_file(who, &pr.repo, &side.repo_config_path, &pr.head_sha).await;
            let present = file.map_err(github_failed)?.is_some();
            self.store.record_repo_config(pr.repo.id, &pr.head_sha.0, present).await.map_err(transient)?;
            if !present {
                tracing::info!(
                    repo = %pr.repo.full_name(),
                    pr = %pr.number,
                    head_sha = %pr.head_sha,
                    file = side.repo_config_path,
                    "no environment: the repository has no preview configuration at the head commit"
                );
                return Ok(None);
            }
        }
        let event = PrEvent::Pushed(pr.clone());
        self.apply(pr, &event, &gate, activity).await
    }

    async fn apply(
        &self,
        pr: &PullRequest,
        event: &PrEvent,
        gate: &Gate,
        activity: Activity,
    ) -> Result<Option<i64>, JobError> {
        let current = self.store.environment(pr.repo.id, pr.number).await.map_err(transient)?;
        let current_state =
            current.as_ref().map(|env| env.state()).transpose().map_err(|e| JobError::Permanent(e.to_string()))?;
        match plan(current_state, event, gate) {
            Plan::Record { state, reason } => {
                let record = self.store.record_environment(pr, state, reason.as_deref()).await.map_err(transient)?;
                if state == EnvironmentState::Pending && activity == Activity::Renewing {
                    // Activity renews the TTL; the reconcile computes the new expiry.
                    self.store.touch_environment(record.id).await.map_err(transient)?;
                }
                tracing::info!(
                    repo = %pr.repo.full_name(),
                    pr = %pr.number,
                    head_sha = %pr.head_sha,
                    from = ?current_state,
                    to = %state,
                    reason,
                    environment = record.id,
                    "environment desired state changed"
                );
                self.queue_reconcile(record.id).await?;
                Ok(Some(record.id))
            }
            Plan::Nothing { why } => {
                tracing::info!(repo = %pr.repo.full_name(), pr = %pr.number, why, "environment unchanged");
                Ok(current.map(|c| c.id))
            }
        }
    }

    /// Carries out what a writer granted `pr` (an environment asked for, or its head commit
    /// approved) and records it with `note` for the comment.
    async fn grant(&self, side: &GitHubSide, pr: &PullRequest, granted: Commands, note: &str) -> Result<(), JobError> {
        match self.consider_with(pr, Activity::Renewing, granted).await? {
            Some(id) => {
                let approved = granted.approve_fork.then_some(&pr.head_sha);
                let requested = granted.deploy.then_some(true);
                self.store.set_command_state(id, requested, approved, Some(note)).await.map_err(transient)?;
            }
            None => {
                let short = pr.head_sha.short();
                let problem = format!(
                    "this repository has no `{}` at commit {short}, so it has no previews",
                    side.repo_config_path
                );
                let reply = side.texts.help(&problem).map_err(|e| JobError::Permanent(e.to_string()))?;
                let who = side.installation_for(&pr.repo).await.map_err(report_failed)?;
                side.github.create_comment(who, &pr.repo, pr.number, &reply).await.map_err(github_failed)?;
            }
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
