//! What a queued GitHub event does: the handler behind the `github_event` job kind.
//!
//! Pull request events go through the engine's planner and change the environment's desired
//! state in the store. The other events are accepted and logged; their handling (commands,
//! installations, waiting for CI) builds on this.

use crate::github::events::{Event, PrAction};
use crate::worker::{JobError, JobHandler};
use previewd_environments::model::CloseReason;
use previewd_environments::planner::{Plan, PrEvent, plan};
use previewd_environments::store::{ClaimedJob, Store};
use std::future::Future;
use std::pin::Pin;

/// Job kind of a delivery previewd acts on; the payload is a serialized [`Event`].
pub const GITHUB_EVENT: &str = "github_event";

pub struct EventProcessor {
    store: Store,
}

impl EventProcessor {
    pub fn new(store: Store) -> Self {
        EventProcessor { store }
    }

    async fn process(&self, event: Event) -> Result<(), JobError> {
        match event {
            Event::PullRequest { action, pull_request, merged, .. } => {
                let event = match action {
                    PrAction::Opened | PrAction::Reopened | PrAction::ReadyForReview => PrEvent::Opened(pull_request),
                    PrAction::Synchronize => PrEvent::Pushed(pull_request),
                    PrAction::Closed => {
                        PrEvent::Closed(pull_request, if merged { CloseReason::Merged } else { CloseReason::Closed })
                    }
                    PrAction::Labeled | PrAction::Unlabeled | PrAction::ConvertedToDraft | PrAction::Edited => {
                        tracing::info!(?action, "pull request change recorded; no environment change for it yet");
                        return Ok(());
                    }
                };
                self.apply(&event).await
            }
            other => {
                tracing::info!(event = ?other, "event recorded; no environment change for it yet");
                Ok(())
            }
        }
    }

    async fn apply(&self, event: &PrEvent) -> Result<(), JobError> {
        let pr = event.pull_request();
        let transient = |e: previewd_environments::store::StoreError| JobError::Transient(e.to_string());
        let current = self.store.environment(pr.repo.id, pr.number).await.map_err(transient)?;
        let current_state =
            current.as_ref().map(|env| env.state()).transpose().map_err(|e| JobError::Permanent(e.to_string()))?;
        match plan(current_state, event) {
            Plan::Record { state, reason } => {
                let record = self.store.record_environment(pr, state, reason.as_deref()).await.map_err(transient)?;
                tracing::info!(
                    repo = %pr.repo.full_name(),
                    pr = %pr.number,
                    head_sha = %pr.head_sha,
                    from = ?current_state,
                    to = %state,
                    environment = record.id,
                    "environment desired state changed"
                );
            }
            Plan::Nothing { why } => {
                tracing::info!(repo = %pr.repo.full_name(), pr = %pr.number, why, "environment unchanged");
            }
        }
        Ok(())
    }
}

impl JobHandler for EventProcessor {
    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send + 'a>> {
        Box::pin(async move {
            if job.kind != GITHUB_EVENT {
                return Err(JobError::Permanent(format!("no handler for job kind `{}`", job.kind)));
            }
            let event: Event = serde_json::from_str(&job.payload)
                .map_err(|e| JobError::Permanent(format!("job payload is not a previewd event: {e}")))?;
            self.process(event).await
        })
    }
}
