//! Pull request events: the policy's trigger rules (and what commands granted) decide, the
//! planner records the desired state, and a reconcile is queued.

use super::*;

/// What started a change of a pull request's environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Activity {
    /// Opened, reopened, ready for review, pushed: the TTL starts again.
    Renewing,
    /// Labels, draft state or description changed: the decision is revisited, the TTL kept.
    Revisit,
}

impl JobRunner {
    pub(crate) async fn closed(&self, pr: &PullRequest, reason: CloseReason, cause: &Cause) -> Result<(), JobError> {
        self.apply(pr, &PrEvent::Closed(pr.clone(), reason), &Gate::Allowed, Activity::Renewing, cause).await.map(drop)
    }

    /// The label that approves `pr`'s head commit, if `pr` is a fork's and its repository lets
    /// forks in after approval.
    pub(super) fn approve_label(&self, pr: &PullRequest) -> Option<String> {
        let engine = self.engine.as_ref().filter(|_| pr.from_fork && self.github.is_some())?;
        let policy = engine.policy.for_repository(&pr.repo.owner, &pr.repo.name);
        (policy.forks == ForkPolicy::Approve).then_some(policy.approve_label)
    }

    pub(super) async fn remove_label(&self, pr: &PullRequest, label: &str) -> Result<(), JobError> {
        let Some(side) = &self.github else { return Ok(()) };
        let who = side.installation_for(&pr.repo).await.map_err(report_failed)?;
        side.github.remove_label(who, &pr.repo, pr.number, label).await.map_err(github_failed)?;
        tracing::info!(repo = %pr.repo.full_name(), pr = %pr.number, label, "label removed: it approved an earlier commit");
        Ok(())
    }

    /// Whether the policy lets `pr` have an environment, given what commands said about it
    /// (stored, or `granted` by the command being carried out).
    pub(super) fn gate(&self, pr: &PullRequest, current: Option<&ReconcileRecord>, granted: Commands) -> Gate {
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
    pub(super) async fn consider(&self, pr: &PullRequest, activity: Activity, cause: &Cause) -> Result<(), JobError> {
        self.consider_with(pr, activity, Commands::default(), cause).await.map(drop)
    }

    /// [`Self::consider`] with what a command grants; the environment's id if it has one.
    pub(super) async fn consider_with(
        &self,
        pr: &PullRequest,
        activity: Activity,
        granted: Commands,
        cause: &Cause,
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
            self.store.record_environment(pr, state, env.reason.as_deref(), cause).await.map_err(transient)?;
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
        self.apply(pr, &event, &gate, activity, cause).await
    }

    pub(super) async fn apply(
        &self,
        pr: &PullRequest,
        event: &PrEvent,
        gate: &Gate,
        activity: Activity,
        cause: &Cause,
    ) -> Result<Option<i64>, JobError> {
        let current = self.store.environment(pr.repo.id, pr.number).await.map_err(transient)?;
        let current_state =
            current.as_ref().map(|env| env.state()).transpose().map_err(|e| JobError::Permanent(e.to_string()))?;
        match plan(current_state, event, gate) {
            Plan::Record { state, reason } => {
                let record =
                    self.store.record_environment(pr, state, reason.as_deref(), cause).await.map_err(transient)?;
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
    pub(super) async fn grant(
        &self,
        side: &GitHubSide,
        pr: &PullRequest,
        granted: Commands,
        note: &str,
        cause: &Cause,
    ) -> Result<(), JobError> {
        match self.consider_with(pr, Activity::Renewing, granted, cause).await? {
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
}
