//! Catching up with what GitHub said while previewd was not listening.
//!
//! GitHub does not retry a failed delivery by itself. At start and every
//! `github.resync_interval_seconds`, previewd therefore
//! - (as an App) refreshes the repositories of each installation, in case an installation
//!   event was missed;
//! - (as an App) asks GitHub to redeliver deliveries that failed and that previewd never
//!   stored, within the redelivery window;
//! - lists the open pull requests of every repository it serves (a conditional request: an
//!   unchanged list costs no rate limit) and turns what it finds into the events it missed: an
//!   open pull request without an environment, or with an older head, is a missed `opened` or
//!   `synchronize`; a live environment whose pull request is no longer open is a missed `closed`.
//!
//! Missed events become ordinary `github_event` jobs, so they take the same path as deliveries.

use super::api::HookDelivery;
use super::client::GitHubError;
use super::events::{Event, PrAction};
use super::report::GitHubSide;
use previewd_environments::model::{EnvironmentState, PrNumber};
use previewd_environments::policy::Policy;
use previewd_environments::store::{NewJob, RepositoryRecord, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Report(#[from] super::report::ReportError),
}

pub struct Resync {
    pub side: Arc<GitHubSide>,
    pub policy: Option<Arc<Policy>>,
    pub interval: Duration,
    pub redelivery_window: Duration,
    pub max_attempts: i64,
}

/// What one pass found, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassSummary {
    pub repositories: usize,
    pub unchanged: usize,
    pub missed_opened: usize,
    pub missed_closed: usize,
    pub redelivered: usize,
}

impl Resync {
    pub async fn run(self, stop: CancellationToken) {
        loop {
            match self.pass().await {
                Ok(summary) => tracing::info!(?summary, "GitHub resync done"),
                Err(error) => tracing::warn!(error = %error, "GitHub resync failed; trying again next interval"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    fn serves(&self, owner: &str, name: &str) -> bool {
        self.policy.as_ref().is_none_or(|p| p.allows_repository(owner, name))
    }

    pub async fn pass(&self) -> Result<PassSummary, ResyncError> {
        let mut summary = PassSummary::default();
        if self.side.github.is_app() {
            self.refresh_installations().await?;
            summary.redelivered = self.redeliver().await?;
        }
        for repo in self.side.store.active_repositories().await? {
            if !self.serves(&repo.owner, &repo.name) {
                continue;
            }
            summary.repositories += 1;
            match self.pulls(&repo, &mut summary).await {
                Ok(()) => {}
                // One repository that went away (or lost the App) does not stop the others.
                Err(ResyncError::GitHub(error)) if !error.is_transient() => {
                    tracing::warn!(repo = %repo.repo().full_name(), error = %error, "cannot list the repository's pull requests");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(summary)
    }

    async fn refresh_installations(&self) -> Result<(), ResyncError> {
        let github = &self.side.github;
        for installation in github.installations().await? {
            for repo in github.installation_repositories(installation).await? {
                if self.serves(&repo.owner, &repo.name) {
                    self.side.store.upsert_repository(&repo, Some(installation), true).await?;
                }
            }
        }
        Ok(())
    }

    async fn queue(&self, event: &Event) -> Result<(), ResyncError> {
        // An event of a derived type always serializes.
        if let Ok(job) = NewJob::resync_event(event, self.max_attempts) {
            self.side.store.enqueue(&job).await?;
        }
        Ok(())
    }

    async fn pulls(&self, record: &RepositoryRecord, summary: &mut PassSummary) -> Result<(), ResyncError> {
        let repo = record.repo();
        let installation = record.installation();
        let who = self.side.installation_for(&repo).await?;
        let Some((open, etag)) = self.side.github.open_pulls(who, &repo, record.pulls_etag.as_deref()).await? else {
            summary.unchanged += 1;
            return Ok(());
        };
        let store = &self.side.store;
        let mut open_numbers = HashSet::new();
        for pull in &open {
            let pr = pull.to_model();
            open_numbers.insert(pr.number);
            let known = store.reconcile_record_for(repo.id, pr.number).await?;
            if known.as_ref().is_some_and(|env| env.head_sha == pr.head_sha.0) {
                continue;
            }
            tracing::info!(repo = %repo.full_name(), pr = %pr.number, head_sha = %pr.head_sha, "resync: a pull request changed while previewd was not told");
            summary.missed_opened += 1;
            let event = Event::PullRequest {
                action: PrAction::Synchronize,
                pull_request: pr,
                merged: false,
                label: None,
                sender: None,
                // The listing's time: its head was pushed no later.
                updated_at: pull.updated_at.as_deref().and_then(super::events::github_time),
                installation,
                title: pull.title.as_deref().map(super::events::bounded_title),
                private: None,
            };
            self.queue(&event).await?;
        }
        let live = store
            .environments_in(&[
                EnvironmentState::Pending,
                EnvironmentState::Provisioning,
                EnvironmentState::Ready,
                EnvironmentState::Sleeping,
                EnvironmentState::Failed,
            ])
            .await?;
        for env in live.iter().filter(|e| e.repo_id == repo.id.0 && !open_numbers.contains(&PrNumber(e.pr_number))) {
            // Merged or not decides the comment's wording.
            let merged = match self.side.github.pull(who, &repo, PrNumber(env.pr_number)).await {
                Ok(pull) if pull.state == "open" => continue,
                Ok(pull) => pull.merged(),
                Err(GitHubError::NotFound { .. }) => false,
                Err(error) => return Err(error.into()),
            };
            tracing::info!(repo = %repo.full_name(), pr = env.pr_number, merged, "resync: the pull request was closed while previewd was not told");
            summary.missed_closed += 1;
            let event = Event::PullRequest {
                action: PrAction::Closed,
                pull_request: env.pull_request(),
                merged,
                label: None,
                sender: None,
                updated_at: None,
                installation,
                title: None,
                private: None,
            };
            self.queue(&event).await?;
        }
        store.set_pulls_etag(repo.id, etag.as_deref()).await?;
        Ok(())
    }

    /// Asks GitHub to redeliver what failed and was never stored. Returns how many.
    async fn redeliver(&self) -> Result<usize, ResyncError> {
        let deliveries = self.side.github.hook_deliveries(1000).await?;
        let now = std::time::SystemTime::now();
        let mut by_guid: HashMap<&str, Vec<&HookDelivery>> = HashMap::new();
        for delivery in &deliveries {
            by_guid.entry(delivery.guid.as_str()).or_default().push(delivery);
        }
        let mut redelivered = 0;
        for (guid, attempts) in by_guid {
            if attempts.iter().any(|a| (200..300).contains(&a.status_code)) {
                continue;
            }
            // Listed newest first: the latest attempt is redelivered, at most three times.
            let Some(latest) = attempts.first() else { continue };
            if attempts.len() > 3 || !within(&latest.delivered_at, now, self.redelivery_window) {
                continue;
            }
            if self.side.store.delivery_seen(guid).await? {
                continue;
            }
            tracing::info!(
                guid,
                event = latest.event,
                status_code = latest.status_code,
                "asking GitHub to redeliver a failed delivery"
            );
            self.side.github.redeliver(latest.id).await?;
            redelivered += 1;
        }
        Ok(redelivered)
    }
}

/// Whether RFC 3339 time `at` is less than `window` before `now`.
fn within(at: &str, now: std::time::SystemTime, window: Duration) -> bool {
    // GitHub writes UTC times with a `Z`.
    let Ok(at) = humantime::parse_rfc3339(at) else {
        return false;
    };
    now.duration_since(at).map(|age| age < window).unwrap_or(true)
}

impl super::api::Pull {
    pub fn merged(&self) -> bool {
        self.merged.unwrap_or(false) || self.merged_at.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redelivery_window_is_measured_from_now() {
        let now = humantime::parse_rfc3339("2026-11-29T12:00:00Z").unwrap();
        let day = Duration::from_secs(86_400);
        assert!(within("2026-11-29T11:00:00Z", now, day));
        assert!(!within("2026-11-27T11:00:00Z", now, day));
        assert!(!within("not a time", now, day));
    }
}
