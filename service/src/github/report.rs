//! Reporting an environment on its pull request: the sticky comment, the GitHub deployment of
//! the head commit with its status, and (as a GitHub App) a check run.
//!
//! A report is level-triggered like the reconciler: it reads the environment's current state
//! and makes GitHub show it, so a report that runs twice, late, or after a crash says the same
//! thing once. What was already said is in the store (`github_reports`); anything created but
//! not yet recorded when previewd died is found again on GitHub (the comment by its hidden
//! marker and previewd's own login as its author, the deployment and check run by head SHA and
//! name) instead of being created twice.

use super::client::{As, GitHub, GitHubError};
use super::commands::HELP;
use super::texts::{CommentContext, Texts};
use previewd_environments::model::{EnvironmentState, PrNumber, Repo, RepoId};
use previewd_environments::policy::Policy;
use previewd_environments::store::{Lease, ReconcileRecord, ReportRecord, ReportedObject, Store, StoreError};
use previewd_environments::time::{now_ms, rfc3339};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Texts(#[from] super::texts::TextsError),
    #[error("another report of this environment is running")]
    Busy,
}

impl ReportError {
    /// Whether the same report may succeed later (GitHub back, a limit reset, the store back).
    pub fn is_retryable(&self) -> bool {
        match self {
            ReportError::GitHub(error) => error.is_transient(),
            ReportError::Store(_) | ReportError::Busy => true,
            ReportError::Texts(_) => false,
        }
    }
}

/// Everything previewd's GitHub side needs.
pub struct GitHubSide {
    pub github: Arc<GitHub>,
    pub texts: Texts,
    pub store: Store,
    pub policy: Option<Arc<Policy>>,
    /// This installation's name: part of the comment marker, so two installations serving one
    /// repository never edit each other's comments.
    pub instance: String,
    /// Identifies this process in report leases.
    pub owner: String,
    /// The repository file that configures previewd, read at the head commit.
    pub repo_config_path: String,
    /// previewd's own login on GitHub, asked once ([`GitHub::own_login`]).
    pub own_login: tokio::sync::OnceCell<String>,
}

/// The deployment environment and check run name of pull request `number`.
pub fn environment_name(number: PrNumber) -> String {
    format!("preview/pr-{number}")
}

impl GitHubSide {
    /// The installation to act as for `repo`: the one recorded from its deliveries, else asked
    /// from GitHub (and recorded). With a personal access token there is none.
    pub async fn installation_for(&self, repo: &Repo) -> Result<As, ReportError> {
        if !self.github.is_app() {
            return Ok(As::Installation(None));
        }
        if let Some(installation) = self.store.repository(repo.id).await?.and_then(|r| r.installation()) {
            return Ok(As::Installation(Some(installation)));
        }
        let installation = match self.github.repo_installation(repo).await {
            Ok(installation) => installation,
            Err(GitHubError::NotFound { .. }) => return Err(GitHubError::NoInstallation(repo.full_name()).into()),
            Err(error) => return Err(error.into()),
        };
        self.store.upsert_repository(repo, Some(installation), true).await?;
        Ok(As::Installation(Some(installation)))
    }

    /// The login previewd writes as; asked of GitHub once, then kept (an App's slug and a
    /// token's user do not change while previewd runs).
    pub async fn own_login(&self) -> Result<&str, GitHubError> {
        self.own_login.get_or_try_init(|| self.github.own_login()).await.map(String::as_str)
    }

    fn marker(&self, repo: RepoId, number: i64) -> String {
        format!("<!-- previewd:{}:{repo}:{number} -->", self.instance)
    }

    /// Makes the pull request show environment `id` as it is now.
    pub async fn report(&self, id: i64) -> Result<(), ReportError> {
        // Short and renewed, so a process killed mid-report blocks the next one briefly.
        let lease = Duration::from_secs(15);
        let leased = self.store.while_leased(Lease::Report, id, &self.owner, lease, self.report_locked(id));
        leased.await?.unwrap_or(Err(ReportError::Busy))
    }

    async fn report_locked(&self, id: i64) -> Result<(), ReportError> {
        let Some(env) = self.store.reconcile_record(id).await? else {
            return Ok(());
        };
        let state = env.state()?;
        let repo = env.pull_request().repo;
        // An App uninstalled from the repository (or the repository removed from it) can write
        // nothing there; its environments are torn down without a word.
        if self.github.is_app() && self.store.repository(repo.id).await?.is_some_and(|r| !r.active) {
            tracing::info!(environment = id, repo = %repo.full_name(), %state, "not reported: the App no longer has this repository");
            return Ok(());
        }
        let who = self.installation_for(&repo).await?;
        let record = self.store.report_record(id).await?;
        // Each part stands alone: GitHub refusing one (a deployment of a commit it no longer
        // has, an App without the deployments permission) must not keep the others, above all
        // the comment, from the pull request.
        let deployment = self.report_deployment(&env, state, &repo, who, &record).await;
        let check_run =
            if self.github.is_app() { self.report_check_run(&env, state, &repo, who, &record).await } else { Ok(()) };
        let comment = self.report_comment(&env, state, &repo, who, &record).await;
        let warning = self.report_warning(&env, state, &repo, who, &record).await;
        let mut failed = Vec::new();
        let parts = [("deployment", deployment), ("check run", check_run), ("comment", comment), ("warning", warning)];
        for (part, result) in parts {
            if let Err(error) = result {
                tracing::warn!(environment = id, part, error = %error, "reporting on the pull request failed");
                failed.push(error);
            }
        }
        // A failure worth retrying decides the job's fate before one that is not.
        failed.sort_by_key(|e| !e.is_retryable());
        failed.into_iter().next().map_or(Ok(()), Err)
    }

    fn comment_text(&self, env: &ReconcileRecord, state: EnvironmentState) -> Result<String, ReportError> {
        let text = self.texts.comment(&self.comment_context(env, state))?;
        Ok(format!("{text}\n\n{}", self.marker(RepoId(env.repo_id), env.pr_number)))
    }

    /// What the pull request texts show of environment `env`.
    fn comment_context(&self, env: &ReconcileRecord, state: EnvironmentState) -> CommentContext {
        let keep_label = self
            .policy
            .as_ref()
            .map(|p| p.for_repository(&env.repo_owner, &env.repo_name).keep_label)
            .unwrap_or_else(|| "preview:keep".to_owned());
        let now = now_ms();
        CommentContext {
            state: state.as_str().to_owned(),
            url: env.url.clone(),
            services: {
                let services = previewd_environments::store::service_urls(env.service_urls.as_deref());
                if services.len() > 1 { services } else { Vec::new() }
            },
            head_sha: env.head_sha.clone(),
            deployed_sha: env.deployed_sha.clone().unwrap_or_else(|| env.head_sha.clone()),
            reason: env.reason.clone(),
            note: env.note.clone(),
            expires_at: env.expires_at.map(rfc3339),
            expires_in: env.expires_at.map(|at| {
                let minutes = u64::try_from((at - now).max(0) / 60_000).unwrap_or(0);
                if minutes == 0 {
                    "now".to_owned()
                } else {
                    format!("in {}", humantime::format_duration(Duration::from_secs(minutes * 60)))
                }
            }),
            warned: env.warned_at.is_some(),
            keep: env.pull_request().labels.iter().any(|l| l.eq_ignore_ascii_case(&keep_label)),
            keep_label,
            environment: env.name.clone().unwrap_or_default(),
            repo: format!("{}/{}", env.repo_owner, env.repo_name),
            number: env.pr_number,
            commands: HELP,
        }
    }

    /// The warning before expiry, once per warning (`warned_at`): a comment of its own that
    /// mentions the author, since GitHub notifies nobody of an edited comment. Posted only while
    /// the environment is live and not yet expired. A crash between posting it and recording
    /// it posts it again: at least once, never lost.
    async fn report_warning(
        &self,
        env: &ReconcileRecord,
        state: EnvironmentState,
        repo: &Repo,
        who: As,
        record: &ReportRecord,
    ) -> Result<(), ReportError> {
        let Some(warned_at) = env.warned_at else { return Ok(()) };
        let expires_ahead = env.expires_at.is_some_and(|at| at > now_ms());
        if record.warning_for == Some(warned_at) || !state.is_live() || !expires_ahead {
            return Ok(());
        }
        let body = self.texts.expiring(&self.comment_context(env, state), &env.author)?;
        self.github.create_comment(who, repo, PrNumber(env.pr_number), &body).await?;
        self.store.save_warning(env.id, warned_at).await?;
        tracing::info!(environment = env.id, author = env.author, "expiry warning posted");
        Ok(())
    }

    async fn report_comment(
        &self,
        env: &ReconcileRecord,
        state: EnvironmentState,
        repo: &Repo,
        who: As,
        record: &ReportRecord,
    ) -> Result<(), ReportError> {
        let body = self.comment_text(env, state)?;
        let digest = hex::encode(Sha256::digest(body.as_bytes()));
        if record.comment_digest.as_deref() == Some(digest.as_str()) {
            return Ok(());
        }
        let number = PrNumber(env.pr_number);
        if let Some(comment) = record.comment_id {
            match self.github.update_comment(who, repo, comment, &body).await {
                Ok(()) => {
                    self.store.save_comment(env.id, comment, &digest).await?;
                    return Ok(());
                }
                // Someone deleted it: find another or post a new one.
                Err(GitHubError::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        // Anyone can write the marker: only a comment previewd wrote itself is its comment.
        let marker = self.marker(RepoId(env.repo_id), env.pr_number);
        let own = self.own_login().await?;
        let existing = self.github.comments(who, repo, number).await?.into_iter().find(|c| {
            c.user.as_ref().is_some_and(|u| u.login.eq_ignore_ascii_case(own))
                && c.body.as_deref().is_some_and(|b| b.contains(&marker))
        });
        let comment = match existing {
            Some(comment) => {
                self.github.update_comment(who, repo, comment.id, &body).await?;
                comment.id
            }
            None => self.github.create_comment(who, repo, number, &body).await?,
        };
        self.store.save_comment(env.id, comment, &digest).await?;
        Ok(())
    }

    async fn report_deployment(
        &self,
        env: &ReconcileRecord,
        state: EnvironmentState,
        repo: &Repo,
        who: As,
        record: &ReportRecord,
    ) -> Result<(), ReportError> {
        use EnvironmentState::*;
        let (status, description) = match state {
            Pending => ("queued", env.reason.clone().unwrap_or_else(|| "waiting to be provisioned".to_owned())),
            Provisioning => ("in_progress", env.reason.clone().unwrap_or_else(|| "provisioning".to_owned())),
            Ready => ("success", "ready".to_owned()),
            Failed => ("failure", env.reason.clone().unwrap_or_else(|| "failed".to_owned())),
            // The last deployment goes inactive; nothing new is deployed.
            Deleted | Rejected => {
                if let (Some(id), Some(sha)) = (record.deployment_id, &record.deployment_sha)
                    && record.deployment_state.as_deref() != Some("inactive")
                {
                    let reason = env.reason.clone().unwrap_or_else(|| "torn down".to_owned());
                    self.github.deployment_status(who, repo, id, "inactive", None, &reason).await?;
                    self.store.save_reported(env.id, ReportedObject::Deployment, id, sha, Some("inactive")).await?;
                }
                return Ok(());
            }
            // Its deployment stays successful: the URL still works, a visit wakes it.
            Deleting | Sleeping => return Ok(()),
        };
        let name = environment_name(PrNumber(env.pr_number));
        let (id, sent) = if record.deployment_sha.as_deref() == Some(env.head_sha.as_str())
            && let Some(id) = record.deployment_id
        {
            (id, record.deployment_state.clone())
        } else {
            let found = self.github.deployments(who, repo, &env.head_sha, &name).await?.into_iter().next();
            let id = match found {
                Some(id) => id,
                None => {
                    let description = format!("preview of pull request #{}", env.pr_number);
                    self.github.create_deployment(who, repo, &env.head_sha, &name, &description).await?
                }
            };
            self.store.save_reported(env.id, ReportedObject::Deployment, id, &env.head_sha, None).await?;
            (id, None)
        };
        if sent.as_deref() == Some(status) {
            return Ok(());
        }
        let url = if state == Ready { env.url.as_deref() } else { None };
        self.github.deployment_status(who, repo, id, status, url, &description).await?;
        self.store.save_reported(env.id, ReportedObject::Deployment, id, &env.head_sha, Some(status)).await?;
        Ok(())
    }

    async fn report_check_run(
        &self,
        env: &ReconcileRecord,
        state: EnvironmentState,
        repo: &Repo,
        who: As,
        record: &ReportRecord,
    ) -> Result<(), ReportError> {
        use EnvironmentState::*;
        let reason = env.reason.clone().unwrap_or_default();
        let (status, conclusion, title, summary) = match state {
            Pending => ("queued", None, "Waiting to be provisioned".to_owned(), reason),
            Provisioning => ("in_progress", None, "Provisioning".to_owned(), reason),
            Ready => {
                let url = env.url.clone().unwrap_or_default();
                ("completed", Some("success"), "Preview environment ready".to_owned(), format!("Preview: {url}"))
            }
            Failed => ("completed", Some("failure"), "Preview environment failed".to_owned(), reason),
            Rejected => ("completed", Some("neutral"), "No preview environment".to_owned(), reason),
            // The commit's check stays as it was: sleeping says nothing about the commit.
            Sleeping => return Ok(()),
            Deleting | Deleted => {
                // A check run of this head that never finished is closed; a finished one stays.
                if record.check_run_sha.as_deref() != Some(env.head_sha.as_str())
                    || matches!(record.check_run_state.as_deref(), Some("success" | "failure" | "neutral"))
                {
                    return Ok(());
                }
                ("completed", Some("neutral"), "Preview environment torn down".to_owned(), reason)
            }
        };
        let key = conclusion.unwrap_or(status);
        let current = if record.check_run_sha.as_deref() == Some(env.head_sha.as_str()) {
            if record.check_run_state.as_deref() == Some(key) {
                return Ok(());
            }
            record.check_run_id
        } else {
            None
        };
        let name = environment_name(PrNumber(env.pr_number));
        let id = match current {
            Some(id) => Some(id),
            None => self.github.check_runs_named(who, repo, &env.head_sha, &name).await?.into_iter().next(),
        };
        let details = if state == Ready { env.url.as_deref() } else { None };
        let id = self
            .github
            .put_check_run(who, repo, id, &name, &env.head_sha, status, conclusion, &title, &summary, details)
            .await?;
        self.store.save_reported(env.id, ReportedObject::CheckRun, id, &env.head_sha, Some(key)).await?;
        Ok(())
    }
}
